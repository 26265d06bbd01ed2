"""Groups and the Single sign-on form in headless Chromium against the real stack.

alice (owner of Acme) builds a group by hand on the Groups page: its role floor, the
models it keeps and its budget, a member added and removed, and then deletes it. bob, in
a group whose monthly budget is used up, is refused a turn with the group's explanation
and nothing is charged. alice saves the org's sign-in rules, and a malformed groups claim
changes nothing. bob (a member) and charlie (another org's owner) get the same 404 for
the Groups pages as for a group that does not exist.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.accounts.test_groups import copy_of_seed
from tests.browser.conftest import Watch, read_db
from tests.browser.test_budgets import open_context, send, sign_in, watch_page

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REFUSED_QUESTION = "Draft the launch plan for the research team [group-budget]"
CLIENT_SECRET = "a-client-secret-that-must-never-be-shown-9431"
DELETE_QUESTION = "Delete the group Research? Its members lose the models it lists."


# --- helpers ------------------------------------------------------------------------------


def answer_confirms(page: Any, watch: Watch, answers: list[bool]) -> list[str]:
    """Answer the page's confirm() questions in order (True: OK) and return the questions
    asked; a dialog beyond ``answers`` is unexpected, so it goes to ``watch.dialogs``."""
    pending = deque(answers)
    asked: list[str] = []

    def on_dialog(dialog: Any) -> None:
        if not pending:
            watch.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()
            return
        asked.append(dialog.message)
        if pending.popleft():
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))
    return asked


def open_org_page(page: Any, link: str) -> None:
    """From the chat page, as an admin gets there: Members in the header, then the org's
    navigation."""
    page.get_by_role("navigation", name="Site").get_by_role("link", name="Members").click()
    page.get_by_role("navigation", name="Organization admin").get_by_role(
        "link", name=link, exact=True).click()


def flash(page: Any) -> Any:
    return page.locator(".flash-messages")


def group_rows(organization_id: int) -> list[dict[str, Any]]:
    """The org's groups as stored: fields, models and members."""
    from accounts.models import Group

    return read_db(lambda: [
        {"name": g.name, "claim_value": g.claim_value, "role_floor": g.role_floor,
         "models": sorted(p.name for p in g.profiles.all()),
         "monthly_budget_usd": g.monthly_budget_usd,
         "members": sorted(m.user.email for m in g.memberships.select_related("user"))}
        for g in Group.objects.filter(organization_id=organization_id)
    ])


def role_of(membership_id: int) -> tuple[str, str | None]:
    """bob's role in the org, and the role a group's floor raised him from (if it did)."""
    from accounts.models import Membership, RaisedRole

    def fetch() -> tuple[str, str | None]:
        raised = RaisedRole.objects.filter(membership_id=membership_id).first()
        return (Membership.objects.get(pk=membership_id).role,
                raised.base_role if raised is not None else None)

    return read_db(fetch)


def group_changes(organization_id: int) -> list[str]:
    from accounts.audit_models import AuditAction
    from accounts.models import AuditEntry

    return read_db(lambda: [
        entry.details["change"] for entry in AuditEntry.objects.filter(
            organization_id=organization_id, action=AuditAction.GROUP_CHANGED).order_by("at", "id")
    ])


def money_and_messages(organization_id: int) -> Mapping[str, Any]:
    """Everything a turn would write or charge in the org."""
    from billing.models import GroupUsagePeriod, Reservation, UsagePeriod
    from conversations.models import Conversation, Message

    return read_db(lambda: {
        "periods": sorted(UsagePeriod.objects.filter(organization_id=organization_id)
                          .values_list("user_id", "spent_usd", "reserved_usd"),
                          key=lambda row: (row[0] is not None, row[0] or 0)),
        "group_periods": list(GroupUsagePeriod.objects.filter(group__organization_id=organization_id)
                              .values_list("group__name", "spent_usd", "reserved_usd")),
        "reservations": Reservation.objects.count(),
        "conversations": Conversation.objects.filter(organization_id=organization_id).count(),
        "messages": Message.objects.filter(conversation__organization_id=organization_id).count(),
    })


