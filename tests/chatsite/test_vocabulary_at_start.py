"""Both serving processes load the token vocabulary as they start, so no one's first turn
waits about 1.5 s of CPU for it: the web process (its prompt estimate) when its ASGI
application (its websocket routes) is imported, a worker (the prompt and the context cut) at ``worker_init``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts Python processes

ROOT = Path(__file__).resolve().parents[2]
LOADED = "from llm import tokens; print('loaded' if tokens._encoding is not None else 'not loaded')"


def run(code: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings_test"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_the_web_process_loads_it_with_its_application() -> None:
    assert run("import django; django.setup(); " + LOADED) == "not loaded"  # the control
    assert run("import chatsite.asgi; " + LOADED) == "loaded"


def test_a_worker_loads_it_as_it_starts() -> None:
    code = ("import django; django.setup(); from celery.signals import worker_init; "
            "worker_init.send(sender=None); " + LOADED)
    assert run(code) == "loaded"
