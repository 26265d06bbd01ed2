"""Org pages, invitations and notifications. Include at the site root:

    path("", include("accounts.org_urls")),
"""

from django.urls import path

from accounts import org_views as views

app_name = "org"

urlpatterns = [
    path("org/", views.members_page, name="members"),
    path("org/invitations/", views.invite, name="invite"),
    path("org/allowed-domains/", views.allowed_domains, name="allowed_domains"),
    path("org/zero-data-retention/", views.zero_data_retention, name="zero_data_retention"),
    path("org/invitations/<int:invitation_id>/revoke/", views.revoke_invitation,
         name="revoke_invitation"),
    path("org/invitations/<int:invitation_id>/resend/", views.resend_invitation,
         name="resend_invitation"),
    path("org/members/<int:membership_id>/role/", views.change_role, name="change_role"),
    path("org/members/<int:membership_id>/budget/", views.member_budget, name="member_budget"),
    path("org/members/<int:membership_id>/remove/", views.remove_member, name="remove_member"),
    path("org/usage/", views.usage_page, name="usage"),
    path("org/usage.csv", views.usage_csv, name="usage_csv"),
    path("org/budgets/", views.org_budgets, name="budgets"),
    path("org/budget-request/", views.request_budget, name="request_budget"),
    path("org/budget-requests/<int:request_id>/approve/", views.approve_request,
         name="approve_request"),
    path("org/budget-requests/<int:request_id>/decline/", views.decline_request,
         name="decline_request"),
    path("org/estimates/", views.turn_estimates, name="estimates"),
    path("invite/<str:token>/", views.invitation, name="invitation"),
    path("notifications/", views.notifications_page, name="notifications"),
    path("notifications/read/", views.mark_notifications_read, name="mark_read"),
]
