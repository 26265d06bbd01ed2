// Shared conversation page: render each message's Markdown with the chat's renderer.
//
// The server sends the message text twice: HTML-escaped inside each message (readable
// without JavaScript) and in the `share-messages` JSON block. We render from the JSON,
// through renderMarkdown(), which sanitises the final HTML.

import { renderMarkdown } from "./markdown.js";

function loadMessages() {
  const block = document.getElementById("share-messages");
  if (!block) return [];
  try {
    const parsed = JSON.parse(block.textContent);
    return Array.isArray(parsed) ? parsed : [];
  } catch {
    return [];
  }
}

function renderAll() {
  const messages = loadMessages();
  for (const body of document.querySelectorAll("[data-share-index]")) {
    const message = messages[Number(body.dataset.shareIndex)];
    if (!message || typeof message.content !== "string") continue;
    try {
      body.innerHTML = renderMarkdown(message.content);
      body.dataset.rendered = "true";
    } catch {
      // Keep the escaped plain text the server rendered.
    }
  }
  document.body.dataset.shareRendered = "true";
}

renderAll();
