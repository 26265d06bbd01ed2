"""An answer in progress, as one typed record: everything its generation learned so far.

``answers.generation`` builds it as the provider's stream arrives, ``answers.relay``
publishes it (coalesced delta frames to tabs, checkpoints to Postgres) and
``answers.lifecycle.finish`` settles it: the saved Message fields, the final frame and
the charge all come from the one draft.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm.pricing import add_usage, estimate_usage
from llm.types import ToolCallDelta, Usage


@dataclass
class Attempt:
    """One upstream request (a round or a retry of one): what bounds its estimate when
    the provider never reports its usage."""

    prompt_tokens: int
    completion_cap: int
    # Where the draft's text and refusal stood when it was sent: the attempt wrote what
    # follows, up to where the next attempt starts.
    text_from: int = 0
    refusal_from: int = 0
    unreported: bool = False  # it made the model work, and no usage came


@dataclass
class AnswerDraft:
    message_id: int
    reasoning_effort: str = ""  # what an unreported attempt's estimate assumes

    # What the model wrote, as tabs were shown it.
    text_parts: list[str] = field(default_factory=list)
    refusal_parts: list[str] = field(default_factory=list)
    summary_parts: list[str] = field(default_factory=list)
    seq: int = 0  # the last delta frame's sequence number
    # The tools the answer ran: name, arguments, result, ok.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # The reasoning behind the last finished round's output (Responses API, encrypted):
    # sent back before its tool calls, and kept with the answer for later turns.
    reasoning_items: list[dict[str, Any]] = field(default_factory=list)
    history_left_out: int = 0  # older turns the prompt left out to fit the context window

    # The upstream stream being read: what it said so far (a new attempt, or a followed
    # background response, starts these afresh).
    calls: dict[int, dict[str, str]] = field(default_factory=dict)  # by the provider's index
    round_reasoning: list[dict[str, Any]] = field(default_factory=list)
    round_usage: Usage | None = None
    round_tier: str = ""

    # What the turn costs: the usage every request reported, and each attempt, whose
    # unreported ones are estimated (``billable_usage``).
    prompt_tokens: int = 0  # of the request about to be sent
    usage: Usage | None = None
    attempts: list[Attempt] = field(default_factory=list)
    tiers: set[str] = field(default_factory=set)  # the service tier of each finished round

    # The provider's side: the background response a successor could resume ("": none),
    # and every background response it stores for this answer (deleted at the end).
    response_id: str = ""
    stored_responses: list[str] = field(default_factory=list)

    # How it ended ("" while it streams); finish_reason is the stream's until then.
    status: str = ""
    finish_reason: str = ""
    error_code: str = ""
    error_detail: str = ""
    notice: str = ""  # said under a finished answer (a cap reached, tools off, …)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def refusal(self) -> str:
        return "".join(self.refusal_parts)

    @property
    def reasoning_summary(self) -> str:
        return "".join(self.summary_parts)

    @property
    def service_tier(self) -> str:
        """The turn is billed at a tier's prices only when every round reported that tier;
        mixed or unreported tiers bill at the standard prices, which the reservation covers."""
        return next(iter(self.tiers)) if len(self.tiers) == 1 else ""

    @property
    def detail(self) -> str:
        """What the saved answer says under it: the error, else the notice."""
        return self.error_detail or self.notice

    # --- Reading a stream ----------------------------------------------------------------

    def begin_attempt(self, completion_cap: int, *, resumed: bool) -> None:
        """Note an upstream attempt's prompt, cap and where its text starts: one the
        provider reports no usage for is estimated from these, so the estimate stays
        within the worst case reserved for that attempt. A resumed stream's usage covers
        the text before the resume too."""
        start = (0, 0) if resumed else (len(self.text), len(self.refusal))
        self.attempts.append(Attempt(self.prompt_tokens, completion_cap, *start))

    def begin_read(self) -> None:
        """A stream is about to be read (an attempt's, or a followed one's): what an
        earlier stream of the round said does not carry over."""
        self.calls = {}
        self.round_reasoning = []
        self.round_usage = None
        self.round_tier = ""
        self.finish_reason = ""

    def add_call(self, event: ToolCallDelta) -> None:
        call = self.calls.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
        call["id"] = event.id or call["id"]
        call["name"] = event.name or call["name"]
        call["arguments"] += event.arguments

    def ordered_calls(self) -> list[dict[str, str]]:
        return [self.calls[index] for index in sorted(self.calls)]

    def note_stored(self, response_id: str) -> None:
        """Remember a background response the provider stores, to delete it at the end."""
        if response_id not in self.stored_responses:
            self.stored_responses.append(response_id)

    def count_attempt(self, *, unreported: bool) -> None:
        """Add the attempt's reported usage to the turn; flag an estimate when the attempt
        made the model work (``unreported``) but the provider never said what it cost."""
        if self.round_usage is not None:
            self.usage = add_usage(self.usage, self.round_usage)
        elif unreported and self.attempts:
            self.attempts[-1].unreported = True

    def end_round(self) -> None:
        """The round's stream ended well: its tier counts, and its reasoning is the
        answer's."""
        self.tiers.add(self.round_tier)
        self.reasoning_items = self.round_reasoning

    # --- Its end -------------------------------------------------------------------------

    def end(self, status: str, *, finish_reason: str, error_code: str = "",
            error_detail: str = "", notice: str = "") -> None:
        self.status = status
        self.finish_reason = finish_reason
        self.error_code = error_code
        self.error_detail = error_detail
        self.notice = notice

    def billable_usage(self) -> tuple[Usage, bool]:
        """What the turn is billed for, and whether that is an estimate.

        Reported usage (of every round and every failed attempt) is billed as reported.
        An attempt that made the model work without a usage chunk (stopped, dropped
        mid-answer) adds a flagged estimate of its own prompt, cap and the text it wrote.
        A failure with nothing reported costs nothing: a request the provider rejected
        (404, 401, quota, context too long, prompt filter, 5xx after retries, a
        configuration error before any call) is not billed as if the model reasoned.
        """
        unreported = [index for index, attempt in enumerate(self.attempts) if attempt.unreported]
        if not unreported:
            return self.usage or Usage(), False
        text, refusal = self.text, self.refusal
        # Each attempt's text ends where the next one's begins.
        ends = [(a.text_from, a.refusal_from) for a in self.attempts[1:]]
        ends.append((len(text), len(refusal)))
        usage = self.usage
        for index in unreported:
            attempt = self.attempts[index]
            text_to, refusal_to = ends[index]
            usage = add_usage(usage, estimate_usage(
                effort=self.reasoning_effort, completion_cap=attempt.completion_cap,
                prompt_tokens=attempt.prompt_tokens,
                visible_text=text[attempt.text_from:text_to]
                + refusal[attempt.refusal_from:refusal_to],
            ))
        return usage or Usage(), True
