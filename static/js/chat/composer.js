// The composer: the message box, the model and effort pickers, Send and Stop, and the
// line under them that says why a message cannot go (too long, a retired model, a refusal).

import { el, fmt, randomId } from "../dom.js";
import { ERROR_TITLES } from "./answer-view.js";

export class Composer {
  /**
   * `chat` gives the page's elements and state, the connection, announce(),
   * liveAnswer() and the branching controls.
   */
  constructor(chat) {
    this.chat = chat;
    this.page = chat.page;
    this.pendingSend = null; // {client_id, content, frame, sent, sentAt, branch?} until message.created or an error
    this.liveMessage = null; // the answer being written in this conversation, if any
    this.profile = chat.page.state.profile || null;
  }

  showError(code, detail) {
    const { error } = this.page;
    error.replaceChildren(
      el("strong", { text: ERROR_TITLES[code] || "Not sent" }),
      " ",
      el("span", { text: detail || "The message could not be sent. Try again." }),
    );
    error.dataset.code = code || "";
    error.hidden = false;
    document.dispatchEvent(new CustomEvent("chat:composer-error", { detail: { code, detail } }));
  }

  clearError() {
    const { error } = this.page;
    error.hidden = true;
    error.textContent = "";
    delete error.dataset.code;
  }

  // An `error` frame refusing what the composer sent (or a command about no message).
  onErrorFrame(frame) {
    if (this.pendingSend) this.pendingSend = null;
    this.showError(frame.code, frame.detail);
    this.update();
  }

  blockedReason() {
    const profile = this.profile;
    const { state } = this.page;
    if (!profile) {
      return "No model is available to your organization. Ask an admin to enable a model profile.";
    }
    if (profile.retired) {
      const when = profile.shutdown_date ? ` on ${profile.shutdown_date}` : "";
      const others = (state.profiles || []).filter((p) => p && !p.retired && p.name !== profile.name);
      const next = state.conversation
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

  update() {
    const page = this.page;
    const live = this.chat.liveAnswer();
    this.liveMessage = live;
    const blocked = this.blockedReason();
    page.notice.textContent = blocked;
    page.notice.hidden = !blocked;
    page.input.disabled = Boolean(blocked);
    page.effort.disabled = Boolean(blocked) || !page.effort.options.length;
    page.send.disabled = Boolean(blocked || live || this.pendingSend);
    page.send.setAttribute("aria-busy", this.pendingSend ? "true" : "false");
    page.stop.hidden = !live;
    if (!live) page.stop.disabled = false;
    this.chat.branching.updateControls(Boolean(live || this.pendingSend || this.chat.branching.pendingSelect));
    this.updateHint();
  }

  updateHint() {
    const { hint, input } = this.page;
    const maxChars = this.chat.maxChars;
    const length = input.value.length;
    if (length > maxChars) {
      hint.textContent = `${fmt(length)} / ${fmt(maxChars)} characters: too long to send.`;
      hint.dataset.over = "true";
    } else if (length > maxChars * 0.8) {
      hint.textContent = `${fmt(length)} / ${fmt(maxChars)} characters`;
      delete hint.dataset.over;
    } else if (this.liveMessage) {
      hint.textContent = "An answer is being written. Stop it to send another message now.";
      delete hint.dataset.over;
    } else {
      hint.textContent = "";
      delete hint.dataset.over;
    }
  }

  fillEfforts(profile, { keepChoice = true } = {}) {
    const { effort } = this.page;
    const previous = keepChoice ? effort.value : "";
    effort.replaceChildren();
    const efforts = (profile && profile.efforts) || [];
    for (const value of efforts) {
      effort.append(el("option", { value, text: value.charAt(0).toUpperCase() + value.slice(1) }));
    }
    if (efforts.includes(previous)) effort.value = previous;
    else if (profile && efforts.includes(profile.default_effort)) effort.value = profile.default_effort;
  }

  setupProfiles() {
    const page = this.page;
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
    if (this.profile) page.profileSelect.value = this.profile.name;
    page.profileField.hidden = false;
    page.profileSelect.addEventListener("change", () => {
      this.profile = profiles.find((p) => p.name === page.profileSelect.value) || this.profile;
      this.fillEfforts(this.profile, { keepChoice: false });
      if (page.modelName && this.profile) page.modelName.textContent = this.profile.display_name;
      this.update();
    });
  }

  autosize() {
    const input = this.page.input;
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, Math.round(window.innerHeight * 0.4))}px`;
  }

  submit() {
    const page = this.page;
    const maxChars = this.chat.maxChars;
    if (page.send.disabled) return;
    const content = page.input.value;
    if (!content.trim()) {
      page.input.focus();
      return;
    }
    if (content.length > maxChars) {
      this.showError(
        "invalid_request",
        `Messages are limited to ${fmt(maxChars)} characters; this one has ${fmt(content.length)}. Shorten it or split it into parts.`,
      );
      return;
    }
    this.clearError();
    const frame = {
      type: "send",
      conversation: page.state.conversation ?? null,
      content,
      reasoning_effort: page.effort.value || null,
      client_id: randomId(),
    };
    if (!page.profileField.hidden && this.profile) frame.profile = this.profile.name;
    this.pendingSend = { client_id: frame.client_id, content, sent: false, frame, sentAt: Date.now() };
    this.pendingSend.sent = this.chat.connection.send(frame, { queue: true });
    this.update();
  }

  // The socket (re)opened: a message that never left this tab goes out now, once.
  sendPending() {
    const pending = this.pendingSend;
    if (pending && !pending.sent) pending.sent = this.chat.connection.rawSend(pending.frame);
  }

  // The socket dropped: a message that left this tab with no confirmation back is not
  // sent again (that could post it twice); say what happened and keep the text.
  dropUnconfirmed() {
    const pending = this.pendingSend;
    if (!pending || !pending.sent) return;
    this.pendingSend = null;
    this.showError(
      "upstream_error",
      "The connection dropped before the server confirmed your message. Reload the page to see whether it was sent; your text is still here.",
    );
    this.update();
  }

  wire() {
    const page = this.page;
    page.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    page.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        this.submit();
      }
      // ↑ in an empty box edits the last question, as in other chat apps.
      if (event.key === "ArrowUp" && !page.input.value && !event.shiftKey && !event.altKey
          && !event.ctrlKey && !event.metaKey && !event.isComposing) {
        const questions = page.transcript.querySelectorAll('article[data-role="user"]');
        const last = questions[questions.length - 1];
        if (last && !this.chat.branching.busy()) {
          event.preventDefault();
          this.chat.branching.openEditor(last);
        }
      }
    });
    page.input.addEventListener("input", () => {
      this.autosize();
      this.updateHint();
    });
    page.stop.addEventListener("click", () => {
      const live = this.chat.liveAnswer();
      if (!live) return;
      page.stop.disabled = true;
      this.chat.connection.send({ type: "stop", message: live.id }, { queue: true });
      this.chat.announce("Stopping the answer.");
    });
  }
}
