// The chat page: one websocket per tab, streaming answers into the transcript.
//
// Postgres is the source of truth; the socket only carries progress. The page starts
// from the server-rendered state (json_script "chat-state"), resumes every answer that is
// still being written, and applies frames in sequence order so a reconnect neither loses
// nor repeats text.

import { renderMarkdown } from "./markdown.js";
import { copyButton } from "./message-copy.js";

const LIVE = new Set(["pending", "streaming"]);
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 5000;
const GAP_TIMEOUT_MS = 3000;
// A live answer that sent nothing (not even a thinking heartbeat) for this long has lost
// its frames somewhere (a dropped pub/sub message, a Redis restart): the tab resumes it
// by itself. The transcript's data-silent-resume-ms overrides it (tests shorten it).
const SILENT_RESUME_MS = 30_000;
const ACCESS_RELOAD_GUARD_MS = 30_000;

const ERROR_TITLES = {
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

// --- Small helpers ---------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const numberFormat = new Intl.NumberFormat("en-US");
const fmt = (n) => numberFormat.format(Number(n) || 0);

function plural(n, one, many) {
  return `${fmt(n)} ${n === 1 ? one : many}`;
}

function formatElapsed(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${String(seconds % 60).padStart(2, "0")} s`;
}

function formatCost(cost) {
  if (cost === undefined || cost === null || cost === "") return "";
  const text = String(cost);
  if (/^\d+(\.\d+)?$/.test(text)) return `$${text}`;
  const value = Number(text);
  return Number.isFinite(value) ? `$${value.toFixed(6)}` : "";
}

function formatTime(iso) {
  const date = iso ? new Date(iso) : new Date();
  if (Number.isNaN(date.getTime())) return null;
  return el("time", {
    datetime: date.toISOString(),
    title: date.toLocaleString(),
    text: date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
  });
}

function randomId() {
  if (window.crypto?.randomUUID) return window.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

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

// --- Page elements -----------------------------------------------------------------------

const stateNode = document.getElementById("chat-state");
const page = {
  state: JSON.parse(stateNode ? stateNode.textContent : "{}"),
  transcript: document.getElementById("transcript"),
  empty: document.getElementById("transcript-empty"),
  composer: document.getElementById("composer"),
  input: document.getElementById("message-input"),
  effort: document.getElementById("effort-select"),
  profileField: document.getElementById("profile-field"),
  profileSelect: document.getElementById("profile-select"),
  send: document.getElementById("send-button"),
  stop: document.getElementById("stop-button"),
  error: document.getElementById("composer-error"),
  notice: document.getElementById("composer-notice"),
  hint: document.getElementById("composer-hint"),
  connection: document.getElementById("connection-status"),
  announcer: document.getElementById("live-announcer"),
  conversationList: document.getElementById("conversation-list"),
  chatTitle: document.getElementById("chat-title"),
  modelName: document.getElementById("model-display-name"),
  instructions: document.getElementById("instructions"),
  instructionsForm: document.getElementById("instructions-form"),
  instructionsStatus: document.getElementById("instructions-status"),
};

const maxChars = Number(page.state.max_chars) || 32000;

function announce(text) {
  if (!page.announcer) return;
  page.announcer.textContent = "";
  // A fresh text node after a tick makes screen readers read repeated messages too.
  window.setTimeout(() => {
    page.announcer.textContent = text;
  }, 50);
}

// --- Message views ---------------------------------------------------------------------------

const views = new Map(); // message id → AssistantView
const dirty = new Set();
let renderScheduled = false;

function scheduleRender(view) {
  dirty.add(view);
  if (renderScheduled) return;
  renderScheduled = true;
  window.requestAnimationFrame(flushRenders);
}

function flushRenders() {
  renderScheduled = false;
  const stick = isNearBottom();
  for (const view of dirty) view.renderBody();
  dirty.clear();
  if (stick) scrollToBottom();
}

// On wide screens the transcript scrolls; on narrow ones the whole page does.
function transcriptScrolls() {
  return getComputedStyle(page.transcript).overflowY !== "visible";
}

function isNearBottom() {
  if (transcriptScrolls()) {
    const t = page.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 120;
  }
  const doc = document.documentElement;
  return doc.scrollHeight - window.scrollY - window.innerHeight < 200;
}

function scrollToBottom() {
  if (transcriptScrolls()) page.transcript.scrollTop = page.transcript.scrollHeight;
  else window.scrollTo(0, document.documentElement.scrollHeight);
}

function appendToTranscript(node) {
  if (page.empty) page.empty.hidden = true;
  page.transcript.append(node);
}

function userMessageElement({ id, content, created_at, status, versions }) {
  const body = el("div", { class: "message-body plain-text", "data-testid": "message-body", text: content });
  const header = el(
    "header",
    { class: "message-header" },
    el("span", { class: "message-author", text: "You" }),
    formatTime(created_at),
    copyButton(() => content, announce),
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
  addBranchControls(article, { id, role: "user", versions });
  return article;
}

class AssistantView {
  constructor(message) {
    this.id = message.id;
    this.status = message.status || "pending";
    this.text = message.content || "";
    this.refusal = message.refusal || "";
    this.reasoning = message.reasoning_summary || "";
    this.lastSeq = Number(message.seq) || 0;
    this.buffered = new Map(); // seq → frame that arrived ahead of a gap
    this.gapTimer = null;
    this.lastHeard = Date.now(); // when the server last said anything about this answer
    const created = Date.parse(message.created_at || "");
    this.startedAt = Number.isFinite(created) ? Math.min(created, Date.now()) : Date.now();
    this.startFromServerClock = Number.isFinite(created);
    this.firstOutputAt = null;
    this.queuedAhead = null; // answers ahead of this one while no worker has it
    this.build(message);
    views.set(this.id, this);
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
      copyButton(() => this.text, announce),
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
    addBranchControls(this.element, message, "assistant");

    if (message.left_out) this.setContext(message.left_out);
    if (this.reasoning) this.setReasoning(this.reasoning);
    for (const call of message.tool_calls || []) this.addTool(call);
    this.setRefusal(this.refusal);
    this.renderBody();
    this.setStatus(this.status);
    if (!LIVE.has(this.status)) this.applyFinal(message);
  }

  setMeta(model, effort) {
    const bits = [model, effort && `${effort} effort`].filter(Boolean);
    this.meta.textContent = bits.join(" · ");
  }

  get isLive() {
    return LIVE.has(this.status);
  }

  setStatus(status) {
    this.status = status;
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

  // --- Sequenced frames (delta, snapshot, done, error with seq) ---------------------------

  receiveSequenced(frame) {
    const seq = Number(frame.seq);
    if (!Number.isFinite(seq)) {
      this.applySequenced({ ...frame, seq: this.lastSeq });
      return;
    }
    if (seq <= this.lastSeq) return; // already applied (replay overlap)
    if (seq > this.lastSeq + 1 && frame.type !== "snapshot") {
      this.buffered.set(seq, frame);
      this.requestGapFill();
      return;
    }
    this.applySequenced(frame);
    while (this.buffered.size) {
      const next = this.buffered.get(this.lastSeq + 1);
      for (const key of this.buffered.keys()) if (key <= this.lastSeq) this.buffered.delete(key);
      if (!next) break;
      this.buffered.delete(this.lastSeq + 1);
      this.applySequenced(next);
    }
    if (!this.buffered.size) this.clearGap();
  }

  applySequenced(frame) {
    this.lastSeq = Math.max(this.lastSeq, Number(frame.seq));
    if (frame.type === "delta") this.applyDelta(frame);
    else if (frame.type === "snapshot") this.applySnapshot(frame);
    else if (frame.type === "done") this.applyDone(frame);
    else if (frame.type === "error") this.applyError(frame);
  }

  requestGapFill() {
    if (this.gapTimer) return;
    connection.send({ type: "resume", message: this.id, after_seq: this.lastSeq });
    // The server skips frames it believes this socket already has; if the hole is still
    // open after a while, a fresh socket resumes from our own count instead.
    this.gapTimer = window.setTimeout(() => {
      this.gapTimer = null;
      if (this.buffered.size) connection.reconnectNow();
    }, GAP_TIMEOUT_MS);
  }

  clearGap() {
    if (this.gapTimer) window.clearTimeout(this.gapTimer);
    this.gapTimer = null;
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
      scheduleRender(this);
    }
  }

  applySnapshot(frame) {
    this.text = typeof frame.text === "string" ? frame.text : "";
    for (const key of this.buffered.keys()) if (key <= this.lastSeq) this.buffered.delete(key);
    if (this.text) this.markOutput();
    this.updateThinking();
    scheduleRender(this);
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
    announce(status === "cancelled" ? "Answer stopped." : "Answer finished.");
  }

  applyError(frame) {
    const status = frame.code === "interrupted" ? "interrupted" : "failed";
    this.finish(status);
    this.showError(frame.code, frame.detail);
    if (frame.usage) this.showUsage(frame.usage, frame.cost_usd, frame.usage_estimated);
    announce(`Answer failed: ${frame.detail || frame.code || "error"}`);
  }

  finish(status) {
    this.clearGap();
    this.buffered.clear();
    this.setStatus(status);
    // Final text now, not on the next animation frame (a hidden tab may not get one).
    dirty.delete(this);
    this.renderBody();
    onAnswerSettled(this);
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

function silentResumeMs() {
  const configured = Number(page.transcript?.dataset.silentResumeMs);
  return configured > 0 ? configured : SILENT_RESUME_MS;
}

// One timer drives every thinking counter on the page, and resumes silent answers.
window.setInterval(() => {
  const now = Date.now();
  const silence = silentResumeMs();
  for (const view of views.values()) {
    if (!view.isLive) continue;
    view.updateThinking();
    if (now - view.lastHeard >= silence) {
      view.lastHeard = now; // ask again after another silent period, not every second
      connection.send({ type: "resume", message: view.id, after_seq: view.lastSeq });
    }
  }
}, 1000);

// --- Composer --------------------------------------------------------------------------------

const composer = {
  pendingSend: null, // {client_id, content, frame} until message.created or an error
  liveMessage: null, // the answer being written in this conversation, if any
  profile: page.state.profile || null,
};

function liveAnswer() {
  for (const view of views.values()) if (view.isLive) return view;
  return null;
}

function showComposerError(code, detail) {
  page.error.replaceChildren(
    el("strong", { text: ERROR_TITLES[code] || "Not sent" }),
    " ",
    el("span", { text: detail || "The message could not be sent. Try again." }),
  );
  page.error.dataset.code = code || "";
  page.error.hidden = false;
  document.dispatchEvent(new CustomEvent("chat:composer-error", { detail: { code, detail } }));
}

function clearComposerError() {
  page.error.hidden = true;
  page.error.textContent = "";
  delete page.error.dataset.code;
}

function composerBlockedReason() {
  const profile = composer.profile;
  if (!profile) {
    return "No model is available to your organization. Ask an admin to enable a model profile.";
  }
  if (profile.retired) {
    const when = profile.shutdown_date ? ` on ${profile.shutdown_date}` : "";
    const others = (page.state.profiles || []).filter((p) => p && !p.retired && p.name !== profile.name);
    const next = page.state.conversation
      ? others.length
        ? "Start a new chat and pick another model, or ask an admin to enable a successor."
        : "Ask an admin to enable a successor model, then start a new chat."
      : others.length
        ? "Pick another model below, or ask an admin to enable a successor."
        : "Ask an admin to enable a successor model.";
    return `${profile.display_name} was retired by its provider${when}, so it can no longer answer. ${next}`;
  }
  return "";
}

function updateComposer() {
  const live = liveAnswer();
  composer.liveMessage = live;
  const blocked = composerBlockedReason();
  page.notice.textContent = blocked;
  page.notice.hidden = !blocked;
  page.input.disabled = Boolean(blocked);
  page.effort.disabled = Boolean(blocked) || !page.effort.options.length;
  page.send.disabled = Boolean(blocked || live || composer.pendingSend);
  page.send.setAttribute("aria-busy", composer.pendingSend ? "true" : "false");
  page.stop.hidden = !live;
  if (!live) page.stop.disabled = false;
  updateBranchControls(Boolean(live || composer.pendingSend || branching.pendingSelect));
  updateHint();
}

function updateHint() {
  const length = page.input.value.length;
  if (length > maxChars) {
    page.hint.textContent = `${fmt(length)} / ${fmt(maxChars)} characters: too long to send.`;
    page.hint.dataset.over = "true";
  } else if (length > maxChars * 0.8) {
    page.hint.textContent = `${fmt(length)} / ${fmt(maxChars)} characters`;
    delete page.hint.dataset.over;
  } else if (composer.liveMessage) {
    page.hint.textContent = "An answer is being written. Stop it to send another message now.";
    delete page.hint.dataset.over;
  } else {
    page.hint.textContent = "";
    delete page.hint.dataset.over;
  }
}

function fillEfforts(profile, { keepChoice = true } = {}) {
  const previous = keepChoice ? page.effort.value : "";
  page.effort.replaceChildren();
  const efforts = (profile && profile.efforts) || [];
  for (const effort of efforts) {
    page.effort.append(el("option", { value: effort, text: effort.charAt(0).toUpperCase() + effort.slice(1) }));
  }
  if (efforts.includes(previous)) page.effort.value = previous;
  else if (profile && efforts.includes(profile.default_effort)) page.effort.value = profile.default_effort;
}

function setupProfiles() {
  const profiles = (page.state.profiles || []).filter(Boolean);
  // The model of a new conversation, or the one an open conversation goes on with.
  if (profiles.length < 2) {
    page.profileField.hidden = true;
    return;
  }
  page.profileSelect.replaceChildren();
  for (const profile of profiles) {
    const label = profile.retired ? `${profile.display_name} (retired)` : profile.display_name;
    page.profileSelect.append(el("option", { value: profile.name, text: label }));
  }
  if (composer.profile) page.profileSelect.value = composer.profile.name;
  page.profileField.hidden = false;
  page.profileSelect.addEventListener("change", () => {
    composer.profile = profiles.find((p) => p.name === page.profileSelect.value) || composer.profile;
    fillEfforts(composer.profile, { keepChoice: false });
    if (page.modelName && composer.profile) page.modelName.textContent = composer.profile.display_name;
    updateComposer();
  });
}

function autosize() {
  const input = page.input;
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight + 2, Math.round(window.innerHeight * 0.4))}px`;
}

function submitMessage() {
  if (page.send.disabled) return;
  const content = page.input.value;
  if (!content.trim()) {
    page.input.focus();
    return;
  }
  if (content.length > maxChars) {
    showComposerError(
      "invalid_request",
      `Messages are limited to ${fmt(maxChars)} characters; this one has ${fmt(content.length)}. Shorten it or split it into parts.`,
    );
    return;
  }
  clearComposerError();
  const frame = {
    type: "send",
    conversation: page.state.conversation ?? null,
    content,
    reasoning_effort: page.effort.value || null,
    client_id: randomId(),
  };
  if (!page.profileField.hidden && composer.profile) frame.profile = composer.profile.name;
  composer.pendingSend = { client_id: frame.client_id, content, sent: false, frame, sentAt: Date.now() };
  composer.pendingSend.sent = connection.send(frame, { queue: true });
  updateComposer();
}

function onMessageCreated(frame) {
  const pending = composer.pendingSend;
  const ours = pending && (!frame.client_id || frame.client_id === pending.client_id);
  const content = ours ? pending.content : "";
  const branchFrom = ours ? pending.branch : null;
  if (ours) {
    composer.pendingSend = null;
    if (branchFrom) {
      cutBranchAt(branchFrom.article);
    } else {
      page.input.value = "";
      autosize();
    }
  }
  adoptConversation(frame.conversation, frame.conversation_title);
  const now = new Date().toISOString();
  if (frame.user_message && !document.querySelector(`[data-message-id="${frame.user_message}"]`)) {
    appendToTranscript(userMessageElement({ id: frame.user_message, content, created_at: now }));
  }
  if (frame.assistant_message && !views.has(frame.assistant_message)) {
    const view = new AssistantView({
      id: frame.assistant_message,
      status: "pending",
      content: "",
      seq: 0,
      model: frame.model,
      reasoning_effort: frame.reasoning_effort,
    });
    // Count from the moment Send was pressed: that is when the person started waiting.
    view.startedAt = ours && pending.sentAt ? Math.min(pending.sentAt, Date.now()) : Date.now();
    view.startFromServerClock = false;
    if (frame.ahead > 0) view.setQueued(frame.ahead);
    view.updateThinking();
    appendToTranscript(view.element);
  }
  if (branchFrom) addVersion(branchFrom, frame);
  scrollToBottom();
  announce(frame.ahead > 0
    ? `Message sent. The service is busy: it is queued, ${fmt(frame.ahead)} ahead.`
    : "Message sent. The model is thinking.");
  updateComposer();
}

function adoptConversation(id, title) {
  if (!id) return;
  const isNew = !page.state.conversation;
  page.state.conversation = id;
  if (isNew) {
    window.history.replaceState({ conversation: id }, "", `/c/${id}/`);
    if (page.instructions && page.instructionsForm) {
      page.instructionsForm.action = page.instructionsForm.dataset.actionTemplate.replace("/0/", `/${id}/`);
      page.instructions.hidden = false;
    }
    const newChat = document.querySelector(".new-chat");
    if (newChat) newChat.removeAttribute("aria-current");
  }
  if (title) {
    if (page.chatTitle) page.chatTitle.textContent = title;
    document.title = `${title} · ${document.title.split(" · ").pop()}`;
  }
  moveConversationToTop(id, title);
}

function moveConversationToTop(id, title) {
  const list = page.conversationList;
  if (!list) return;
  list.querySelector(".conversation-list-empty")?.remove();
  let item = list.querySelector(`li[data-conversation-id="${CSS.escape(String(id))}"]`);
  if (!item) {
    item = el("li", { "data-conversation-id": id }, el("a", { href: `/c/${id}/` }));
  }
  const link = item.querySelector("a");
  if (title) link.textContent = title;
  else if (!link.textContent) link.textContent = "New conversation";
  for (const current of list.querySelectorAll('[aria-current="page"]')) current.removeAttribute("aria-current");
  link.setAttribute("aria-current", "page");
  list.prepend(item);
}

function onAnswerSettled() {
  updateComposer();
}

// --- Versions: edit & branch, regenerate, "‹ 2 / 3 ›" ---------------------------------------------
//
// Messages form a tree and the transcript shows one branch of it. "Edit" sends a question
// again as a sibling of the old one (a `send` frame with `parent`), "Regenerate" asks for a
// sibling answer (a `regenerate` frame), and the version buttons switch branches (a
// `select` frame, answered by a `branch` frame that re-renders the transcript). The old
// branches stay on the server, one click away.

const branching = {
  versions: new Map(), // message id → {index, count, ids} (ids oldest first)
  pendingSelect: null, // message id asked for with `select`, until `branch` or an error
};

function branchingBusy() {
  return Boolean(liveAnswer() || composer.pendingSend || branching.pendingSelect);
}

function addBranchControls(article, message, role = message.role) {
  const actions = el("div", { class: "message-actions", "data-testid": "message-actions" });
  const action = role === "user" ? ["edit", "Edit"] : ["regenerate", "Regenerate"];
  const button = el("button", { type: "button", class: "message-action", "data-branch-action": action[0], text: action[1] });
  if (role !== "user") button.setAttribute("aria-expanded", "false"); // it opens a small form
  actions.append(button);
  article.append(actions);
  setVersions(article, message.versions);
}

function setVersions(article, versions) {
  const id = Number(article.dataset.messageId);
  const actions = article.querySelector(".message-actions");
  actions.querySelector(".versions")?.remove();
  if (!versions || !Array.isArray(versions.ids) || versions.ids.length < 2) {
    branching.versions.delete(id);
    return;
  }
  branching.versions.set(id, versions);
  const { index, ids } = versions;
  const previous = index > 1 ? ids[index - 2] : null;
  const next = index < ids.length ? ids[index] : null;
  // A group, not a nav landmark: a long conversation has many of these.
  const group = el(
    "div",
    { class: "versions", role: "group", "aria-label": "Versions", "data-testid": "versions" },
    el("button", {
      type: "button", class: "version-step", "aria-label": "Previous version",
      "data-branch-action": "select", "data-target": previous ?? "", text: "‹",
    }),
    el("span", { class: "versions-count", text: ` ${index} / ${ids.length} ` }),
    el("button", {
      type: "button", class: "version-step", "aria-label": "Next version",
      "data-branch-action": "select", "data-target": next ?? "", text: "›",
    }),
  );
  actions.prepend(group);
  updateBranchControls(branchingBusy());
}

function updateBranchControls(busy) {
  if (!page.transcript) return;
  for (const button of page.transcript.querySelectorAll("[data-branch-action]")) {
    const noTarget = button.dataset.branchAction === "select" && !button.dataset.target;
    const article = button.closest("article");
    const liveHere = article && views.get(Number(article.dataset.messageId))?.isLive;
    button.disabled = Boolean(busy || noTarget || liveHere);
  }
}

// The answer a question follows on the branch on screen (null for a first question).
function parentOf(article) {
  let previous = article.previousElementSibling;
  while (previous && !previous.dataset.role) previous = previous.previousElementSibling;
  return previous && previous.dataset.role === "assistant" ? Number(previous.dataset.messageId) : null;
}

function refuseWhileBusy() {
  if (!branchingBusy()) return false;
  showComposerError("invalid_request", "An answer is still being written. Wait for it or stop it, then try again.");
  return true;
}

function openEditor(article) {
  const existing = article.querySelector(".message-editor textarea");
  if (existing) {
    existing.focus();
    return;
  }
  const body = article.querySelector(".message-body");
  const actions = article.querySelector(".message-actions");
  const input = el("textarea", { class: "message-editor-input", "aria-label": "Edit message", rows: 3 });
  input.value = body.textContent;
  const cancel = el("button", { type: "button", class: "button-secondary", text: "Cancel" });
  const save = el("button", { type: "submit", class: "button-primary", text: "Save & send" });
  const form = el(
    "form",
    { class: "message-editor", "data-testid": "message-editor" },
    input,
    el("div", { class: "message-editor-buttons" }, cancel, save),
  );
  body.hidden = true;
  actions.hidden = true;
  body.after(form);
  const close = () => {
    form.remove();
    body.hidden = false;
    actions.hidden = false;
    actions.querySelector('[data-branch-action="edit"]')?.focus();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sendEdit(article, input.value);
  });
  cancel.addEventListener("click", close);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close();
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.style.height = `${Math.min(input.scrollHeight + 2, Math.round(window.innerHeight * 0.4))}px`;
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

function sendEdit(article, content) {
  if (refuseWhileBusy()) return;
  if (!content.trim()) {
    showComposerError("invalid_request", "The edited message is empty. Type something, or press Cancel.");
    return;
  }
  if (content.length > maxChars) {
    showComposerError(
      "invalid_request",
      `Messages are limited to ${fmt(maxChars)} characters; this one has ${fmt(content.length)}. Shorten it.`,
    );
    return;
  }
  clearComposerError();
  const frame = {
    type: "send",
    conversation: page.state.conversation ?? null,
    content,
    reasoning_effort: page.effort.value || null,
    client_id: randomId(),
    parent: parentOf(article),
  };
  startBranch(frame, { kind: "edit", article }, content);
}

// "Regenerate" opens a small form under the answer: the model and effort to ask again
// with, defaulting to the conversation's model and the composer's effort. The model
// choice shows only when the org has more than one model that still answers; another
// model answers this once (the conversation keeps its own).
function toggleRegenerateMenu(article, opener) {
  const open = article.querySelector(".regenerate-menu");
  if (open) {
    closeRegenerateMenu(article);
    return;
  }
  if (refuseWhileBusy()) return;
  const profiles = (page.state.profiles || []).filter((p) => p && !p.retired);
  const current = profiles.find((p) => p.name === composer.profile?.name) || profiles[0] || composer.profile;
  const key = `regenerate-${article.dataset.messageId}`;
  const model = el("select", { id: `${key}-model`, name: "profile" });
  for (const profile of profiles) model.append(el("option", { value: profile.name, text: profile.display_name }));
  if (current && profiles.includes(current)) model.value = current.name;
  const effort = el("select", { id: `${key}-effort`, name: "reasoning_effort" });
  const modelField = el(
    "span", { class: "composer-field", hidden: profiles.length < 2 },
    el("label", { for: model.id, text: "Model" }), model,
  );
  const effortField = el(
    "span", { class: "composer-field" },
    el("label", { for: effort.id, text: "Reasoning effort" }), effort,
  );
  const fillEffort = () => {
    const profile = profiles.find((p) => p.name === model.value) || current;
    const efforts = (profile && profile.efforts) || [];
    const previous = effort.value || page.effort.value;
    effort.replaceChildren();
    for (const value of efforts) {
      effort.append(el("option", { value, text: value.charAt(0).toUpperCase() + value.slice(1) }));
    }
    if (efforts.includes(previous)) effort.value = previous;
    else if (profile && efforts.includes(profile.default_effort)) effort.value = profile.default_effort;
    effortField.hidden = !efforts.length;
  };
  fillEffort();
  model.addEventListener("change", fillEffort);
  const cancel = el("button", { type: "button", class: "button-secondary", text: "Cancel" });
  const form = el(
    "form",
    { id: key, class: "regenerate-menu", "aria-label": "Regenerate options", "data-testid": "regenerate-menu" },
    modelField,
    effortField,
    el("button", { type: "submit", class: "button-primary", text: "Ask again" }),
    cancel,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (refuseWhileBusy()) return;
    const frame = {
      type: "regenerate",
      message: Number(article.dataset.messageId),
      reasoning_effort: effortField.hidden ? null : effort.value || null,
      client_id: randomId(),
    };
    if (!modelField.hidden && model.value) frame.profile = model.value;
    closeRegenerateMenu(article, { focus: false });
    clearComposerError();
    startBranch(frame, { kind: "regenerate", article }, "");
  });
  cancel.addEventListener("click", () => closeRegenerateMenu(article));
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation(); // Esc here closes the menu, not the running answer
      closeRegenerateMenu(article);
    }
  });
  opener.setAttribute("aria-expanded", "true");
  opener.setAttribute("aria-controls", key);
  article.querySelector(".message-actions").after(form);
  (modelField.hidden ? (effortField.hidden ? form.querySelector("[type=submit]") : effort) : model).focus();
}