# --- an admin manages a group by hand -------------------------------------------------------


def test_an_admin_creates_sets_up_staffs_and_deletes_a_group(
    alice: Any, bob: Any, charlie: Any, page: Any, watch: Watch
) -> None:
    from accounts.models import Group, Membership

    ids = read_db(lambda: {
        "org": alice.memberships.get().organization_id,
        "bob_membership": bob.memberships.get().pk,
    })
    read_db(lambda: copy_of_seed(name="sol", display_name="GPT-5.6 Sol", model="gpt-5.6-sol"))

    # A page of its own in the test's context: the fixture's page dismisses every dialog,
    # and deleting a group asks first.
    admin = page.context.new_page()
    asked = answer_confirms(admin, watch, [False, True])
    sign_in(admin, "alice@example.com")
    open_org_page(admin, "Groups")
    expect(admin.get_by_role("heading", name="Groups", level=1)).to_be_visible()
    expect(admin.get_by_text("No groups yet: every member may use every model")).to_be_visible()

    # --- create: a name, sol kept for the group, $25 a month ----------------------------------
    new_group = admin.get_by_role("region", name="New group")
    new_group.get_by_label("Group name").fill("Research")
    expect(new_group.get_by_label("Role floor")).to_have_value("member")
    new_group.get_by_label("GPT-5.6 Sol").check()
    new_group.get_by_label("Group monthly budget (USD)").fill("25")
    new_group.get_by_role("button", name="Create group").click()

    expect(flash(admin)).to_contain_text("Group Research created.")
    expect(admin.get_by_role("heading", name="Research", level=1)).to_be_visible()
    group_id = read_db(lambda: Group.objects.get(organization_id=ids["org"], name="Research").pk)
    assert urlsplit(admin.url).path == f"/org/groups/{group_id}/"
    members = admin.get_by_role("region", name="Members")
    expect(members.get_by_role("listitem")).to_have_text(["Nobody yet."])
    settings_form = admin.get_by_role("region", name="Settings")
    expect(settings_form.get_by_label("Group name")).to_have_value("Research")
    expect(settings_form.get_by_label("Role floor")).to_have_value("member")
    expect(settings_form.get_by_label("GPT-5.6 Sol")).to_be_checked()
    expect(settings_form.get_by_label("o3-mini")).not_to_be_checked()
    expect(settings_form.get_by_label("Group monthly budget (USD)")).to_have_value("25.00")
    assert group_rows(ids["org"]) == [{
        "name": "Research", "claim_value": "", "role_floor": "member", "models": ["sol"],
        "monthly_budget_usd": Decimal("25.00"), "members": [],
    }]

    # The list shows it; the group opens from there.
    admin.get_by_role("link", name="All groups").click()
    row = admin.get_by_role("table").get_by_role("row").filter(has_text="Research")
    expect(row.locator("td")).to_have_text(["0", "Member", "GPT-5.6 Sol", "$25.00"])

    # A second group by the same name (any case) is refused, saying why.
    new_group.get_by_label("Group name").fill("research")
    new_group.get_by_role("button", name="Create group").click()
    expect(admin.get_by_role("alert")).to_have_text(
        "A group named “research” exists already. Pick another name.")
    expect(new_group.get_by_label("Group name")).to_have_value("research")
    assert [g["name"] for g in group_rows(ids["org"])] == ["Research"]

    row.get_by_role("link", name="Research").click()
    expect(admin.get_by_role("heading", name="Research", level=1)).to_be_visible()

    # --- settings: an admin floor, both models, $40.50 ------------------------------------------
    settings_form.get_by_label("Role floor").select_option(label="Admin")
    settings_form.get_by_label("o3-mini").check()
    settings_form.get_by_label("Group monthly budget (USD)").fill("40.50")
    settings_form.get_by_role("button", name="Save group").click()

    expect(flash(admin)).to_contain_text("Group Research saved.")
    expect(settings_form.get_by_label("Role floor")).to_have_value("admin")
    expect(settings_form.get_by_label("o3-mini")).to_be_checked()
    expect(settings_form.get_by_label("GPT-5.6 Sol")).to_be_checked()
    expect(settings_form.get_by_label("Group monthly budget (USD)")).to_have_value("40.50")
    assert group_rows(ids["org"]) == [{
        "name": "Research", "claim_value": "", "role_floor": "admin",
        "models": ["o3-mini", "sol"], "monthly_budget_usd": Decimal("40.50"), "members": [],
    }]

    # --- members: someone outside the org is refused; bob joins and the floor lifts him -------
    members.get_by_label("Member's email").fill("charlie@example.com")
    members.get_by_role("button", name="Add to group").click()
    expect(admin.get_by_role("alert")).to_have_text(
        "charlie@example.com is not a member of Acme. Invite them first.")
    expect(members.get_by_role("listitem")).to_have_text(["Nobody yet."])
    assert group_rows(ids["org"])[0]["members"] == []

    members.get_by_label("Member's email").fill("bob@example.com")
    members.get_by_role("button", name="Add to group").click()
    expect(flash(admin)).to_contain_text("bob@example.com added to Research.")
    expect(members.get_by_role("listitem")).to_have_count(1)
    expect(members.get_by_role("listitem")).to_contain_text("bob@example.com")
    assert group_rows(ids["org"])[0]["members"] == ["bob@example.com"]
    assert role_of(ids["bob_membership"]) == (Membership.Role.ADMIN, Membership.Role.MEMBER)

    # The list counts him.
    admin.get_by_role("link", name="All groups").click()
    expect(row.locator("td")).to_have_text(["1", "Admin", "GPT-5.6 Sol, o3-mini", "$40.50"])
    row.get_by_role("link", name="Research").click()

    # --- bob leaves: the floor's role goes back -------------------------------------------------
    members.get_by_role("button", name="Remove bob@example.com from Research").click()
    expect(flash(admin)).to_contain_text("bob@example.com removed from Research.")
    expect(members.get_by_role("listitem")).to_have_text(["Nobody yet."])
    assert group_rows(ids["org"])[0]["members"] == []
    assert role_of(ids["bob_membership"]) == (Membership.Role.MEMBER, None)

    # --- delete: cancelled at the question first, then confirmed ------------------------------
    delete = admin.get_by_role("button", name="Delete group")
    delete.click()
    expect(admin.get_by_role("heading", name="Research", level=1)).to_be_visible()
    assert asked == [DELETE_QUESTION]
    assert [g["name"] for g in group_rows(ids["org"])] == ["Research"]

    delete.click()
    expect(flash(admin)).to_contain_text("Group Research deleted.")
    expect(admin.get_by_role("heading", name="Groups", level=1)).to_be_visible()
    expect(admin.get_by_text("No groups yet: every member may use every model")).to_be_visible()
    assert urlsplit(admin.url).path == "/org/groups/"
    assert asked == [DELETE_QUESTION, DELETE_QUESTION]
    assert group_rows(ids["org"]) == []
    assert read_db(lambda: Membership.objects.get(pk=ids["bob_membership"]).role) == "member"

    assert group_changes(ids["org"]) == [
        "created", "updated", "member_added", "member_removed", "deleted"]
    assert watch.page_errors == [] and watch.dialogs == [] and watch.remote_requests == []


