// The conversation list (grouped by day, loaded page by page on scroll), its actions
// (Rename, Pin, Archive / Restore, Delete), search, the page's keyboard shortcuts and the
// narrow-screen toggle. chat.js owns the transcript; it adds a new conversation to the
// top of #conversation-list and this module files it into its group.

import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import { csrfToken, el } from "./dom.js";

const nav = document.getElementById("sidebar");
const list = document.getElementById("conversation-list");
const toggle = document.getElementById("sidebar-toggle");
const archivedToggle = document.getElementById("archived-toggle");
const heading = document.getElementById("history-heading");
const more = document.getElementById("list-more");
const listError = document.getElementById("list-error");
const searchInput = document.getElementById("conversation-search");
const searchStatus = document.getElementById("search-status");
const searchResults = document.getElementById("search-results");
const deleteDialog = document.getElementById("delete-dialog");

const GROUPS = ["Pinned", "Today", "Previous 7 days", "Previous 30 days", "Older"];

let view = "main"; // or "archived"
let nextCursor = null;
let loading = false;

function currentConversationId() {
  const match = window.location.pathname.match(/^\/c\/(\d+)\/$/);
  return match ? Number(match[1]) : null;
}

function showError(text) {
  listError.textContent = text || "";
  listError.hidden = !text;
}

async function request(url, options = {}) {
  let response;
  try {
    response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
      ...options,
    });
  } catch {
    throw new Error("The server could not be reached. Check your connection and try again.");
  }
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = {};
  }
  if (!response.ok) throw new Error(body.error || `The server answered ${response.status}. Reload the page and try again.`);
  return body;
}

function post(url, fields) {
  return request(url, { method: "POST", body: new URLSearchParams(fields) });
}

// --- Groups and items ----------------------------------------------------------------

