// "Copy" on a message: puts the message's Markdown source (not the rendered HTML) on the
// clipboard. A streaming answer copies what has arrived so far.

// navigator.clipboard needs a secure context (HTTPS or localhost) and may be refused;
// a hidden textarea with execCommand("copy") still works on plain-HTTP intranet installs.
function copyWithTextarea(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  area.style.pointerEvents = "none";
  document.body.append(area);
  const selection = document.getSelection();
  const saved = selection && selection.rangeCount ? selection.getRangeAt(0) : null;
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  if (saved && selection) {
    selection.removeAllRanges();
    selection.addRange(saved);
  }
  return ok;
}

export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Permission refused or document not focused: try the older way below.
    }
  }
  return copyWithTextarea(text);
}

// A "Copy" button; getText() is read at click time so a live answer copies its latest text.
export function copyButton(getText, announce) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "message-copy";
  button.textContent = "Copy";
  button.dataset.testid = "copy-message";
  let reset = null;
  button.addEventListener("click", async () => {
    const ok = await copyText(getText() || "");
    announce(ok ? "Copied" : "Copy failed: select the text and copy it by hand.");
    button.dataset.copied = ok ? "true" : "false";
    window.clearTimeout(reset);
    reset = window.setTimeout(() => {
      delete button.dataset.copied;
    }, 1500);
  });
  return button;
}
