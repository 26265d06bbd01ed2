"""How many PostgreSQL connections each kind of process may hold.

No code holds a connection across a provider call (generation and titles release it
before streaming), so a thread needs one only for the milliseconds of a query: a pool
sized to the threads that can *write at once* suffices, not one connection per thread.
"""

from __future__ import annotations

import os

# Threads of a web process that run queries: realtime.consumers' turn pool (8),
# Channels' single database thread, and asyncio's default executor.
TURN_THREADS = 8
SPARE = 2


def web_pool_size() -> int:
    return TURN_THREADS + 1 + min(32, (os.cpu_count() or 1) + 4) + SPARE


# Threads of a worker's event loop that run its answers' database calls (each a short
# write: checkpoint, finish); answers.engine sizes its executor with it.
ENGINE_DB_THREADS = 8


def worker_pool_size(claim_threads: int) -> int:
    """A worker: its Celery threads (which claim answers and run titles), the event
    loop's database threads and the monitor thread, plus spare. However many answers
    the loop streams, no more threads than these touch the database."""
    return claim_threads + ENGINE_DB_THREADS + 1 + SPARE


def resize_pool(max_size: int) -> bool:
    """Set the default database's pool size before this process opens its pool.

    Returns False (and changes nothing) when DB_POOL_MAX was set explicitly or the
    database has no pool (SQLite, DB_POOL=false). A pool opened already (by start-up
    checks) is closed, to be reopened at the new size on the next query.
    """
    from django.db import connections

    if os.environ.get("DB_POOL_MAX", "").strip():
        return False
    wrapper = connections["default"]
    pool = wrapper.settings_dict.get("OPTIONS", {}).get("pool")
    if not isinstance(pool, dict):
        return False
    pool["max_size"] = max(2, max_size)
    if wrapper.alias in getattr(type(wrapper), "_connection_pools", {}):
        wrapper.close()
        wrapper.close_pool()  # type: ignore[attr-defined]  # PostgreSQL backend only
    return True
