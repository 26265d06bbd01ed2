"""psycopg's cache of converted statements, widened to the turn's long statements.

Before sending a statement psycopg turns its ``%s`` placeholders into PostgreSQL's ``$n``
with a regular-expression pass over the whole text, and keeps the result in a per-process
LRU cache of 128 statements, but only for statements of at most 4,096 characters and 50
parameters (psycopg's guard against ORMs' ``INSERT ... VALUES`` of varying length). A
turn's hot statements are longer: the start of a turn saves its rows in one statement of
90-odd parameters (``answers.replies``), the follow-up's conversation read is 7.8 KB and
the worker's claim 6.2 KB (``chatsite.compiled``). Their text is the same on every turn,
yet each was converted afresh every time: 14 % of the web process's samples on the turn's
fixed path.

The limits are module constants of ``psycopg._queries`` read on every call, so they are
raised once per process (``ChatsiteConfig.ready``). The cache keeps its 128 entries; with
statements of up to 16 KB that bounds it to a few megabytes. If a psycopg release renames
the constants this does nothing and says so, and ``tests/chatsite/test_pgqueries.py``
fails, rather than breaking a query.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger(__name__)

STATEMENT_LENGTH = 16_384
STATEMENT_PARAMS = 256


def cache_long_statements() -> bool:
    """Raise psycopg's limits for caching a statement's conversion; False (and a
    warning) when this psycopg has no such limits."""
    try:
        queries: Any = importlib.import_module("psycopg._queries")
    except ImportError:  # SQLite-only install: nothing to convert
        return False
    names = ("MAX_CACHED_STATEMENT_LENGTH", "MAX_CACHED_STATEMENT_PARAMS")
    if not all(isinstance(getattr(queries, name, None), int) for name in names):
        logger.warning("psycopg has no statement-cache limits to raise; long statements are "
                       "converted on every call")
        return False
    queries.MAX_CACHED_STATEMENT_LENGTH = max(queries.MAX_CACHED_STATEMENT_LENGTH, STATEMENT_LENGTH)
    queries.MAX_CACHED_STATEMENT_PARAMS = max(queries.MAX_CACHED_STATEMENT_PARAMS, STATEMENT_PARAMS)
    return True
