"""Strict parsing of settings from the environment.

Every setting the product reads comes through these helpers, so a typo such as
``DEBUG=ture`` fails loudly at start-up instead of silently meaning ``False``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qs, unquote, urlsplit


class ImproperlyConfiguredEnv(ValueError):
    pass


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_secret(name: str) -> str:
    """A secret from ``NAME``, or from the file named by ``NAME_FILE`` (Docker/Kubernetes
    secrets), so keys need not sit in the process environment."""
    path = os.environ.get(f"{name}_FILE", "").strip()
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ImproperlyConfiguredEnv(f"{name}_FILE points at {path!r}, which cannot be read") from exc
    return env_str(name)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfiguredEnv(f"{name} must be one of true/false/1/0/yes/no, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"{name} must be an integer, not {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfiguredEnv(f"{name} must be at least {minimum}, not {value}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default).lower() or default
    if value not in choices:
        raise ImproperlyConfiguredEnv(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def env_decimal(name: str, default: str, *, minimum: Decimal | None = None) -> Decimal:
    raw = env_str(name, default) or default
    try:
        # Only ASCII digits: Decimal() would also accept "²" or Arabic-Indic digits.
        if not raw.isascii():
            raise InvalidOperation
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise ImproperlyConfiguredEnv(f"{name} must be a decimal number, not {raw!r}") from exc
    if not value.is_finite() or (minimum is not None and value < minimum):
        raise ImproperlyConfiguredEnv(f"{name} must be a finite number of at least {minimum}, not {raw!r}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


@dataclass(frozen=True)
class DatabaseURL:
    engine: str
    name: str
    user: str
    password: str
    host: str
    port: str
    options: dict[str, str]


def parse_database_url(url: str) -> DatabaseURL:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ImproperlyConfiguredEnv(
            f"DATABASE_URL must start with postgres:// or postgresql://, not {parts.scheme!r}://"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfiguredEnv("DATABASE_URL must name a database, e.g. postgres://host/teamchat")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return DatabaseURL(
        engine="django.db.backends.postgresql",
        name=name,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        host=parts.hostname or "",
        port=str(parts.port or ""),
        options=query,
    )


def check_redis_url(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfiguredEnv(f"REDIS_URL must start with redis:// or rediss://, not {url!r}")
    return url


def parse_site_url(url: str, *, name: str = "SITE_URL") -> str:
    """``scheme://host[:port]`` with nothing after it, normalised (lower-case scheme and
    host, no trailing slash): the base every emailed link is built on."""
    parts = urlsplit(url.strip())
    example = f"e.g. {name}=https://chat.example.com"
    if parts.scheme not in {"http", "https"}:
        raise ImproperlyConfiguredEnv(f"{name} must start with http:// or https://, not {url!r} ({example})")
    try:
        port = parts.port
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"{name} has an invalid port: {url!r} ({example})") from exc
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ImproperlyConfiguredEnv(f"{name} must name a host and nothing else: {url!r} ({example})")
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise ImproperlyConfiguredEnv(
            f"{name} must be the site's origin only, without a path, query or fragment: {url!r} ({example})"
        )
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
