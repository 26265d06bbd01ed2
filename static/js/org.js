// Org pages: ask before destructive actions. Forms carry data-confirm="question";
// without JavaScript they simply submit.

import { copyField } from "./dom.js";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// "Copy link": copy a read-only field's value; say so for screen readers too.
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-copy-target]") : null;
  if (!button) return;
  const field = document.getElementById(button.dataset.copyTarget);
  const status = document.querySelector(`[data-copy-status="${button.dataset.copyTarget}"]`);
  if (!(field instanceof HTMLInputElement)) return;
  const copied = await copyField(field);
  if (status) status.textContent = copied ? "Copied" : "Select the link and copy it";
});
