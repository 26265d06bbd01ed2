"""Parsing ids and numbers from query strings and forms, the one strict way.

``int()`` accepts "²"-free but surprising input ("٣" is 3, "1_000" is 1000, " 7 " is 7) and
digits beyond any database integer; an id from a request is ASCII digits that fit a
bigint, or it is not an id.
"""

from __future__ import annotations

import re

_ID = re.compile(r"[0-9]{1,18}")


def parse_id(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 10**18 else None
    if isinstance(value, str) and _ID.fullmatch(value):
        return int(value)
    return None
