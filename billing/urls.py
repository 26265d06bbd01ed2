"""Usage & budgets, budget requests, estimates and notifications. Included at the site
root, beside the org pages of ``accounts.org_urls``:

    path("", include("billing.urls")),
"""

from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("org/usage/", views.usage_page, name="usage"),
    path("org/usage.csv", views.usage_csv, name="usage_csv"),
    path("org/budgets/", views.org_budgets, name="budgets"),
    path("org/budget-request/", views.request_budget, name="request_budget"),
    path("org/budget-requests/<int:request_id>/approve/", views.approve_request,
         name="approve_request"),
    path("org/budget-requests/<int:request_id>/decline/", views.decline_request,
         name="decline_request"),
    path("org/estimates/", views.turn_estimates, name="estimates"),
    path("notifications/", views.notifications_page, name="notifications"),
    path("notifications/read/", views.mark_notifications_read, name="mark_read"),
]
