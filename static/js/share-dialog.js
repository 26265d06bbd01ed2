// Share dialog and "Shared links" page: copy the link, and remember its address in
// this browser only (the server keeps just a fingerprint of the token).

import { copyField } from "./dom.js";

const STORE_PREFIX = "teamchat:share-link:";

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: the address is shown once, that is all
  }
}

function remember(linkId, url) {
  storage()?.setItem(STORE_PREFIX + linkId, url);
}

function recall(linkId) {
  return storage()?.getItem(STORE_PREFIX + linkId) || "";
}

function forget(linkId) {
  storage()?.removeItem(STORE_PREFIX + linkId);
}

function setUpLinkField() {
  const field = document.getElementById("share-link");
  const button = document.getElementById("copy-share-link");
  const status = document.getElementById("copy-status");
  if (!field || !button) return;
  const linkId = field.dataset.linkId;
  if (field.value) {
    remember(linkId, field.value);
  } else {
    const saved = recall(linkId);
    if (saved) {
      field.value = saved;
      const hint = document.querySelector("[data-missing-hint]");
      if (hint) hint.textContent = "Saved in this browser when the link was created.";
    }
  }
  button.disabled = !field.value;
  field.addEventListener("focus", () => field.select());
  button.addEventListener("click", async () => {
    const copied = await copyField(field);
    if (status) status.textContent = copied ? "Copied" : "Select the link and copy it";
  });
}

function setUpForgetting() {
  // Revoking or replacing a link makes its stored address useless: drop it.
  for (const element of document.querySelectorAll("[data-forget-link]")) {
    const linkId = element.dataset.forgetLink;
    const event = element.tagName === "FORM" ? "submit" : "click";
    element.addEventListener(event, () => forget(linkId));
  }
}

setUpLinkField();
setUpForgetting();
