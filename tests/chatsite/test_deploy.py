"""Deployable safely: Django's deployment checks pass with the documented production
settings, the .env.example placeholder secret is refused, proxy headers are believed
only from TRUSTED_PROXIES, and the compose file is locked down."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import uvicorn
import yaml
from click.testing import CliRunner
from django.db import connection
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from chatsite import healthcheck

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "worker", "beat", "emulator")
# What compose's web and worker run: the commands `make run` uses outside Docker, which
# honour WEB_PROCESSES and WORKER_PROCESSES.
WEB_COMMAND = "python manage.py runstack --only web --host 0.0.0.0 --port 8000"
WORKER_COMMAND = "python manage.py runstack --only worker"


def production_env(**overrides: str) -> dict[str, str]:
    """The environment README's deployment section asks for, and nothing else."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50)[:50],
        "ALLOWED_HOSTS": "chat.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
        "SECURE_COOKIES": "true",
        "BEHIND_TLS_PROXY": "true",
        "HSTS_SECONDS": "31536000",
        "SITE_URL": "https://chat.example.com",
        "DATABASE_URL": os.environ.get(
            "DATABASE_URL", "postgres://teamchat:teamchat@127.0.0.1:5432/teamchat"
        ),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    }
    env.update(overrides)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- Django settings ------------------------------------------------------------------------


@pytest.mark.slow  # starts a child process
def test_the_deployment_checks_pass_with_the_documented_production_settings() -> None:
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                 production_env())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
@pytest.mark.slow  # starts a child process
def test_healthz_answers_plain_http_while_everything_else_goes_to_https() -> None:
    script = """
import json
import django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="chat.example.com")
health = client.get("/healthz")
login = client.get("/accounts/login/")
secure_login = client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps([health.status_code, login.status_code, login.get("Location"),
                  secure_login.status_code, secure_login.get("Strict-Transport-Security")]))
"""
    # The sign-in page reads the org's identity providers: the process uses the test
    # database (migrated, empty), not whatever DATABASE_URL names.
    test_database = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1/x"))
    test_database = test_database._replace(path="/" + str(connection.settings_dict["NAME"]))
    env = production_env(DJANGO_SETTINGS_MODULE="chatsite.settings", DB_POOL="false",
                         PYTHONPATH=str(ROOT), DATABASE_URL=urlunsplit(test_database))
    result = run([sys.executable, "-c", script], env)
    assert result.returncode == 0, result.stderr
    health, login, location, secure_login, hsts = json.loads(result.stdout.splitlines()[-1])
    assert health in (200, 503)  # healthy or not, never a redirect the healthcheck can't follow
    assert (login, location) == (301, "https://chat.example.com/accounts/login/")
    assert secure_login == 200
    assert hsts == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.slow  # starts a child process
def test_the_placeholder_secret_from_env_example_is_refused_at_start() -> None:
    placeholder = re.search(r"^SECRET_KEY=(.+)$", (ROOT / ".env.example").read_text(), re.M)
    assert placeholder is not None
    result = run([sys.executable, "manage.py", "check"],
                 production_env(SECRET_KEY=placeholder.group(1).strip()))
    assert result.returncode != 0
    assert "SECRET_KEY is still the placeholder from .env.example" in result.stderr


# --- Proxy headers -----------------------------------------------------------------------------


def client_seen(trusted: Any, *, peer: str = "127.0.0.1") -> tuple[str, str]:
    """The client address and scheme the app sees behind uvicorn's proxy-header
    middleware configured with ``trusted``, for a request from ``peer`` that claims to
    come from 203.0.113.9 over HTTPS."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {"type": "http", "scheme": "http", "client": (peer, 40000),
             "headers": [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")]}
    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts=trusted)(scope, None, None))  # type: ignore[arg-type]
    return seen["client"][0], seen["scheme"]


def test_an_empty_trusted_proxies_trusts_no_proxy_even_with_forwarded_allow_ips_set(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conversations.management.commands.runstack import server_config

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    settings.TRUSTED_PROXIES = []
    config = server_config(host="127.0.0.1", port=8000)
    assert config.proxy_headers and config.forwarded_allow_ips == ""
    assert config.ws_max_size == 1_048_576
    assert client_seen(config.forwarded_allow_ips) == ("127.0.0.1", "http")
    # What None (uvicorn's default) would have done instead: trust the environment.
    fallback = uvicorn.Config("chatsite.asgi:application", forwarded_allow_ips=None)
    assert client_seen(fallback.forwarded_allow_ips) == ("203.0.113.9", "https")


def test_an_empty_forwarded_allow_ips_flag_is_passed_on_as_trust_no_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the compose and Dockerfile launchers run: ``--forwarded-allow-ips ""`` when
    TRUSTED_PROXIES is empty reaches uvicorn as "", not as None (its env/127.0.0.1
    fallback)."""
    cli = sys.modules["uvicorn.main"]  # the module; uvicorn.main is the click command
    received: dict[str, Any] = {}
    monkeypatch.setattr(cli, "run", lambda app, **options: received.update(options))
    result = CliRunner().invoke(
        cli.main, ["chatsite.asgi:application", "--ws-max-size", "1048576",
                   "--forwarded-allow-ips", ""], env={"FORWARDED_ALLOW_IPS": "*"},
    )
    assert result.exit_code == 0, result.output
    assert received["forwarded_allow_ips"] == "" and received["proxy_headers"] is True
    assert client_seen(received["forwarded_allow_ips"]) == ("127.0.0.1", "http")


