"""PostgreSQL plans a hot statement once per pooled connection, not on every call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from accounts.models import User
from tests.conftest import settings_module

ROOT = Path(__file__).resolve().parents[2]


def _prepared_on_this_connection() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_a_statement_run_five_times_is_prepared_on_its_connection(alice: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    assert connection.settings_dict["OPTIONS"]["server_side_binding"] is True

    for _ in range(6):
        assert User.objects.filter(pk=alice.pk, is_active=True).only("password").first() == alice

    prepared = _prepared_on_this_connection()
    assert any('FROM "accounts_user"' in statement and "$1" in statement for statement in prepared)


def _database_options(**env: str) -> dict[str, Any]:
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps({k: v for k, v in settings.DATABASES['default']['OPTIONS'].items()"
        " if k != 'pool'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": settings_module(),
             "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/teamchat", **env},
    )
    assert result.returncode == 0, result.stderr
    options: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return options


@pytest.mark.slow  # starts a child process
def test_prepared_statements_are_on_by_default_and_can_be_turned_off() -> None:
    assert _database_options() == {"server_side_binding": True, "prepare_threshold": 5}
    assert _database_options(DB_PREPARED_STATEMENTS="false") == {}
