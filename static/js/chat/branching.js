// Versions: edit & branch, regenerate, "‹ 2 / 3 ›".
//
// Messages form a tree and the transcript shows one branch of it. "Edit" sends a question
// again as a sibling of the old one (a `send` frame with `parent`), "Regenerate" asks for a
// sibling answer (a `regenerate` frame), and the version buttons switch branches (a
// `select` frame, answered by a `branch` frame that re-renders the transcript). The old
// branches stay on the server, one click away.

import { el, fmt, randomId } from "../dom.js";
import { isSequenced } from "./protocol.js";

export class Branching {
  /**
   * `chat` gives the page, the connection, the views, the composer, announce(),
   * liveAnswer() and renderMessages(messages).
   */
  constructor(chat) {
    this.chat = chat;
    this.page = chat.page;
    this.versions = new Map(); // message id → {index, count, ids} (ids oldest first)
    this.pendingSelect = null; // message id asked for with `select`, until `branch` or an error
    this.focus = null; // the accessible name of the version button pressed last
  }

  busy() {
    return Boolean(this.chat.liveAnswer() || this.chat.composer.pendingSend || this.pendingSelect);
  }

  addControls(article, message, role = message.role) {
    const actions = el("div", { class: "message-actions", "data-testid": "message-actions" });
    const action = role === "user" ? ["edit", "Edit"] : ["regenerate", "Regenerate"];
    const button = el("button", { type: "button", class: "message-action", "data-branch-action": action[0], text: action[1] });
    if (role !== "user") button.setAttribute("aria-expanded", "false"); // it opens a small form
    actions.append(button);
    article.append(actions);
    this.setVersions(article, message.versions);
  }

  setVersions(article, versions) {
    const id = Number(article.dataset.messageId);
    const actions = article.querySelector(".message-actions");
    actions.querySelector(".versions")?.remove();
    if (!versions || !Array.isArray(versions.ids) || versions.ids.length < 2) {
      this.versions.delete(id);
      return;
    }
    this.versions.set(id, versions);
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
    this.updateControls(this.busy());
  }

  updateControls(busy) {
    if (!this.page.transcript) return;
    for (const button of this.page.transcript.querySelectorAll("[data-branch-action]")) {
      const noTarget = button.dataset.branchAction === "select" && !button.dataset.target;
      const article = button.closest("article");
      const liveHere = article && this.chat.views.get(Number(article.dataset.messageId))?.isLive;
      button.disabled = Boolean(busy || noTarget || liveHere);
    }
  }

  // The answer a question follows on the branch on screen (null for a first question).
  parentOf(article) {
    let previous = article.previousElementSibling;
    while (previous && !previous.dataset.role) previous = previous.previousElementSibling;
    return previous && previous.dataset.role === "assistant" ? Number(previous.dataset.messageId) : null;
  }

  refuseWhileBusy() {
    if (!this.busy()) return false;
    this.chat.composer.showError("invalid_request", "An answer is still being written. Wait for it or stop it, then try again.");
    return true;
  }

