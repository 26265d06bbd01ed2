"""Share links in headless Chromium, against the real ASGI app.

Run ``manage.py collectstatic`` first: the app serves /static/ from STATIC_ROOT.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from accounts.models import Organization, User
from conversations.models import Conversation
from sharing import links
from tests.browser.conftest import require_chromium
from tests.sharing.conftest import PASSWORD, add_turn, make_conversation
from tests.sharing.xss_corpus import PAYLOADS

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

# Recorded in every page before any of its own scripts run.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls
    # are still plain synchronous calls between browser steps.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    if saved is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


class Watch:
    """Everything a page did that a share page must never do."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.remote_requests: list[str] = []

    def attach(self, context: Any) -> None:
        context.add_init_script(RECORD_CSP_VIOLATIONS)

        def on_route(route: Any) -> None:
            if urlsplit(route.request.url).hostname in ("127.0.0.1", None):
                route.continue_()
            else:  # never let anything leave the machine, but remember that it tried
                self.remote_requests.append(route.request.url)
                route.abort()

        context.route("**/*", on_route)
        context.on("page", self.watch_page)

    def watch_page(self, page: Any) -> None:
        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_request(request: Any) -> None:
            host = urlsplit(request.url).hostname
            if request.url.startswith(("http:", "https:", "ws:", "wss:")) and host != "127.0.0.1":
                self.remote_requests.append(request.url)

        def on_console(message: Any) -> None:
            if message.type == "error":
                self.console_errors.append(message.text)

        page.on("dialog", on_dialog)
        page.on("request", on_request)
        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))


def new_context(browser: Any, watch: Watch) -> Any:
    context = browser.new_context()
    watch.attach(context)
    return context


def sign_in(context: Any, base: str, email: str) -> Any:
    page = context.new_page()
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    return page


def allow_public(organization: Organization) -> None:
    organization.share_policy = Organization.SharePolicy.PUBLIC
    organization.save(update_fields=["share_policy"])


def test_share_continue_go_public_and_revoke(
    share_site_url: str, browser: Any, alice: User, bob: User, charlie: User,
    org_a: Organization,
) -> None:
    base = share_site_url
    conversation = make_conversation(
        alice, [("What is **2 + 2**?", "It is **4**."), ("And `3 + 3`?", "It is *6*.")],
        title="Small sums", custom_instructions="CUSTOM-SECRET",
    )
    add_turn(conversation, "LATER-QUESTION", "still thinking", status="streaming")
    watch = Watch()

    # alice shares with her org.
    alice_context = new_context(browser, watch)
    alice_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    alice_page = sign_in(alice_context, base, alice.email)
    alice_page.goto(f"{base}/c/{conversation.pk}/share/")
    alice_page.get_by_label("Who can open it").select_option(label="Members of Acme")
    alice_page.get_by_label("Expires").select_option(label="Never")
    expect(alice_page.get_by_label("Who can open it").locator("option")).to_have_count(1)
    alice_page.get_by_role("button", name="Create link").click()
    share_url = alice_page.get_by_label("Share link").input_value()
    assert re.fullmatch(re.escape(base) + r"/s/[A-Za-z0-9_-]{43}/", share_url)
    alice_page.get_by_role("button", name="Copy link").click()
    expect(alice_page.get_by_role("status").filter(has_text="Copied")).to_be_visible()
    assert alice_page.evaluate("navigator.clipboard.readText()") == share_url

    # bob reads it and continues it in his account.
    bob_page = sign_in(new_context(browser, watch), base, bob.email)
    response = bob_page.goto(share_url)
    assert response.status == 200
    assert response.headers["x-robots-tag"] == "noindex, nofollow"
    assert response.headers["referrer-policy"] == "no-referrer"
    expect(bob_page.get_by_role("heading", name="Small sums")).to_be_visible()
    expect(bob_page.locator(".share-message--assistant strong", has_text="4")).to_be_visible()
    expect(bob_page.locator(".share-message--user code", has_text="3 + 3")).to_be_visible()
    assert "LATER-QUESTION" not in bob_page.content()
    assert "CUSTOM-SECRET" not in bob_page.content()
    # bob is in a second org too, but a members-only link only continues inside Acme.
    side = Organization.objects.create(name="Side project")
    bob.memberships.create(organization=side, role="owner")
    bob_page.get_by_role("link", name="Continue in my account").click()
    expect(bob_page.get_by_text("It goes into Acme")).to_be_visible()
    expect(bob_page.get_by_label("Organization")).to_have_count(0)
    bob_page.get_by_role("button", name="Continue in my account").click()
    bob_page.wait_for_url(re.compile(r"/c/\d+/$"))
    fork = Conversation.objects.get(user=bob)
    assert bob_page.url == f"{base}/c/{fork.pk}/"
    assert fork.organization == org_a
    assert list(fork.messages.values_list("role", "content", "status")) == [
        ("user", "What is **2 + 2**?", "done"), ("assistant", "It is **4**.", "done"),
        ("user", "And `3 + 3`?", "done"), ("assistant", "It is *6*.", "done"),
    ]
    assert conversation.messages.count() == 6  # alice's conversation is untouched

    # charlie (another org) and a signed-out reader get the plain 404.
    charlie_page = sign_in(new_context(browser, watch), base, charlie.email)
    anonymous_page = new_context(browser, watch).new_page()
    for page in (charlie_page, anonymous_page):
        response = page.goto(share_url)
        assert response.status == 404
        expect(page.get_by_role("heading", name="Link not found")).to_be_visible()

    # alice's org allows public links; she makes this one public.
    alice_page.goto(f"{base}/shared/")
    alice_page.get_by_label("Sharing policy").select_option(label="Public links allowed")
    alice_page.get_by_role("button", name="Save policy").click()
    expect(alice_page.get_by_text("Sharing policy for Acme: Public links allowed.")).to_be_visible()
    alice_page.goto(f"{base}/c/{conversation.pk}/share/")
    expect(alice_page.get_by_label("Share link")).to_have_value(share_url)  # remembered here
    alice_page.get_by_label("Who can open it").select_option(label="Anyone with the link")
    alice_page.get_by_role("button", name="Save settings").click()
    expect(alice_page.get_by_text("Link settings saved.")).to_be_visible()

    response = anonymous_page.goto(share_url)
    assert response.status == 200
    expect(anonymous_page.locator(".share-message--assistant em", has_text="6")).to_be_visible()
    expect(anonymous_page.get_by_role("link", name="Continue in my account")).to_have_count(0)
    expect(anonymous_page.get_by_role("link", name="Sign in to continue in your account")).to_be_visible()
    assert charlie_page.goto(share_url).status == 200

    # alice revokes it from Shared links: everyone, alice included, gets the 404.
    alice_page.goto(f"{base}/shared/")
    row = alice_page.get_by_role("row").filter(has_text="Small sums")
    expect(row).to_contain_text("Anyone with the link")
    expect(row.get_by_role("cell").nth(3)).to_have_text("3")  # views: bob, anonymous, charlie
    row.get_by_role("button", name="Revoke").click()
    expect(alice_page.get_by_text("Link revoked.")).to_be_visible()
    for page in (alice_page, bob_page, charlie_page, anonymous_page):
        response = page.goto(share_url)
        assert response.status == 404, page
        expect(page.get_by_role("heading", name="Link not found")).to_be_visible()

    assert watch.dialogs == []
    assert watch.remote_requests == []


