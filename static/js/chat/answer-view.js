// Messages in the transcript: a question, and an answer as it streams in (thinking
// timer, reasoning summary, tool calls, text, refusal) and as it ends (usage, cost, the
// error or notice line). The order of an answer's frames is protocol.js's job; a view
// only applies the frames its AnswerStream hands it.

import { renderMarkdown } from "../markdown.js";
import { copyButton } from "../message-copy.js";
import { el, fmt, formatCost, formatElapsed, formatTime, plural } from "../dom.js";
import { AnswerStream, LIVE_STATUSES } from "./protocol.js";

export const ERROR_TITLES = {
  quota_exceeded: "Budget used up",
  rate_limited: "Rate limited",
  too_many_live_answers: "Too many answers at once",
  provider_quota: "Provider quota exhausted",
  model_unavailable: "Model unavailable",
  context_too_long: "Conversation too long",
  content_filtered: "Content filtered",
  upstream_error: "The model service failed",
  interrupted: "Interrupted",
  queue_timeout: "Not started in time",
  busy: "Service busy",
  invalid_request: "Request not accepted",
  forbidden: "Not allowed",
};

const STATUS_LABELS = {
  pending: "",
  streaming: "Writing…",
  done: "",
  cancelled: "Stopped",
  failed: "Failed",
  interrupted: "Interrupted",
};

