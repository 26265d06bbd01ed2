"""Container healthchecks, standard library only: run as a script (``python
chatsite/healthcheck.py ...``) so that a check every 30 s does not start Django. The
``/healthz`` view it calls is ``chatsite/health.py``.

    healthcheck.py http URL       exit 0 when URL answers 2xx (redirects are followed,
                                  so an HTTPS redirect of /healthz fails the check)
    healthcheck.py process NAME   exit 0 when the container's main process (PID 1) was
                                  started with NAME as one of its arguments
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def host_header() -> str:
    """The first name in ALLOWED_HOSTS: Django answers 400 to any other Host."""
    first = os.environ.get("ALLOWED_HOSTS", "").split(",")[0].strip()
    return first.lstrip("*.") or "localhost"


def check_http(url: str) -> str | None:
    """None when healthy, else what went wrong."""
    request = urllib.request.Request(url, headers={"Host": host_header()})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (fixed URL)
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url} unreachable: {exc}"
    return None if 200 <= status < 300 else f"{url} answered {status}"


def check_process(name: str, cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    try:
        arguments = cmdline.read_bytes().split(b"\0")
    except OSError as exc:
        return f"cannot read {cmdline}: {exc}"
    return None if name.encode() in arguments else f"PID 1 is not running {name}"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("http", "process"):
        print("usage: healthcheck.py http URL | process NAME", file=sys.stderr)
        return 2
    kind, target = argv
    problem = check_http(target) if kind == "http" else check_process(target)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
