"""Settings for the test suite: the product's settings with a fast password hasher.

`make test` and `make test-fast` pass ``--ds=chatsite.settings_test``; every process a test
starts (live servers, Celery workers, runstack) is given the same module, so a password
hashed in the test process verifies in the server.
"""

from __future__ import annotations

from chatsite.settings import *  # noqa: F403

# Speed, test-only: PBKDF2 costs about 0.23 s per password here, and the suite hashes
# thousands (every cast member, every sign-up). MD5 is never acceptable for real accounts.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
