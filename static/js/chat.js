// The chat page: one websocket per tab, streaming answers into the transcript.
//
// Postgres is the source of truth; the socket only carries progress. The page starts
// from the server-rendered state (json_script "chat-state"), resumes every answer that is
// still being written, and applies frames in sequence order so a reconnect neither loses
// nor repeats text. This module wires the parts together: chat/protocol.js (the socket
// and sequence numbers, no DOM), chat/answer-view.js (the messages), chat/composer.js
// and chat/branching.js (edit, regenerate, versions).

import { el, fmt } from "./dom.js";
import { AssistantView, userMessageElement, wireCodeCopy } from "./chat/answer-view.js";
import { Branching } from "./chat/branching.js";
import { Composer } from "./chat/composer.js";
import { Connection, SILENT_RESUME_MS, isSequenced, resumeLive } from "./chat/protocol.js";

const ACCESS_RELOAD_GUARD_MS = 30_000;

const CONNECTION_LABELS = {
  connecting: "Connecting…",
  open: "",
  reconnecting: "Connection lost. Reconnecting…",
};

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

function announce(text) {
  if (!page.announcer) return;
  page.announcer.textContent = "";
  // A fresh text node after a tick makes screen readers read repeated messages too.
  window.setTimeout(() => {
    page.announcer.textContent = text;
  }, 50);
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

/**
 * Answer bodies re-render at most once per animation frame, however many deltas came;
 * the transcript stays scrolled to the bottom if it was there.
 */
class RenderQueue {
  constructor({ isNearBottom, scrollToBottom }) {
    this.isNearBottom = isNearBottom;
    this.scrollToBottom = scrollToBottom;
    this.dirty = new Set();
    this.scheduled = false;
  }

  schedule(view) {
    this.dirty.add(view);
    if (this.scheduled) return;
    this.scheduled = true;
    window.requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.scheduled = false;
    const stick = this.isNearBottom();
    for (const view of this.dirty) view.renderBody();
    this.dirty.clear();
    if (stick) this.scrollToBottom();
  }

  delete(view) {
    this.dirty.delete(view);
  }

  clear() {
    this.dirty.clear();
  }
}

// --- The page's parts, sharing one context -------------------------------------------------

const wsScheme = window.location.protocol === "https:" ? "wss:" : "ws:";

const chat = {
  page,
  maxChars: Number(page.state.max_chars) || 32000,
  views: new Map(), // message id → AssistantView
  renders: new RenderQueue({ isNearBottom, scrollToBottom }),
  announce,
  liveAnswer() {
    for (const view of chat.views.values()) if (view.isLive) return view;
    return null;
  },
  onAnswerSettled() {
    chat.composer.update();
  },
  renderMessages: renderInitialMessages,
};
chat.connection = new Connection({
  url: `${wsScheme}//${window.location.host}/ws/chat/`,
  WebSocket: window.WebSocket,
  timers: window,
  onFrame: handleFrame,
  onResume: () => resumeLive(Array.from(chat.views.values(), (view) => view.stream)),
  onOpen: () => chat.composer.sendPending(),
  onClose: onSocketClosed,
  onState: showConnectionState,
});
chat.composer = new Composer(chat);
chat.branching = new Branching(chat);

const { composer, branching, connection, views } = chat;

// --- The socket's state ----------------------------------------------------------------------------

function showConnectionState(state, message) {
  if (!page.connection) return;
  page.connection.dataset.state = state;
  page.connection.textContent = state === "closed" ? message || "Disconnected." : (CONNECTION_LABELS[state] ?? "");
}

// This tab's own sign-out: the response on its way (the sign-in page, or the identity
// provider's sign-out) must not be replaced by the trip that the socket's 4401 starts.
let signingOut = false;
document.querySelector("form.sign-out")?.addEventListener("submit", () => { signingOut = true; });

function onSocketClosed(event, { final }) {
  if (!final) {
    composer.dropUnconfirmed();
    return;
  }
  composer.pendingSend = null;
  composer.update();
  if (event.code === 4429) {
    // Over MAX_SOCKETS_PER_USER: another tab must close first, so retrying cannot help.
    connection.setState("closed", "Too many chat tabs are open for your account. Close some of them, then reload this page.");
  } else if (event.code === 4401) {
    // Signed out, deactivated or password changed: reconnecting cannot work.
    if (signingOut) return;
    connection.setState("closed", "Your session has ended. Taking you to the sign-in page…");
    const next = window.location.pathname + window.location.search;
    window.location.assign(`/accounts/login/?next=${encodeURIComponent(next)}`);
  } else if (event.code === 4403) {
    // Removed from an org or role changed: reload once so the page shows the new access
    // (a second 4403 soon after would be a loop, so then just say so).
    const key = "teamchat.accessReloadAt";
    const last = Number(window.sessionStorage.getItem(key) || 0);
    if (Date.now() - last > ACCESS_RELOAD_GUARD_MS) {
      window.sessionStorage.setItem(key, String(Date.now()));
      connection.setState("closed", "Your access changed. Reloading…");
      window.location.reload();
    } else {
      connection.setState("closed", "Your access to this organization changed. Reload the page to continue.");
    }
  }
}

function silentResumeMs() {
  const configured = Number(page.transcript?.dataset.silentResumeMs);
  return configured > 0 ? configured : SILENT_RESUME_MS;
}

// One timer drives every thinking counter on the page, and resumes silent answers. The
// transcript's data-silent-resume-ms overrides the silence allowed (tests shorten it).
function tick() {
  const now = Date.now();
  const silence = silentResumeMs();
  for (const view of views.values()) {
    if (!view.isLive) continue;
    view.updateThinking();
    view.stream.resumeIfSilent(silence, now);
  }
}

// --- Frames from the server -----------------------------------------------------------------------

function handleFrame(frame) {
  switch (frame.type) {
    case "message.created":
      onMessageCreated(frame);
      return;
    case "branch":
      branching.onBranch(frame);
      return;
    case "error":
      if (frame.message === null || frame.message === undefined || branching.isRefusedRequest(frame)) {
        branching.pendingSelect = null;
        composer.onErrorFrame(frame);
        return;
      }
      break;
    default:
      break;
  }
  const view = views.get(frame.message);
  if (!view) return;
  view.stream.heard();
  switch (frame.type) {
    case "queued":
      if (view.status === "pending" && Number.isInteger(frame.ahead) && frame.ahead >= 0) view.setQueued(frame.ahead);
      break;
    case "thinking":
      view.applyThinking(frame.elapsed_ms);
      break;
    case "delta":
    case "snapshot":
      view.stream.receive(frame);
      break;
    case "done":
    case "error":
      if (frame.usage) document.dispatchEvent(new CustomEvent("chat:answer-finished"));
      if (!isSequenced(frame)) {
        // Not part of the stream: a refused command about this message (e.g. Stop).
        if (frame.type === "error" && view.isLive) {
          composer.showError(frame.code, frame.detail);
        } else if (view.isLive) {
          view.stream.applyInPlace(frame);
        }
      } else {
        view.stream.receive(frame);
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

function appendToTranscript(node) {
  if (page.empty) page.empty.hidden = true;
  page.transcript.append(node);
}

function onMessageCreated(frame) {
  const pending = composer.pendingSend;
  const ours = pending && (!frame.client_id || frame.client_id === pending.client_id);
  const content = ours ? pending.content : "";
  const branchFrom = ours ? pending.branch : null;
  if (ours) {
    composer.pendingSend = null;
    if (branchFrom) {
      branching.cutAt(branchFrom.article);
    } else {
      page.input.value = "";
      composer.autosize();
    }
  }
  adoptConversation(frame.conversation, frame.conversation_title);
  const now = new Date().toISOString();
  if (frame.user_message && !document.querySelector(`[data-message-id="${frame.user_message}"]`)) {
    appendToTranscript(userMessageElement({ id: frame.user_message, content, created_at: now }, chat));
  }
  if (frame.assistant_message && !views.has(frame.assistant_message)) {
    const view = new AssistantView({
      id: frame.assistant_message,
      status: "pending",
      content: "",
      seq: 0,
      model: frame.model,
      reasoning_effort: frame.reasoning_effort,
    }, chat);
    // Count from the moment Send was pressed: that is when the person started waiting.
    view.startedAt = ours && pending.sentAt ? Math.min(pending.sentAt, Date.now()) : Date.now();
    view.startFromServerClock = false;
    if (frame.ahead > 0) view.setQueued(frame.ahead);
    view.updateThinking();
    appendToTranscript(view.element);
  }
  if (branchFrom) branching.addVersion(branchFrom, frame);
  scrollToBottom();
  announce(frame.ahead > 0
    ? `Message sent. The service is busy: it is queued, ${fmt(frame.ahead)} ahead.`
    : "Message sent. The model is thinking.");
  composer.update();
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

// sidebar.js files the item into its group.
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

// --- Wiring ------------------------------------------------------------------------------------------

function renderInitialMessages() {
  for (const message of page.state.messages || []) {
    if (message.role === "assistant") {
      const view = new AssistantView(message, chat);
      page.transcript.append(view.element);
    } else if (message.role === "user") {
      page.transcript.append(userMessageElement(message, chat));
    }
  }
  if ((page.state.messages || []).length && page.empty) page.empty.hidden = true;
  scrollToBottom();
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
  window.setInterval(tick, 1000);
  if (!page.transcript || !page.composer) return;
  composer.fillEfforts(composer.profile);
  composer.setupProfiles();
  renderInitialMessages();
  composer.wire();
  wireCodeCopy(page.transcript);
  branching.wire();
  wireInstructions();
  composer.update();
  composer.autosize();
  connection.start();
  window.addEventListener("online", () => connection.reconnectNow());
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
