"""`check --deploy` refuses a production install that would print its emailed links (each
a working secret) into the log, or build them on a default address instead of SITE_URL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.chatsite.test_deploy import production_env, run

pytestmark = pytest.mark.slow


def deploy_check(**env: str) -> tuple[int, str]:
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                 production_env(**env))
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("backend", ["console", "locmem"])
def test_deploy_check_fails_when_mail_would_stay_in_the_process(backend: str) -> None:
    code, output = deploy_check(EMAIL_BACKEND=f"django.core.mail.backends.{backend}.EmailBackend")
    assert code != 0
    assert "chatsite.E001" in output and "ERROR" in output, output


def test_production_sends_mail_over_smtp_unless_told_otherwise() -> None:
    script = "from django.conf import settings; print(settings.EMAIL_BACKEND)"
    result = run([sys.executable, "-c", f"import django; django.setup(); {script}"],
                 production_env(DJANGO_SETTINGS_MODULE="chatsite.settings"))
    assert result.stdout.strip() == "django.core.mail.backends.smtp.EmailBackend", result.stderr


def test_deploy_check_fails_without_site_url_in_production() -> None:
    code, output = deploy_check(SITE_URL="")
    assert code != 0
    assert "chatsite.E002" in output, output


def test_deploy_check_warns_when_site_url_names_a_host_django_refuses() -> None:
    code, output = deploy_check(SITE_URL="https://elsewhere.example.com")
    assert code != 0
    assert "chatsite.W001" in output, output


def test_a_site_url_with_a_path_stops_start_up_with_the_reason() -> None:
    code, output = deploy_check(SITE_URL="https://chat.example.com/chat")
    assert code != 0
    assert "SITE_URL must be the site's origin only" in output, output


def test_compose_passes_site_url_to_every_app_container(tmp_path: Path) -> None:
    from tests.chatsite.test_deploy import APP_SERVICES, compose_config

    services = compose_config(tmp_path)["services"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["SITE_URL"] == "https://chat.example.com", name
