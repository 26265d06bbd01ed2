"""Share dialog, Shared links page and the share page over HTTP (Django test client)."""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import django_ratelimit.core
import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Organization, User
from conversations.models import Conversation, Message
from sharing import links
from sharing.models import ShareLink
from sharing.views import SHARE_CSP
from tests.sharing.conftest import add_turn, client_for, make_conversation

pytestmark = pytest.mark.django_db

AsUser = Callable[[User | None], Client]

STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'none'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def share(user: User, conversation: Conversation, visibility: str = "org",
          expires_at: Any = None) -> links.IssuedLink:
    return links.create_link(user=user, conversation_id=conversation.pk,
                             visibility=visibility, expires_at=expires_at)


def path_of(token: str) -> str:
    return f"/s/{token}/"


def set_policy(organization: Organization, policy: str) -> None:
    organization.share_policy = policy
    organization.save(update_fields=["share_policy"])


def fingerprint(response: Any) -> tuple[int, bytes, dict[str, str], str]:
    return (response.status_code, response.content, dict(response.headers),
            response.cookies.output())


# --- The share dialog -------------------------------------------------------------------


def test_the_dialog_needs_a_signed_in_user(alice: User) -> None:
    conversation = make_conversation(alice)
    response = Client().get(f"/c/{conversation.pk}/share/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_dialog_offers_org_only_links_under_the_default_policy(alice: User, as_user: AsUser) -> None:
    conversation = make_conversation(alice)
    response = as_user(alice).get(f"/c/{conversation.pk}/share/")
    html = response.content.decode()
    assert response.status_code == 200
    assert ">Who can open it</label>" in html and ">Expires</label>" in html
    assert ">Members of Acme</option>" in html
    assert "Anyone with the link" not in html
    for label in ("1 day", "7 days", "30 days", "Never"):
        assert f">{label}</option>" in html


def test_the_dialog_offers_public_links_where_the_org_allows_them(
    alice: User, org_a: Organization, as_user: AsUser
) -> None:
    set_policy(org_a, "public")
    conversation = make_conversation(alice)
    html = as_user(alice).get(f"/c/{conversation.pk}/share/").content.decode()
    assert ">Anyone with the link</option>" in html


def test_creating_a_link_shows_its_address_once(alice: User, bob: User, as_user: AsUser) -> None:
    conversation = make_conversation(alice)
    client = as_user(alice)
    response = client.post(f"/c/{conversation.pk}/share/", {"visibility": "org", "expires": "7d"})
    html = response.content.decode()
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert ">Share link</label>" in html and ">Copy link</button>" in html
    url = re.search(r'id="share-link"[^>]*value="(http://testserver/s/[^"]+/)"', html)
    assert url is not None
    token = url.group(1).rsplit("/", 2)[-2]
    link = ShareLink.objects.get()
    assert link.token_hash == links.hash_token(token)
    assert link.expires_at is not None
    assert timedelta(days=6, hours=23) < link.expires_at - timezone.now() <= timedelta(days=7)
    # Shown once: the dialog never shows it again.
    assert token not in client.get(f"/c/{conversation.pk}/share/").content.decode()
    assert as_user(bob).get(path_of(token)).status_code == 200


def test_the_dialog_explains_why_a_public_link_is_refused(alice: User, as_user: AsUser) -> None:
    conversation = make_conversation(alice)
    response = as_user(alice).post(f"/c/{conversation.pk}/share/",
                                   {"visibility": "public", "expires": "never"})
    assert response.status_code == 400
    assert not ShareLink.objects.exists()


def test_the_dialog_says_when_there_is_nothing_to_share(alice: User, as_user: AsUser) -> None:
    conversation = make_conversation(alice, [])
    add_turn(conversation, "one?", "", status=Message.Status.PENDING)
    client = as_user(alice)
    assert "Nothing to share yet" in client.get(f"/c/{conversation.pk}/share/").content.decode()
    response = client.post(f"/c/{conversation.pk}/share/", {"visibility": "org", "expires": "never"})
    assert response.status_code == 400 and "Nothing to share yet" in response.content.decode()


def test_update_link_moves_the_snapshot(alice: User, bob: User, as_user: AsUser) -> None:
    conversation = make_conversation(alice, [("one?", "ONE")])
    issued = share(alice, conversation)
    # Words with a space: a share token (base64url) in the page can never contain them,
    # where "TWO" turned up inside one once.
    add_turn(conversation, "two?", "Answer two")
    client = as_user(alice)
    assert "Newer answers are not shared yet" in client.get(f"/c/{conversation.pk}/share/").content.decode()
    assert "Answer two" not in as_user(bob).get(path_of(issued.token)).content.decode()
    response = client.post(f"/shared/{issued.link.pk}/update/", {"visibility": "org", "expires": "never"})
    assert response.status_code == 302 and response["Location"] == f"/c/{conversation.pk}/share/"
    assert "Answer two" in as_user(bob).get(path_of(issued.token)).content.decode()
    assert "It is up to date" in client.get(f"/c/{conversation.pk}/share/").content.decode()


def test_saving_settings_keeps_the_current_expiry_unless_changed(alice: User, as_user: AsUser) -> None:
    expires = timezone.now() + timedelta(days=3)
    issued = share(alice, make_conversation(alice), expires_at=expires)
    client = as_user(alice)
    client.post(f"/shared/{issued.link.pk}/settings/", {"visibility": "org", "expires": "keep"})
    issued.link.refresh_from_db()
    assert issued.link.expires_at == expires
    client.post(f"/shared/{issued.link.pk}/settings/", {"visibility": "org", "expires": "never"})
    issued.link.refresh_from_db()
    assert issued.link.expires_at is None


def test_switching_to_public_needs_the_org_policy(
    alice: User, org_a: Organization, as_user: AsUser
) -> None:
    issued = share(alice, make_conversation(alice))
    client = as_user(alice)
    client.post(f"/shared/{issued.link.pk}/settings/", {"visibility": "public", "expires": "never"})
    issued.link.refresh_from_db()
    assert issued.link.visibility == "org"
    set_policy(org_a, "public")
    client.post(f"/shared/{issued.link.pk}/settings/", {"visibility": "public", "expires": "never"})
    issued.link.refresh_from_db()
    assert issued.link.visibility == "public"
    assert Client().get(path_of(issued.token)).status_code == 200


def test_replace_link_gives_a_new_address_and_kills_the_old_one(
    alice: User, bob: User, as_user: AsUser
) -> None:
    expires = timezone.now() + timedelta(days=3)
    conversation = make_conversation(alice)
    old = share(alice, conversation, expires_at=expires)
    response = as_user(alice).post(f"/c/{conversation.pk}/share/",
                                   {"visibility": "org", "expires": "keep"})
    url = re.search(r'id="share-link"[^>]*value="http://testserver(/s/[^"]+/)"',
                    response.content.decode())
    assert url is not None
    new = ShareLink.objects.live().get()
    assert new.pk != old.link.pk and new.expires_at == expires
    assert as_user(bob).get(path_of(old.token)).status_code == 404
    assert as_user(bob).get(url.group(1)).status_code == 200


def test_the_dialog_says_sharing_is_off_and_creates_nothing(
    alice: User, org_a: Organization, as_user: AsUser
) -> None:
    set_policy(org_a, "off")
    conversation = make_conversation(alice)
    client = as_user(alice)
    html = client.get(f"/c/{conversation.pk}/share/").content.decode()
    assert "Sharing is turned off in Acme" in html and "Create link" not in html
    response = client.post(f"/c/{conversation.pk}/share/", {"visibility": "org", "expires": "never"})
    assert response.status_code == 400 and "Sharing is turned off in Acme" in response.content.decode()
    assert not ShareLink.objects.exists()


def test_revoking_ignores_an_offsite_next(alice: User, as_user: AsUser) -> None:
    issued = share(alice, make_conversation(alice))
    response = as_user(alice).post(f"/shared/{issued.link.pk}/revoke/",
                                   {"next": "https://evil.example/"})
    assert response["Location"] == "/shared/"
    issued.link.refresh_from_db()
    assert issued.link.revoked_at is not None


# --- alice / bob / charlie on every id -------------------------------------------------


@pytest.mark.parametrize("intruder", ["bob", "charlie"])
def test_nobody_else_reaches_alices_dialog_or_links(
    alice: User, bob: User, charlie: User, intruder: str, as_user: AsUser
) -> None:
    conversation = make_conversation(alice)
    issued = share(alice, conversation)
    client = as_user({"bob": bob, "charlie": charlie}[intruder])
    settings_form = {"visibility": "org", "expires": "1d"}
    attempts = [
        client.get(f"/c/{conversation.pk}/share/"),
        client.post(f"/c/{conversation.pk}/share/", settings_form),
        client.post(f"/shared/{issued.link.pk}/update/", settings_form),
        client.post(f"/shared/{issued.link.pk}/settings/", settings_form),
        client.post(f"/shared/{issued.link.pk}/revoke/"),
    ]
    assert [response.status_code for response in attempts] == [404] * 5
    link = ShareLink.objects.get()
    assert (link.pk, link.revoked_at, link.expires_at) == (issued.link.pk, None, None)
    assert links.get_shared_snapshot(token=issued.token, viewer=alice)


def test_charlie_gets_404_for_ids_that_do_not_exist_either(charlie: User, as_user: AsUser) -> None:
    client = as_user(charlie)
    assert client.get("/c/999999/share/").status_code == 404
    assert client.post("/shared/999999/revoke/").status_code == 404
    assert client.post("/shared/999999/update/", {"visibility": "org", "expires": "1d"}).status_code == 404


def test_a_viewer_never_writes_to_the_owners_conversation(alice: User, bob: User, as_user: AsUser) -> None:
    conversation = make_conversation(alice, [("one?", "1")])
    before = list(conversation.messages.values_list("id", "content", "status"))
    issued = share(alice, conversation)
    client = as_user(bob)
    response = client.post(f"{path_of(issued.token)}continue/")
    assert response.status_code == 302
    assert client.post(f"/c/{conversation.pk}/share/", {"visibility": "org", "expires": "1d"}).status_code == 404
    assert list(conversation.messages.values_list("id", "content", "status")) == before
    conversation.refresh_from_db()
    assert conversation.user == alice


# --- Shared links -----------------------------------------------------------------------


def test_shared_links_lists_a_members_own_links(alice: User, bob: User, org_a: Organization,
                                                as_user: AsUser) -> None:
    mine = share(bob, make_conversation(bob, title="Bob's notes", organization=org_a),
                 expires_at=timezone.now() + timedelta(days=30))
    share(alice, make_conversation(alice, title="Alice's plan"))
    links.get_shared_snapshot(token=mine.token, viewer=alice, count_view=True)
    html = as_user(bob).get("/shared/").content.decode()
    assert "Bob&#x27;s notes" in html and "Alice&#x27;s plan" not in html
    assert "Members of Acme" in html and ">Revoke</button>" in html
    row = html[html.index(f'data-link-id="{mine.link.pk}"'):]
    assert re.search(r"<td>1</td>", row)  # views
    assert "Sharing policy" not in html


def test_an_owner_sees_every_link_of_the_org_and_sets_the_policy(
    alice: User, bob: User, charlie: User, org_a: Organization, as_user: AsUser
) -> None:
    share(bob, make_conversation(bob, title="Bob's notes", organization=org_a))
    share(charlie, make_conversation(charlie, title="Charlie's secret"))
    client = as_user(alice)
    html = client.get("/shared/").content.decode()
    assert "Bob&#x27;s notes" in html and "bob@example.com" in html
    assert "Charlie&#x27;s secret" not in html
    assert ">Sharing policy</label>" in html
    for label in ("Sharing off", "Org members only", "Public links allowed"):
        assert f">{label}</option>" in html
    response = client.post("/shared/policy/", {"policy": "public"})
    assert response.status_code == 302
    org_a.refresh_from_db()
    assert org_a.share_policy == "public"


def test_members_cannot_set_the_policy(bob: User, org_a: Organization, as_user: AsUser) -> None:
    assert as_user(bob).post("/shared/policy/", {"policy": "public"}).status_code == 404
    org_a.refresh_from_db()
    assert org_a.share_policy == "org"


def test_an_owner_revokes_a_members_link_from_shared_links(
    alice: User, bob: User, org_a: Organization, as_user: AsUser
) -> None:
    issued = share(bob, make_conversation(bob, organization=org_a))
    assert as_user(alice).post(f"/shared/{issued.link.pk}/revoke/").status_code == 302
    assert as_user(bob).get(path_of(issued.token)).status_code == 404
    assert "Bob" not in as_user(alice).get("/shared/").content.decode().split("<h2 id=\"links-heading\">")[1]


def test_charlie_cannot_revoke_from_his_own_admin_page(alice: User, charlie: User, as_user: AsUser) -> None:
    issued = share(alice, make_conversation(alice))
    assert as_user(charlie).post(f"/shared/{issued.link.pk}/revoke/").status_code == 404
    issued.link.refresh_from_db()
    assert issued.link.revoked_at is None


# --- The share page ---------------------------------------------------------------------


def test_the_share_page_is_read_only_markdown_with_strict_headers(
    alice: User, bob: User, as_user: AsUser
) -> None:
    conversation = make_conversation(alice, [("What is **2 + 2**?", "It is **4**.")], title="Sums")
    issued = share(alice, conversation)
    response = as_user(bob).get(path_of(issued.token))
    html = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == STRICT_CSP == SHARE_CSP
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert response["Referrer-Policy"] == "no-referrer"
    assert response["Cache-Control"] == "private, no-store"
    assert '<meta name="robots" content="noindex, nofollow">' in html
    assert "<h1 id=\"shared-title\">Sums</h1>" in html
    assert "o3-mini" in html and "<time datetime=" in html
    data = re.search(r'<script id="share-messages" type="application/json">(.*?)</script>', html, re.S)
    assert data is not None
    assert json.loads(data.group(1)) == [
        {"role": "user", "content": "What is **2 + 2**?"},
        {"role": "assistant", "content": "It is **4**."},
    ]
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script type="module" src="/static/js/share.js">',
                       '<script id="share-messages" type="application/json">']
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    assert f'<a class="share-button share-button--primary" href="/s/{issued.token}/continue/">Continue in my account</a>' in html


