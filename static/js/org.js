// Org pages: ask before destructive actions. Forms carry data-confirm="question";
// without JavaScript they simply submit.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
