"""Log lines never carry a link's secret.

Password-reset, invitation, sign-up, verification and share links hold their secret in
the path, and request paths reach the logs in access lines ("GET /invite/<token>/ ...")
and in Django's 404 warnings. ``MaskTokens`` replaces the secret part of such a path in
every record it sees; it sits on the product's console handler (``settings.LOGGING``) and
on uvicorn's own handlers (``uvicorn_log_config``), which do not propagate to the root
logger.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any

MASK = "[masked]"
_SEP = r"(?:/|%2[Ff])"
# What the product's tokens are made of: URL-safe base64, hex, and signing's ":" and ".".
_TOKEN = r"[A-Za-z0-9_\-.:~]+"
_SECRET_PATHS = (
    # /invite/<token>/, /s/<share token>/, /accounts/signup/finish/<token>/,
    # /accounts/verify-email/<token>/
    re.compile(rf"({_SEP}(?:invite|s|signup{_SEP}finish|verify-email){_SEP})({_TOKEN})"),
    # /accounts/password/reset/<uidb64>/<token>/; Django swaps the token for
    # "set-password" once it has checked it, which is no secret.
    re.compile(rf"({_SEP}password{_SEP}reset{_SEP}{_TOKEN}{_SEP})(?!set-password\b)({_TOKEN})"),
)


def mask_secrets(text: str) -> str:
    for pattern in _SECRET_PATHS:
        text = pattern.sub(lambda match: match.group(1) + MASK, text)
    return text


def _masked(value: Any) -> Any:
    return mask_secrets(value) if isinstance(value, str) else value


class MaskTokens(logging.Filter):
    """Masks link secrets in a record's message, arguments and traceback text.

    String arguments are masked in place, so formatters that unpack ``args`` (uvicorn's
    access formatter) still get their tuple; a secret inside any other argument's text
    turns the record into its masked, already formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_secrets(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_masked(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _masked(value) for key, value in record.args.items()}
        if record.args:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                message = ""
            masked = mask_secrets(message)
            if masked != message:
                record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with ``MaskTokens`` on each of its handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["mask_tokens"] = {"()": "chatsite.logs.MaskTokens"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("mask_tokens")
    return config
