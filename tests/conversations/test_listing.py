"""The conversation list: rename, pin, archive, delete, and keyset pages of 5,000."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Organization, User
from answers.draft import AnswerDraft
from answers.engine import engine
from answers.lifecycle import Abandoned, claim
from answers.relay import Relay
from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from chatsite.errors import NotFound
from conversations import listing
from conversations.models import Conversation, Message
from sharing.links import create_link
from sharing.models import SharedMessage, ShareLink
from tests.sharing.conftest import make_conversation

pytestmark = pytest.mark.django_db


def _as(user: User) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _snapshot(conversation: Conversation) -> dict[str, Any]:
    conversation.refresh_from_db()
    return {
        "title": conversation.title,
        "pinned_at": conversation.pinned_at,
        "archived_at": conversation.archived_at,
        "deleted_at": conversation.deleted_at,
        "texts": list(conversation.messages.order_by("id").values_list("content", flat=True)),
    }


# --- Nobody else touches alice's conversations --------------------------------------------


@pytest.mark.parametrize("intruder", ["bob", "charlie"])
def test_bob_and_charlie_cannot_rename_pin_archive_or_delete_alices_conversation(
    alice: User, bob: User, charlie: User, intruder: str
) -> None:
    conversation = make_conversation(alice, title="Alice's plans")
    before = _snapshot(conversation)
    other = {"bob": bob, "charlie": charlie}[intruder]
    for call in (
        lambda: listing.rename_conversation(user=other, conversation_id=conversation.pk, title="Mine"),
        lambda: listing.set_pinned(user=other, conversation_id=conversation.pk, pinned=True),
        lambda: listing.set_archived(user=other, conversation_id=conversation.pk, archived=True),
        lambda: listing.delete_conversation(user=other, conversation_id=conversation.pk),
    ):
        with pytest.raises(NotFound):
            call()
    client = _as(other)
    for action, data in (("rename", {"title": "Mine"}), ("pin", {"pinned": "true"}),
                         ("archive", {"archived": "true"}), ("delete", {})):
        response = client.post(f"/c/{conversation.pk}/{action}/", data)
        assert response.status_code == 404, action
        assert response.json() == {"error": "No such conversation, or it is not yours."}
    listed = client.get("/conversations/").json()["items"] + client.get("/conversations/?archived=1").json()["items"]
    assert conversation.pk not in [item["id"] for item in listed]
    assert _snapshot(conversation) == before


def test_the_list_shows_only_the_current_orgs_conversations(alice: User, charlie: User) -> None:
    from accounts.models import Membership

    here = make_conversation(alice, title="Here")
    elsewhere_org = charlie.memberships.get().organization
    Membership.objects.create(user=alice, organization=elsewhere_org)
    elsewhere = make_conversation(alice, title="Elsewhere", organization=elsewhere_org)
    client = _as(alice)
    assert [i["id"] for i in client.get("/conversations/").json()["items"]] == [here.pk]
    session = client.session
    session["organization_id"] = elsewhere_org.pk
    session.save()
    assert [i["id"] for i in client.get("/conversations/").json()["items"]] == [elsewhere.pk]


def test_a_missing_id_is_the_same_404_as_someone_elses(alice: User) -> None:
    response = _as(alice).post("/c/999999999/rename/", {"title": "x"})
    assert response.status_code == 404


# --- Rename, pin, archive -----------------------------------------------------------------


def test_alice_renames_her_conversation_and_the_title_generator_leaves_it(alice: User) -> None:
    conversation = make_conversation(alice, title="Arithmetic")
    response = _as(alice).post(f"/c/{conversation.pk}/rename/", {"title": "  Sums   for Bob "})
    assert response.status_code == 200
    assert response.json()["title"] == "Sums for Bob"
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_generated) == ("Sums for Bob", True)


@pytest.mark.parametrize(
    ("title", "error"),
    [("", "Type a title"), ("   ", "Type a title"), ("a\x00b", "NUL"), ("x" * 201, "limited to 200")],
)
def test_a_bad_title_is_a_clear_400_and_changes_nothing(alice: User, title: str, error: str) -> None:
    conversation = make_conversation(alice, title="Arithmetic")
    response = _as(alice).post(f"/c/{conversation.pk}/rename/", {"title": title})
    assert response.status_code == 400
    # A NUL is refused by the site's middleware before the view, in its own words.
    body = response.content.decode() if "\x00" in title else response.json()["error"]
    assert error in body
    with pytest.raises(listing.ListingError, match=error):
        listing.rename_conversation(user=alice, conversation_id=conversation.pk, title=title)
    conversation.refresh_from_db()
    assert conversation.title == "Arithmetic"


def test_a_flag_that_is_not_true_or_false_is_a_400(alice: User) -> None:
    conversation = make_conversation(alice)
    response = _as(alice).post(f"/c/{conversation.pk}/pin/", {"pinned": "yes"})
    assert response.status_code == 400
    assert "pinned=true" in response.json()["error"]
    conversation.refresh_from_db()
    assert conversation.pinned_at is None


def test_pinned_conversations_come_first_and_archived_ones_only_in_the_archived_view(
    alice: User,
) -> None:
    old, middle, new = (make_conversation(alice, title=t) for t in ("old", "middle", "new"))
    client = _as(alice)
    assert client.post(f"/c/{old.pk}/pin/", {"pinned": "true"}).json()["pinned"] is True
    assert client.post(f"/c/{middle.pk}/archive/", {"archived": "true"}).json()["archived"] is True
    items = client.get("/conversations/").json()["items"]
    assert [(i["id"], i["group"]) for i in items] == [(old.pk, "Pinned"), (new.pk, "Today")]
    archived = client.get("/conversations/?archived=1").json()["items"]
    assert [i["id"] for i in archived] == [middle.pk]
    client.post(f"/c/{middle.pk}/archive/", {"archived": "false"})
    client.post(f"/c/{old.pk}/pin/", {"pinned": "false"})
    assert client.get("/conversations/?archived=1").json()["items"] == []
    assert {i["id"] for i in client.get("/conversations/").json()["items"]} == {old.pk, middle.pk, new.pk}


def test_groups_follow_the_orgs_time_zone(alice: User, org_a: Organization) -> None:
    org_a.time_zone = "Pacific/Kiritimati"  # UTC+14: late yesterday in UTC is today there
    org_a.save(update_fields=["time_zone"])
    now = timezone.now()
    tz = dt.timezone(dt.timedelta(hours=14))
    local_midnight = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    ages = {"today": local_midnight + dt.timedelta(minutes=1),
            "yesterday": local_midnight - dt.timedelta(minutes=1),
            "two weeks": now - dt.timedelta(days=14), "two months": now - dt.timedelta(days=60)}
    for title, when in ages.items():
        Conversation.objects.filter(pk=make_conversation(alice, title=title).pk).update(updated_at=when)
    items = _as(alice).get("/conversations/").json()["items"]
    assert [(i["title"], i["group"]) for i in items] == [
        ("today", "Today"), ("yesterday", "Previous 7 days"),
        ("two weeks", "Previous 30 days"), ("two months", "Older"),
    ]


def test_a_bad_cursor_is_a_clear_400(alice: User) -> None:
    for cursor in ("nonsense", "2026-01-01T00:00:00_x", "2026-01-01T00:00:00_5", "9" * 100):
        response = _as(alice).get("/conversations/", {"cursor": cursor})
        assert response.status_code == 400, cursor
        assert "Reload the page" in response.json()["error"]


# --- 5,000 conversations: keyset pages in a constant number of queries ----------------------


def test_five_thousand_conversations_page_through_in_constant_queries(
    alice: User, org_a: Organization, o3_mini: Any
) -> None:
    now = timezone.now()
    Conversation.objects.bulk_create(
        Conversation(organization=org_a, user=alice, profile=o3_mini, title=f"c{n}",
                     updated_at=now - dt.timedelta(minutes=n // 3))  # ties on updated_at too
        for n in range(5000)
    )
    Conversation.objects.filter(title__in=["c10", "c4000"]).update(pinned_at=now)
    client = _as(alice)
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    query_counts = []
    while True:
        with CaptureQueriesContext(connection) as queries:
            body = client.get("/conversations/", {"cursor": cursor} if cursor else {}).json()
        query_counts.append(len(queries))
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5000
    assert pages == 100  # 50 a page; the 2 pinned ride on the first
    # Session + user + membership + (pinned on the first page) + the page itself.
    assert max(query_counts) == query_counts[0] and len(set(query_counts[1:])) == 1
    assert max(query_counts) <= 6


def test_the_chat_page_lists_the_first_page_in_a_constant_number_of_queries(
    alice: User, org_a: Organization, o3_mini: Any
) -> None:
    client = _as(alice)
    make_conversation(alice)
    with CaptureQueriesContext(connection) as few:
        assert client.get("/").status_code == 200
    Conversation.objects.bulk_create(
        Conversation(organization=org_a, user=alice, profile=o3_mini, title=f"c{n}") for n in range(500)
    )
    with CaptureQueriesContext(connection) as many:
        body = client.get("/").content.decode()
    assert len(many) == len(few)
    assert body.count('"group": "Today"') == listing.PAGE_SIZE


# --- Delete -----------------------------------------------------------------------------


def test_delete_erases_the_text_revokes_share_links_and_keeps_the_usage(alice: User) -> None:
    conversation = make_conversation(alice, (("secret question", "secret answer"),), title="Secret")
    Message.objects.filter(conversation=conversation, role="assistant").update(
        cost_usd=Decimal("0.012345"), completion_tokens=77
    )
    link = create_link(user=alice, conversation_id=conversation.pk, visibility="org",
                       expires_at=None).link
    response = _as(alice).post(f"/c/{conversation.pk}/delete/")
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.deleted_at is not None and conversation.title == ""
    assert set(conversation.messages.values_list("content", flat=True)) == {""}
    answer = conversation.messages.get(role="assistant")
    assert (answer.cost_usd, answer.completion_tokens) == (Decimal("0.012345"), 77)
    link = ShareLink.objects.get(pk=link.pk)
    assert link.revoked_at is not None and link.title == ""
    assert not SharedMessage.objects.filter(link=link).exists()
    client = _as(alice)
    assert client.get(f"/c/{conversation.pk}/").status_code == 404
    assert client.post(f"/c/{conversation.pk}/delete/").status_code == 404
    assert conversation.pk not in [i["id"] for i in client.get("/conversations/").json()["items"]]


def _period(alice: User) -> UsagePeriod:
    return UsagePeriod.objects.get(user=alice)


def test_deleting_a_pending_answer_cancels_it_and_releases_its_whole_reservation(
    alice: User, emulator: Any
) -> None:
    turn = start_turn(user=alice, organization_id=None, conversation_id=None,
                      content="Think hard", reasoning_effort="high")
    held = Reservation.objects.get(message=turn.assistant_message).amount_usd
    assert held > 0 and _period(alice).reserved_usd == held
    listing.delete_conversation(user=alice, conversation_id=turn.conversation.pk)
    answer = Message.objects.get(pk=turn.assistant_message.pk)
    assert (answer.status, answer.cost_usd) == (Message.Status.CANCELLED, Decimal(0))
    reservation = Reservation.objects.get(message=answer)
    assert reservation.settled_at is not None and reservation.charged_usd == Decimal(0)
    period = _period(alice)
    assert (period.reserved_usd, period.spent_usd) == (Decimal(0), Decimal(0))


def test_deleting_a_streaming_answer_settles_it_once_to_the_micro_dollar(
    alice: User, emulator: Any
) -> None:
    turn = start_turn(user=alice, organization_id=None, conversation_id=None,
                      content="Write an essay", reasoning_effort="low")
    message = claim(turn.assistant_message.pk)  # what the worker does first
    assert message is not None
    worker = Relay(AnswerDraft(message.pk))
    worker.add_text("The first words of a long essay")
    engine.run_here(lambda runtime: worker.checkpoint(runtime.db, 0.0))
    listing.delete_conversation(user=alice, conversation_id=turn.conversation.pk)

    answer = Message.objects.get(pk=message.pk)
    assert answer.status == Message.Status.CANCELLED and answer.usage_estimated
    assert answer.cost_usd > 0 and answer.content == ""
    reservation = Reservation.objects.get(message=answer)
    assert reservation.charged_usd == answer.cost_usd
    period = _period(alice)
    assert period.reserved_usd == Decimal(0)
    assert period.spent_usd == answer.cost_usd
    # The worker's next checkpoint finds the answer ended and gives up: nothing is
    # written or charged a second time.
    with pytest.raises(Abandoned):
        worker.add_text(" and more")
        engine.run_here(lambda runtime: worker.checkpoint(runtime.db, 1.0))
    assert _period(alice).spent_usd == answer.cost_usd
    assert Message.objects.get(pk=message.pk).content == ""