# --- a group's used-up budget refuses its member's turn -------------------------------------


def test_a_member_whose_group_budget_is_used_up_is_refused_and_charged_nothing(
    alice: Any, bob: Any, page: Any, emulator: Any, watch: Watch
) -> None:
    from accounts.models import Group, GroupMembership, Organization
    from billing.models import GroupUsagePeriod
    from billing.quotas import next_period_start, period_start

    def used_up_group() -> dict[str, Any]:
        organization = Organization.objects.get(memberships__user=bob)
        group = Group.objects.create(organization=organization, name="Research",
                                     monthly_budget_usd=Decimal("0.50"))
        GroupMembership.objects.create(group=group, user=bob)
        start = period_start(organization)
        # The month's spending as earlier turns of the group's members left it.
        GroupUsagePeriod.objects.create(group=group, period_start=start,
                                        spent_usd=Decimal("0.50"))
        return {"org": organization.pk, "resets": next_period_start(start)}

    setup = read_db(used_up_group)
    before = money_and_messages(setup["org"])
    assert before["group_periods"] == [("Research", Decimal("0.50"), Decimal(0))]
    assert (before["reservations"], before["conversations"], before["messages"]) == (0, 0, 0)

    sign_in(page, "bob@example.com")
    send(page, REFUSED_QUESTION)

    error = page.get_by_test_id("composer-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("data-code", "quota_exceeded")
    expect(error).to_contain_text("Budget used up")
    expect(error).to_contain_text(
        f"Your group Research's monthly budget of $0.50 is used up (or this turn's worst case "
        f"would pass it); it resets on {setup['resets']:%-d %b}. Ask an admin to raise it."
    )
    # The question stays in the composer, and nothing joins the transcript.
    expect(page.get_by_label("Message", exact=True)).to_have_value(REFUSED_QUESTION)
    expect(page.get_by_test_id("user-message")).to_have_count(0)
    expect(page.get_by_test_id("assistant-message")).to_have_count(0)
    assert urlsplit(page.url).path == "/"

    # Nothing written, held or spent: no conversation, no message, no reservation, and
    # every month (org, member, group) as it was.
    after = money_and_messages(setup["org"])
    assert after == before
    assert not [entry for entry in emulator.journal if entry["path"].endswith("/chat/completions")]
    assert watch.page_errors == [] and watch.dialogs == [] and watch.remote_requests == []


# --- the org's Single sign-on form ----------------------------------------------------------


def test_the_owner_saves_the_sign_in_rules_and_a_malformed_claim_changes_nothing(
    alice: Any, page: Any, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accounts.audit_models import AuditAction
    from accounts.models import AuditEntry, IdentityProvider

    # The operator's connection, secret from the environment (the server runs in this
    # process): the org's page must neither ask for it nor show it.
    monkeypatch.setenv("OIDC_CLIENT_SECRET_ACME", CLIENT_SECRET)

    def connect() -> dict[str, int]:
        organization = alice.memberships.get().organization
        provider = IdentityProvider.objects.create(
            organization=organization, display_name="Acme ID",
            discovery_url="https://id.example.com/.well-known/openid-configuration",
            client_id="teamchat-acme", client_secret_env="OIDC_CLIENT_SECRET_ACME",
        )
        return {"org": organization.pk, "provider": provider.pk}

    ids = read_db(connect)

    def stored() -> tuple[bool, str]:
        provider = read_db(lambda: IdentityProvider.objects.get(pk=ids["provider"]))
        return provider.sso_only, provider.groups_claim

    def settings_entries() -> list[dict[str, Any]]:
        return read_db(lambda: list(AuditEntry.objects.filter(
            organization_id=ids["org"], action=AuditAction.ORG_SETTINGS_CHANGED,
        ).order_by("at", "id").values_list("details", flat=True)))

    sign_in(page, "alice@example.com")
    open_org_page(page, "Single sign-on")
    expect(page.get_by_role("heading", name="Single sign-on", level=1)).to_be_visible()
    expect(page.get_by_text("sign in with Acme ID")).to_be_visible()
    expect(page.locator("dl.org-facts")).to_contain_text(
        f"/accounts/sso/{ids['provider']}/callback/")
    expect(page.locator("dl.org-facts")).to_contain_text(
        "https://id.example.com/.well-known/openid-configuration")
    expect(page.locator("dl.org-facts")).to_contain_text("teamchat-acme")

    rules = page.get_by_role("region", name="Sign-in rules")
    sso_only = rules.get_by_label("SSO only")
    claim = rules.get_by_label("Groups claim")
    expect(sso_only).not_to_be_checked()
    expect(claim).to_have_value("groups")
    # The rules are all the form asks for: no secret, and no trace of the secret's value.
    fields = rules.locator("input:not([type=hidden]), select, textarea")
    assert sorted(fields.evaluate_all("els => els.map(e => e.name)")) == ["groups_claim", "sso_only"]
    expect(page.get_by_label(re.compile("secret", re.IGNORECASE))).to_have_count(0)
    assert CLIENT_SECRET not in page.content()

    # --- saved, and shown back ------------------------------------------------------------------
    sso_only.check()
    claim.fill("roles")
    rules.get_by_role("button", name="Save sign-in rules").click()
    expect(flash(page)).to_contain_text("Single sign-on settings saved.")
    expect(sso_only).to_be_checked()
    expect(claim).to_have_value("roles")
    assert stored() == (True, "roles")
    assert settings_entries() == [{"changes": {"sso_only": {"old": False, "new": True},
                                               "groups_claim": {"old": "groups", "new": "roles"}}}]

    page.reload()
    expect(sso_only).to_be_checked()
    expect(claim).to_have_value("roles")

    # --- a claim name with a space: a clear error, and nothing changes ------------------------
    sso_only.uncheck()
    claim.fill("team groups")
    rules.get_by_role("button", name="Save sign-in rules").click()
    expect(page.get_by_role("alert")).to_have_text("A claim name: letters, digits and _ . : / -")
    expect(claim).to_have_value("team groups")
    assert stored() == (True, "roles")
    assert len(settings_entries()) == 1

    page.goto("/org/sso/")
    expect(sso_only).to_be_checked()
    expect(claim).to_have_value("roles")
    assert CLIENT_SECRET not in page.content()
    assert watch.page_errors == [] and watch.dialogs == [] and watch.remote_requests == []


# --- who may not see the Groups pages -------------------------------------------------------


def test_a_member_and_another_orgs_admin_are_refused_the_groups_pages(
    alice: Any, bob: Any, charlie: Any, page: Any, live_server_url: str, watch: Watch
) -> None:
    from accounts.models import Group, GroupMembership

    def research() -> dict[str, int]:
        organization = alice.memberships.get().organization
        group = Group.objects.create(organization=organization, name="Research",
                                     monthly_budget_usd=Decimal("10.00"))
        GroupMembership.objects.create(group=group, user=alice)
        return {"org": organization.pk, "group": group.pk}

    ids = read_db(research)
    before = group_rows(ids["org"])

    def refused(target: Any, path: str) -> None:
        response = target.goto(path)
        assert response is not None and response.status == 404, path
        expect(target.get_by_role("heading", name="Page not found")).to_be_visible()
        expect(target.get_by_text("Research")).to_have_count(0)

    # bob, a member of Acme: no admin links, and the pages are not there for him.
    sign_in(page, "bob@example.com")
    site = page.get_by_role("navigation", name="Site")
    expect(site.get_by_role("link", name="Chat")).to_be_visible()
    expect(site.get_by_role("link", name="Members")).to_have_count(0)
    refused(page, "/org/groups/")
    refused(page, f"/org/groups/{ids['group']}/")
    refused(page, f"/org/groups/?org={ids['org']}")

    # charlie, the owner of another org: Acme's group by its id is a 404 too, even naming
    # Acme; his own Groups page does not list it.
    charlie_context = open_context(page.context.browser, live_server_url, watch)
    try:
        charlie_page = charlie_context.new_page()
        watch_page(charlie_page, watch)
        sign_in(charlie_page, "charlie@example.com")
        refused(charlie_page, f"/org/groups/{ids['group']}/")
        refused(charlie_page, f"/org/groups/{ids['group']}/?org={ids['org']}")
        refused(charlie_page, f"/org/groups/?org={ids['org']}")

        charlie_page.goto("/")
        open_org_page(charlie_page, "Groups")
        expect(charlie_page.get_by_role("heading", name="Groups", level=1)).to_be_visible()
        expect(charlie_page.get_by_text("No groups yet: every member may use every model")).to_be_visible()
        expect(charlie_page.get_by_text("Research")).to_have_count(0)
    finally:
        charlie_context.close()

    assert group_rows(ids["org"]) == before
    assert watch.page_errors == [] and watch.dialogs == [] and watch.remote_requests == []
