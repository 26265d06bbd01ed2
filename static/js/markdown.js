// Markdown → sanitised HTML for model output, which is untrusted.
//
// Pipeline: marked (GFM) with raw HTML escaped, images turned into text, code highlighted
// by highlight.js and math rendered by KaTeX at the token level (so `$` inside code stays
// literal), then DOMPurify with a strict allow-list. Works under `script-src 'self'`:
// none of these libraries needs eval.

import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import katex from "../vendor/katex/katex.mjs";
import hljs from "../vendor/highlight/es/highlight.min.js";

const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (ch) => HTML_ESCAPES[ch]);
}

// --- Small caches: a streaming answer is re-rendered many times, its finished code
// blocks and formulas need not be highlighted / typeset again each time.

class Cache {
  constructor(limit) {
    this.limit = limit;
    this.map = new Map();
  }
  get(key, make) {
    let value = this.map.get(key);
    if (value === undefined) {
      value = make();
      if (this.map.size >= this.limit) this.map.delete(this.map.keys().next().value);
      this.map.set(key, value);
    }
    return value;
  }
}

const mathCache = new Cache(500);
const codeCache = new Cache(200);

// --- Math ---------------------------------------------------------------------------

const KATEX_OPTIONS = {
  throwOnError: false,
  trust: false, // no \href, \url, \includegraphics, \htmlClass…: they render as errors
  strict: "ignore",
  output: "htmlAndMathml",
  maxSize: 50,
  maxExpand: 500, // macro bombs stop here instead of freezing the tab
};

function renderMath(tex, display) {
  return mathCache.get(`${display ? "D" : "I"}${tex}`, () => {
    try {
      return katex.renderToString(tex, { ...KATEX_OPTIONS, displayMode: display });
    } catch {
      // throwOnError:false covers parse errors; anything else shows the source.
      return `<code class="math-source">${escapeHtml(tex)}</code>`;
    }
  });
}

const BLOCK_MATH = [
  // $$ … $$ or \[ … \] starting a block and ending its line.
  /^ {0,3}\$\$((?:[^$]|\$(?!\$))+?)\$\$[ \t]*(?:\n+|$)/,
  /^ {0,3}\\\[((?:[^\\]|\\(?!\]))+?)\\\][ \t]*(?:\n+|$)/,
];

const INLINE_MATH = [
  [/^\$\$((?:[^$\\]|\\[\s\S]|\$(?!\$))+?)\$\$/, true],
  [/^\\\[((?:[^\\]|\\(?!\]))+?)\\\]/, true],
  [/^\\\(((?:[^\\]|\\(?!\)))+?)\\\)/, false],
  // $…$: not "$ 5", not "$5 and $6" (Pandoc's rule: no space inside the delimiters,
  // no digit right after the closing one).
  [/^\$(?![\s$])((?:[^$\\\n]|\\[\s\S]|\n(?![ \t]*\n))+?)\$(?!\d)/, false],
];

