"""A bench run whose servers logged errors keeps a copy of their logs beside its results:
the next run rewrites ``var/bench/logs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import cli


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cli.report, "render", lambda result: "# results\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "worker-2.log").write_text("Traceback (most recent call last):\n  ...\n")
    return tmp_path


def _kept(out: Path) -> list[Path]:
    return sorted((out / "runs").glob("*-logs"))


def test_a_run_with_server_errors_keeps_its_logs(out: Path) -> None:
    result: dict[str, Any] = {"sustained": [{"log_errors": {}}, {"log_errors": {"worker-2": 48}}]}

    cli._write(result, out)

    [kept] = _kept(out)
    assert (kept / "worker-2.log").read_text().startswith("Traceback")
    assert (out / "runs" / f"{kept.name.removesuffix('-logs')}.md").exists()


def test_a_clean_run_copies_no_logs(out: Path) -> None:
    cli._write({"sustained": [{"log_errors": {}}]}, out)

    assert _kept(out) == []
    assert len(list((out / "runs").glob("*.md"))) == 1