def test_trusted_proxies_are_believed_and_nobody_else(settings: Any) -> None:
    from conversations.management.commands.runstack import server_config

    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.1"]
    trusted = server_config(host="127.0.0.1", port=8000).forwarded_allow_ips
    assert client_seen(trusted, peer="10.1.2.3") == ("203.0.113.9", "https")
    assert client_seen(trusted, peer="192.0.2.1") == ("203.0.113.9", "https")
    assert client_seen(trusted, peer="127.0.0.1") == ("127.0.0.1", "http")


def test_every_launcher_caps_websocket_frames_and_passes_trusted_proxies() -> None:
    """The image and compose start the web role through runstack, whose server_config
    caps frames and passes TRUSTED_PROXIES (tested above); the test servers do the same."""
    from conversations.management.commands.runstack import WS_MAX_SIZE

    assert WS_MAX_SIZE == 1_048_576
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert json.loads(cmd.removeprefix("CMD").strip()) == WEB_COMMAND.split()
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    assert "ws_max_size=1_048_576" in conftest
    assert 'forwarded_allow_ips=",".join(settings.TRUSTED_PROXIES)' in conftest


def test_the_image_runs_as_a_non_root_user_and_bakes_in_no_secret() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "SECRET_KEY=" in dockerfile  # collectstatic must not generate var/secret_key
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "var", ".venv", "node_modules"} <= set(ignored)


# --- Compose -----------------------------------------------------------------------------------


def compose_config(tmp_path: Path, *options: str, **env: str) -> dict[str, Any]:
    """``docker-compose [options] config`` (Debian's) on a copy of the compose file and the
    configs it mounts, next to an .env made from .env.example, as a deployment has them."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install -y docker-compose)")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    example = (ROOT / ".env.example").read_text()
    (tmp_path / ".env").write_text(
        re.sub(r"^SECRET_KEY=.*$", f"SECRET_KEY={secrets.token_urlsafe(50)}", example, flags=re.M)
    )
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env}
    result = run([binary, *options, "config"], environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_compose_file_is_valid_and_locked_down(tmp_path: Path) -> None:
    services = compose_config(tmp_path)["services"]
    # Compose v1 lists the services of every profile too (v2 only those asked for).
    assert set(services) - {"prometheus"} == {"migrate", "proxy", "web", "worker", "beat",
                                              "emulator", "postgres", "redis"}
    for name in APP_SERVICES:
        assert services[name]["user"] == "10001:10001", name
    assert services["proxy"]["user"].split(":")[0] not in ("root", "0")
    for name, service in services.items():
        if name != "migrate":  # a one-shot: it exits once the schema is current
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    # Migrations run once, before anything that uses the schema starts.
    assert services["migrate"]["command"] == "python manage.py migrate --noinput"
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}, name
    web = services["web"]
    assert "/healthz" in " ".join(web["healthcheck"]["test"])
    assert "migrate" not in web["command"]
    assert services["worker"]["healthcheck"]["test"] == [
        "CMD", "python", "manage.py", "runstack", "--ping-workers"]
    # The drain (WORKER_DRAIN_SECONDS, 120 by default) plus time to end what is left.
    assert services["worker"]["stop_grace_period"] == "135s"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    redis = services["redis"]
    assert "--appendonly yes" in redis["command"]
    assert any(volume.startswith("redisdata:/data") for volume in redis["volumes"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert "8001" in " ".join(services["emulator"]["healthcheck"]["test"])


def test_web_and_worker_scale_behind_a_proxy_with_the_commands_that_run_outside_docker(
    tmp_path: Path,
) -> None:
    """`docker compose up --scale web=2 --scale worker=3` works: neither publishes a host
    port or pins a container name, the proxy is the one published service, and each
    container runs runstack's role, which starts WEB_PROCESSES or WORKER_PROCESSES."""
    services = compose_config(tmp_path)["services"]
    for name in ("web", "worker"):
        assert not services[name].get("ports"), f"{name} publishes a port: it cannot scale"
        assert "container_name" not in services[name], name
    assert services["web"]["command"] == WEB_COMMAND
    assert services["worker"]["command"] == WORKER_COMMAND
    published = [name for name, service in services.items()
                 if service.get("ports") and not service.get("profiles")]
    assert published == ["proxy"]
    proxy = services["proxy"]
    assert [(p["host_ip"], p["published"]) for p in _ports(proxy)] == [("127.0.0.1", "8000")]
    assert proxy["depends_on"]["web"] == {"condition": "service_healthy"}
    mounted = {volume.split(":")[1]: volume.split(":")[0] for volume in proxy["volumes"]}
    assert Path(mounted["/etc/nginx/nginx.conf"]) == tmp_path / "deploy" / "nginx.conf"
    # Behind the proxy, web believes X-Forwarded-For/-Proto from the compose network only
    # (it publishes no port, so nothing else reaches it), unless .env narrows it.
    assert services["web"]["environment"]["TRUSTED_PROXIES"] == (
        "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16")
    (tmp_path / "narrowed").mkdir()
    narrowed = compose_config(tmp_path / "narrowed", TRUSTED_PROXIES="172.18.0.0/16")
    assert narrowed["services"]["web"]["environment"]["TRUSTED_PROXIES"] == "172.18.0.0/16"


