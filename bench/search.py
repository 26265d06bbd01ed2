"""Search latency over 100,000 messages (DESIGN budget: ≤ 100 ms).

One bench user gets 2,000 conversations of 50 messages each (reused across runs), with
text drawn from a fixed vocabulary with a Zipf-like word frequency, so common words match
thousands of messages and rare ones a handful. Then a mix of websearch queries (one common
word, one rare word, two words, a phrase, OR, a -word) runs through the product's
``search_conversations`` in this process and through ``GET /search/`` with
django.test.Client (session, auth, view and JSON included); wall time per call.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

TITLE = "bench search {:04d}"
CONVERSATIONS = 2_000
MESSAGES_PER_CONVERSATION = 50
ROUNDS = 15

_WORDS = ["time", "person", "year", "way", "day", "thing", "world", "life", "hand", "part", "child", "eye", "place", "work", "week", "case", "point", "number", "group", "problem", "fact", "model", "answer", "question", "budget", "reason", "token", "stream", "worker", "socket", "cache", "query", "index", "branch", "deploy", "server", "client", "build", "release", "review", "design", "schema", "table", "report", "metric", "latency", "tomato", "ferry", "harbour", "bowline", "lantern", "glacier", "meadow", "orchard", "quartz", "saffron", "tundra", "velvet", "walnut", "zephyr", "anchor", "basalt", "cobalt", "dynamo", "ember", "falcon", "granite", "hazel", "indigo", "juniper", "kelp", "lilac", "mango", "nectar", "onyx", "pepper", "quince", "raven", "sierra", "thistle", "umber"]


def _vocabulary(rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "gu"]
    made = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(6000)}
    return _WORDS + sorted(made)


def _text(rng: random.Random, vocabulary: list[str], weights: list[float], words: int) -> str:
    return " ".join(rng.choices(vocabulary, weights=weights, k=words)).capitalize() + "."


def build_corpus(user_pk: int) -> dict[str, Any]:
    """The 100,000 messages, created once; returns how many there are."""
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.model_access import default_profile
    from accounts.models import User
    from conversations.access import get_membership
    from conversations.models import Conversation, Message
    from conversations.search import index_messages
    from conversations.search_index import SEARCH_TABLE

    user = User.objects.get(pk=user_pk)
    organization = get_membership(user, None).organization
    existing = Message.objects.filter(conversation__user=user,
                                      conversation__title__startswith="bench search ").count()
    target = CONVERSATIONS * MESSAGES_PER_CONVERSATION
    started = time.perf_counter()
    if existing != target:
        Conversation.objects.filter(user=user, title__startswith="bench search ").delete()
        profile = default_profile(organization)
        if profile is None:
            raise RuntimeError(f"{organization} has no model profile to benchmark with")
        rng = random.Random(20261130)
        vocabulary = _vocabulary(rng)
        weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
        rng.shuffle(weights)  # which words are common is arbitrary, not alphabetical
        now = timezone.now()
        for first in range(0, CONVERSATIONS, 100):
            with transaction.atomic():
                conversations = Conversation.objects.bulk_create(
                    Conversation(organization=organization, user=user, profile=profile,
                                 title=TITLE.format(n), updated_at=now)
                    for n in range(first, first + 100)
                )
                Message.objects.bulk_create(
                    (
                        Message(conversation=conversation,
                                role=Message.Role.USER if i % 2 == 0 else Message.Role.ASSISTANT,
                                content=_text(rng, vocabulary, weights, 12 if i % 2 == 0 else 60),
                                created_at=now)
                        for conversation in conversations
                        for i in range(MESSAGES_PER_CONVERSATION)
                    ),
                    batch_size=2000,
                )
    # As the beat indexer would have by the time anyone searched (also after a run stopped
    # while indexing): a search over 100,000 still-queued messages computes every vector.
    while index_messages(batch=5000):
        pass
    with connection.cursor() as cursor:  # autovacuum's analyse, which is off here
        for table in ("conversations_message", "conversations_conversation", SEARCH_TABLE):
            cursor.execute(f"ANALYZE {table}")
    return {"messages": target, "built_s": round(time.perf_counter() - started, 1),
            "reused": existing == target}


def _queries() -> list[tuple[str, str]]:
    return [
        ("common word", "time"),
        ("common word", "answer"),
        ("rare word", "zephyr"),
        ("rare word", "quince"),
        ("two words", "budget latency"),
        ("phrase", '"world life"'),
        ("OR", "tomato OR ferry"),
        ("-word", "harbour -lantern"),
        ("no match", "xylophonequartet"),
    ]


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
    }


def run(user_pk: int) -> dict[str, Any]:
    from django.test import Client

    from accounts.models import User
    from conversations.search import search_conversations

    corpus = build_corpus(user_pk)
    user = User.objects.get(pk=user_pk)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    queries = _queries()
    hits: dict[str, int] = {}
    for _kind, query in queries:  # warm the caches and the connection
        hits[query] = len(search_conversations(user=user, organization_id=None, query=query))
        client.get("/search/", {"q": query})
    domain: list[float] = []
    http: list[float] = []
    by_kind: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        for kind, query in queries:
            started = time.perf_counter()
            search_conversations(user=user, organization_id=None, query=query)
            elapsed = (time.perf_counter() - started) * 1000
            domain.append(elapsed)
            by_kind.setdefault(kind, []).append(elapsed)
            started = time.perf_counter()
            response = client.get("/search/", {"q": query})
            http.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"GET /search/ answered {response.status_code}")
    return {
        "corpus": corpus,
        "queries": len(domain),
        "hits": hits,
        "domain_ms": _percentiles(domain),
        "http_ms": _percentiles(http),
        "by_kind_ms": {kind: _percentiles(samples) for kind, samples in by_kind.items()},
        "target_ms": 100,
    }


def render(search: dict[str, Any]) -> list[str]:
    if "error" in search:
        return ["", "## Search", "", f"- failed: {search['error']}"]
    corpus = search["corpus"]
    domain, http = search["domain_ms"], search["http_ms"]
    ok = http["p95"] <= search["target_ms"]
    return [
        "",
        f"## Search over {corpus['messages']:,} messages (websearch syntax, ranked, snippets)",
        "",
        "| path | p50 | p95 | max |",
        "|---|---:|---:|---:|",
        f"| `search_conversations` in-process | {domain['p50']} ms | {domain['p95']} ms | {domain['max']} ms |",
        f"| `GET /search/` (django.test.Client) | {http['p50']} ms | {http['p95']} ms | {http['max']} ms |",
        "",
        "By kind of query (in-process p50 / p95): " + ", ".join(
            f"{kind} {v['p50']} / {v['p95']} ms" for kind, v in search["by_kind_ms"].items()),
        "",
        f"{search['queries']} timed queries; target p95 ≤ {search['target_ms']} ms: "
        f"{'met' if ok else 'NOT met'}.",
    ]