  openEditor(article) {
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
      this.sendEdit(article, input.value);
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

  sendEdit(article, content) {
    const { composer, maxChars } = this.chat;
    if (this.refuseWhileBusy()) return;
    if (!content.trim()) {
      composer.showError("invalid_request", "The edited message is empty. Type something, or press Cancel.");
      return;
    }
    if (content.length > maxChars) {
      composer.showError(
        "invalid_request",
        `Messages are limited to ${fmt(maxChars)} characters; this one has ${fmt(content.length)}. Shorten it.`,
      );
      return;
    }
    composer.clearError();
    const frame = {
      type: "send",
      conversation: this.page.state.conversation ?? null,
      content,
      reasoning_effort: this.page.effort.value || null,
      client_id: randomId(),
      parent: this.parentOf(article),
    };
    this.start(frame, { kind: "edit", article }, content);
  }

  // "Regenerate" opens a small form under the answer: the model and effort to ask again
  // with, defaulting to the conversation's model and the composer's effort. The model
  // choice shows only when the org has more than one model that still answers; another
  // model answers this once (the conversation keeps its own).
  toggleRegenerateMenu(article, opener) {
    const open = article.querySelector(".regenerate-menu");
    if (open) {
      this.closeRegenerateMenu(article);
      return;
    }
    if (this.refuseWhileBusy()) return;
    const composer = this.chat.composer;
    const profiles = (this.page.state.profiles || []).filter((p) => p && !p.retired);
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
      const previous = effort.value || this.page.effort.value;
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
      if (this.refuseWhileBusy()) return;
      const frame = {
        type: "regenerate",
        message: Number(article.dataset.messageId),
        reasoning_effort: effortField.hidden ? null : effort.value || null,
        client_id: randomId(),
      };
      if (!modelField.hidden && model.value) frame.profile = model.value;
      this.closeRegenerateMenu(article, { focus: false });
      composer.clearError();
      this.start(frame, { kind: "regenerate", article }, "");
    });
    cancel.addEventListener("click", () => this.closeRegenerateMenu(article));
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation(); // Esc here closes the menu, not the running answer
        this.closeRegenerateMenu(article);
      }
    });
    opener.setAttribute("aria-expanded", "true");
    opener.setAttribute("aria-controls", key);
    article.querySelector(".message-actions").after(form);
    (modelField.hidden ? (effortField.hidden ? form.querySelector("[type=submit]") : effort) : model).focus();
  }

  closeRegenerateMenu(article, { focus = true } = {}) {
    article.querySelector(".regenerate-menu")?.remove();
    const opener = article.querySelector('[data-branch-action="regenerate"]');
    if (!opener) return;
    opener.setAttribute("aria-expanded", "false");
    if (focus) opener.focus();
  }

  start(frame, branch, content) {
    const composer = this.chat.composer;
    composer.pendingSend = { client_id: frame.client_id, content, sent: false, frame, sentAt: Date.now(), branch };
    // Not queued: like a send, an unsent pending frame goes out when the socket reopens.
    composer.pendingSend.sent = this.chat.connection.send(frame);
    composer.update();
  }

  // The old version and everything after it leave the screen (not the server).
  cutAt(article) {
    const { views, renders } = this.chat;
    let node = article;
    while (node) {
      const next = node.nextElementSibling;
      if (node.dataset && node.dataset.role) {
        const view = views.get(Number(node.dataset.messageId));
        if (view) {
          views.delete(view.id);
          renders.delete(view);
        }
        node.remove();
      }
      node = next;
    }
  }

  addVersion(branch, frame) {
    const oldId = Number(branch.article.dataset.messageId);
    const newId = branch.kind === "edit" ? frame.user_message : frame.assistant_message;
    const old = this.versions.get(oldId) || { ids: [oldId] };
    const ids = [...old.ids, newId];
    const article = this.page.transcript.querySelector(`article[data-message-id="${CSS.escape(String(newId))}"]`);
    if (article) this.setVersions(article, { index: ids.length, count: ids.length, ids });
  }

  // An `error` frame about a message that refuses a `select` or `regenerate` from here.
  isRefusedRequest(frame) {
    if (isSequenced(frame)) return false;
    const pending = this.chat.composer.pendingSend;
    if (this.pendingSelect !== null && frame.message === this.pendingSelect) return true;
    return Boolean(pending && pending.frame.type === "regenerate" && pending.frame.message === frame.message);
  }

  selectVersion(button) {
    const target = Number(button.dataset.target);
    if (!target || this.refuseWhileBusy()) return;
    const composer = this.chat.composer;
    composer.clearError();
    this.pendingSelect = target;
    this.focus = button.getAttribute("aria-label");
    if (!this.chat.connection.send({ type: "select", message: target })) {
      this.pendingSelect = null;
      composer.showError("upstream_error", "Not connected to the server. Wait for the connection, then try again.");
    }
    composer.update();
  }

  onBranch(frame) {
    const { page, views, renders, composer } = this.chat;
    const selected = this.pendingSelect;
    this.pendingSelect = null;
    if (frame.conversation !== page.state.conversation || !Array.isArray(frame.messages)) {
      composer.update();
      return;
    }
    for (const node of page.transcript.querySelectorAll("article[data-role]")) node.remove();
    views.clear();
    renders.clear();
    this.versions.clear();
    page.state.messages = frame.messages;
    this.chat.renderMessages();
    composer.update();
    const article = selected && page.transcript.querySelector(`article[data-message-id="${CSS.escape(String(selected))}"]`);
    if (!article) return;
    article.scrollIntoView({ block: "nearest" });
    // Keep the keyboard where it was: on the same step button, or the other one at an end.
    const buttons = [...article.querySelectorAll(".version-step")];
    const same = buttons.find((b) => b.getAttribute("aria-label") === this.focus);
    (same && !same.disabled ? same : buttons.find((b) => !b.disabled))?.focus();
    const versions = this.versions.get(selected);
    if (versions) this.chat.announce(`Showing version ${versions.index} of ${versions.ids.length}.`);
  }

  wire() {
    this.page.transcript.addEventListener("click", (event) => {
      const button = event.target.closest("[data-branch-action]");
      if (!button || button.disabled) return;
      const article = button.closest("article[data-role]");
      if (!article) return;
      const action = button.dataset.branchAction;
      if (action === "edit") {
        if (!this.refuseWhileBusy()) this.openEditor(article);
      } else if (action === "regenerate") this.toggleRegenerateMenu(article, button);
      else if (action === "select") this.selectVersion(button);
    });
  }
}
