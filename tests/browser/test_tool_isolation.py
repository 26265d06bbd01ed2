"""One person's hostile tool call does not freeze anyone else's answer.

Full topology: uvicorn, a real Celery worker (threads pool) on Redis, PostgreSQL and the
emulator, with two Chromium tabs. Tab A streams a long answer; while it streams, tab B
asks for ``((9**1000)**1000)**1000``, which the model hands to the calculator in the
same worker process. Unbounded, that power holds the GIL for hours and tab A's stream
stops dead; bounded, the calculator refuses at once and tab A never notices.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import sign_up

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ANSWER_TIMEOUT_MS = 30_000
TOWER = "((9**1000)**1000)**1000"
# The bug held the GIL for hours; frames arrive every ~25-50 ms. One second between two
# frames of a healthy stream is far outside normal jitter even on a busy 2-core machine.
MAX_GAP_SECONDS = 1.0
LONG_REPLY = {"match": "long story", "reply_tokens": 240, "tokens_per_second": 40}

# Every frame a tab receives, stamped with the wall clock (shared by both tabs, unlike
# performance.now()), recorded by the page itself so the stamps do not depend on when
# Playwright's event loop gets to run in this test thread.
RECORD_FRAMES = """
(() => {
  window.__frames = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch (error) { return; }
        window.__frames.push({ at: Date.now(), frame });
      });
    }
  };
})();
"""


def send(page: Any, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def frames(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("() => window.__frames")


def created_message(page: Any) -> int:
    page.wait_for_function(
        "() => window.__frames.some(f => f.frame.type === 'message.created')"
    )
    [created] = [f["frame"] for f in frames(page) if f["frame"]["type"] == "message.created"]
    return int(created["assistant_message"])


def answer_of(page: Any, message_id: int) -> Any:
    return page.locator(f'[data-testid="assistant-message"][data-message-id="{message_id}"]')


def test_a_huge_calculation_in_one_tab_leaves_another_tabs_stream_without_a_gap(
    page: Any, emulator: Any
) -> None:
    tab_a = page
    tab_a.add_init_script(RECORD_FRAMES)
    sign_up(tab_a)
    tab_b = tab_a.context.new_page()
    tab_b.add_init_script(RECORD_FRAMES)
    tab_b.goto("/")
    expect(tab_b.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    emulator.push(LONG_REPLY)

    send(tab_a, "Tell me a long story")
    story = created_message(tab_a)
    tab_a.wait_for_function(
        "id => window.__frames.some(f => f.frame.type === 'delta' && f.frame.message === id)",
        arg=story,
    )
    send(tab_b, f"calculate {TOWER}")
    calculation = created_message(tab_b)

    expect(answer_of(tab_b, calculation)).to_have_attribute(
        "data-status", "done", timeout=ANSWER_TIMEOUT_MS
    )
    expect(answer_of(tab_a, story)).to_have_attribute(
        "data-status", "done", timeout=ANSWER_TIMEOUT_MS
    )

    # The calculator refused, and the model was told why, in words it can pass on.
    [tool] = [f for f in frames(tab_b)
              if f["frame"]["type"] == "tool" and f["frame"]["message"] == calculation]
    assert tool["frame"]["name"] == "calculate" and tool["frame"]["ok"] is False
    assert "10,000 bits" in tool["frame"]["result"]["error"]
    # Streamed answer calls only: each new conversation's title is a separate call.
    calls = [c for c in emulator.requests_to("/chat/completions") if c["body"].get("stream")]
    [follow_up] = [c for c in calls if c["body"]["messages"][-1]["role"] == "tool"]
    assert "10,000 bits" in json.loads(follow_up["body"]["messages"][-1]["content"])["error"]
    assert len(calls) == 3  # the story, the calculation, the calculation's follow-up

    # The story streamed on, whole and in order, across the moment the tool ran.
    deltas = [f for f in frames(tab_a)
              if f["frame"]["type"] == "delta" and f["frame"]["message"] == story]
    assert [d["frame"]["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert len(deltas) >= 10
    assert deltas[0]["at"] < tool["at"] < deltas[-1]["at"], "the tool ran outside the stream"
    gaps = [(later["at"] - earlier["at"]) / 1000 for earlier, later in zip(deltas, deltas[1:],
                                                                          strict=False)]
    assert max(gaps) < MAX_GAP_SECONDS, f"a {max(gaps):.2f} s gap in the other answer"
