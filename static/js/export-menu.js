// The conversation's "Export" button: a disclosure with two download links (Markdown, JSON).

function setup() {
  const button = document.getElementById("export-button");
  const menu = document.getElementById("export-options");
  if (!button || !menu) return;

  const open = (focusFirst) => {
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    if (focusFirst) menu.querySelector("a")?.focus();
  };
  const close = (focusButton) => {
    if (menu.hidden) return;
    menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (focusButton) button.focus();
  };

  button.addEventListener("click", () => (menu.hidden ? open(false) : close(false)));
  button.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") {
      event.preventDefault();
      open(true);
    }
  });
  menu.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close(true);
  });
  // A chosen format downloads; the menu has done its job.
  menu.addEventListener("click", (event) => {
    if (event.target.closest("a")) close(false);
  });
  document.addEventListener("click", (event) => {
    if (!event.target.closest(".export-menu")) close(false);
  });
}

setup();
