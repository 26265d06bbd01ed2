"""A real OpenID Provider for the SSO tests: the `oidc-provider` npm package (certified by
the OpenID Foundation), run by tests/fixtures/oidc/provider.mjs as a child process on a
free port of 127.0.0.1. No token here is made up by the tests: every ID token comes from
the provider's token endpoint (the refusal cases ask the provider to alter the next one:
a foreign signature, another audience, an expiry in the past).

``sso`` (the fixture) gives an org "Corp" whose allowed domain is corp.test, connected to
the provider, and the app it signs in to (uvicorn; with a Celery worker in browser tests).
Loaded as a pytest plugin by tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from accounts.models import AllowedEmailDomain, IdentityProvider, Membership, Organization, User
from tests.conftest import serve_asgi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "fixtures", "oidc", "provider.mjs")
CLIENT_ID = "teamchat-test"
# A test value only, handed to the app the way an operator would: through the variable
# the IdentityProvider row names.
CLIENT_SECRET = "provider-test-client-secret-0123456789"
SECRET_ENV = "OIDC_CLIENT_SECRET_TEST"
DOMAIN = "corp.test"

# The provider's people: the login at its form is the account id (here the address).
PEOPLE: dict[str, dict[str, Any]] = {
    "ada@corp.test": {"email": "ada@corp.test", "email_verified": True, "name": "Ada",
                      "groups": ["engineering"]},
    "ben@corp.test": {"email": "ben@corp.test", "email_verified": True, "name": "Ben",
                      "groups": ["sales"]},
    "una@corp.test": {"email": "una@corp.test", "email_verified": False, "name": "Una",
                      "groups": ["engineering"]},
    "oz@corp.test": {"email": "oz@corp.test", "email_verified": True, "name": "Oz",
                     "groups": []},
    "mal@elsewhere.test": {"email": "mal@elsewhere.test", "email_verified": True,
                           "name": "Mal", "groups": ["engineering"]},
}


@dataclass
class OIDCProcess:
    issuer: str
    process: subprocess.Popen[str]

    def _post(self, path: str, body: dict[str, Any]) -> None:
        response = requests.post(f"{self.issuer}{path}", json=body, timeout=10)
        response.raise_for_status()

    def set_person(self, login: str, claims: dict[str, Any]) -> None:
        """Add a person or replace their claims (a changed group claim, an address the
        provider now says it verified): read at the next token."""
        self._post("/_test/accounts", {login: claims})

    def alter_next_token(self, mode: str) -> None:
        """forged | audience | expired | rotated (tests/fixtures/oidc/provider.mjs)."""
        self._post("/_test/next-token", {"mode": mode})

    def issued(self) -> list[dict[str, Any]]:
        """The claims of every ID token the token endpoint has sent."""
        response = requests.get(f"{self.issuer}/_test/log", timeout=10)
        response.raise_for_status()
        return list(response.json())


@contextlib.contextmanager
def run_provider(*, redirect_uris: list[str], post_logout_redirect_uris: list[str],
                 people: dict[str, dict[str, Any]]) -> Iterator[OIDCProcess]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the SSO tests run the oidc-provider package "
                    "(make install runs npm ci)", pytrace=False)
    config = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "redirect_uris": redirect_uris,
              "post_logout_redirect_uris": post_logout_redirect_uris, "accounts": people}
    process = subprocess.Popen(
        [node, SCRIPT, json.dumps(config)], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"the OpenID provider did not start: {line!r}")
        yield OIDCProcess(issuer=line.split()[1], process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class SSO:
    """The org, its provider row, the provider process and the site they meet on."""

    site: str
    organization: Organization
    identity_provider: IdentityProvider
    idp: OIDCProcess
    people: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def start_path(self) -> str:
        return f"/accounts/sso/{self.identity_provider.pk}/start/"

    def http_sign_in(self, login: str, *, session: requests.Session | None = None,
                     follow_callback: bool = True) -> HTTPSignIn:
        """The whole trip over real HTTP, as a browser without JavaScript makes it: our
        start URL, the provider's login form, back to our callback."""
        session = session or requests.Session()
        response = session.get(f"{self.site}{self.start_path}", allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text[:500]
        callback = _through_provider(session, response.headers["Location"], login, self.site)
        if not follow_callback:
            return HTTPSignIn(session=session, callback=callback, visited=None)
        return HTTPSignIn(session=session, callback=callback,
                          visited=session.get(callback, allow_redirects=False, timeout=10))


@dataclass
class HTTPSignIn:
    session: requests.Session
    callback: str
    visited: requests.Response | None  # our callback's answer, once visited

    @property
    def response(self) -> requests.Response:
        assert self.visited is not None, "the callback was not visited"
        return self.visited


def _through_provider(session: requests.Session, url: str, login: str, site: str) -> str:
    """Follow the provider's redirects, fill its login form, and return the URL it sends
    the browser back to (our callback), unvisited."""
    for _ in range(10):
        if url.startswith(site):
            return url
        response = session.get(url, allow_redirects=False, timeout=10)
        if response.status_code in (302, 303):
            url = urljoin(url, response.headers["Location"])
            continue
        assert response.status_code == 200, response.text[:500]
        action = re.search(r'<form[^>]*action="([^"]+)"', response.text)
        assert action, response.text[:500]
        response = session.post(urljoin(url, unescape(action.group(1))),
                                data={"prompt": "login", "login": login, "password": "any"},
                                allow_redirects=False, timeout=10)
        assert response.status_code in (302, 303), response.text[:500]
        url = urljoin(url, response.headers["Location"])
    raise AssertionError(f"the provider never sent the browser back: {url}")


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def counts() -> dict[str, int]:
    from accounts.models import ExternalIdentity, GroupMembership

    return {"users": User.objects.count(), "memberships": Membership.objects.count(),
            "identities": ExternalIdentity.objects.count(),
            "group_memberships": GroupMembership.objects.count()}


@pytest.fixture
def sso_site(request: pytest.FixtureRequest, transactional_db: None,
             settings: Any) -> Iterator[str]:
    """Where the provider sends people back: a browser test's live server (with its
    Celery worker, for chatting), else the ASGI app alone (signing in needs no worker)."""
    if "live_server_url" in request.fixturenames:
        yield str(request.getfixturevalue("live_server_url"))
        return
    with serve_asgi() as url:
        settings.SITE_URL = url
        yield url


@pytest.fixture
def sso(sso_site: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SSO]:
    from accounts import sso as sso_module

    live_server_url = sso_site
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    organization = Organization.objects.create(name="Corp")
    AllowedEmailDomain.objects.create(organization=organization, domain=DOMAIN)
    row = IdentityProvider.objects.create(
        organization=organization, display_name="Corp ID", discovery_url="http://127.0.0.1:9/",
        client_id=CLIENT_ID, client_secret_env=SECRET_ENV,
        scopes="openid email profile groups",
    )
    people = json.loads(json.dumps(PEOPLE))
    callback = f"{live_server_url}/accounts/sso/{row.pk}/callback/"
    with run_provider(redirect_uris=[callback],
                      post_logout_redirect_uris=[f"{live_server_url}/accounts/login/"],
                      people=people) as idp:
        row.discovery_url = f"{idp.issuer}/.well-known/openid-configuration"
        row.save(update_fields=["discovery_url"])
        sso_module.forget_clients()
        yield SSO(site=live_server_url, organization=organization, identity_provider=row,
                  idp=idp, people=people)
        sso_module.forget_clients()


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