def test_signed_out_readers_are_offered_sign_in_instead(alice: User, org_a: Organization) -> None:
    set_policy(org_a, "public")
    issued = share(alice, make_conversation(alice), "public")
    html = Client().get(path_of(issued.token)).content.decode()
    assert "Continue in my account" not in html
    assert f'href="/accounts/login/?next=/s/{issued.token}/continue/"' in html


def test_private_parts_are_not_in_the_html_at_all(alice: User, bob: User, org_a: Organization,
                                                  as_user: AsUser) -> None:
    org_a.developer_message = "ORG-DEVELOPER-SECRET"
    org_a.save(update_fields=["developer_message"])
    conversation = make_conversation(alice, [], custom_instructions="CUSTOM-SECRET")
    add_turn(conversation, "weather?", "Sunny.",
             tool_calls=[{"id": "call_1", "function": {"name": "TOOL-SECRET", "arguments": "{}"}}],
             reasoning_summary="REASONING-SECRET", refusal="REFUSAL-SECRET",
             error_detail="ERROR-SECRET")
    add_turn(conversation, "and later?", "FAILED-SECRET", status=Message.Status.FAILED)
    issued = share(alice, conversation)
    add_turn(conversation, "LATER-QUESTION", "LATER-ANSWER")
    html = as_user(bob).get(path_of(issued.token)).content.decode()
    assert "Sunny." in html
    for secret in ("ORG-DEVELOPER-SECRET", "CUSTOM-SECRET", "TOOL-SECRET", "call_1",
                   "REASONING-SECRET", "REFUSAL-SECRET", "ERROR-SECRET", "FAILED-SECRET",
                   "LATER-QUESTION", "LATER-ANSWER", "alice@example.com"):
        assert secret not in html


