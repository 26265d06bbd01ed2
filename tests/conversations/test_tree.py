"""Messages form a tree: edit & branch, regenerate, switching versions, and everything that
must follow the branch on screen (history sent to the model, the page, share snapshots)."""

from __future__ import annotations

import importlib
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Membership, Organization, User
from answers.branching import regenerate_answer
from answers.prompts import build_prompt
from answers.replies import Turn, start_turn
from billing.models import Reservation
from chatsite.errors import NotFound, Refused
from conversations.models import Conversation, Message
from conversations.transcript import transcript
from conversations.tree import branch, select_branch, siblings
from sharing.links import create_link, fork_snapshot, get_shared_snapshot

pytestmark = pytest.mark.django_db

tree_migration = importlib.import_module("conversations.migrations.0005_message_tree")


def ask(user: User, text: str, conversation: int | None = None, **kwargs: Any) -> Turn:
    return start_turn(user=user, organization_id=None, conversation_id=conversation,
                      content=text, reasoning_effort="low", **kwargs)


def finish(message: Message, text: str) -> Message:
    """What a worker would leave behind (these tests run no worker)."""
    Message.objects.filter(pk=message.pk).update(status=Message.Status.DONE, content=text)
    message.refresh_from_db()
    return message


def answered(user: User, text: str, conversation: int | None = None, **kwargs: Any) -> Turn:
    turn = ask(user, text, conversation, **kwargs)
    finish(turn.assistant_message, f"answer to {text}")
    return turn


