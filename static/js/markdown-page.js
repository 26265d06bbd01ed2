// For read-only pages (e.g. a shared conversation): render every element marked
// `data-markdown` from its server-escaped text. Load with
// <script type="module" src="{% static 'js/markdown-page.js' %}"></script>.

import { hydrateMarkdown } from "./markdown.js";

hydrateMarkdown(document);
