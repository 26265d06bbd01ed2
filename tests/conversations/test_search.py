"""Search: websearch syntax over titles and messages, only one's own, escaped snippets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from accounts.models import User
from conversations import listing
from conversations.search import index_messages, search_conversations, to_fts5
from tests.sharing.conftest import add_turn, make_conversation

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _as(user: User) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _find(user: User, query: str) -> list[dict]:
    response = _as(user).get("/search/", {"q": query})
    assert response.status_code == 200, response.content
    return response.json()["results"]


@pytest.fixture
def library(alice: User) -> dict[str, object]:
    garden = make_conversation(alice, (("How do I grow tomatoes?", "Tomatoes need sun and water."),),
                               title="Garden")
    boats = make_conversation(alice, (("Which knot for sailing boats?", "A bowline holds boats fast."),),
                              title="Sailing")
    pets = make_conversation(alice, (("My cat chews cables", "Hide the cables; cats love them."),),
                             title="Cat troubles")
    return {"garden": garden, "boats": boats, "pets": pets}


def test_it_finds_words_in_messages_and_links_to_the_message(alice: User, library: dict) -> None:
    results = _find(alice, "tomato")  # stemmed: tomato finds tomatoes
    garden = library["garden"]
    ids = set(garden.messages.values_list("id", flat=True))
    assert results and all(r["conversation"] == garden.pk for r in results)
    assert {r["message"] for r in results} <= ids
    first = results[0]
    assert first["url"] == f"/c/{garden.pk}/#m{first['message']}"
    assert "<mark>Tomatoes</mark>" in first["snippet"] or "<mark>tomatoes</mark>" in first["snippet"]


def test_it_finds_titles_and_ranks_them_first(alice: User, library: dict) -> None:
    results = _find(alice, "cat")
    assert results[0] == {
        "conversation": library["pets"].pk, "message": None, "title": "Cat troubles",
        "snippet": "<mark>Cat</mark> troubles", "url": f"/c/{library['pets'].pk}/",
    }
    assert {r["conversation"] for r in results} == {library["pets"].pk}


def test_more_matches_rank_higher(alice: User) -> None:
    once = make_conversation(alice, (("weather", "rain today"),), title="One")
    many = make_conversation(alice, (("weather", "rain, rain and more rain"),), title="Many")
    results = _find(alice, "rain")
    assert [r["conversation"] for r in results] == [many.pk, once.pk]


def test_websearch_syntax_phrases_or_and_minus(alice: User, library: dict) -> None:
    garden, boats, pets = library["garden"], library["boats"], library["pets"]

    def found(query: str) -> set[int]:
        return {r["conversation"] for r in _find(alice, query)}

    assert found('"bowline holds"') == {boats.pk}
    assert found('"holds bowline"') == set()  # a phrase keeps its order
    assert found("tomatoes OR cables") == {garden.pk, pets.pk}
    assert found("tomatoes cables") == set()  # words without OR must all match
    assert found("sun -tomatoes") == set()
    assert found("cables -tomatoes") == {pets.pk}
    assert found("-tomatoes") == set()  # only a negation finds nothing, without error


def test_snippets_escape_html_and_keep_only_the_marks(alice: User) -> None:
    conversation = make_conversation(alice, title="Markup")
    _question, answer = add_turn(
        conversation, "xss", 'needle if a < b && c > d: <img src=x onerror="alert(1)"> \ue000fake\ue001'
    )
    (hit,) = [r for r in _find(alice, "needle") if r["message"] == answer.pk]
    snippet = hit["snippet"]
    assert snippet.startswith("<mark>needle</mark>")
    assert "a &lt; b &amp;&amp; c &gt; d" in snippet
    # Only the marks are markup: no tag of the message (and no fake mark) survives.
    assert "<" not in snippet.replace("<mark>", "").replace("</mark>", "")
    assert snippet.count("<mark>") == 1 and "fake" in snippet


@pytest.mark.parametrize("intruder", ["bob", "charlie"])
def test_bob_and_charlie_never_find_alices_conversations(
    alice: User, bob: User, charlie: User, library: dict, intruder: str
) -> None:
    other = {"bob": bob, "charlie": charlie}[intruder]
    make_conversation(other, (("tomatoes for me", "yes"),), title="Mine")
    results = _find(other, "tomatoes OR bowline OR cat OR garden")
    assert results and {r["conversation"] for r in results}.isdisjoint(
        {c.pk for c in library.values()}
    )
    assert all(r["title"] == "Mine" for r in results)


def test_another_orgs_conversations_of_the_same_person_stay_out(alice: User, charlie: User) -> None:
    from accounts.models import Membership

    make_conversation(alice, (("penguins", "cold"),), title="A")
    Membership.objects.create(user=alice, organization=charlie.memberships.get().organization)
    elsewhere = make_conversation(alice, (("penguins elsewhere", "colder"),), title="B",
                                  organization=charlie.memberships.get().organization)
    results = search_conversations(user=alice, organization_id=None, query="penguins")
    assert elsewhere.pk not in {h.conversation_id for h in results}
    results = search_conversations(
        user=alice, organization_id=elsewhere.organization_id, query="penguins"
    )
    assert {h.conversation_id for h in results} == {elsewhere.pk}


def test_deleted_conversations_are_not_found(alice: User, library: dict) -> None:
    listing.delete_conversation(user=alice, conversation_id=library["garden"].pk)
    assert _find(alice, "tomatoes OR garden") == []


@pytest.mark.parametrize(
    ("query", "error"),
    [("a\x00b", "NUL"), ("word " * 2048, "limited to 200")],
)
def test_a_nul_or_10_kb_query_is_a_clear_400(alice: User, query: str, error: str) -> None:
    response = _as(alice).get("/search/", {"q": query})
    assert response.status_code == 400
    body = response.content.decode() if "\x00" in query else response.json()["error"]
    assert error in body


def test_an_empty_query_finds_nothing(alice: User, library: dict) -> None:
    assert _find(alice, "   ") == []
    assert _find(alice, "!!!") == []


def test_the_search_uses_the_gin_index(alice: User, library: dict) -> None:
    index_messages()
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT message_id FROM conversations_message_search "
            "WHERE vector @@ websearch_to_tsquery('english', 'tomato')"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "message_content_search" in plan
    # Messages not indexed yet (no vector) are left out of it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'message_content_search'")
        [(definition,)] = cursor.fetchall()
    assert definition.endswith("WHERE (vector IS NOT NULL)"), definition


def test_websearch_queries_translate_to_fts5() -> None:
    assert to_fts5('"bowline holds" boats') == '("bowline holds") AND ("boats")'
    assert to_fts5("tomatoes OR cables -cats") == '("tomatoes" OR "cables") NOT ("cats")'
    assert to_fts5("-only") == ""
    assert to_fts5('NEAR(a b) "x') == '("NEAR a") AND ("b") AND ("x")'


@pytest.mark.slow
def test_embedded_sqlite_searches_with_fts5(tmp_path: Path) -> None:
    """The same domain function on a fresh embedded (SQLite) install: migrations create
    the FTS5 table, triggers keep it in sync, websearch syntax works."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}}
    env["VAR_DIR"] = str(tmp_path)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT,
                   env=env, check=True)
    script = """
from accounts.models import Membership, Organization, User
from conversations.models import Conversation, Message, ModelProfile
from conversations.search import search_conversations
org = Organization.objects.create(name="Embedded")
user = User.objects.create_user(email="e@example.com", password="pw-pw-pw-pw-pw")
Membership.objects.create(user=user, organization=org, role="owner")
c = Conversation.objects.create(organization=org, user=user, profile=ModelProfile.objects.first(), title="Boats")
m = Message.objects.create(conversation=c, role="user", content="A bowline holds <b>boats</b>")
Message.objects.create(conversation=c, role="assistant", content="Tomatoes need sun")
def found(q):
    return [(h.message_id, h.snippet_html) for h in search_conversations(user=user, organization_id=None, query=q)]
hits = found('"bowline holds"')
assert [h[0] for h in hits] == [m.pk], hits
assert "<mark>" in hits[0][1] and "&lt;b&gt;boats&lt;/b&gt;" in hits[0][1], hits
assert len(found("tomatoes OR bowline")) == 2
assert found("sun -tomatoes") == []
m.content = "now about kites"
m.save(update_fields=["content"])
assert found("bowline") == [] and len(found("kites")) == 1
assert found("boats")[0][0] is None  # the title
print("ok")
"""
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's stored vector")
def test_an_answer_is_found_as_soon_as_it_ends_and_indexed_off_the_turns_path(
    alice: User, library: dict
) -> None:
    """A live answer is never queued for indexing through its many writes (claim,
    checkpoints, lease renewals); the write that ends it queues it (a trigger, no vector
    computed), a search finds it at once, and the beat job's pass stores its vector."""
    from conversations.models import Message

    garden = library["garden"]
    _, answer = add_turn(garden, "And peppers?", "", status=Message.Status.STREAMING)

    def stored() -> list[bool]:
        """Whether the answer is queued, as [vector is NULL]; [] when it is not."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT vector IS NULL FROM conversations_message_search "
                           "WHERE message_id = %s", [answer.pk])
            return [bool(row[0]) for row in cursor.fetchall()]

    Message.objects.filter(pk=answer.pk).update(content="Peppers love warm greenhouses.")
    assert stored() == [] and _find(alice, "greenhouses") == []

    Message.objects.filter(pk=answer.pk).update(status=Message.Status.DONE)

    assert stored() == [True]  # queued, not computed by the ending's statement
    [found] = _find(alice, "greenhouses")
    assert "greenhouse" in str(found).lower()

    assert index_messages() >= 1
    assert stored() == [False]
    assert _find(alice, "greenhouses") == [found]

    # A later change of the text (an erasure) queues it again.
    Message.objects.filter(pk=answer.pk).update(content="Nothing here now.")
    assert stored() == [True] and _find(alice, "greenhouses") == []
    index_messages()
    assert stored() == [False] and _find(alice, "greenhouses") == []


def test_beat_indexes_queued_messages_every_few_seconds(settings: Any) -> None:
    job = settings.CELERY_BEAT_SCHEDULE["index-messages"]
    assert job["task"] == "conversations.tasks.index_messages"
    assert job["schedule"] <= 5


@pytest.mark.slow
def test_embedded_search_reads_only_the_searchers_own_messages(tmp_path: Path) -> None:
    """Other people's messages are never read by a search on SQLite: the FTS5 match
    returns only the searcher's rows (owner token first), and the work SQLite does for
    alice's message search (its virtual machine steps) is the same with 5 or 400 of
    charlie's and bob's messages holding the same word. Before, every one of them was
    joined and then dropped by owner."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}}
    env["VAR_DIR"] = str(tmp_path)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT,
                   env=env, check=True)
    script = """
from django.db import connection
from accounts.models import Membership, Organization, User
from conversations.models import Conversation, Message, ModelProfile
from conversations.search import SQLITE_SQL, search_conversations, sqlite_match, to_fts5
profile = ModelProfile.objects.first()
def person(email, org, role="owner"):
    user = User.objects.create_user(email=email, password="pw-pw-pw-pw-pw")
    Membership.objects.create(user=user, organization=org, role=role)
    return user
acme, other = Organization.objects.create(name="Acme"), Organization.objects.create(name="Other")
alice, bob, charlie = person("a@example.com", acme), person("b@example.com", acme, "member"), person("c@example.com", other)
def say(user, org, count, text):
    c = Conversation.objects.create(organization=org, user=user, profile=profile, title="Fruit")
    Message.objects.bulk_create([Message(conversation=c, role="user", content=f"{text} {i}") for i in range(count)])
say(alice, acme, 3, "an apple a day")
say(alice, acme, 2, "pears only")
steps = [0]
def step():
    steps[0] += 1
    return 0
def alices_search():
    hits = search_conversations(user=alice, organization_id=acme.pk, query="apple")
    with connection.cursor() as cursor:  # one index segment, however the rows were written
        cursor.execute("INSERT INTO conversations_message_fts(conversations_message_fts) VALUES ('optimize')")
    connection.connection.set_progress_handler(step, 1)
    steps[0] = 0
    with connection.cursor() as cursor:
        cursor.execute(SQLITE_SQL, [sqlite_match(alice.pk, acme.pk, to_fts5("apple")), alice.pk, acme.pk, 20])
        rows = cursor.fetchall()
    connection.connection.set_progress_handler(None, 1)
    assert len(rows) == len([h for h in hits if h.message_id]), (rows, hits)
    return len(rows), steps[0]
def fts_rows():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM conversations_message_fts WHERE conversations_message_fts MATCH %s",
                       [sqlite_match(alice.pk, acme.pk, to_fts5("apple"))])
        return cursor.fetchone()[0]
say(charlie, other, 4, "apple pie"); say(bob, acme, 1, "apple juice")
few = alices_search()
assert fts_rows() == 3, fts_rows()
say(charlie, other, 300, "apple pie"); say(bob, acme, 95, "apple juice")
many = alices_search()
assert fts_rows() == 3, fts_rows()
assert few[0] == many[0] == 3, (few, many)
assert few[1] == many[1], (few, many)
with connection.cursor() as cursor:
    cursor.execute("EXPLAIN QUERY PLAN " + SQLITE_SQL, [sqlite_match(alice.pk, acme.pk, '("apple")'), alice.pk, acme.pk, 20])
    plan = [row[-1] for row in cursor.fetchall()]
assert plan[0].startswith("SCAN conversations_message_fts VIRTUAL TABLE INDEX 0:M"), plan
print("ok", few, many)
"""
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout, result.stdout


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _plan_nodes(child))]


