"""Groups decide who may use which model: a model no group lists is open to the whole org;
once a group lists it, only its members see and use it. Losing a group takes effect at
once: open sockets close with 4403 and a send on the model is refused."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from accounts import groups
from accounts.groups import GroupFields
from accounts.model_access import default_profile, enabled_profiles, usable_profile
from accounts.models import AuditEntry, Group, GroupMembership, Membership, Organization, User
from chatsite.errors import Refused
from conversations.models import Conversation, Message
from llm.models import ModelProfile
from tests.conversations.wsclient import open_socket, receive_skipping_queue, send

CLOSE_WAIT = 5


def copy_of_seed(**fields: Any) -> ModelProfile:
    seed = ModelProfile.objects.get(name="o3-mini")
    own = ("id", "origin", "catalog_key", "catalog_values", "listed_at")
    values = {f.name: getattr(seed, f.name) for f in ModelProfile._meta.fields if f.name not in own}
    values.update(fields)
    return ModelProfile.objects.create(**values)


@pytest.fixture
def sol(db: None) -> ModelProfile:
    return copy_of_seed(name="sol", display_name="GPT-5.6 Sol", model="gpt-5.6-sol",
                        reasoning_efforts=["low", "medium"], default_effort="low")


@pytest.fixture
def research(org_a: Organization, alice: User, sol: ModelProfile) -> Group:
    """A group that keeps sol for its members; alice is in it, bob is not."""
    group = Group.objects.create(organization=org_a, name="Research")
    group.profiles.set([sol])
    GroupMembership.objects.create(group=group, user=alice)
    return group


def admin_of(user: User, organization: Organization) -> Membership:
    return Membership.objects.select_related("organization", "user").get(
        user=user, organization=organization)


def names(profiles: Any) -> list[str]:
    return [p.name for p in profiles]


# --- The rule ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_model_no_group_lists_is_open_to_everyone_in_the_org(
        org_a: Organization, alice: User, bob: User, sol: ModelProfile) -> None:
    Group.objects.create(organization=org_a, name="Empty")
    assert set(names(enabled_profiles(org_a, user=bob))) == {"sol", "o3-mini"}


@pytest.mark.django_db
def test_a_listed_model_is_open_only_to_the_groups_members(
        org_a: Organization, alice: User, bob: User, sol: ModelProfile, research: Group) -> None:
    assert set(names(enabled_profiles(org_a, user=alice))) == {"sol", "o3-mini"}
    assert names(enabled_profiles(org_a, user=bob)) == ["o3-mini"]
    # The org as a whole (admin pages) still has it.
    assert set(names(enabled_profiles(org_a, user=None))) == {"sol", "o3-mini"}
    assert usable_profile(org_a, "sol", user=alice) == sol
    with pytest.raises(Refused) as refused:
        usable_profile(org_a, "sol", user=bob)
    assert refused.value.code == "model_unavailable"
    assert "kept for some groups" in refused.value.detail


@pytest.mark.django_db
def test_a_group_of_another_org_listing_a_model_changes_nothing_here(
        org_a: Organization, bob: User, charlie: User, sol: ModelProfile) -> None:
    other = Group.objects.create(organization=charlie.memberships.get().organization, name="X")
    other.profiles.set([sol])
    assert set(names(enabled_profiles(org_a, user=bob))) == {"sol", "o3-mini"}


@pytest.mark.django_db
def test_a_new_conversation_defaults_to_a_model_the_person_may_use(
        org_a: Organization, alice: User, bob: User, sol: ModelProfile, research: Group) -> None:
    org_a.default_profile = sol
    org_a.save(update_fields=["default_profile"])
    assert default_profile(org_a, user=alice) == sol
    assert default_profile(org_a, user=bob) == ModelProfile.objects.get(name="o3-mini")


@pytest.mark.django_db
def test_the_chat_page_offers_only_the_models_the_person_may_use(
        org_a: Organization, alice: User, bob: User, sol: ModelProfile, research: Group) -> None:
    browser = Client()
    browser.force_login(bob)
    page = browser.get("/")
    assert page.status_code == 200
    assert "GPT-5.6 Sol" not in page.content.decode()
    browser.force_login(alice)
    assert "GPT-5.6 Sol" in browser.get("/").content.decode()


# --- The websocket ---------------------------------------------------------------------------

@sync_to_async
def saved() -> tuple[int, int]:
    return Message.objects.count(), Conversation.objects.count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_member_without_the_group_sending_the_model_by_hand_gets_model_unavailable(
        alice: User, bob: User, sol: ModelProfile, research: Group) -> None:
    ws = await open_socket(bob)
    before = await saved()

    await send(ws, {"type": "send", "conversation": None, "content": "Hi", "profile": "sol",
                    "reasoning_effort": "low", "client_id": "b1"})
    error = await receive_skipping_queue(ws)

    assert error["type"] == "error" and error["code"] == "model_unavailable", error
    assert "GPT-5.6 Sol is kept for some groups" in error["detail"]
    assert await saved() == before
    # The socket stays usable: the same send on an open model goes through.
    await send(ws, {"type": "send", "conversation": None, "content": "Hi", "profile": "o3-mini",
                    "reasoning_effort": "low", "client_id": "b2"})
    assert (await receive_skipping_queue(ws))["type"] == "message.created"
    await ws.disconnect()

    alice_ws = await open_socket(alice)
    await send(alice_ws, {"type": "send", "conversation": None, "content": "Hi",
                          "profile": "sol", "reasoning_effort": "low", "client_id": "a1"})
    created = await receive_skipping_queue(alice_ws)
    assert created["type"] == "message.created", created
    await alice_ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_losing_the_group_closes_the_socket_and_the_conversation_on_its_model_is_refused(
        alice: User, bob: User, org_a: Organization, sol: ModelProfile, research: Group) -> None:
    await sync_to_async(GroupMembership.objects.create)(group=research, user=bob)
    ws = await open_socket(bob)
    await send(ws, {"type": "send", "conversation": None, "content": "Hi", "profile": "sol",
                    "reasoning_effort": "low", "client_id": "b1"})
    created = await receive_skipping_queue(ws)
    assert created["type"] == "message.created", created
    await sync_to_async(Message.objects.filter(pk=created["assistant_message"]).update)(
        status=Message.Status.DONE, content="Hello")

    by = await sync_to_async(admin_of)(alice, org_a)
    await sync_to_async(groups.remove_member)(by=by, group=research, user_id=bob.pk)

    output = await ws.receive_output(timeout=CLOSE_WAIT)
    assert output == {"type": "websocket.close", "code": 4403}, output
    await ws.disconnect()
    ws = await open_socket(bob)
    before = await saved()
    await send(ws, {"type": "send", "conversation": created["conversation"], "content": "More",
                    "reasoning_effort": "low", "client_id": "b2"})
    error = await receive_skipping_queue(ws)
    assert error["type"] == "error" and error["code"] == "model_unavailable", error
    assert await saved() == before
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_group_starting_to_list_a_model_closes_everyones_sockets_in_the_org(
        alice: User, bob: User, org_a: Organization, sol: ModelProfile) -> None:
    ws = await open_socket(bob)
    by = await sync_to_async(admin_of)(alice, org_a)

    await sync_to_async(groups.create_group)(by=by, fields=GroupFields(
        name="Research", claim_value="", role_floor="member", profiles=[sol],
        monthly_budget_usd=None))

    output = await ws.receive_output(timeout=CLOSE_WAIT)
    assert output == {"type": "websocket.close", "code": 4403}, output
    await ws.disconnect()


# --- The pages -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_admin_creates_a_group_with_models_a_floor_and_a_budget(
        org_a: Organization, alice: User, bob: User, sol: ModelProfile) -> None:
    browser = Client()
    browser.force_login(alice)
    page = browser.get("/org/groups/")
    assert page.status_code == 200 and ">Groups</a>" in page.content.decode()

    response = browser.post("/org/groups/", {
        "name": "Research", "claim_value": "research-team", "role_floor": "admin",
        "profiles": [sol.pk], "monthly_budget_usd": "40",
    })

    assert response.status_code == 302
    group = Group.objects.get(organization=org_a)
    assert (group.name, group.claim_value, group.role_floor, group.monthly_budget_usd) == (
        "Research", "research-team", "admin", Decimal("40.00"))
    assert list(group.profiles.all()) == [sol]
    entry = AuditEntry.objects.get(action="group.changed")
    assert entry.details["change"] == "created" and entry.details["models"] == ["sol"]


@pytest.mark.django_db
def test_an_admin_adds_and_removes_a_member_and_the_floor_follows(
        org_a: Organization, alice: User, bob: User) -> None:
    group = Group.objects.create(organization=org_a, name="Leads", role_floor="admin")
    browser = Client()
    browser.force_login(alice)

    assert browser.post(f"/org/groups/{group.pk}/members/", {"email": "bob@example.com"}).status_code == 302
    assert Membership.objects.get(user=bob).role == "admin"

    assert browser.post(f"/org/groups/{group.pk}/members/{bob.pk}/remove/").status_code == 302
    assert Membership.objects.get(user=bob).role == "member"
    changes = list(AuditEntry.objects.filter(action="group.changed")
                   .order_by("at", "id").values_list("details__change", flat=True))
    assert changes == ["member_added", "member_removed"]


@pytest.mark.django_db
def test_a_provider_group_takes_no_members_by_hand(
        org_a: Organization, alice: User, bob: User) -> None:
    group = Group.objects.create(organization=org_a, name="Eng", claim_value="engineering")
    browser = Client()
    browser.force_login(alice)
    response = browser.post(f"/org/groups/{group.pk}/members/", {"email": "bob@example.com"})
    assert response.status_code == 400 and "change its members there" in response.content.decode()
    assert not GroupMembership.objects.exists()


@pytest.mark.django_db
def test_a_member_and_another_org_see_no_group_pages(
        org_a: Organization, alice: User, bob: User, charlie: User) -> None:
    group = Group.objects.create(organization=org_a, name="Research")
    browser = Client()
    browser.force_login(bob)
    assert browser.get("/org/groups/").status_code == 404
    assert browser.get(f"/org/groups/{group.pk}/").status_code == 404
    browser.force_login(charlie)
    assert browser.get(f"/org/groups/{group.pk}/").status_code == 404
    assert browser.post(f"/org/groups/{group.pk}/delete/").status_code == 404
    assert browser.post(f"/org/groups/{group.pk}/members/", {"email": "charlie@example.com"}).status_code == 404
    assert Group.objects.filter(pk=group.pk).exists()


@pytest.mark.django_db
def test_a_member_removed_from_the_org_leaves_its_groups(
        org_a: Organization, alice: User, bob: User, charlie: User) -> None:
    from accounts import members

    group = Group.objects.create(organization=org_a, name="Research")
    GroupMembership.objects.create(group=group, user=bob)
    elsewhere = Group.objects.create(organization=charlie.memberships.get().organization, name="X")
    Membership.objects.create(user=bob, organization=elsewhere.organization)
    GroupMembership.objects.create(group=elsewhere, user=bob)

    members.remove_member(by=admin_of(alice, org_a), target=Membership.objects.get(
        user=bob, organization=org_a))

    assert list(GroupMembership.objects.values_list("group", flat=True)) == [elsewhere.pk]