def test_every_dead_end_is_byte_for_byte_the_same_404(
    alice: User, bob: User, charlie: User, org_a: Organization
) -> None:
    revoked = share(alice, make_conversation(alice))
    links.revoke_link(user=alice, link_id=revoked.link.pk)
    expired = share(alice, make_conversation(alice), expires_at=timezone.now() - timedelta(minutes=1))
    org_only = share(alice, make_conversation(alice))
    replaced_conversation = make_conversation(alice)
    replaced = share(alice, replaced_conversation)
    share(alice, replaced_conversation)
    never = "x" * 43
    for viewer in (None, charlie):
        client = client_for(viewer)
        baseline = fingerprint(client.get(path_of(never)))
        assert baseline[0] == 404
        for token in (revoked.token, expired.token, org_only.token, replaced.token, "!", "a" * 500):
            assert fingerprint(client.get(path_of(token))) == baseline, token
    # Members see the same 404 for dead links, and for every link while sharing is off.
    bobs = client_for(bob)
    baseline = fingerprint(bobs.get(path_of(never)))
    for token in (revoked.token, expired.token, replaced.token):
        assert fingerprint(bobs.get(path_of(token))) == baseline
    set_policy(org_a, "off")
    assert fingerprint(bobs.get(path_of(org_only.token))) == baseline
    set_policy(org_a, "org")
    assert bobs.get(path_of(org_only.token)).status_code == 200