function closeRegenerateMenu(article, { focus = true } = {}) {
  article.querySelector(".regenerate-menu")?.remove();
  const opener = article.querySelector('[data-branch-action="regenerate"]');
  if (!opener) return;
  opener.setAttribute("aria-expanded", "false");
  if (focus) opener.focus();
}

function startBranch(frame, branch, content) {
  composer.pendingSend = { client_id: frame.client_id, content, sent: false, frame, sentAt: Date.now(), branch };
  // Not queued: like a send, an unsent pending frame goes out when the socket reopens.
  composer.pendingSend.sent = connection.send(frame);
  updateComposer();
}

// The old version and everything after it leave the screen (not the server).
function cutBranchAt(article) {
  let node = article;
  while (node) {
    const next = node.nextElementSibling;
    if (node.dataset && node.dataset.role) {
      const view = views.get(Number(node.dataset.messageId));
      if (view) {
        views.delete(view.id);
        dirty.delete(view);
      }
      node.remove();
    }
    node = next;
  }
}

function addVersion(branch, frame) {
  const oldId = Number(branch.article.dataset.messageId);
  const newId = branch.kind === "edit" ? frame.user_message : frame.assistant_message;
  const old = branching.versions.get(oldId) || { ids: [oldId] };
  const ids = [...old.ids, newId];
  const article = page.transcript.querySelector(`article[data-message-id="${CSS.escape(String(newId))}"]`);
  if (article) setVersions(article, { index: ids.length, count: ids.length, ids });
}