def test_hostile_content_runs_nothing_and_loads_nothing(
    share_site_url: str, browser: Any, alice: User, org_a: Organization,
) -> None:
    assert len(PAYLOADS) >= 50
    allow_public(org_a)
    conversation = make_conversation(
        alice, [(payload, payload) for payload in PAYLOADS],
        title="<script>alert('title')</script>",
    )
    issued = links.create_link(user=alice, conversation_id=conversation.pk,
                               visibility="public", expires_at=None)
    watch = Watch()
    page = new_context(browser, watch).new_page()
    response = page.goto(f"{share_site_url}/s/{issued.token}/")
    assert response.status == 200
    rendered = page.locator("[data-share-index][data-rendered='true']")
    try:
        expect(rendered).to_have_count(2 * len(PAYLOADS), timeout=15_000)
    finally:
        # Give anything delayed (autofocus, animations, lazy loads) a chance to fire,
        # and report what the page did before judging the DOM.
        page.mouse.move(200, 200)
        page.keyboard.press("Tab")
        page.wait_for_timeout(500)
        assert watch.dialogs == []
        assert watch.remote_requests == []
        assert watch.page_errors == []

    findings = page.evaluate(
        """() => {
          const bad = [];
          const forbidden = "script,iframe,frame,object,embed,img,image,video,audio,source,"
            + "picture,link,meta,base,style,form,input,button,portal,use,foreignObject";
          for (const body of document.querySelectorAll("[data-share-index]")) {
            for (const el of body.querySelectorAll("*")) {
              if (el.matches(forbidden)) bad.push("element " + el.tagName);
              for (const attr of el.attributes) {
                const name = attr.name.toLowerCase();
                const value = attr.value.replace(/[\\s\\u0000-\\u001f]/g, "").toLowerCase();
                if (name.startsWith("on")) bad.push("handler " + name);
                if (["href", "src", "xlink:href", "action", "formaction", "srcset"].includes(name)
                    && !/^(https?:|mailto:|#)/.test(value)) bad.push(`${name}=${attr.value}`);
                if (name === "style" && /url\\(/.test(value)) bad.push("style url");
              }
            }
          }
          return {bad, csp: window.__cspViolations};
        }"""
    )
    assert findings["bad"] == []
    assert findings["csp"] == []
    assert [e for e in watch.console_errors if "Content Security Policy" in e] == []
    assert watch.console_errors == []
    # Markdown really rendered (this is not a page of escaped text).
    expect(page.locator(".share-message--assistant .md-image").first).to_be_visible()
    expect(page.locator(".share-message--assistant pre code").first).to_be_visible()
    assert page.title().startswith("<script>alert('title')</script>")