def test_the_404_is_plain_and_carries_the_share_headers(charlie: User) -> None:
    response = client_for(charlie).get(path_of("nope"))
    assert response.status_code == 404
    assert response["Content-Security-Policy"] == STRICT_CSP
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert response["Referrer-Policy"] == "no-referrer"
    assert response["Cache-Control"] == "private, no-store"
    html = response.content.decode()
    assert "<script" not in html and "charlie" not in html
    assert '<meta name="robots" content="noindex, nofollow">' in html


def test_lookups_are_rate_limited_per_client_address(
    alice: User, bob: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SHARE_LOOKUPS_PER_MINUTE = 3
    issued = share(alice, make_conversation(alice))
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    # django-ratelimit staggers each client's one-minute window by crc32(client) % 60:
    # start the clock 20 s before this client's window ends.
    now = 1_800_000_000 + (zlib.crc32(address.encode()) % 60 - 20) % 60
    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: now))
    client = client_for(bob)
    guesses = [client.get(path_of(f"guess-{n}"), REMOTE_ADDR=address).status_code for n in range(3)]
    assert guesses == [404, 404, 404]
    limited = client.get(path_of(issued.token), REMOTE_ADDR=address)
    assert limited.status_code == 429
    assert limited["Retry-After"] == "20"
    assert limited["Cache-Control"] == "private, no-store"
    assert limited["Content-Security-Policy"] == STRICT_CSP
    assert "Wait a minute" in limited.content.decode()
    assert client.post(f"{path_of(issued.token)}continue/", REMOTE_ADDR=address).status_code == 429
    assert not Conversation.objects.filter(user=bob).exists()
    # Another client is not affected; nor is the next minute.
    other = f"192.0.2.{random.randrange(1, 255)}"
    assert client.get(path_of(issued.token), REMOTE_ADDR=other).status_code == 200
    now += 21
    assert client.get(path_of(issued.token), REMOTE_ADDR=address).status_code == 200