function isRefusedBranchRequest(frame) {
  if (frame.seq !== undefined && frame.seq !== null) return false;
  const pending = composer.pendingSend;
  if (branching.pendingSelect !== null && frame.message === branching.pendingSelect) return true;
  return Boolean(pending && pending.frame.type === "regenerate" && pending.frame.message === frame.message);
}

function selectVersion(button) {
  const target = Number(button.dataset.target);
  if (!target || refuseWhileBusy()) return;
  clearComposerError();
  branching.pendingSelect = target;
  branching.focus = button.getAttribute("aria-label");
  if (!connection.send({ type: "select", message: target })) {
    branching.pendingSelect = null;
    showComposerError("upstream_error", "Not connected to the server. Wait for the connection, then try again.");
  }
  updateComposer();
}

function onBranch(frame) {
  const selected = branching.pendingSelect;
  branching.pendingSelect = null;
  if (frame.conversation !== page.state.conversation || !Array.isArray(frame.messages)) {
    updateComposer();
    return;
  }
  for (const node of page.transcript.querySelectorAll("article[data-role]")) node.remove();
  views.clear();
  dirty.clear();
  branching.versions.clear();
  page.state.messages = frame.messages;
  renderInitialMessages();
  updateComposer();
  const article = selected && page.transcript.querySelector(`article[data-message-id="${CSS.escape(String(selected))}"]`);
  if (!article) return;
  article.scrollIntoView({ block: "nearest" });
  // Keep the keyboard where it was: on the same step button, or the other one at an end.
  const buttons = [...article.querySelectorAll(".version-step")];
  const same = buttons.find((b) => b.getAttribute("aria-label") === branching.focus);
  (same && !same.disabled ? same : buttons.find((b) => !b.disabled))?.focus();
  const versions = branching.versions.get(selected);
  if (versions) announce(`Showing version ${versions.index} of ${versions.ids.length}.`);
}

