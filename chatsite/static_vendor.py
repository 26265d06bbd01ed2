"""Browser libraries installed by npm, exposed to collectstatic under /static/vendor/.

``package.json`` pins the libraries and ``npm ci`` installs them into ``node_modules``;
nothing is copied into the repository. Only the distribution folders the pages load are
exposed (not the libraries' sources, tests or CLIs), and a folder that does not exist yet
is skipped so Django still starts before npm has run.
"""

from __future__ import annotations

from pathlib import Path

# (URL prefix under STATIC_URL, folder inside node_modules)
VENDOR_DIRS: tuple[tuple[str, str], ...] = (
    ("vendor/marked", "marked/lib"),
    ("vendor/dompurify", "dompurify/dist"),
    ("vendor/katex", "katex/dist"),
    ("vendor/highlight/es", "@highlightjs/cdn-assets/es"),
    ("vendor/highlight/styles", "@highlightjs/cdn-assets/styles"),
)


def vendor_static_dirs(node_modules: Path) -> list[tuple[str, str]]:
    """(prefix, directory) pairs for ``STATICFILES_DIRS``, for the folders that exist."""
    pairs: list[tuple[str, str]] = []
    for prefix, relative in VENDOR_DIRS:
        directory = node_modules / relative
        if directory.is_dir():
            pairs.append((prefix, str(directory)))
    return pairs
