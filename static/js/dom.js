// Small helpers shared by the pages' scripts: building elements, the CSRF token,
// number and time formatting, and copying a field's value.

/**
 * A new element: `attrs` sets attributes (`class`, `text` and `dataset` are special;
 * null, undefined and false leave an attribute out, true sets it empty), then the
 * children are appended (null, undefined and false are skipped).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** The page's CSRF token: a `data-csrf` attribute, or a form's hidden field. */
export function csrfToken() {
  const holder = document.querySelector("[data-csrf]");
  if (holder && holder.dataset.csrf) return holder.dataset.csrf;
  return document.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";
}

const numberFormat = new Intl.NumberFormat("en-US");

/** 12345 → "12,345" (anything that is not a number counts as 0). */
export function fmt(n) {
  return numberFormat.format(Number(n) || 0);
}

export function plural(n, one, many) {
  return `${fmt(n)} ${n === 1 ? one : many}`;
}

/** 42 s, or 3 min 07 s. */
export function formatElapsed(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${String(seconds % 60).padStart(2, "0")} s`;
}

/** A decimal string from the server shown as it is ("$0.001234"); "" when there is none. */
export function formatCost(cost) {
  if (cost === undefined || cost === null || cost === "") return "";
  const text = String(cost);
  if (/^\d+(\.\d+)?$/.test(text)) return `$${text}`;
  const value = Number(text);
  return Number.isFinite(value) ? `$${value.toFixed(6)}` : "";
}

/** A <time> element for an ISO timestamp (now when there is none); null if it does not parse. */
export function formatTime(iso) {
  const date = iso ? new Date(iso) : new Date();
  if (Number.isNaN(date.getTime())) return null;
  return el("time", {
    datetime: date.toISOString(),
    title: date.toLocaleString(),
    text: date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
  });
}

export function randomId() {
  if (window.crypto?.randomUUID) return window.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Copy a text field's value. When the clipboard API is refused, the field's text is
 * selected and copied the older way (still selected for copying by hand if that fails).
 */
export async function copyField(field) {
  try {
    await navigator.clipboard.writeText(field.value);
    return true;
  } catch {
    field.select();
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  }
}