def test_the_proxy_forwards_websockets_to_every_web_container() -> None:
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    locations = dict(re.findall(r"location\s+([^{]+?)\s*\{(.*?)\n        \}", config, re.S))
    ws, pages = locations["/ws/"], locations["/"]
    for location in (ws, pages):
        # Re-resolved by Docker's DNS: every replica of `web`, followed as it scales.
        assert "proxy_pass $web_upstream;" in location
        assert "proxy_http_version 1.1;" in location
        assert "proxy_set_header Host $http_host;" in location  # CSRF compares the port
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in location
        assert "proxy_set_header X-Forwarded-Proto $forwarded_proto;" in location
    assert "set $web_upstream http://web:8000;" in config
    assert re.search(r"resolver 127\.0\.0\.11 valid=\d+s", config)
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    # A streaming answer or an idle tab never hits the read timeout.
    timeout = re.search(r"proxy_read_timeout (\d+)h;", ws)
    assert timeout and int(timeout[1]) >= 1
    assert "proxy_buffering off;" in ws
    assert re.search(r"map \$http_upgrade \$connection_upgrade", config)
    # ChatGPT imports of IMPORT_MAX_BYTES (50 MB by default) get through.
    body = re.search(r"client_max_body_size (\d+)m;", config)
    assert body and int(body[1]) >= 60
    # Runs as the image's nginx user: nothing written outside /tmp, no privileged port.
    assert "pid /tmp/nginx.pid;" in config and "listen 8080;" in config


