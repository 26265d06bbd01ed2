from __future__ import annotations

from pathlib import Path

import pytest

from chatsite.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_secret,
    parse_database_url,
    parse_site_url,
)


def test_a_secret_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\n")
    monkeypatch.delenv("SOME_KEY", raising=False)
    monkeypatch.setenv("SOME_KEY_FILE", str(secret))
    assert env_secret("SOME_KEY") == "sk-from-file"


def test_an_unreadable_secret_file_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_KEY_FILE", "/nonexistent/key")
    with pytest.raises(ImproperlyConfiguredEnv):
        env_secret("SOME_KEY")


def test_a_typo_in_a_boolean_fails_instead_of_meaning_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG_X", "ture")
    with pytest.raises(ImproperlyConfiguredEnv):
        env_bool("DEBUG_X")


def test_database_urls_are_parsed_strictly() -> None:
    parsed = parse_database_url("postgres://u:p%40ss@db.example:6543/chat?sslmode=require")
    assert (parsed.user, parsed.password, parsed.host, parsed.port, parsed.name) == (
        "u", "p@ss", "db.example", "6543", "chat")
    assert parsed.options == {"sslmode": "require"}
    with pytest.raises(ImproperlyConfiguredEnv):
        parse_database_url("mysql://db/chat")
    with pytest.raises(ImproperlyConfiguredEnv):
        parse_database_url("postgres://db/")


def test_site_url_is_an_origin_and_nothing_else() -> None:
    assert parse_site_url("HTTPS://Chat.Example.com/") == "https://chat.example.com"
    assert parse_site_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert parse_site_url("http://[::1]:8000") == "http://[::1]:8000"
    for bad in ("chat.example.com", "ftp://chat.example.com", "https://chat.example.com/app",
                "https://chat.example.com/?x=1", "https://chat.example.com/#top",
                "https://user:pw@chat.example.com", "https://chat.example.com:99999", "https://"):
        with pytest.raises(ImproperlyConfiguredEnv, match="SITE_URL"):
            parse_site_url(bad)
