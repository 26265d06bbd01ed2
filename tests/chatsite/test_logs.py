"""Link secrets never reach the logs. A web process started as production starts it
(`runstack --only web`, DEBUG off, INFO logging, mail delivered rather than printed) serves
a password reset, an invitation, an open sign-up, an email verification and a share link,
each link opened as its recipient would; its whole output then holds none of the tokens,
though it logged every one of those requests."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import pytest
from django.db import connection
from django.test import Client

from accounts.models import User
from chatsite.logs import (
    MASK,
    JSONFormatter,
    MaskTokens,
    RequestIds,
    bind_ids,
    mask_secrets,
    task_ended,
    task_started,
    uvicorn_log_config,
)
from sharing.links import create_link
from tests.chatsite.test_deploy import ROOT, production_env
from tests.conftest import free_port, make_user
from tests.sharing.conftest import make_conversation

SECRET = "dj6oas-ab6a34155c524bda50c4dfffc0b77e8c"


def test_access_and_404_lines_lose_the_secret_of_every_kind_of_link() -> None:
    lines = {
        f'1.2.3.4:0 - "GET /invite/{SECRET}/ HTTP/1.1" 200': f"/invite/{MASK}/",
        f"Not Found: /s/{SECRET}/": f"/s/{MASK}/",
        f"GET /s/{SECRET}/continue/": f"/s/{MASK}/continue/",
        f"GET /accounts/password/reset/MQ/{SECRET}/": f"/accounts/password/reset/MQ/{MASK}/",
        f"GET /accounts/signup/finish/.eJy{SECRET}:1v:ab/": f"/accounts/signup/finish/{MASK}/",
        f"GET /accounts/verify-email/{SECRET}/": f"/accounts/verify-email/{MASK}/",
        f"GET /accounts/login/?next=%2Fs%2F{SECRET}%2Fcontinue%2F": f"%2Fs%2F{MASK}%2F",
    }
    for line, masked in lines.items():
        assert SECRET not in mask_secrets(line), line
        assert masked in mask_secrets(line), mask_secrets(line)
    # What is not a secret stays readable.
    for plain in ("GET /accounts/password/reset/MQ/set-password/", "GET /accounts/password/reset/sent/",
                  "GET /static/js/chat.js", "GET /c/12/share/", "GET /shared/"):
        assert mask_secrets(plain) == plain


@pytest.fixture
def production_web(transactional_db: None, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """`runstack --only web` on this test's database with production settings; yields its
    URL, the folder its mail is delivered to, and the file of everything it printed."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    parts = urlsplit(production_env()["DATABASE_URL"])
    database_url = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    mail_dir, output = tmp_path / "mail", tmp_path / "web.log"
    env = production_env(
        DATABASE_URL=database_url, SECRET_KEY="test-only-secret-key", ALLOWED_HOSTS="127.0.0.1",
        CSRF_TRUSTED_ORIGINS="", SITE_URL=base, SECURE_COOKIES="false",
        BEHIND_TLS_PROXY="false", HSTS_SECONDS="0", SIGNUP="open", WEB_PROCESSES="1",
        LOG_LEVEL="INFO", EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(mail_dir), DB_POOL_MAX="4",
        # Rate-limit counts outlive a test in the shared Redis; these are not under test.
        SIGNUPS_PER_HOUR="10000", PASSWORD_RESETS_PER_HOUR="10000", INVITATIONS_PER_HOUR="10000",
    )
    with open(output, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runstack", "--only", "web", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx2.get(f"{base}/healthz", timeout=2).status_code in (200, 503):
                    break
            except httpx2.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        yield base, mail_dir, output
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _csrf(client: httpx2.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]  # type: ignore[index]


def _post(client: httpx2.Client, form_page: str, action: str, data: dict[str, str]) -> Any:
    response = client.post(action, data={**data, "csrfmiddlewaretoken": _csrf(client, form_page)})
    assert response.status_code in (200, 302), response.text[:500]
    return response


def _mailed_link(mail_dir: Path, pattern: str) -> str:
    for path in sorted(mail_dir.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True):
        match = re.search(pattern, path.read_text())
        if match:
            return match[0]
    raise AssertionError(f"no mail with {pattern!r}")


def _signed_in(base: str, user: User) -> httpx2.Client:
    session = Client()
    session.force_login(user)
    client = httpx2.Client(base_url=base, timeout=30)
    client.cookies.set("sessionid", session.cookies["sessionid"].value)
    return client


@pytest.mark.slow
def test_no_token_of_a_reset_invitation_sign_up_verification_or_share_reaches_the_log(
    production_web: tuple[str, Path, Path]
) -> None:
    base, mail_dir, output = production_web
    # Addresses of their own: per-address mail limits in Redis outlive a test run.
    run = uuid.uuid4().hex[:12]
    alice = make_user(f"alice-{run}@example.com", org_name="Acme")
    tokens: list[str] = []
    anonymous = httpx2.Client(base_url=base, timeout=30)

    _post(anonymous, "/accounts/password/reset/", "/accounts/password/reset/", {"email": alice.email})
    reset = _mailed_link(mail_dir, rf"{re.escape(base)}/accounts/password/reset/[^/\s]+/[^/\s]+/")
    tokens.append(reset.rstrip("/").rsplit("/", 1)[1])
    assert anonymous.get(reset).status_code == 302  # on to the set-password form

    as_alice = _signed_in(base, alice)
    _post(as_alice, "/org/", "/org/invitations/", {"email": f"dana-{run}@example.com", "role": "member"})
    invitation = _mailed_link(mail_dir, rf"{re.escape(base)}/invite/[^/\s]+/")
    tokens.append(invitation.rstrip("/").rsplit("/", 1)[1])
    assert httpx2.get(invitation, timeout=30).status_code in (200, 302)

    _post(anonymous, "/accounts/signup/", "/accounts/signup/", {"email": f"erin-{run}@example.net"})
    sign_up = _mailed_link(mail_dir, rf"{re.escape(base)}/accounts/signup/finish/[^/\s]+/")
    tokens.append(sign_up.rstrip("/").rsplit("/", 1)[1])
    assert httpx2.get(sign_up, timeout=30).status_code in (200, 302)

    _post(as_alice, "/account/", "/accounts/verify-email/", {})
    verify = _mailed_link(mail_dir, rf"{re.escape(base)}/accounts/verify-email/[^/\s]+/")
    tokens.append(verify.rstrip("/").rsplit("/", 1)[1])
    assert as_alice.get(verify).status_code in (200, 302)

    conversation = make_conversation(alice)
    share = create_link(user=alice, conversation_id=conversation.pk, visibility="org",
                        expires_at=None).token
    tokens.append(share)
    assert as_alice.get(f"/s/{share}/").status_code == 200
    assert anonymous.get(f"/s/{share}/continue/").status_code == 302  # to sign in, ?next=
    unknown = "x" * 43
    tokens.append(unknown)
    assert anonymous.get(f"/s/{unknown}/").status_code == 404  # Django logs a warning

    time.sleep(0.5)  # the access lines of the last requests are flushed
    log = output.read_text()
    # Every request that carried a token was logged, with the token masked.
    for path in ("/accounts/password/reset/[^/ ]+/{}/", "/invite/{}/", "/accounts/signup/finish/{}/",
                 "/accounts/verify-email/{}/", "/s/{}/", "/s/{}/continue/"):
        line = '"GET ' + path.format(re.escape(MASK)) + ' HTTP/1.1"'
        assert re.search(line, log), (line, log[-3000:])
    assert f"Not Found: /s/{MASK}/" in log, log[-3000:]
    leaked = [token for token in tokens if token in log]
    assert not leaked, log[-3000:]


# --- JSON lines (LOG_FORMAT=json) -----------------------------------------------------------------

METRICS_SECRET = "metrics-secret-value-0123456789abcdef"


@pytest.fixture
def json_log(settings: Any) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose records go through the production chain: MaskTokens, then
    JSONFormatter, one line each into the returned buffer."""
    settings.METRICS_TOKEN = METRICS_SECRET
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(MaskTokens())
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger(f"tests.json.{uuid.uuid4().hex[:8]}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)


def lines_of(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_every_json_line_of_a_request_carries_its_id_and_no_secret(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_log

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        logger.info("GET /invite/%s/ from %s", SECRET, scope["path"])
        logger.warning("the provider said: bad key %s", METRICS_SECRET,
                       extra={"authorization": "Bearer abc", "answer_id": 7,
                              # Django's 4xx lines pass the request, whose repr has its path.
                              "request": SimpleNamespace(path=f"/invite/{SECRET}/")})
        try:
            raise ValueError(f"token {METRICS_SECRET} refused at /s/{SECRET}/")
        except ValueError:
            logger.exception("it failed")

    async def requests() -> None:
        await RequestIds(app)({"type": "http", "path": "/one"}, None, None)
        await RequestIds(app)({"type": "websocket", "path": "/ws/chat/"}, None, None)

    asyncio.run(requests())
    logger.info("outside any request")
    text = buffer.getvalue()
    assert SECRET not in text and METRICS_SECRET not in text, text
    lines = lines_of(buffer)
    assert len(lines) == 7
    first, second = lines[:3], lines[3:6]
    for request in (first, second):
        ids = {line["request_id"] for line in request}
        assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{16}", ids.pop())
    assert first[0]["request_id"] != second[0]["request_id"]
    assert "request_id" not in lines[6]
    assert first[0]["event"] == f"GET /invite/{MASK}/ from /one"
    assert first[0]["level"] == "info" and first[0]["logger"] == logger.name
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", first[0]["time"])
    assert first[1]["event"] == f"the provider said: bad key {MASK}"
    assert first[1]["authorization"] == MASK and first[1]["answer_id"] == 7
    assert first[1]["request"] == f"namespace(path='/invite/{MASK}/')"
    assert first[2]["level"] == "error" and "ValueError" in first[2]["exception"]
    assert f"/s/{MASK}/" in first[2]["exception"]


def test_a_tasks_lines_carry_its_id_and_an_answers_lines_its_answer_id(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    """What a worker's task thread binds reaches the answer's coroutine, which it starts
    on the event loop (answers.engine: ``call_soon_threadsafe``), and nothing is left
    for the thread's next task."""
    logger, buffer = json_log
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    done = threading.Event()

    async def the_answer() -> None:
        logger.warning("retrying the answer")
        done.set()

    def task_thread() -> None:
        task_started(task_id="task-1", task=SimpleNamespace(name="conversations.tasks.generate_reply"))
        bind_ids(answer_id=42)
        loop.call_soon_threadsafe(lambda: loop.create_task(the_answer()))
        logger.info("claimed")
        task_ended()
        logger.info("between tasks")

    worker = threading.Thread(target=task_thread)
    worker.start()
    worker.join()
    assert done.wait(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
    lines = {line["event"]: line for line in lines_of(buffer)}
    for event in ("claimed", "retrying the answer"):
        assert lines[event]["answer_id"] == 42
        assert lines[event]["task_id"] == "task-1"
        assert lines[event]["task"] == "conversations.tasks.generate_reply"
    assert not {"answer_id", "task_id", "task"} & set(lines["between tasks"])


@pytest.mark.slow  # three Django processes
def test_log_format_json_renders_uvicorn_and_every_other_line_as_json(settings: Any) -> None:
    settings.LOG_FORMAT = "json"
    config = uvicorn_log_config()
    assert {name: formatter["()"] for name, formatter in config["formatters"].items()} == {
        "default": "chatsite.logs.JSONFormatter", "access": "chatsite.logs.JSONFormatter"}
    assert all("mask_tokens" in handler["filters"] for handler in config["handlers"].values())
    settings.LOG_FORMAT = "text"
    assert "JSONFormatter" not in json.dumps(uvicorn_log_config())
    script = ("import json, django; django.setup(); from django.conf import settings; "
              "print(settings.LOGGING['handlers']['console']['formatter'])")
    for value, formatter in (("json", "json"), ("", "plain"), ("TEXT", "plain")):
        result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                                text=True, timeout=60,
                                env={**production_env(LOG_FORMAT=value), "PYTHONPATH": str(ROOT),
                                     "DJANGO_SETTINGS_MODULE": "chatsite.settings"})
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [formatter]
    refused = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                             text=True, timeout=60,
                             env={**production_env(LOG_FORMAT="xml"), "PYTHONPATH": str(ROOT),
                                  "DJANGO_SETTINGS_MODULE": "chatsite.settings"})
    assert refused.returncode != 0 and "LOG_FORMAT must be one of text, json" in refused.stderr


def test_identity_provider_client_secrets_are_masked_from_the_environment_and_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chatsite import logs

    secret_file = tmp_path / "okta-secret"
    secret_file.write_text("file-held-client-secret-0123\n")
    monkeypatch.setenv("OIDC_CLIENT_SECRET_ACME", "env-held-client-secret-4567")
    monkeypatch.setenv("OIDC_CLIENT_SECRET_OKTA_FILE", str(secret_file))
    logs._key_env_values.cache_clear()
    try:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1,
                                   "token endpoint said %s for %s", (
                                       "env-held-client-secret-4567",
                                       "file-held-client-secret-0123"), None)
        logs.MaskTokens().filter(record)
        line = record.getMessage()
    finally:
        logs._key_env_values.cache_clear()
    assert "env-held-client-secret-4567" not in line
    assert "file-held-client-secret-0123" not in line
    assert line.startswith("token endpoint said ")
