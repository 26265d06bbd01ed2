"""A long statement's placeholder conversion is cached like a short one's
(chatsite.pgqueries): the turn's statements are long and the same on every turn."""

from __future__ import annotations

import importlib

import pytest
from django.db import connection

from chatsite import pgqueries

queries = importlib.import_module("psycopg._queries")

pytestmark = [pytest.mark.django_db]


def _long_statement(params: int) -> tuple[str, list[int]]:
    # Longer than psycopg's own 4,096 characters and with more than its 50 parameters,
    # like the turn's save (90-odd parameters) and the claim (6.2 KB).
    columns = ", ".join(f"%s::int AS value_{n:04d}_{'x' * 40}" for n in range(params))
    return f"SELECT {columns}", list(range(params))


def test_the_limits_are_raised_at_start_up() -> None:
    assert queries.MAX_CACHED_STATEMENT_LENGTH >= pgqueries.STATEMENT_LENGTH
    assert queries.MAX_CACHED_STATEMENT_PARAMS >= pgqueries.STATEMENT_PARAMS


def test_a_long_statement_is_converted_once_and_then_read_from_the_cache() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("psycopg converts placeholders only for PostgreSQL")
    sql, params = _long_statement(90)
    assert len(sql) > 4096
    before = queries._query2pg.cache_info()
    with connection.cursor() as cursor:
        for _ in range(3):
            cursor.execute(sql, params)
            assert list(cursor.fetchone()) == params
    after = queries._query2pg.cache_info()

    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 2


def test_a_statement_past_the_raised_limits_is_still_run() -> None:
    """Beyond the limits psycopg converts it every time, as it always did: correct, only
    not cached."""
    if connection.vendor != "postgresql":
        pytest.skip("psycopg converts placeholders only for PostgreSQL")
    sql, params = _long_statement(pgqueries.STATEMENT_PARAMS + 10)
    before = queries._query2pg.cache_info()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert list(cursor.fetchone()) == params
    after = queries._query2pg.cache_info()

    assert (after.hits, after.misses) == (before.hits, before.misses)


def test_without_the_limits_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(queries, "MAX_CACHED_STATEMENT_PARAMS")

    assert pgqueries.cache_long_statements() is False
