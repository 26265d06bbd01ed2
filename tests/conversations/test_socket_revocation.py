"""Open sockets follow the account: signing out, deactivation, a password change, removal
from an org and a role change close them (4401 or 4403) and nothing more is forwarded.

Driven through the real ASGI app with WebsocketCommunicator; each browser is a Django
test client whose session cookie the socket carries. Frames for a followed answer are
published the way a worker publishes them (realtime.publishing.publish), so "nothing
more arrives" is checked against a stream that would otherwise reach the socket.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.tokens import default_token_generator
from django.test import Client
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts import members
from accounts.models import Membership, User
from chatsite.asgi import application
from conversations.models import Message
from realtime import publishing as realtime
from tests.conversations.wsclient import ORIGIN, receive, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

QUESTION = {"type": "send", "conversation": None, "content": "Explain Euler's identity",
            "reasoning_effort": "low", "client_id": "tab-1"}
NEW_PASSWORD = "a fresh passphrase for 2027"
CLOSE_WAIT = 5  # seconds: the socket must close within this


# --- helpers ---------------------------------------------------------------------------------


@sync_to_async
def signed_in(user: User) -> Client:
    """A browser with its own session for ``user``."""
    client = Client()
    client.force_login(user)
    return client


async def open_socket(browser: Client) -> WebsocketCommunicator:
    cookie = browser.cookies["sessionid"].value
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=[
        (b"origin", ORIGIN), (b"host", b"127.0.0.1:8000"),
        (b"cookie", f"sessionid={cookie}".encode()),
    ])
    connected, code = await ws.connect()
    assert connected, code
    return ws


async def follow_an_answer(ws: WebsocketCommunicator) -> int:
    """Start a turn (no worker runs: the answer stays pending) and check that a frame
    published for it reaches this socket."""
    await send(ws, QUESTION)
    created = await receive(ws)
    assert created["type"] == "message.created", created
    answer_id = created["assistant_message"]
    await publish_delta(answer_id, 1)
    delta = await receive(ws)
    assert delta["type"] == "delta" and delta["seq"] == 1, delta
    return answer_id


async def publish_delta(answer_id: int, seq: int) -> None:
    await sync_to_async(realtime.publish)(
        answer_id, {"type": "delta", "message": answer_id, "seq": seq, "text": f"part {seq} "}
    )


async def assert_closed_with(ws: WebsocketCommunicator, code: int) -> None:
    output = await ws.receive_output(timeout=CLOSE_WAIT)
    assert output == {"type": "websocket.close", "code": code}, output


async def assert_closed_and_silent(ws: WebsocketCommunicator, code: int, answer_id: int) -> None:
    """Closed with ``code``; a frame published for its answer afterwards never arrives."""
    await assert_closed_with(ws, code)
    await publish_delta(answer_id, 2)
    assert await ws.receive_nothing(timeout=0.5)
    await ws.disconnect()


async def assert_still_usable(ws: WebsocketCommunicator) -> None:
    """Nothing arrived, and a send still starts a turn."""
    assert await ws.receive_nothing(timeout=0.3)
    await send(ws, {**QUESTION, "client_id": "still-here"})
    created = await receive(ws)
    assert created["type"] == "message.created", created
    await ws.disconnect()


def membership_of(user: User, organization: Any) -> Membership:
    return Membership.objects.select_related("organization", "user").get(
        user=user, organization=organization
    )


# --- 4401: the sign-in is gone -----------------------------------------------------------------


async def test_signing_out_closes_that_browsers_socket_with_4401_and_not_the_other_browsers(
    alice: User,
) -> None:
    laptop, phone = await signed_in(alice), await signed_in(alice)
    laptop_ws, phone_ws = await open_socket(laptop), await open_socket(phone)
    answer_id = await follow_an_answer(laptop_ws)

    response = await sync_to_async(laptop.post)("/accounts/logout/")

    assert response.status_code == 302
    await assert_closed_and_silent(laptop_ws, 4401, answer_id)
    await assert_still_usable(phone_ws)


async def test_deactivating_an_account_closes_all_its_sockets_with_4401(alice: User) -> None:
    laptop_ws = await open_socket(await signed_in(alice))
    phone_ws = await open_socket(await signed_in(alice))
    answer_id = await follow_an_answer(laptop_ws)

    alice.is_active = False
    await sync_to_async(alice.save)(update_fields=["is_active"])

    await assert_closed_and_silent(laptop_ws, 4401, answer_id)
    await assert_closed_with(phone_ws, 4401)
    await phone_ws.disconnect()


async def test_a_password_change_closes_all_sockets_with_4401_and_the_old_session_cannot_reconnect(
    alice: User,
) -> None:
    laptop = await signed_in(alice)
    laptop_ws = await open_socket(laptop)
    phone_ws = await open_socket(await signed_in(alice))
    answer_id = await follow_an_answer(laptop_ws)

    alice.set_password(NEW_PASSWORD)
    await sync_to_async(alice.save)()

    await assert_closed_and_silent(laptop_ws, 4401, answer_id)
    await assert_closed_with(phone_ws, 4401)
    await phone_ws.disconnect()
    again = WebsocketCommunicator(application, "/ws/chat/", headers=[
        (b"origin", ORIGIN), (b"host", b"127.0.0.1:8000"),
        (b"cookie", f"sessionid={laptop.cookies['sessionid'].value}".encode()),
    ])
    connected, code = await again.connect()
    assert not connected and code == 4401


async def test_a_password_reset_through_the_emailed_link_closes_the_sockets_with_4401(
    alice: User,
) -> None:
    ws = await open_socket(await signed_in(alice))
    answer_id = await follow_an_answer(ws)
    uid = urlsafe_base64_encode(force_bytes(alice.pk))
    token = await sync_to_async(default_token_generator.make_token)(alice)
    stranger = Client()  # the reset happens in a browser that is not signed in

    form_page = await sync_to_async(stranger.get)(
        f"/accounts/password/reset/{uid}/{token}/", follow=True
    )
    done = await sync_to_async(stranger.post)(
        form_page.request["PATH_INFO"],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    assert done.status_code == 302, getattr(done, "context", None)
    await assert_closed_and_silent(ws, 4401, answer_id)


async def test_a_command_from_a_signed_out_session_is_closed_with_4401_not_run_when_the_event_is_lost(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Redis blip drops the revocation event: the consumer's own check must catch it.
    monkeypatch.setattr("realtime.publishing.publish_event", lambda group, event: None)
    laptop = await signed_in(alice)
    ws = await open_socket(laptop)
    answer_id = await follow_an_answer(ws)
    await sync_to_async(laptop.post)("/accounts/logout/")
    assert await ws.receive_nothing(timeout=0.3)
    before = await sync_to_async(Message.objects.count)()

    await send(ws, {**QUESTION, "client_id": "after-logout"})

    await assert_closed_and_silent(ws, 4401, answer_id)
    assert await sync_to_async(Message.objects.count)() == before


async def test_a_stop_from_a_deactivated_account_is_closed_with_4401_and_the_answer_is_untouched(
    alice: User,
) -> None:
    ws = await open_socket(await signed_in(alice))
    answer_id = await follow_an_answer(ws)
    # A bulk update sends no signal, so no event: only the consumer's own check sees it.
    await sync_to_async(User.objects.filter(pk=alice.pk).update)(is_active=False)

    await send(ws, {"type": "stop", "message": answer_id})

    await assert_closed_and_silent(ws, 4401, answer_id)
    answer = await sync_to_async(Message.objects.get)(pk=answer_id)
    assert answer.status == Message.Status.PENDING and not answer.cancel_requested


# --- 4403: access changed ----------------------------------------------------------------------


async def test_removing_a_member_closes_their_sockets_with_4403_and_not_the_admins(
    alice: User, bob: User, org_a: Any
) -> None:
    alice_ws = await open_socket(await signed_in(alice))
    bob_ws = await open_socket(await signed_in(bob))
    answer_id = await follow_an_answer(bob_ws)
    by = await sync_to_async(membership_of)(alice, org_a)
    target = await sync_to_async(membership_of)(bob, org_a)

    await sync_to_async(members.remove_member)(by=by, target=target)

    await assert_closed_and_silent(bob_ws, 4403, answer_id)
    await assert_still_usable(alice_ws)


async def test_changing_a_members_role_closes_their_sockets_with_4403(
    alice: User, bob: User, org_a: Any
) -> None:
    bob_ws = await open_socket(await signed_in(bob))
    answer_id = await follow_an_answer(bob_ws)
    by = await sync_to_async(membership_of)(alice, org_a)
    target = await sync_to_async(membership_of)(bob, org_a)

    await sync_to_async(members.change_role)(by=by, target=target, role=Membership.Role.ADMIN)

    await assert_closed_and_silent(bob_ws, 4403, answer_id)


async def test_saving_a_membership_without_a_new_role_leaves_the_socket_open(
    alice: User, bob: User, org_a: Any
) -> None:
    bob_ws = await open_socket(await signed_in(bob))
    by = await sync_to_async(membership_of)(alice, org_a)
    target = await sync_to_async(membership_of)(bob, org_a)

    await sync_to_async(members.change_role)(by=by, target=target, role=Membership.Role.MEMBER)
    await sync_to_async(target.save)()

    await assert_still_usable(bob_ws)


async def test_charlies_role_change_and_removal_never_close_alices_or_bobs_sockets(
    alice: User, bob: User, charlie: User, org_a: Any
) -> None:
    await sync_to_async(Membership.objects.create)(
        user=charlie, organization=org_a, role=Membership.Role.MEMBER
    )
    alice_ws = await open_socket(await signed_in(alice))
    bob_ws = await open_socket(await signed_in(bob))
    charlie_ws = await open_socket(await signed_in(charlie))
    alice_answer = await follow_an_answer(alice_ws)
    by = await sync_to_async(membership_of)(alice, org_a)
    target = await sync_to_async(membership_of)(charlie, org_a)

    await sync_to_async(members.change_role)(by=by, target=target, role=Membership.Role.ADMIN)
    await assert_closed_with(charlie_ws, 4403)
    await charlie_ws.disconnect()
    charlie_ws = await open_socket(await signed_in(charlie))
    await sync_to_async(members.remove_member)(by=by, target=target)
    await assert_closed_with(charlie_ws, 4403)
    await charlie_ws.disconnect()

    await publish_delta(alice_answer, 2)
    delta = await receive(alice_ws)
    assert delta["type"] == "delta" and delta["seq"] == 2, delta
    await assert_still_usable(alice_ws)
    await assert_still_usable(bob_ws)


async def test_signing_out_of_charlies_session_never_closes_alices_socket(
    alice: User, charlie: User
) -> None:
    alice_ws = await open_socket(await signed_in(alice))
    charlie_browser = await signed_in(charlie)
    charlie_ws = await open_socket(charlie_browser)

    await sync_to_async(charlie_browser.post)("/accounts/logout/")

    await assert_closed_with(charlie_ws, 4401)
    await charlie_ws.disconnect()
    await assert_still_usable(alice_ws)