function groupList(name) {
  let group = list.querySelector(`li.conversation-group[data-group="${CSS.escape(name)}"]`);
  if (!group) {
    const headingId = `group-${name.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
    group = el(
      "li",
      { class: "conversation-group", "data-group": name },
      el("h3", { class: "conversation-group-heading", id: headingId, text: name }),
      el("ul", { class: "conversation-group-items", "aria-labelledby": headingId }),
    );
    const after = GROUPS.indexOf(name);
    const later = [...list.querySelectorAll("li.conversation-group")].find(
      (other) => GROUPS.indexOf(other.dataset.group) > after,
    );
    list.insertBefore(group, later || null);
  }
  return group.querySelector(".conversation-group-items");
}

function dropEmptyGroups() {
  for (const group of list.querySelectorAll("li.conversation-group")) {
    if (!group.querySelector("li[data-conversation-id]")) group.remove();
  }
  if (!list.querySelector("li[data-conversation-id]") && !list.querySelector(".conversation-list-empty")) {
    list.append(el("li", { class: "conversation-list-empty", text: view === "archived" ? "No archived conversations." : "No conversations yet." }));
  }
}

function actionButton(label, titleId, extra = {}) {
  return el("button", { type: "button", class: "conversation-action", "aria-describedby": titleId, "data-action": label.toLowerCase(), text: label, ...extra });
}

function renderItem(item) {
  const titleId = `conversation-title-${item.id}`;
  const link = el("a", { href: item.url || `/c/${item.id}/`, id: titleId, class: "conversation-link", text: item.title });
  if (item.id === currentConversationId()) link.setAttribute("aria-current", "page");
  const actions = el("div", { class: "conversation-actions" }, actionButton("Rename", titleId));
  if (view === "archived") {
    actions.append(actionButton("Restore", titleId));
  } else {
    actions.append(
      actionButton("Pin", titleId, { "aria-pressed": item.pinned ? "true" : "false" }),
      actionButton("Archive", titleId),
    );
  }
  actions.append(actionButton("Delete", titleId));
  return el(
    "li",
    { class: "conversation-item", "data-conversation-id": item.id, "data-pinned": item.pinned ? "true" : "false" },
    link,
    actions,
  );
}

function appendItems(items) {
  list.querySelector(".conversation-list-empty")?.remove();
  for (const item of items) {
    if (list.querySelector(`li[data-conversation-id="${item.id}"]`)) continue;
    groupList(item.group).append(renderItem(item));
  }
  dropEmptyGroups();
}

function showPage(page, replace) {
  if (replace) list.replaceChildren();
  appendItems(page.items);
  nextCursor = page.next;
  more.hidden = !nextCursor;
  if (nextCursor) requestAnimationFrame(loadMoreIfVisible);
}

async function reload() {
  const page = await request(`/conversations/${view === "archived" ? "?archived=1" : ""}`);
  showPage(page, true);
}

async function loadMore() {
  if (loading || !nextCursor) return;
  loading = true;
  try {
    const params = new URLSearchParams({ cursor: nextCursor });
    if (view === "archived") params.set("archived", "1");
    showPage(await request(`/conversations/?${params}`), false);
    showError("");
  } catch (error) {
    showError(error.message);
  } finally {
    loading = false;
  }
}

function loadMoreIfVisible() {
  if (!nextCursor || more.hidden) return;
  const box = nav.getBoundingClientRect();
  const sentinel = more.getBoundingClientRect();
  if (sentinel.top <= box.bottom + 200) loadMore();
}

// chat.js puts a new (or newly active) conversation at the top of the list: file it
// into Today (or keep it in Pinned) with its actions.
new MutationObserver((records) => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      if (!(node instanceof HTMLLIElement) || !node.dataset.conversationId || node.parentElement !== list) continue;
      if (view === "archived") {
        node.remove();
        continue;
      }
      const id = Number(node.dataset.conversationId);
      const title = node.querySelector("a")?.textContent || "New conversation";
      const pinned = node.dataset.pinned === "true";
      const fresh = node.classList.contains("conversation-item") ? node : renderItem({ id, title, pinned, url: `/c/${id}/` });
      if (fresh !== node) {
        fresh.querySelector("a").setAttribute("aria-current", node.querySelector("a")?.getAttribute("aria-current") || "");
        if (!fresh.querySelector("a").getAttribute("aria-current")) fresh.querySelector("a").removeAttribute("aria-current");
        node.remove();
      }
      groupList(pinned ? "Pinned" : "Today").prepend(fresh);
      dropEmptyGroups();
    }
  }
}).observe(list, { childList: true });

// --- Actions ---------------------------------------------------------------------------

function startRename(item) {
  const link = item.querySelector(".conversation-link");
  if (!link || item.querySelector(".rename-form")) return;
  const id = item.dataset.conversationId;
  const input = el("input", { type: "text", class: "rename-input", "aria-label": "Title", maxlength: 200, value: link.textContent });
  const form = el("form", { class: "rename-form" }, input);
  link.hidden = true;
  item.prepend(form);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    // Enter and leaving the box save (as in other chat apps); Escape keeps the old title.
    if (save !== false && title && title !== link.textContent) {
      try {
        const result = await post(`/c/${id}/rename/`, { title });
        link.textContent = result.title;
        if (Number(id) === currentConversationId()) {
          const chatTitle = document.getElementById("chat-title");
          if (chatTitle) chatTitle.textContent = result.title;
          document.title = `${result.title} · ${document.title.split(" · ").pop()}`;
        }
        showError("");
      } catch (error) {
        showError(error.message);
      }
    }
    form.remove();
    link.hidden = false;
    if (save !== null) item.querySelector('[data-action="rename"]')?.focus();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    finish(true);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(null));
}

async function togglePin(item, button) {
  const pinned = button.getAttribute("aria-pressed") !== "true";
  await post(`/c/${item.dataset.conversationId}/pin/`, { pinned: String(pinned) });
  await reload();
  list.querySelector(`li[data-conversation-id="${item.dataset.conversationId}"] [data-action="pin"]`)?.focus();
}

async function setArchived(item, archived) {
  const id = item.dataset.conversationId;
  await post(`/c/${id}/archive/`, { archived: String(archived) });
  item.remove();
  dropEmptyGroups();
  if (archived && Number(id) === currentConversationId()) window.location.assign("/");
  else loadMoreIfVisible();
}

function confirmDelete(title) {
  return new Promise((resolve) => {
    document.getElementById("delete-dialog-text").textContent =
      `“${title}” and its messages will be deleted for good. An answer still being written is stopped first and charged only for what it wrote.`;
    deleteDialog.returnValue = "";
    deleteDialog.addEventListener("close", () => resolve(deleteDialog.returnValue === "delete"), { once: true });
    deleteDialog.showModal();
  });
}

async function deleteConversation(item) {
  const id = item.dataset.conversationId;
  const title = item.querySelector(".conversation-link")?.textContent || "This conversation";
  if (!(await confirmDelete(title))) {
    item.querySelector('[data-action="delete"]')?.focus();
    return;
  }
  await post(`/c/${id}/delete/`, {});
  if (Number(id) === currentConversationId()) {
    window.location.assign("/");
    return;
  }
  item.remove();
  dropEmptyGroups();
  document.querySelector(".new-chat")?.focus();
  loadMoreIfVisible();
}

list.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const item = button.closest("li[data-conversation-id]");
  if (!item) return;
  try {
    const action = button.dataset.action;
    if (action === "rename") startRename(item);
    else if (action === "pin") await togglePin(item, button);
    else if (action === "archive") await setArchived(item, true);
    else if (action === "restore") await setArchived(item, false);
    else if (action === "delete") await deleteConversation(item);
    showError("");
  } catch (error) {
    showError(error.message);
  }
});

archivedToggle.addEventListener("click", async () => {
  view = view === "archived" ? "main" : "archived";
  archivedToggle.setAttribute("aria-pressed", view === "archived" ? "true" : "false");
  heading.textContent = view === "archived" ? "Archived" : "History";
  try {
    await reload();
    showError("");
  } catch (error) {
    showError(error.message);
  }
});

nav.addEventListener("scroll", loadMoreIfVisible, { passive: true });
window.addEventListener("resize", loadMoreIfVisible, { passive: true });

// --- Search ----------------------------------------------------------------------------

let searchTimer = null;
let searchToken = 0;

function showSearching(active) {
  searchResults.hidden = !active;
  for (const node of [list, more, archivedToggle.parentElement]) node.classList.toggle("is-hidden-by-search", active);
}

async function runSearch() {
  const query = searchInput.value.trim();
  const token = ++searchToken;
  if (!query) {
    searchResults.replaceChildren();
    searchStatus.textContent = "";
    showSearching(false);
    return;
  }
  try {
    const body = await request(`/search/?${new URLSearchParams({ q: query })}`);
    if (token !== searchToken) return;
    searchResults.replaceChildren(
      ...body.results.map((hit) => {
        const snippet = el("span", { class: "search-snippet" });
        // The server escapes everything but <mark>; DOMPurify keeps it that way.
        snippet.innerHTML = DOMPurify.sanitize(hit.snippet, { ALLOWED_TAGS: ["mark"], ALLOWED_ATTR: [] });
        return el("li", {}, el("a", { href: hit.url, class: "search-hit" }, el("span", { class: "search-title", text: hit.title }), snippet));
      }),
    );
    const n = body.results.length;
    searchStatus.textContent = n ? `${n} result${n === 1 ? "" : "s"}` : `Nothing matches “${query}”.`;
    showSearching(true);
  } catch (error) {
    if (token !== searchToken) return;
    searchResults.replaceChildren();
    searchStatus.textContent = error.message;
    showSearching(true);
  }
}

searchInput.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, 200);
});
searchInput.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && searchInput.value) {
    event.preventDefault();
    event.stopPropagation();
    searchInput.value = "";
    runSearch();
  } else if (event.key === "Enter") {
    event.preventDefault();
    clearTimeout(searchTimer);
    runSearch();
  }
});

// --- Jump to a message (#m<id>) ------------------------------------------------------------

function jumpToMessage() {
  const match = window.location.hash.match(/^#m(\d+)$/);
  if (!match) return;
  const selector = `[data-message-id="${match[1]}"]`;
  const go = (node) => {
    node.classList.add("message-highlight");
    if (!node.hasAttribute("tabindex")) node.setAttribute("tabindex", "-1");
    node.scrollIntoView({ block: "center" });
    node.focus({ preventScroll: true });
  };
  const found = document.querySelector(selector);
  if (found) {
    go(found);
    return;
  }
  // chat.js renders the transcript after this module may have run.
  const observer = new MutationObserver(() => {
    const node = document.querySelector(selector);
    if (node) {
      observer.disconnect();
      go(node);
    }
  });
  observer.observe(document.getElementById("transcript") || document.body, { childList: true, subtree: true });
  setTimeout(() => observer.disconnect(), 10_000);
}

window.addEventListener("hashchange", jumpToMessage);

// --- Keyboard shortcuts and the narrow-screen toggle ----------------------------------------

function setSidebarOpen(open) {
  toggle.setAttribute("aria-expanded", open ? "true" : "false");
  nav.classList.toggle("is-open", open);
}

toggle.addEventListener("click", () => setSidebarOpen(toggle.getAttribute("aria-expanded") !== "true"));

document.addEventListener("keydown", (event) => {
  const mod = event.ctrlKey || event.metaKey;
  const key = event.key.toLowerCase();
  if (mod && event.shiftKey && key === "o") {
    event.preventDefault();
    window.location.assign("/");
  } else if (mod && !event.shiftKey && !event.altKey && key === "k") {
    event.preventDefault();
    if (getComputedStyle(toggle).display !== "none") setSidebarOpen(true);
    searchInput.focus();
    searchInput.select();
  } else if (event.key === "Escape" && !event.defaultPrevented && !deleteDialog.open) {
    const stop = document.getElementById("stop-button");
    if (stop && !stop.hidden && !stop.disabled) {
      event.preventDefault();
      stop.click();
    } else if (nav.classList.contains("is-open")) {
      setSidebarOpen(false);
      toggle.focus();
    }
  }
});

// --- Start -------------------------------------------------------------------------------

const initial = JSON.parse(document.getElementById("conversation-list-state").textContent);
showPage(initial, true);
jumpToMessage();