def test_an_optional_prometheus_scrapes_every_web_and_worker_container_with_the_token(
    tmp_path: Path,
) -> None:
    """`docker compose --profile metrics up` adds Prometheus: it scrapes /metrics of every
    web replica and the metrics port of every worker replica (Docker's DNS lists them),
    sending METRICS_TOKEN from .env, and is published on loopback only."""
    services = compose_config(tmp_path, "--profile", "metrics", METRICS_TOKEN="t0ken")["services"]
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["metrics"]
    assert prometheus["user"].split(":")[0] not in ("root", "0")
    assert prometheus["environment"] == {"METRICS_TOKEN": "t0ken"}  # nothing else of .env
    assert "env_file" not in prometheus
    assert [(p["host_ip"], p["published"]) for p in _ports(prometheus)] == [("127.0.0.1", "9090")]
    mounted = {volume.split(":")[1]: volume.split(":")[0] for volume in prometheus["volumes"]}
    assert Path(mounted["/etc/prometheus/prometheus.yml"]) == tmp_path / "deploy" / "prometheus.yml"
    command = " ".join(prometheus["command"])
    assert "> /tmp/metrics_token" in command and "--config.file=/etc/prometheus/prometheus.yml" in command

    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_port = int(services["worker"]["environment"]["WORKER_METRICS_PORT"])
    assert str(worker_port) in services["worker"]["expose"]
    assert "8000" in services["web"]["expose"]
    for name, service, port in (("teamchat-web", "web", 8000),
                                ("teamchat-worker", "worker", worker_port)):
        job = jobs[name]
        assert job["metrics_path"] == "/metrics"
        assert job["authorization"] == {"type": "Bearer", "credentials_file": "/tmp/metrics_token"}
        assert job["dns_sd_configs"] == [{"names": [service], "type": "A", "port": port,
                                          "refresh_interval": "30s"}]
    # Every app container logs JSON lines (LOG_FORMAT); .env may say text.
    for name in ("web", "worker", "beat"):
        assert services[name]["environment"]["LOG_FORMAT"] == "json"
    (tmp_path / "text").mkdir()
    text = compose_config(tmp_path / "text", LOG_FORMAT="text")["services"]
    assert text["web"]["environment"]["LOG_FORMAT"] == "text"


def test_the_grafana_dashboard_charts_every_operations_metric_and_only_real_ones() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from chatsite import metrics

    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = {panel["title"]: [target["expr"] for target in panel["targets"]]
             for panel in dashboard["panels"]}
    assert set(exprs) == {"Turns by outcome", "Live answers and queue depth",
                          "Time to first token", "Per-token latency", "Provider errors",
                          "Spend per org", "Websocket connections"}
    exposed = {name for family in text_string_to_metric_families(metrics.exposition().decode())
               for name in (family.name, f"{family.name}_total", f"{family.name}_bucket")}
    used = {name for targets in exprs.values() for expr in targets
            for name in re.findall(r"teamchat_[a-z_]+", expr)}
    assert used <= exposed, used - exposed
    assert {"teamchat_turns_started_total", "teamchat_turns_ended_total", "teamchat_live_answers",
            "teamchat_queue_depth", "teamchat_time_to_first_token_seconds_bucket",
            "teamchat_token_interval_seconds_bucket", "teamchat_provider_errors_total",
            "teamchat_spend_usd_total", "teamchat_websocket_connections"} <= used
    quantiles = " ".join(exprs["Time to first token"] + exprs["Per-token latency"])
    assert quantiles.count("histogram_quantile(0.5,") == 2
    assert quantiles.count("histogram_quantile(0.99,") == 2
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])


def test_web_is_published_beyond_loopback_only_when_told(tmp_path: Path) -> None:
    proxy = compose_config(tmp_path, WEB_BIND="0.0.0.0")["services"]["proxy"]
    assert [p["host_ip"] for p in _ports(proxy)] == ["0.0.0.0"]


def _ports(service: dict[str, Any]) -> list[dict[str, str]]:
    """Ports in either of docker-compose's spellings ("ip:published:target/tcp" or a map)."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, str):
            host_ip, published, _target = port.split("/")[0].rsplit(":", 2)
            ports.append({"host_ip": host_ip, "published": published})
        else:
            ports.append({"host_ip": port.get("host_ip", ""), "published": str(port["published"])})
    return ports


# --- The healthcheck script ---------------------------------------------------------------------


def test_the_healthcheck_sends_the_allowed_host_and_fails_on_errors(
    live_healthz: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", "chat.example.com,other.example.com")
    assert healthcheck.host_header() == "chat.example.com"
    assert healthcheck.check_http(f"{live_healthz}/ok") is None
    assert "503" in (healthcheck.check_http(f"{live_healthz}/degraded") or "")
    monkeypatch.setenv("ALLOWED_HOSTS", "wrong.example.com")
    assert "400" in (healthcheck.check_http(f"{live_healthz}/ok") or "")


def test_the_process_healthcheck_reads_pid_1s_arguments(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"python\0-m\0celery\0-A\0chatsite\0beat\0--loglevel\0INFO\0")
    assert healthcheck.check_process("beat", cmdline) is None
    assert healthcheck.check_process("worker", cmdline) is not None
    assert healthcheck.check_process("beat", tmp_path / "missing") is not None


@pytest.fixture
def live_healthz() -> Any:
    """A tiny HTTP server that answers like /healthz, and 400 to any Host but the first
    allowed one (as Django does)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers["Host"] != "chat.example.com":
                status = 400
            else:
                status = 200 if self.path == "/ok" else 503
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