function wireBranching() {
  page.transcript.addEventListener("click", (event) => {
    const button = event.target.closest("[data-branch-action]");
    if (!button || button.disabled) return;
    const article = button.closest("article[data-role]");
    if (!article) return;
    const action = button.dataset.branchAction;
    if (action === "edit") {
      if (!refuseWhileBusy()) openEditor(article);
    } else if (action === "regenerate") toggleRegenerateMenu(article, button);
    else if (action === "select") selectVersion(button);
  });
}

// --- The socket ----------------------------------------------------------------------------------

class Connection {
  constructor(url) {
    this.url = url;
    this.socket = null;
    this.queue = [];
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
  }

  start() {
    this.open();
    window.addEventListener("online", () => this.reconnectNow());
  }

  get isOpen() {
    return this.socket && this.socket.readyState === WebSocket.OPEN;
  }

  open() {
    if (this.stopped) return;
    this.timer = null;
    this.setState(this.attempt ? "reconnecting" : "connecting");
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      this.attempt = 0;
      this.setState("open");
      this.resumeAll();
      const queued = this.queue.splice(0);
      for (const frame of queued) this.rawSend(frame);
      if (composer.pendingSend && !composer.pendingSend.sent) {
        composer.pendingSend.sent = this.rawSend(composer.pendingSend.frame);
      }
    });
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") handleFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.onClosed(event);
    });
  }

  onClosed(event) {
    if (event.code === 4429) {
      // Over MAX_SOCKETS_PER_USER: another tab must close first, so retrying cannot help.
      this.stopped = true;
      composer.pendingSend = null;
      updateComposer();
      this.setState("closed", "Too many chat tabs are open for your account. Close some of them, then reload this page.");
      return;
    }
    if (event.code === 4401 || event.code === 4403) {
      this.stopped = true;
      composer.pendingSend = null;
      updateComposer();
    }
    if (event.code === 4401) {
      // Signed out, deactivated or password changed: reconnecting cannot work.
      this.setState("closed", "Your session has ended. Taking you to the sign-in page…");
      const next = window.location.pathname + window.location.search;
      window.location.assign(`/accounts/login/?next=${encodeURIComponent(next)}`);
      return;
    }
    if (event.code === 4403) {
      // Removed from an org or role changed: reload once so the page shows the new access
      // (a second 4403 soon after would be a loop, so then just say so).
      const key = "teamchat.accessReloadAt";
      const last = Number(window.sessionStorage.getItem(key) || 0);
      if (Date.now() - last > ACCESS_RELOAD_GUARD_MS) {
        window.sessionStorage.setItem(key, String(Date.now()));
        this.setState("closed", "Your access changed. Reloading…");
        window.location.reload();
      } else {
        this.setState("closed", "Your access to this organization changed. Reload the page to continue.");
      }
      return;
    }
    const pending = composer.pendingSend;
    if (pending && pending.sent) {
      // It left this tab but no confirmation came back: sending it again could post it
      // twice, so say what happened and keep the text.
      composer.pendingSend = null;
      showComposerError(
        "upstream_error",
        "The connection dropped before the server confirmed your message. Reload the page to see whether it was sent; your text is still here.",
      );
      updateComposer();
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped || this.timer) return;
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.25));
    this.attempt += 1;
    this.setState("reconnecting");
    this.timer = window.setTimeout(() => this.open(), delay);
  }

  reconnectNow() {
    if (this.stopped) return;
    if (this.timer) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
    const old = this.socket;
    this.socket = null;
    if (old) {
      try {
        old.close();
      } catch {
        // already closing
      }
    }
    this.attempt = Math.max(this.attempt, 1);
    this.open();
  }

  resumeAll() {
    for (const view of views.values()) {
      if (view.isLive) {
        view.clearGap();
        this.rawSend({ type: "resume", message: view.id, after_seq: view.lastSeq });
      }
    }
  }

  // Returns true when the frame went out now; with queue it is sent on (re)connect.
  send(frame, { queue = false } = {}) {
    if (this.isOpen) return this.rawSend(frame);
    if (queue && frame.type !== "send") this.queue.push(frame);
    return false;
  }

  rawSend(frame) {
    try {
      this.socket.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  setState(state, message) {
    const labels = {
      connecting: "Connecting…",
      open: "",
      reconnecting: "Connection lost. Reconnecting…",
      closed: message || "Disconnected.",
    };
    if (!page.connection) return;
    page.connection.dataset.state = state;
    page.connection.textContent = labels[state] ?? "";
  }
}

const wsScheme = window.location.protocol === "https:" ? "wss:" : "ws:";
const connection = new Connection(`${wsScheme}//${window.location.host}/ws/chat/`);

// --- Frames from the server -----------------------------------------------------------------------

function handleFrame(frame) {
  switch (frame.type) {
    case "message.created":
      onMessageCreated(frame);
      return;
    case "branch":
      onBranch(frame);
      return;
    case "error":
      if (frame.message === null || frame.message === undefined || isRefusedBranchRequest(frame)) {
        branching.pendingSelect = null;
        onComposerError(frame);
        return;
      }
      break;
    default:
      break;
  }
  const view = views.get(frame.message);
  if (!view) return;
  view.lastHeard = Date.now();
  switch (frame.type) {
    case "queued":
      if (view.status === "pending" && Number.isInteger(frame.ahead) && frame.ahead >= 0) view.setQueued(frame.ahead);
      break;
    case "thinking":
      if (view.isLive) {
        if (view.queuedAhead !== null) {
          // The wait in the queue was not thinking: the timer starts when a worker took it.
          view.queuedAhead = null;
          view.startedAt = Date.now();
          view.startFromServerClock = false;
        }
        if (view.status === "pending") view.setStatus("streaming");
        view.syncElapsed(frame.elapsed_ms);
      }
      break;
    case "delta":
    case "snapshot":
      view.receiveSequenced(frame);
      break;
    case "done":
    case "error":
      if (frame.usage) document.dispatchEvent(new CustomEvent("chat:answer-finished"));
      if (frame.seq === undefined || frame.seq === null) {
        // Not part of the stream: a refused command about this message (e.g. Stop).
        if (frame.type === "error" && view.isLive) {
          showComposerError(frame.code, frame.detail);
        } else if (view.isLive) {
          view.applySequenced({ ...frame, seq: view.lastSeq });
        }
      } else {
        view.receiveSequenced(frame);
      }
      break;
    case "reasoning":
      if (typeof frame.text === "string") view.setReasoning((frame.replace ? "" : view.reasoning) + frame.text);
      break;
    case "tool":
      view.addTool(frame);
      break;
    case "context":
      view.setContext(frame.left_out);
      break;
    default:
      break;
  }
}

function onComposerError(frame) {
  if (composer.pendingSend) composer.pendingSend = null;
  showComposerError(frame.code, frame.detail);
  updateComposer();
}

// --- Wiring ------------------------------------------------------------------------------------------

function renderInitialMessages() {
  for (const message of page.state.messages || []) {
    if (message.role === "assistant") {
      const view = new AssistantView(message);
      page.transcript.append(view.element);
    } else if (message.role === "user") {
      page.transcript.append(userMessageElement(message));
    }
  }
  if ((page.state.messages || []).length && page.empty) page.empty.hidden = true;
  scrollToBottom();
}

function wireComposer() {
  page.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submitMessage();
  });
  page.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      submitMessage();
    }
    // ↑ in an empty box edits the last question, as in other chat apps.
    if (event.key === "ArrowUp" && !page.input.value && !event.shiftKey && !event.altKey
        && !event.ctrlKey && !event.metaKey && !event.isComposing) {
      const questions = page.transcript.querySelectorAll('article[data-role="user"]');
      const last = questions[questions.length - 1];
      if (last && !branchingBusy()) {
        event.preventDefault();
        openEditor(last);
      }
    }
  });
  page.input.addEventListener("input", () => {
    autosize();
    updateHint();
  });
  page.stop.addEventListener("click", () => {
    const live = liveAnswer();
    if (!live) return;
    page.stop.disabled = true;
    connection.send({ type: "stop", message: live.id }, { queue: true });
    announce("Stopping the answer.");
  });
  page.transcript.addEventListener("click", async (event) => {
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

function wireInstructions() {
  const form = page.instructionsForm;
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    if (!form.action || !page.state.conversation) return; // let the browser post it
    event.preventDefault();
    page.instructionsStatus.textContent = "Saving…";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (response.ok) {
        page.instructionsStatus.textContent = "Saved. They apply from the next message.";
      } else if (response.status === 400) {
        const data = await response.json().catch(() => ({}));
        const errors = Object.values(data.errors || {}).flat();
        page.instructionsStatus.textContent = `Not saved: ${errors.join(" ") || "check the text and try again."}`;
      } else {
        page.instructionsStatus.textContent = `Not saved (the server answered ${response.status}). Reload the page and try again.`;
      }
    } catch {
      page.instructionsStatus.textContent = "Not saved: the server could not be reached. Try again.";
    }
  });
}

function init() {
  if (!page.transcript || !page.composer) return;
  fillEfforts(composer.profile);
  setupProfiles();
  renderInitialMessages();
  wireComposer();
  wireBranching();
  wireInstructions();
  updateComposer();
  autosize();
  connection.start();
  if (!page.input.disabled) page.input.focus();
}

init();

// For debugging in the console and for tests: read-only view of live state.
window.teamChat = Object.freeze({
  get conversation() {
    return page.state.conversation;
  },
  messageState(id) {
    const view = views.get(id);
    return view ? { status: view.status, lastSeq: view.lastSeq, text: view.text, refusal: view.refusal } : null;
  },
});
