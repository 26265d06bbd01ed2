"""Settings for the test suite: the product's settings with a fast password hasher and,
under pytest-xdist (`make test-fast`), a Redis database of its own for each worker.

`make test` and `make test-fast` pass ``--ds=chatsite.settings_test``; every process a test
starts (live servers, Celery workers, runstack) is given the same module, so a password
hashed in the test process verifies in the server.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit


def _worker_redis_url(url: str, worker: str) -> str:
    """``url`` moved to its own Redis database for pytest-xdist worker ``gwN``: base + N.
    Socket counts, replay buffers and channel groups are keyed by ids, and every worker's
    test database (pytest-django names it ``test_..._gwN``) hands out the same ids."""
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0) + int(worker.removeprefix("gw"))
    if database > 15:  # Redis has 16 databases unless configured otherwise
        raise ValueError(f"pytest-xdist worker {worker} would use Redis database {database}, "
                         f"past the last one (15): give REDIS_URL a lower database or run "
                         f"fewer workers")
    return parts._replace(path=f"/{database}").geturl()


# Done once, in the worker: the processes a test starts inherit the moved URL as it is.
if (os.environ.get("REDIS_URL") and os.environ.get("PYTEST_XDIST_WORKER")
        and os.environ.get("TEST_REDIS_WORKER") != os.environ["PYTEST_XDIST_WORKER"]):
    os.environ["REDIS_URL"] = _worker_redis_url(os.environ["REDIS_URL"],
                                                os.environ["PYTEST_XDIST_WORKER"])
    os.environ["TEST_REDIS_WORKER"] = os.environ["PYTEST_XDIST_WORKER"]

from chatsite.settings import *  # noqa: E402, F403

# Speed, test-only: PBKDF2 costs about 0.23 s per password here, and the suite hashes
# thousands (every cast member, every sign-up). MD5 is never acceptable for real accounts.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
