"""Optional sampling profiles of the web and worker processes with py-spy.

``--profile`` records stacks of the thread holding the GIL (``py-spy record --gil --format raw --nonblocking``) of
the web and worker processes during the largest step and summarises them by package,
so the report says where the CPU goes. py-spy itself costs some CPU on the same cores.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PRODUCT_APPS = ("chatsite", "llm", "accounts", "billing", "conversations", "realtime", "answers",
                "sharing")
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, output: Path, duration: float) -> subprocess.Popen[bytes] | None:
    binary = py_spy()
    if binary is None:
        return None
    return subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--gil", "--nonblocking",
         "--duration", str(max(1, round(duration))), "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def bucket(filename: str) -> str:
    """A package-level name for a source file."""
    if "site-packages/" in filename:
        rest = filename.split("site-packages/", 1)[1]
        return rest.split("/", 1)[0].removesuffix(".py")
    for marker in ("/lib/python3", "<frozen"):
        if marker in filename:
            name = filename.rsplit("/", 1)[-1].removesuffix(".py").removesuffix(">")
            return f"stdlib:{name.removeprefix('<frozen ')}"
    parts = filename.split("/")
    for app in PRODUCT_APPS + ("emulator",):
        if app in parts:
            return f"{app}/" + "/".join(parts[parts.index(app) + 1 :])
    return filename


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """Self time by package and function, inclusive time by product function."""
    self_by_package: Counter[str] = Counter()
    self_by_function: Counter[str] = Counter()
    inclusive_product: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"error": f"no profile at {path}"}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in (FRAME.match(part) for part in stack.split(";")) if f is not None]
        if not frames:
            continue
        leaf = frames[-1]
        self_by_package[bucket(leaf["file"])] += count
        self_by_function[f"{leaf['func']} ({bucket(leaf['file'])})"] += count
        seen = set()
        for frame in frames:
            name = bucket(frame["file"])
            if name.split("/", 1)[0] in PRODUCT_APPS:
                key = f"{frame['func']} ({name})"
                if key not in seen:
                    seen.add(key)
                    inclusive_product[key] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "self_by_package_pct": share(self_by_package),
        "self_by_function_pct": share(self_by_function),
        "inclusive_product_pct": share(inclusive_product),
    }
