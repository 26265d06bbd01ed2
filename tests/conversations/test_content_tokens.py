"""A message's tokens are counted once, when its text is final (Message.content_tokens):
a turn's prompt estimate (web) and context cut (worker) add up the stored counts instead of
tokenizing the whole conversation on every turn, and come to the same numbers as
tokenizing it would. Rows without a count (from before the column, a live answer) are
tokenized as before."""

from __future__ import annotations

from typing import Any

import pytest

from answers import prompts
from answers.engine import run_generation
from answers.prompts import build_prompt, message_tokens
from answers.replies import start_turn
from billing.models import Reservation
from conversations.models import Message
from llm import tokens

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def offline_demo_provider(settings: Any, emulator: Any) -> None:
    settings.OPENAI_API_KEY = ""


def turn(user: Any, content: str, conversation: int | None = None) -> Message:
    started = start_turn(user=user, organization_id=None, conversation_id=conversation,
                         content=content, reasoning_effort="low")
    run_generation(started.assistant_message.pk)
    return Message.objects.get(pk=started.assistant_message.pk)


def conversation_of(user: Any, questions: list[str]) -> Message:
    """A conversation of finished turns; returns its last answer."""
    last = turn(user, questions[0])
    for question in questions[1:]:
        last = turn(user, question, last.conversation_id)
    return last


QUESTIONS = ["What is a monad?", "And a functor?", "Give an example in Python.",
             "How does that compare to Haskell?"]


def twin_conversations(user: Any) -> tuple[Message, Message]:
    """Two conversations of the same turns, the second's counts cleared, as rows from
    before the column (or imported ones) are; returns their last answers."""
    counted, uncounted = conversation_of(user, QUESTIONS), conversation_of(user, QUESTIONS)
    Message.objects.filter(conversation_id=uncounted.conversation_id).update(content_tokens=None)
    return counted, uncounted


def test_a_question_and_its_finished_answer_store_their_counts(alice: Any, o3_mini: Any) -> None:
    answer = turn(alice, "Explain Euler's identity in two sentences")
    assert answer.parent is not None
    question = answer.parent

    assert answer.status == Message.Status.DONE and answer.content
    assert answer.content_tokens == message_tokens({"content": answer.content})
    assert question.content_tokens == message_tokens({"content": question.content})


def test_a_follow_up_tokenizes_none_of_the_earlier_messages(
    alice: Any, o3_mini: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = conversation_of(alice, QUESTIONS)
    earlier = set(Message.objects.filter(conversation_id=last.conversation_id)
                  .values_list("content", flat=True))
    tokenized: list[str] = []
    count = prompts.count_tokens

    def counting(text: str) -> int:
        tokenized.append(text)
        return count(text)

    monkeypatch.setattr(prompts, "count_tokens", counting)
    monkeypatch.setattr(tokens, "count_tokens", counting)  # message_tokens counts there
    started = start_turn(user=alice, organization_id=None, conversation_id=last.conversation_id,
                         content="One more question", reasoning_effort="low")
    at_start = list(tokenized)
    build_prompt(started.assistant_message, profile=o3_mini, org_message="", custom="")

    assert "One more question" in at_start
    # Neither the web's estimate nor the worker's context cut read an earlier text again.
    assert not earlier & set(tokenized), sorted(earlier & set(tokenized))[:3]


def test_stored_counts_give_the_same_estimate_and_prompt_as_tokenizing(
    alice: Any, o3_mini: Any
) -> None:
    counted, uncounted = twin_conversations(alice)

    answers = []
    for last in (counted, uncounted):
        started = start_turn(user=alice, organization_id=None,
                             conversation_id=last.conversation_id,
                             content="Summarise all of that", reasoning_effort="low")
        answers.append(started.assistant_message)
    estimates = [Reservation.objects.get(message=a).prompt_tokens_estimate for a in answers]
    built = [build_prompt(a, profile=o3_mini, org_message="", custom="") for a in answers]

    assert estimates[0] == estimates[1] > 0
    assert built[0].prompt_tokens == built[1].prompt_tokens
    assert built[0].messages == built[1].messages
    assert built[0].left_out == built[1].left_out == 0


def test_the_context_cut_from_stored_counts_leaves_out_the_same_turns(
    alice: Any, o3_mini: Any
) -> None:
    counted, uncounted = twin_conversations(alice)
    # A window whose room for the prompt holds the newest turns, not all of them.
    whole = build_prompt(counted, profile=o3_mini, org_message="", custom="").prompt_tokens
    assert counted.max_completion_tokens is not None
    o3_mini.context_window = (counted.max_completion_tokens + prompts.SAFETY_MARGIN
                              + prompts.PRIMING_TOKENS + whole // 2)

    cut = [build_prompt(last, profile=o3_mini, org_message="", custom="")
           for last in (counted, uncounted)]

    assert 0 < cut[0].left_out == cut[1].left_out < len(QUESTIONS)
    assert cut[0].messages == cut[1].messages
    assert cut[0].prompt_tokens == cut[1].prompt_tokens


def test_erasing_a_conversation_forgets_its_counts(alice: Any, o3_mini: Any) -> None:
    from django.db import transaction
    from django.utils import timezone

    from conversations.listing import erase_conversations

    last = turn(alice, "Something to forget")
    with transaction.atomic():
        erase_conversations([last.conversation_id], now=timezone.now())

    rows = Message.objects.filter(conversation_id=last.conversation_id)
    assert list(rows.values_list("content", "content_tokens")) == [("", None), ("", None)]