function stringify(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "string") {
    // Tool arguments arrive as JSON text; show them pretty-printed when they parse.
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

// Add a Copy button to each highlighted code block of a rendered body.
function decorateCodeBlocks(container) {
  for (const header of container.querySelectorAll(".code-block > .code-header")) {
    if (header.querySelector(".copy-code")) continue;
    // Named "Copy code" so it is told apart from the message's own "Copy" button.
    header.append(el("button", { type: "button", class: "copy-code", "aria-label": "Copy code", text: "Copy" }));
  }
}

/** The code blocks' "Copy code" buttons, for every message in `transcript`. */
export function wireCodeCopy(transcript) {
  transcript.addEventListener("click", async (event) => {
    const button = event.target.closest(".copy-code");
    if (!button) return;
    const code = button.closest(".code-block")?.querySelector("code");
    if (!code) return;
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    window.setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  });
}

/** A question's <article>. `chat` gives announce() and the branch controls. */
export function userMessageElement({ id, content, created_at, status, versions }, chat) {
  const body = el("div", { class: "message-body plain-text", "data-testid": "message-body", text: content });
  const header = el(
    "header",
    { class: "message-header" },
    el("span", { class: "message-author", text: "You" }),
    formatTime(created_at),
    copyButton(() => content, chat.announce),
  );
  const article = el(
    "article",
    {
      class: "message message-user",
      "data-role": "user",
      "data-message-id": id,
      "data-status": status || "done",
      "data-testid": "user-message",
      "aria-label": "Your question",
    },
    header,
    body,
  );
  chat.branching.addControls(article, { id, role: "user", versions });
  return article;
}

/**
 * An answer's <article>, registered in `chat.views`. `chat` gives the connection (for its
 * AnswerStream), the render queue, announce(), the branch controls, and
 * onAnswerSettled(view) for when the answer ends.
 */
export class AssistantView {
  constructor(message, chat) {
    this.chat = chat;
    this.id = message.id;
    this.status = message.status || "pending";
    this.text = message.content || "";
    this.refusal = message.refusal || "";
    this.reasoning = message.reasoning_summary || "";
    this.stream = new AnswerStream({
      id: this.id,
      lastSeq: Number(message.seq) || 0,
      live: LIVE_STATUSES.has(this.status),
      connection: chat.connection,
      apply: (frame) => this.applySequenced(frame),
      timers: window,
    });
    const created = Date.parse(message.created_at || "");
    this.startedAt = Number.isFinite(created) ? Math.min(created, Date.now()) : Date.now();
    this.startFromServerClock = Number.isFinite(created);
    this.firstOutputAt = null;
    this.queuedAhead = null; // answers ahead of this one while no worker has it
    this.build(message);
    chat.views.set(this.id, this);
  }

  get lastSeq() {
    return this.stream.lastSeq;
  }

  build(message) {
    this.thinking = el(
      "div",
      { class: "thinking", "data-testid": "thinking", hidden: true },
      el("span", { class: "thinking-dots", "aria-hidden": "true" }, el("span"), el("span"), el("span")),
      el("span", { class: "thinking-label" }),
    );
    this.thinkingLabel = this.thinking.querySelector(".thinking-label");
    this.contextNote = el("p", { class: "context-note", "data-testid": "context-note", hidden: true });
    this.reasoningBox = el(
      "details",
      { class: "reasoning", "data-testid": "reasoning", hidden: true },
      el("summary", { text: "Thinking" }),
      el("div", { class: "reasoning-body", "aria-live": "off" }),
    );
    // Open while the model reasons, folded once the answer starts, unless the person has
    // opened or closed it themselves (their choice wins from then on).
    this.reasoningChosen = false;
    this.reasoningBox.querySelector("summary").addEventListener("click", () => {
      this.reasoningChosen = true;
    });
    this.tools = el("div", { class: "tool-calls", "data-testid": "tool-calls", hidden: true });
    this.body = el("div", { class: "message-body markdown", "data-testid": "message-body" });
    this.refusalBox = el(
      "div",
      { class: "refusal", "data-testid": "refusal", role: "note", hidden: true },
      el("p", { class: "refusal-title", text: "The model declined to answer" }),
      el("div", { class: "refusal-body" }),
    );
    this.errorBox = el("div", { class: "message-error", "data-testid": "message-error", role: "alert", hidden: true });
    this.noticeBox = el("p", { class: "message-notice", "data-testid": "message-notice", role: "note", hidden: true });
    this.statusBadge = el("span", { class: "status-badge", "data-testid": "message-status" });
    this.thoughtFor = el("span", { class: "thought-for", hidden: true });
    this.usage = el("p", { class: "usage", "data-testid": "usage", hidden: true });

    const metaBits = [message.model, message.reasoning_effort && `${message.reasoning_effort} effort`].filter(Boolean);
    this.meta = el("span", { class: "message-meta", text: metaBits.join(" · ") });
    const header = el(
      "header",
      { class: "message-header" },
      el("span", { class: "message-author", text: "Assistant" }),
      this.meta,
      formatTime(message.created_at),
      this.thoughtFor,
      this.statusBadge,
      copyButton(() => this.text, this.chat.announce),
    );
    this.element = el(
      "article",
      {
        class: "message message-assistant",
        "data-role": "assistant",
        "data-message-id": this.id,
        "data-testid": "assistant-message",
        "aria-label": "Assistant answer",
      },
      header,
      this.contextNote,
      this.thinking,
      this.reasoningBox,
      this.tools,
      this.body,
      this.refusalBox,
      this.noticeBox,
      this.errorBox,
      el("footer", { class: "message-footer" }, this.usage),
    );
    this.chat.branching.addControls(this.element, message, "assistant");

    if (message.left_out) this.setContext(message.left_out);
    if (this.reasoning) this.setReasoning(this.reasoning);
    for (const call of message.tool_calls || []) this.addTool(call);
    this.setRefusal(this.refusal);
    this.renderBody();
    this.setStatus(this.status);
    if (!LIVE_STATUSES.has(this.status)) this.applyFinal(message);
  }

  setMeta(model, effort) {
    const bits = [model, effort && `${effort} effort`].filter(Boolean);
    this.meta.textContent = bits.join(" · ");
  }

  get isLive() {
    return LIVE_STATUSES.has(this.status);
  }

  setStatus(status) {
    this.status = status;
    this.stream.live = this.isLive;
    this.element.dataset.status = status;
    this.element.setAttribute("aria-busy", this.isLive ? "true" : "false");
    this.statusBadge.dataset.status = status;
    this.updateThinking();
  }

  refreshBadge() {
    // While thinking, the timer says it all; "Writing…" once text flows.
    const thinking = this.isLive && !this.text && !this.refusal;
    const label = thinking ? "" : (STATUS_LABELS[this.status] ?? this.status);
    this.statusBadge.textContent = label;
    this.statusBadge.hidden = !label;
  }

  // Thinking: live and nothing visible yet.
  updateThinking() {
    this.refreshBadge();
    const showing = this.isLive && !this.text && !this.refusal;
    if (showing) {
      this.thinking.hidden = false;
      const queued = this.status === "pending" && this.queuedAhead !== null;
      this.thinking.dataset.queued = queued ? "true" : "false";
      this.thinkingLabel.textContent = !queued
        ? `Thinking… ${formatElapsed(Date.now() - this.startedAt)}`
        : this.queuedAhead > 0 ? `Queued (${fmt(this.queuedAhead)} ahead)` : "Queued (next)";
    } else if (!this.thinking.hidden) {
      this.thinking.hidden = true;
      if (!this.reasoningChosen) this.reasoningBox.open = false;
      if (this.isLive || this.firstOutputAt) {
        const end = this.firstOutputAt || Date.now();
        const ms = Math.max(0, end - this.startedAt);
        this.thoughtFor.textContent = `Thought for ${ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : formatElapsed(ms)}`;
        this.thoughtFor.hidden = false;
      }
    }
  }

  // Waiting for a worker behind `ahead` other answers (a `queued` frame).
  setQueued(ahead) {
    this.queuedAhead = ahead;
    this.updateThinking();
  }

  // A `thinking` heartbeat: a worker has the answer and the model is reasoning.
  applyThinking(elapsedMs) {
    if (!this.isLive) return;
    if (this.queuedAhead !== null) {
      // The wait in the queue was not thinking: the timer starts when a worker took it.
      this.queuedAhead = null;
      this.startedAt = Date.now();
      this.startFromServerClock = false;
    }
    if (this.status === "pending") this.setStatus("streaming");
    this.syncElapsed(elapsedMs);
  }

  syncElapsed(elapsedMs) {
    if (typeof elapsedMs !== "number" || !Number.isFinite(elapsedMs)) return;
    const local = Date.now() - this.startedAt;
    // The server counts from when a worker took the answer; prefer it when our own
    // start is a guess from another clock (after a reload), or when it is further along.
    if (Math.abs(local - elapsedMs) > 1500 && (this.startFromServerClock || elapsedMs > local)) {
      this.startedAt = Date.now() - elapsedMs;
      this.startFromServerClock = false;
    }
    this.updateThinking();
  }

  renderBody() {
    this.body.innerHTML = renderMarkdown(this.text);
    decorateCodeBlocks(this.body);
    this.body.hidden = !this.text && !this.isLive;
    this.element.classList.toggle("has-text", Boolean(this.text));
  }

  setContext(leftOut) {
    const n = Number(leftOut) || 0;
    if (!n) return;
    this.contextNote.textContent =
      n === 1
        ? "1 older turn was left out to fit the model's context window."
        : `${fmt(n)} older turns were left out to fit the model's context window.`;
    this.contextNote.hidden = false;
  }

  setReasoning(text) {
    this.reasoning = text;
    this.reasoningBox.querySelector(".reasoning-body").innerHTML = renderMarkdown(text);
    this.reasoningBox.hidden = !text;
    // Still thinking (no answer text yet): show the summary as it fills.
    if (text && this.isLive && !this.text && !this.refusal && !this.reasoningChosen) {
      this.reasoningBox.open = true;
    }
  }

  addTool(call) {
    const ok = call.ok !== false;
    const details = el(
      "details",
      { class: `tool-call${ok ? "" : " tool-call-failed"}`, "data-testid": "tool-call", "data-tool": call.name || "" },
      el(
        "summary",
        {},
        el("span", { class: "tool-label", text: "Tool" }),
        " ",
        el("code", { text: call.name || "unknown" }),
        ok ? null : el("span", { class: "tool-failed", text: " (failed)" }),
      ),
      el("p", { class: "tool-section", text: "Arguments" }),
      el("pre", { class: "tool-arguments" }, el("code", { text: stringify(call.arguments) })),
      el("p", { class: "tool-section", text: "Result" }),
      el("pre", { class: "tool-result" }, el("code", { text: stringify(call.result) })),
    );
    this.tools.append(details);
    this.tools.hidden = false;
  }

  setRefusal(text) {
    this.refusal = text || "";
    this.refusalBox.querySelector(".refusal-body").textContent = this.refusal;
    this.refusalBox.hidden = !this.refusal;
    this.updateThinking();
  }

  markOutput() {
    if (!this.firstOutputAt) this.firstOutputAt = Date.now();
  }

  // --- Frames from the stream, in order (delta, snapshot, done, error) -----------------------

  applySequenced(frame) {
    if (frame.type === "delta") this.applyDelta(frame);
    else if (frame.type === "snapshot") this.applySnapshot(frame);
    else if (frame.type === "done") this.applyDone(frame);
    else if (frame.type === "error") this.applyError(frame);
  }

  applyDelta(frame) {
    const text = typeof frame.text === "string" ? frame.text : "";
    if (!text) return;
    this.markOutput();
    if (this.status === "pending") this.setStatus("streaming");
    if (frame.refusal) {
      this.setRefusal(this.refusal + text);
    } else {
      this.text += text;
      this.updateThinking();
      this.chat.renders.schedule(this);
    }
  }

  applySnapshot(frame) {
    this.text = typeof frame.text === "string" ? frame.text : "";
    if (this.text) this.markOutput();
    this.updateThinking();
    this.chat.renders.schedule(this);
  }

  applyDone(frame) {
    const status = frame.status || "done";
    this.finish(status);
    if (typeof frame.refusal === "string" && frame.refusal) this.setRefusal(frame.refusal);
    this.applyFinal({
      status,
      usage: frame.usage,
      usage_estimated: frame.usage_estimated,
      cost_usd: frame.cost_usd,
      notice: frame.notice,
      finish_reason: frame.finish_reason,
    });
    this.chat.announce(status === "cancelled" ? "Answer stopped." : "Answer finished.");
  }

  applyError(frame) {
    const status = frame.code === "interrupted" ? "interrupted" : "failed";
    this.finish(status);
    this.showError(frame.code, frame.detail);
    if (frame.usage) this.showUsage(frame.usage, frame.cost_usd, frame.usage_estimated);
    this.chat.announce(`Answer failed: ${frame.detail || frame.code || "error"}`);
  }

  finish(status) {
    this.stream.finish();
    this.setStatus(status);
    // Final text now, not on the next animation frame (a hidden tab may not get one).
    this.chat.renders.delete(this);
    this.renderBody();
    this.chat.onAnswerSettled(this);
  }

  // Final decorations for a finished message, from the page state or a done frame.
  applyFinal(message) {
    const status = message.status;
    if (status === "failed" || status === "interrupted") {
      this.showError(message.error_code || (status === "interrupted" ? "interrupted" : "upstream_error"), message.error_detail);
    } else {
      const notice = message.notice ?? message.error_detail;
      if (notice) {
        this.noticeBox.textContent = notice;
        this.noticeBox.hidden = false;
      }
    }
    if (status === "cancelled") {
      this.element.classList.add("is-stopped");
    }
    this.showUsage(message.usage, message.cost_usd, message.usage_estimated);
  }

  showError(code, detail) {
    const title = ERROR_TITLES[code] || "Something went wrong";
    this.errorBox.replaceChildren(
      el("strong", { class: "message-error-title", text: title }),
      " ",
      el("span", { class: "message-error-detail", text: detail || "The answer could not be completed. Try again." }),
    );
    if (this.text) this.errorBox.append(el("span", { class: "message-error-kept", text: " The text written so far is kept above." }));
    this.errorBox.dataset.code = code || "upstream_error";
    this.errorBox.hidden = false;
  }

  showUsage(usage, cost, estimated) {
    if (!usage) return;
    const prompt = Number(usage.prompt_tokens) || 0;
    const cached = Number(usage.cached_tokens) || 0;
    const output = Number(usage.completion_tokens) || 0;
    const reasoning = Number(usage.reasoning_tokens) || 0;
    const parts = [
      `${plural(prompt, "prompt token", "prompt tokens")} (${fmt(cached)} cached)`,
      `${plural(output, "output token", "output tokens")} (of which ${fmt(reasoning)} reasoning)`,
    ];
    const money = formatCost(cost);
    if (money) parts.push(money);
    this.usage.textContent = parts.join(" · ") + (estimated ? " · estimated" : "");
    this.usage.dataset.estimated = estimated ? "true" : "false";
    this.usage.title = estimated
      ? "The provider sent no usage report for this answer; tokens and cost are estimated."
      : "Tokens and cost reported by the provider.";
    this.usage.hidden = false;
  }
}