def contents(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


def fresh(conversation: Conversation) -> Conversation:
    return Conversation.objects.get(pk=conversation.pk)


@pytest.fixture
def two_turns(alice: User) -> tuple[Turn, Turn]:
    first = answered(alice, "q1")
    second = answered(alice, "q2", first.conversation.pk)
    return first, second


# --- The shape of the tree -------------------------------------------------------------------


def test_a_send_follows_the_branch_on_screen(two_turns: tuple[Turn, Turn]) -> None:
    first, second = two_turns
    assert first.user_message.parent_id is None
    assert first.assistant_message.parent_id == first.user_message.pk
    assert second.user_message.parent_id == first.assistant_message.pk
    assert second.assistant_message.parent_id == second.user_message.pk
    conversation = fresh(first.conversation)
    assert conversation.current_leaf_id == second.assistant_message.pk
    assert contents(branch(conversation)) == ["q1", "answer to q1", "q2", "answer to q2"]


def test_editing_a_question_adds_a_sibling_and_keeps_the_old_branch(
    alice: User, two_turns: tuple[Turn, Turn]
) -> None:
    first, second = two_turns
    edited = answered(alice, "q2 edited", first.conversation.pk, parent_id=first.assistant_message.pk)

    assert edited.user_message.parent_id == first.assistant_message.pk
    assert edited.assistant_message.parent_id == edited.user_message.pk
    conversation = fresh(first.conversation)
    assert contents(branch(conversation)) == ["q1", "answer to q1", "q2 edited", "answer to q2 edited"]
    assert [m.pk for m in siblings(edited.user_message)] == [second.user_message.pk, edited.user_message.pk]
    # The old branch is intact, one click away.
    assert Message.objects.filter(pk__in=[second.user_message.pk, second.assistant_message.pk]).count() == 2
    assert Message.objects.get(pk=second.assistant_message.pk).parent_id == second.user_message.pk


def test_editing_the_first_question_starts_a_second_root(alice: User, two_turns: tuple[Turn, Turn]) -> None:
    first, _ = two_turns
    edited = answered(alice, "q1 edited", first.conversation.pk, parent_id=None)

    assert edited.user_message.parent_id is None
    assert contents(branch(fresh(first.conversation))) == ["q1 edited", "answer to q1 edited"]
    assert [m.pk for m in siblings(first.user_message)] == [first.user_message.pk, edited.user_message.pk]


def test_regenerate_adds_a_sibling_answer_under_the_same_question_and_reserves_it(
    alice: User, two_turns: tuple[Turn, Turn]
) -> None:
    _, second = two_turns
    questions = Message.objects.filter(role=Message.Role.USER).count()

    again = regenerate_answer(user=alice, message_id=second.assistant_message.pk, reasoning_effort="high")

    assert again.user_message.pk == second.user_message.pk
    assert Message.objects.filter(role=Message.Role.USER).count() == questions  # no new question
    answer = again.assistant_message
    assert answer.parent_id == second.user_message.pk
    assert answer.status == Message.Status.PENDING and answer.reasoning_effort == "high"
    assert Reservation.objects.filter(message=answer, settled_at=None).exists()
    assert [m.pk for m in siblings(answer)] == [second.assistant_message.pk, answer.pk]
    assert fresh(second.conversation).current_leaf_id == answer.pk


def test_regenerate_is_refused_over_the_budget_and_saves_nothing(
    alice: User, org_a: Organization, two_turns: tuple[Turn, Turn]
) -> None:
    _, second = two_turns
    Membership.objects.filter(user=alice).update(monthly_budget_usd=Decimal("0.10"))
    before = Message.objects.count(), Reservation.objects.count()

    with pytest.raises(Refused) as refused:
        regenerate_answer(user=alice, message_id=second.assistant_message.pk, reasoning_effort="low")

    assert refused.value.code == "quota_exceeded"
    assert (Message.objects.count(), Reservation.objects.count()) == before
    assert fresh(second.conversation).current_leaf_id == second.assistant_message.pk


def test_regenerate_and_edit_are_refused_while_an_answer_is_live(alice: User) -> None:
    first = answered(alice, "q1")
    live = ask(alice, "q2", first.conversation.pk)
    before = Message.objects.count()

    with pytest.raises(Refused) as regenerating:
        regenerate_answer(user=alice, message_id=first.assistant_message.pk, reasoning_effort=None)
    with pytest.raises(Refused) as editing:
        ask(alice, "q1 edited", first.conversation.pk, parent_id=None)
    with pytest.raises(Refused) as selecting:
        select_branch(user=alice, message_id=first.user_message.pk)

    assert {regenerating.value.code, editing.value.code, selecting.value.code} == {"invalid_request"}
    assert Message.objects.count() == before
    assert fresh(first.conversation).current_leaf_id == live.assistant_message.pk


def test_regenerating_a_question_or_a_missing_message_is_not_found(
    alice: User, two_turns: tuple[Turn, Turn]
) -> None:
    _, second = two_turns
    before = Message.objects.count()
    for message_id in (second.user_message.pk, 10**15):
        with pytest.raises(NotFound):
            regenerate_answer(user=alice, message_id=message_id, reasoning_effort=None)
    assert Message.objects.count() == before


def test_a_parent_must_be_an_answer_of_the_same_conversation(
    alice: User, two_turns: tuple[Turn, Turn]
) -> None:
    first, second = two_turns
    elsewhere = answered(alice, "other chat")
    before = Message.objects.count()
    for parent in (second.user_message.pk, elsewhere.assistant_message.pk, 10**15):
        with pytest.raises(NotFound):
            ask(alice, "edited", first.conversation.pk, parent_id=parent)
    with pytest.raises(NotFound):  # a new conversation has nothing to follow
        ask(alice, "edited", None, parent_id=first.assistant_message.pk)
    assert Message.objects.count() == before


# --- Switching versions ---------------------------------------------------------------------


def test_select_branch_shows_the_newest_leaf_under_the_chosen_version(
    alice: User, two_turns: tuple[Turn, Turn]
) -> None:
    first, second = two_turns
    edited = answered(alice, "q2 edited", first.conversation.pk, parent_id=first.assistant_message.pk)

    conversation = select_branch(user=alice, message_id=second.user_message.pk)
    assert conversation.current_leaf_id == second.assistant_message.pk
    assert contents(branch(fresh(conversation))) == ["q1", "answer to q1", "q2", "answer to q2"]

    # From the root, the newest leaf anywhere below wins.
    conversation = select_branch(user=alice, message_id=first.user_message.pk)
    assert fresh(conversation).current_leaf_id == edited.assistant_message.pk


def test_the_transcript_carries_each_messages_versions(alice: User, two_turns: tuple[Turn, Turn]) -> None:
    first, second = two_turns
    edited = answered(alice, "q2 edited", first.conversation.pk, parent_id=first.assistant_message.pk)
    again = regenerate_answer(user=alice, message_id=edited.assistant_message.pk, reasoning_effort=None)

    states = transcript(fresh(first.conversation))

    assert [s["id"] for s in states] == [
        first.user_message.pk, first.assistant_message.pk, edited.user_message.pk, again.assistant_message.pk
    ]
    by_id = {s["id"]: s["versions"] for s in states}
    assert by_id[first.user_message.pk] == {"index": 1, "count": 1, "ids": [first.user_message.pk]}
    assert by_id[edited.user_message.pk] == {
        "index": 2, "count": 2, "ids": [second.user_message.pk, edited.user_message.pk]
    }
    assert by_id[again.assistant_message.pk] == {
        "index": 2, "count": 2, "ids": [edited.assistant_message.pk, again.assistant_message.pk]
    }


def test_the_transcript_takes_the_same_queries_for_3_and_30_turns(alice: User, settings: Any) -> None:
    settings.SENDS_PER_MINUTE = 100
    def queries_for(turns: int) -> int:
        turn = answered(alice, "first")
        for n in range(turns - 1):
            answered(alice, f"next {n}", turn.conversation.pk)
        conversation = fresh(turn.conversation)
        with CaptureQueriesContext(connection) as captured:
            assert len(transcript(conversation)) == turns * 2
        return len(captured.captured_queries)

    assert queries_for(3) == queries_for(30)


# --- Everything follows the branch on screen --------------------------------------------------


def test_the_history_sent_to_the_model_follows_the_answers_branch(
    alice: User, o3_mini: Any, two_turns: tuple[Turn, Turn]
) -> None:
    first, _ = two_turns
    edited = ask(alice, "q2 edited", first.conversation.pk, parent_id=first.assistant_message.pk)

    prompt = build_prompt(edited.assistant_message, profile=o3_mini, org_message="", custom="")

    assert [m["content"] for m in prompt.messages[1:]] == ["q1", "answer to q1", "q2 edited"]


def test_a_regenerated_answer_is_asked_without_its_old_version(
    alice: User, o3_mini: Any, two_turns: tuple[Turn, Turn]
) -> None:
    _, second = two_turns
    again = regenerate_answer(user=alice, message_id=second.assistant_message.pk, reasoning_effort=None)

    prompt = build_prompt(again.assistant_message, profile=o3_mini, org_message="", custom="")

    assert [m["content"] for m in prompt.messages[1:]] == ["q1", "answer to q1", "q2"]


def test_a_share_snapshot_copies_the_branch_on_screen(
    alice: User, org_a: Organization, two_turns: tuple[Turn, Turn]
) -> None:
    first, second = two_turns
    answered(alice, "q2 edited", first.conversation.pk, parent_id=first.assistant_message.pk)
    select_branch(user=alice, message_id=second.user_message.pk)

    issued = create_link(user=alice, conversation_id=first.conversation.pk, visibility="org", expires_at=None)

    snapshot = get_shared_snapshot(token=issued.token, viewer=alice)
    assert [m.content for m in snapshot.messages] == ["q1", "answer to q1", "q2", "answer to q2"]
    assert issued.link.snapshot_message_id == second.assistant_message.pk

    # A continued copy is one branch too, ready for the next send.
    copy = fork_snapshot(token=issued.token, viewer=alice, organization_id=org_a.pk)
    assert contents(branch(copy)) == ["q1", "answer to q1", "q2", "answer to q2"]
    nxt = ask(alice, "q3", copy.pk)
    assert nxt.user_message.parent_id == copy.current_leaf_id


def test_the_migration_chains_existing_messages_in_id_order(alice: User, org_a: Organization, o3_mini: Any) -> None:
    conversation = Conversation.objects.create(organization=org_a, user=alice, profile=o3_mini)
    old = [Message.objects.create(conversation=conversation, role=role, content=str(n))
           for n, role in enumerate(["user", "assistant", "user", "assistant"])]
    empty = Conversation.objects.create(organization=org_a, user=alice, profile=o3_mini)

    tree_migration.link_existing_messages(apps, None)

    assert [Message.objects.get(pk=m.pk).parent_id for m in old] == [None] + [m.pk for m in old[:-1]]
    assert fresh(conversation).current_leaf_id == old[-1].pk
    assert fresh(empty).current_leaf_id is None


# --- Nobody else's tree ------------------------------------------------------------------------


@pytest.mark.parametrize("intruder", ["bob", "charlie"])
def test_nobody_else_edits_regenerates_or_selects_in_alices_conversation(
    request: pytest.FixtureRequest, alice: User, two_turns: tuple[Turn, Turn], intruder: str
) -> None:
    other: User = request.getfixturevalue(intruder)
    first, second = two_turns
    own = answered(other, "my own chat")
    before = Message.objects.count(), Reservation.objects.count()

    with pytest.raises(NotFound):
        regenerate_answer(user=other, message_id=second.assistant_message.pk, reasoning_effort=None)
    with pytest.raises(NotFound):
        select_branch(user=other, message_id=second.user_message.pk)
    with pytest.raises(NotFound):
        ask(other, "edit", first.conversation.pk, parent_id=first.assistant_message.pk)
    with pytest.raises(NotFound):  # her answer as the parent in a conversation of his own
        ask(other, "edit", own.conversation.pk, parent_id=first.assistant_message.pk)

    assert (Message.objects.count(), Reservation.objects.count()) == (before[0], before[1])
    assert fresh(first.conversation).current_leaf_id == second.assistant_message.pk


def test_the_chat_page_renders_the_branch_on_screen_in_constant_queries(
    client: Any, alice: User, settings: Any, two_turns: tuple[Turn, Turn]
) -> None:
    import json

    settings.SENDS_PER_MINUTE = 100
    first, second = two_turns
    answered(alice, "q2 edited", first.conversation.pk, parent_id=first.assistant_message.pk)
    select_branch(user=alice, message_id=second.user_message.pk)
    client.force_login(alice)

    def page_state(conversation_id: int) -> tuple[dict[str, Any], int]:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(f"/c/{conversation_id}/")
        assert response.status_code == 200
        html = response.content.decode()
        start = html.index('id="chat-state" type="application/json">') + len('id="chat-state" type="application/json">')
        return json.loads(html[start:html.index("</script>", start)]), len(captured.captured_queries)

    state, _ = page_state(first.conversation.pk)
    assert [m["content"] for m in state["messages"]] == ["q1", "answer to q1", "q2", "answer to q2"]
    assert state["messages"][2]["versions"]["index"] == 1 and state["messages"][2]["versions"]["count"] == 2

    long = answered(alice, "long 0")
    for n in range(1, 25):
        answered(alice, f"long {n}", long.conversation.pk)
    _, short_queries = page_state(first.conversation.pk)
    long_state, long_queries = page_state(long.conversation.pk)
    assert len(long_state["messages"]) == 50
    assert long_queries == short_queries


def test_a_conversation_whose_branch_ends_on_a_question_can_be_continued(alice: User) -> None:
    # An import can end on a question whose answer held only an image.
    first = answered(alice, "q1")
    conversation = first.conversation
    dangling = Message.objects.create(conversation=conversation, role=Message.Role.USER,
                                      content="q2 (its answer was an image)",
                                      status=Message.Status.DONE,
                                      parent=first.assistant_message)
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=dangling)

    turn = ask(alice, "q3", conversation.pk)

    assert turn.user_message.parent_id == dangling.pk
    assert contents(branch(fresh(conversation)))[-2:] == ["q3", ""]
    finish(turn.assistant_message, "answer to q3")
    # An explicit parent (Edit) must still be an answer.
    with pytest.raises(NotFound):
        ask(alice, "q4", conversation.pk, parent_id=dangling.pk)