def test_a_signed_in_member_continues_in_their_account(
    alice: User, bob: User, as_user: AsUser
) -> None:
    conversation = make_conversation(alice, [("one?", "1"), ("two?", "2")], title="Sums")
    issued = share(alice, conversation)
    response = as_user(bob).post(f"{path_of(issued.token)}continue/")
    fork = Conversation.objects.get(user=bob)
    assert response.status_code == 302 and response["Location"] == f"/c/{fork.pk}/"
    assert response["Cache-Control"] == "private, no-store"
    assert fork.organization == bob.memberships.get().organization and fork.title == "Sums"
    assert list(fork.messages.values_list("role", "content", "status")) == [
        ("user", "one?", "done"), ("assistant", "1", "done"),
        ("user", "two?", "done"), ("assistant", "2", "done"),
    ]


def test_continuing_asks_which_org_first_with_a_normal_csrf_post(
    alice: User, bob: User, as_user: AsUser
) -> None:
    issued = share(alice, make_conversation(alice, [("one?", "1")], title="Sums"))
    response = as_user(bob).get(f"{path_of(issued.token)}continue/")
    html = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == STRICT_CSP
    assert response["Cache-Control"] == "private, no-store"
    # Same-origin, not no-referrer: under no-referrer browsers post "Origin: null".
    assert response["Referrer-Policy"] == "same-origin"
    assert "csrfmiddlewaretoken" in html and ">Continue in my account</button>" in html
    assert "It goes into <strong>Acme</strong>" in html
    assert "<script" not in html
    assert not Conversation.objects.filter(user=bob).exists()  # a GET copies nothing


def test_continuing_a_public_link_into_another_of_the_viewers_orgs(
    alice: User, bob: User, org_a: Organization, as_user: AsUser
) -> None:
    side = Organization.objects.create(name="Side project")
    bob.memberships.create(organization=side, role="owner")
    set_policy(org_a, "public")
    issued = share(alice, make_conversation(alice), "public")
    client = as_user(bob)
    assert ">Side project</option>" in client.get(f"{path_of(issued.token)}continue/").content.decode()
    client.post(f"{path_of(issued.token)}continue/", {"organization": str(side.pk)})
    assert Conversation.objects.get(user=bob).organization == side


def test_continuing_enforces_csrf(alice: User, bob: User) -> None:
    issued = share(alice, make_conversation(alice))
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    assert client.post(f"{path_of(issued.token)}continue/").status_code == 403
    assert not Conversation.objects.filter(user=bob).exists()


def test_signed_out_readers_must_sign_in_to_continue(alice: User, org_a: Organization) -> None:
    set_policy(org_a, "public")
    issued = share(alice, make_conversation(alice), "public")
    response = Client().post(f"{path_of(issued.token)}continue/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/s/")
    assert Conversation.objects.count() == 1


def test_charlie_cannot_continue_an_org_only_link(alice: User, charlie: User) -> None:
    issued = share(alice, make_conversation(alice))
    client = client_for(charlie)
    never = fingerprint(client.get(path_of("never-existed") + "continue/"))
    assert never[0] == 404
    assert fingerprint(client.get(f"{path_of(issued.token)}continue/")) == never
    assert client.post(f"{path_of(issued.token)}continue/").status_code == 404
    assert not Conversation.objects.filter(user=charlie).exists()