def test_only_queued_messages_get_their_vector_computed_whatever_the_statistics(
    alice: User, library: dict
) -> None:
    """A search computes vectors on the fly only for messages the indexer has not reached.
    With stale statistics PostgreSQL once planned that test over every message of the
    database before joining the queue (4 s over 100,000 messages): the plan must filter
    computed vectors only where the queued rows are already known."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite keeps its FTS5 table current by trigger")
    from conversations.search import _PG_SQL

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {_PG_SQL}",
                       {"query": "tides", "user": alice.pk,
                        "org": alice.memberships.get().organization_id, "limit": 20})
        plan = cursor.fetchone()[0][0]["Plan"]
    computing = [node for node in _plan_nodes(plan)
                 if "to_tsvector" in node.get("Filter", "") + node.get("Join Filter", "")]
    assert computing, "the plan has no on-the-fly vector test"
    for node in computing:
        scans = {n.get("CTE Name") for n in _plan_nodes(node) if n["Node Type"] == "CTE Scan"}
        assert "queued" in scans, node
        assert not any(n.get("Relation Name") == "conversations_message"
                       for n in _plan_nodes(node)), node


def test_the_search_statement_is_never_prepared(alice: User, library: dict) -> None:
    """A prepared statement's generic plan cannot see the words searched for (160 ms
    against 5 ms for a fresh plan over 100,000 messages): searches more often than
    psycopg's prepare threshold still leave no prepared search statement behind."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    threshold = connection.settings_dict["OPTIONS"].get("prepare_threshold")
    if threshold is None:
        pytest.skip("prepared statements are off (DB_PREPARED_STATEMENTS=false)")
    for _ in range(threshold + 3):
        assert search_conversations(user=alice, organization_id=None, query="tomato")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements "
                       "WHERE statement LIKE '%%websearch_to_tsquery%%'")
        assert cursor.fetchone()[0] == 0
