"""Log lines never carry a link's secret.

Password-reset, invitation, sign-up, verification and share links hold their secret in
the path, and request paths reach the logs in access lines ("GET /invite/<token>/ ...")
and in Django's 404 warnings. ``MaskTokens`` replaces the secret part of such a path in
every record it sees; it sits on the product's console handler (``settings.LOGGING``) and
on uvicorn's own handlers (``uvicorn_log_config``), which do not propagate to the root
logger.

The values of the configured secrets (SECRET_KEY, METRICS_TOKEN, the provider keys, the
mail and database passwords, the ``LLM_KEY_*`` variables, the ``OIDC_CLIENT_SECRET_*``
values) are masked the same way.

``LOG_FORMAT=json`` renders each record as one JSON object (``JSONFormatter``, built on
structlog's formatter for standard-library records) with the ids bound to the context it
was logged in: ``request_id`` for every line of an HTTP request or a websocket
(``RequestIds``, around the ASGI app), ``task_id``/``task`` for every line of a Celery
task and ``answer_id`` for every line of an answer (``bind_ids`` in the task, inherited
by the answer's coroutine on the worker's event loop). docs/decisions.md#0041.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import secrets
from collections.abc import Mapping, MutableMapping
from functools import lru_cache
from typing import Any

import structlog
from django.conf import settings

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


# Settings whose values never appear in a log line; shorter values are not secrets worth
# the name (and would mask ordinary words).
SECRET_SETTINGS = ("SECRET_KEY", "METRICS_TOKEN", "OPENAI_API_KEY", "AZURE_OPENAI_API_KEY",
                   "EMAIL_HOST_PASSWORD")
MIN_SECRET_LENGTH = 8


@lru_cache(maxsize=1)
def _key_env_values() -> tuple[str, ...]:
    """Model profiles' keys (the LLM_KEY_* variables and the PROFILE_KEY_ENVS names) and
    the identity providers' client secrets (OIDC_CLIENT_SECRET_*, or the file its _FILE
    twin names). The environment does not change while a process runs."""
    names = {name for name in os.environ if name.startswith(("LLM_KEY_", "OIDC_CLIENT_SECRET_"))}
    names.update(getattr(settings, "PROFILE_KEY_ENVS", ()))
    values = []
    for name in sorted(names):
        value = os.environ.get(name, "")
        if name.startswith("OIDC_CLIENT_SECRET_") and name.endswith("_FILE"):
            try:
                with open(value, encoding="utf-8") as secret_file:
                    value = secret_file.read().strip()
            except OSError:
                continue
        values.append(value)
    return tuple(values)


def configured_secrets() -> list[str]:
    if not settings.configured:
        return []
    values = [getattr(settings, name, "") for name in SECRET_SETTINGS]
    values.append(settings.DATABASES.get("default", {}).get("PASSWORD", ""))
    values.extend(_key_env_values())
    return [value for value in values if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH]


def mask_secrets(text: str) -> str:
    for pattern in _SECRET_PATHS:
        text = pattern.sub(lambda match: match.group(1) + MASK, text)
    for value in configured_secrets():
        if value in text:
            text = text.replace(value, MASK)
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
    """uvicorn's own logging configuration, with ``MaskTokens`` on each of its handlers
    and, with LOG_FORMAT=json, the JSON lines of every other record."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["mask_tokens"] = {"()": "chatsite.logs.MaskTokens"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("mask_tokens")
    if settings.LOG_FORMAT == "json":
        config["formatters"] = {name: {"()": "chatsite.logs.JSONFormatter"}
                                for name in config["formatters"]}
    return config


# --- JSON lines and the ids they carry -------------------------------------------------------

# Keys of a record's extra fields whose values are masked whatever they hold.
_SECRET_KEY_NAMES = re.compile(
    r"(?:^|_)(?:password|passwd|secret|token|authorization|api_key|apikey|cookie|credentials?)$",
    re.IGNORECASE,
)


def _redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every string of the line masked as ``MaskTokens`` masks a message (the traceback
    included, which structlog renders afresh), and secret-named fields dropped. Any other
    value but a number is rendered as text here, and masked: the request Django passes
    along with its 4xx lines shows its path."""
    for key, value in event.items():
        if _SECRET_KEY_NAMES.search(key):
            event[key] = MASK
        elif isinstance(value, str):
            event[key] = mask_secrets(value)
        elif not isinstance(value, int | float | None):
            event[key] = mask_secrets(str(value))
    return event


class JSONFormatter(structlog.stdlib.ProcessorFormatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``event`` (the message), the ids bound to the context it was logged in, the record's
    extra fields, and ``exception`` with its traceback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact,
                structlog.processors.JSONRenderer(),
            ],
        )


def bind_ids(**ids: Any) -> None:
    """Put ``ids`` (``answer_id=...``) on every line logged from here on in this context:
    this thread or task, and the tasks and threads it starts (which copy it)."""
    structlog.contextvars.bind_contextvars(**ids)


def task_started(*, task_id: str = "", task: Any = None, **_: Any) -> None:
    """Celery's ``task_prerun``: the task's lines carry its id and name (and nothing of
    the task its thread ran before)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", ""))


def task_ended(**_: Any) -> None:
    """Celery's ``task_postrun``: the thread's next task starts clean."""
    structlog.contextvars.clear_contextvars()


def new_request_id() -> str:
    return secrets.token_hex(8)


class RequestIds:
    """ASGI middleware: every line logged while serving one HTTP request or one websocket
    carries the same ``request_id``. (Each request or socket runs in a task of its own,
    whose context the id lives in.)"""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with structlog.contextvars.bound_contextvars(request_id=new_request_id()):
            await self.app(scope, receive, send)