def test_a_reloaded_answer_is_labelled_like_the_live_one_and_skips_its_reasoning(
    alice: User, two_turns: tuple[Turn, Turn]
) -> None:
    """The page labels an answer with its profile's display name (as the ``message.created``
    frame did), and never loads the encrypted reasoning kept for the model's next turn."""
    first, second = two_turns
    Message.objects.filter(pk=second.assistant_message.pk).update(
        reasoning_items=[{"type": "reasoning", "encrypted_content": "x" * 5000}]
    )
    conversation = fresh(first.conversation)
    with CaptureQueriesContext(connection) as queries:
        states = transcript(conversation)
    assert all("reasoning_items" not in q["sql"] for q in queries.captured_queries)
    answers = [s for s in states if s["role"] == Message.Role.ASSISTANT]
    profile = second.assistant_message.profile
    assert profile is not None
    profile.display_name = "o3-mini (team default)"
    profile.save(update_fields=["display_name"])
    assert [s["model"] for s in transcript(conversation) if s["role"] == "assistant"] == [
        "o3-mini (team default)"] * 2
    assert [s["model"] for s in answers] == ["o3-mini"] * 2
    # The model's own history still carries it (Responses-style models send it back).
    profile.api_style = "responses"
    prompt = build_prompt(ask(alice, "third", conversation.pk).assistant_message,
                          profile=profile, org_message="", custom="")
    assert any(m.get("reasoning_items") for m in prompt.messages)
