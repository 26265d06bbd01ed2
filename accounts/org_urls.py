"""Org pages: members, invitations. Include at the site root:

    path("", include("accounts.org_urls")),

The money pages of the org (usage, budgets, requests, notifications) are billing.urls.
"""

from django.urls import path

from accounts import audit_views, group_views, sso_views
from accounts import org_views as views

app_name = "org"

urlpatterns = [
    path("org/", views.members_page, name="members"),
    path("org/invitations/", views.invite, name="invite"),
    path("org/allowed-domains/", views.allowed_domains, name="allowed_domains"),
    path("org/zero-data-retention/", views.zero_data_retention, name="zero_data_retention"),
    path("org/retention/", views.retention, name="retention"),
    path("org/invitations/<int:invitation_id>/revoke/", views.revoke_invitation,
         name="revoke_invitation"),
    path("org/invitations/<int:invitation_id>/resend/", views.resend_invitation,
         name="resend_invitation"),
    path("org/members/<int:membership_id>/role/", views.change_role, name="change_role"),
    path("org/members/<int:membership_id>/budget/", views.member_budget, name="member_budget"),
    path("org/members/<int:membership_id>/remove/", views.remove_member, name="remove_member"),
    path("org/audit/", audit_views.audit_log, name="audit"),
    path("org/sso/", sso_views.org_settings, name="sso"),
    path("org/groups/", group_views.groups_page, name="groups"),
    path("org/groups/<int:group_id>/", group_views.group_page, name="group"),
    path("org/groups/<int:group_id>/delete/", group_views.delete_group, name="delete_group"),
    path("org/groups/<int:group_id>/members/", group_views.add_member, name="add_group_member"),
    path("org/groups/<int:group_id>/members/<int:user_id>/remove/", group_views.remove_member,
         name="remove_group_member"),
    path("invite/<str:token>/", views.invitation, name="invitation"),
]