const mathExtensions = [
  {
    name: "blockMath",
    level: "block",
    start(src) {
      const match = /(?:^|\n) {0,3}(?:\$\$|\\\[)/.exec(src);
      if (!match) return undefined;
      return match.index + (match[0].startsWith("\n") ? 1 : 0);
    },
    tokenizer(src) {
      for (const rule of BLOCK_MATH) {
        const match = rule.exec(src);
        if (match && match[1].trim()) {
          return { type: "blockMath", raw: match[0], text: match[1].trim() };
        }
      }
      return undefined;
    },
    renderer(token) {
      return `<div class="math math-display">${renderMath(token.text, true)}</div>\n`;
    },
  },
  {
    name: "inlineMath",
    level: "inline",
    start(src) {
      const index = src.search(/\$|\\[([]/);
      return index < 0 ? undefined : index;
    },
    tokenizer(src) {
      for (const [rule, display] of INLINE_MATH) {
        const match = rule.exec(src);
        if (!match) continue;
        const tex = match[1];
        if (!tex.trim() || (!display && /\s$/.test(tex))) continue;
        return { type: "inlineMath", raw: match[0], text: tex.trim(), display };
      }
      return undefined;
    },
    renderer(token) {
      const kind = token.display ? "math-display" : "math-inline";
      return `<span class="math ${kind}">${renderMath(token.text, token.display)}</span>`;
    },
  },
];

// --- Code ---------------------------------------------------------------------------

function languageOf(info) {
  const word = (info || "").trim().split(/\s+/)[0].toLowerCase();
  return /^[a-z0-9_+#.-]{1,32}$/.test(word) ? word : "";
}

function highlightCode(text, language) {
  return codeCache.get(`${language}\u0000${text}`, () => {
    if (language && hljs.getLanguage(language)) {
      try {
        return hljs.highlight(text, { language, ignoreIllegals: true }).value;
      } catch {
        // fall through to plain text
      }
    }
    return escapeHtml(text);
  });
}

// --- Renderer overrides ----------------------------------------------------------------

const renderer = {
  // Raw HTML in Markdown is shown as text, never interpreted.
  html({ text, block }) {
    const escaped = escapeHtml(text);
    return block ? `<p class="md-raw-html">${escaped.replace(/\n+$/, "")}</p>\n` : escaped;
  },

  code({ text, lang }) {
    const language = languageOf(lang);
    const known = language && hljs.getLanguage(language);
    const codeClass = known ? `hljs language-${language}` : "hljs";
    return (
      `<div class="code-block"><div class="code-header"><span class="code-lang">` +
      `${escapeHtml(language || "text")}</span></div>` +
      `<pre><code class="${codeClass}">${highlightCode(text.replace(/\n$/, ""), language)}</code></pre></div>\n`
    );
  },

  // Images are never loaded (a Markdown image could carry data to a remote server);
  // they become text plus, for web URLs, an ordinary link the reader may choose to open.
  image({ href, text }) {
    const label = escapeHtml(`[image: ${text || "no description"}]`);
    if (!href) return `<span class="md-image">${label}</span>`;
    const url = escapeHtml(href);
    const target = /^https?:\/\//i.test(href) ? `<a href="${url}">${url}</a>` : url;
    return `<span class="md-image">${label} (${target})</span>`;
  },

  // Task lists: a symbol instead of a form control.
  checkbox({ checked }) {
    return `<span class="task-box" aria-hidden="true">${checked ? "☑" : "☐"}</span> `;
  },
};

const marked = new Marked({ gfm: true, breaks: false, async: false });
marked.use({ extensions: mathExtensions, renderer });

// --- Sanitiser ----------------------------------------------------------------------------

const purifier = DOMPurify(window);

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const SVG_NS = "http://www.w3.org/2000/svg";
const MATHML_NS = "http://www.w3.org/1998/Math/MathML";

function isSafeHref(href) {
  try {
    return SAFE_PROTOCOLS.has(new URL(href, document.baseURI).protocol);
  } catch {
    return false;
  }
}

purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.namespaceURI === SVG_NS || node.namespaceURI === MATHML_NS) {
    // KaTeX's SVG and MathML never link anywhere; nothing inside them may.
    for (const name of ["href", "xlink:href", "src", "action"]) node.removeAttribute(name);
    return;
  }
  if (node.tagName === "A") {
    const href = node.getAttribute("href");
    if (href === null || !isSafeHref(href)) {
      node.removeAttribute("href");
      node.removeAttribute("target");
    } else {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  }
});

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true, svg: true, mathMl: true },
  ADD_TAGS: ["annotation"],
  ADD_ATTR: ["encoding"],
  FORBID_TAGS: [
    "script", "style", "link", "meta", "base", "template", "noscript",
    "img", "image", "picture", "source", "video", "audio", "track", "canvas",
    "iframe", "frame", "frameset", "object", "embed", "portal",
    "form", "input", "button", "textarea", "select", "option", "dialog",
    "foreignObject", "use", "feImage", "animate", "animateMotion", "animateTransform", "set",
    "applet",
  ],
  FORBID_ATTR: ["srcset", "action", "formaction", "background", "poster", "ping", "xlink:href"],
  ALLOW_DATA_ATTR: false,
  ALLOW_UNKNOWN_PROTOCOLS: false,
  ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  SANITIZE_DOM: true,
  SANITIZE_NAMED_PROPS: true,
};

export function sanitizeHtml(html) {
  return purifier.sanitize(html, PURIFY_CONFIG);
}

// --- Public API ---------------------------------------------------------------------------

/** Render untrusted Markdown (model output) to sanitised HTML. */
export function renderMarkdown(text) {
  if (!text) return "";
  let html;
  try {
    html = marked.parse(String(text));
  } catch {
    html = `<p class="md-raw-html">${escapeHtml(text)}</p>`;
  }
  return sanitizeHtml(html);
}

/** Render Markdown into an element (replacing its content). */
export function renderMarkdownInto(element, text) {
  element.innerHTML = renderMarkdown(text);
}

/**
 * Render every element marked `data-markdown` under `root`, using its text content
 * (server-rendered, HTML-escaped by the template) as the Markdown source. For read-only
 * pages such as shared conversations.
 */
export function hydrateMarkdown(root = document) {
  for (const element of root.querySelectorAll("[data-markdown]")) {
    if (element.dataset.rendered === "true") continue;
    renderMarkdownInto(element, element.textContent);
    element.dataset.rendered = "true";
  }
}
