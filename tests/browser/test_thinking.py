"""The "Thinking" section: a Responses model's reasoning summary fills it while the model
reasons (the timer still counting), and it folds away once the answer is written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Watch, sign_up
from tests.browser.test_chat import nth_answer, send
from tests.browser.test_model_setup import responses_profile

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

SUMMARY = (
    "**Recalling scattering.** Sunlight meets air molecules much smaller than its "
    "wavelengths. **Comparing colours.** Shorter wavelengths scatter far more strongly. "
    "**Concluding.** So blue light reaches the eye from every direction."
)

# Records, for every change of the Thinking section's text, how it looked at that moment.
OBSERVE = """() => {
  window.thinkingSnapshots = [];
  const seen = new WeakSet();
  const watch = () => {
    for (const box of document.querySelectorAll('[data-testid="reasoning"]')) {
      if (seen.has(box)) continue;
      seen.add(box);
      const article = box.closest('[data-testid="assistant-message"]');
      new MutationObserver(() => {
        window.thinkingSnapshots.push({
          text: box.querySelector('.reasoning-body').textContent,
          open: box.open,
          timer: !article.querySelector('[data-testid="thinking"]').hidden,
          answer: article.querySelector('[data-testid="message-body"]').textContent,
        });
      }).observe(box.querySelector('.reasoning-body'), {childList: true, subtree: true, characterData: true});
    }
  };
  new MutationObserver(watch).observe(document.body, {childList: true, subtree: true});
}"""


def test_the_thinking_section_fills_while_the_model_reasons_and_folds_when_it_answers(
    page: Any, settings: Any, emulator: Any, watch: Watch
) -> None:
    settings.OPENAI_API_KEY = ""
    responses_profile()
    # Paced, so the summary arrives in many deltas before the first answer token.
    emulator.config.tokens_per_second = 40
    emulator.push({"reasoning_summary": SUMMARY, "reply": "Blue light scatters most."})
    sign_up(page, organization="Thinking Team")
    page.get_by_label("Model").select_option(label="o3-mini (Responses)")
    page.evaluate(OBSERVE)

    send(page, "Why is the sky blue?")

    answer = nth_answer(page, 1)
    thinking = answer.get_by_role("group").filter(has_text="Thinking")
    expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
    snapshots = page.evaluate("window.thinkingSnapshots")
    filling = [s for s in snapshots if s["answer"] == ""]
    # It filled in several steps, open and with the timer on. (Lengths need not grow at
    # every step: "**Recall" shows its asterisks until the bold closes.)
    texts = [s["text"] for s in filling]
    assert len(set(texts)) >= 3, snapshots
    assert len(texts[0]) < len(texts[-1])
    assert all(s["open"] and s["timer"] for s in filling), filling
    assert "Concluding." in filling[-1]["text"]
    # Once answered it is folded, complete, and the timer became "Thought for …".
    expect(answer.get_by_test_id("message-body")).to_contain_text("Blue light scatters most.")
    expect(thinking).not_to_have_attribute("open", "")
    expect(answer.get_by_text("Thought for", exact=False)).to_be_visible()
    expect(answer.get_by_text("Comparing colours.")).to_be_hidden()

    answer.get_by_text("Thinking", exact=True).click()

    expect(answer.get_by_text("Comparing colours.")).to_be_visible()
    expect(thinking).to_have_attribute("open", "")


def test_a_section_the_person_opened_stays_open_when_the_answer_starts(
    page: Any, settings: Any, emulator: Any, watch: Watch
) -> None:
    settings.OPENAI_API_KEY = ""
    responses_profile()
    emulator.config.tokens_per_second = 20
    emulator.push({"reasoning_summary": SUMMARY, "reply": "Blue light scatters most."})
    sign_up(page, organization="Thinking Team")
    page.get_by_label("Model").select_option(label="o3-mini (Responses)")

    send(page, "Why is the sky blue?")
    answer = nth_answer(page, 1)
    expect(answer.get_by_test_id("reasoning")).to_contain_text("Recalling", timeout=30_000)
    # Folded by hand while thinking, then opened again: the person's choice now holds.
    answer.get_by_text("Thinking", exact=True).click()
    answer.get_by_text("Thinking", exact=True).click()

    expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
    expect(answer.get_by_text("Comparing colours.")).to_be_visible()


# Records each distinct text of the first answer's thinking timer while no answer text shows.
TIMER = """() => {
  window.timerTexts = [];
  new MutationObserver(() => {
    const answer = document.querySelector('[data-testid="assistant-message"]');
    if (!answer) return;
    const timer = answer.querySelector('[data-testid="thinking"]');
    const body = answer.querySelector('[data-testid="message-body"]');
    if (timer.hidden || (body && body.textContent)) return;
    const text = timer.querySelector('.thinking-label').textContent;
    if (window.timerTexts.at(-1) !== text) window.timerTexts.push(text);
  }).observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true});
}"""


def test_the_timer_keeps_counting_while_the_model_reasons_silently_and_the_answer_then_arrives(
    page: Any, settings: Any, emulator: Any, watch: Watch
) -> None:
    """A Responses stream sends ``response.created`` at once and then nothing while the
    model reasons: six silent seconds, longer than the idle timeout, are not a stall."""
    settings.OPENAI_API_KEY = ""
    settings.STREAM_IDLE_TIMEOUT = 2
    responses_profile()
    emulator.push({"think_ms": 6000, "reasoning_summary": SUMMARY,
                   "reply": "Blue light scatters most."})
    sign_up(page, organization="Thinking Team")
    page.get_by_label("Model").select_option(label="o3-mini (Responses)")
    page.evaluate(TIMER)

    send(page, "Why is the sky blue?")

    answer = nth_answer(page, 1)
    expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
    expect(answer.get_by_test_id("message-body")).to_contain_text("Blue light scatters most.")
    expect(answer.get_by_text("Thought for", exact=False)).to_be_visible()
    texts = page.evaluate("window.timerTexts")
    seconds = [int(text.removeprefix("Thinking… ").removesuffix(" s")) for text in texts]
    # It counted up second by second through the silence, to at least the 6 s pause.
    assert seconds == sorted(seconds) and len(seconds) >= 5, texts
    assert seconds[-1] >= 5, texts
    answer.get_by_text("Thinking", exact=True).click()
    expect(answer.get_by_text("Comparing colours.")).to_be_visible()
