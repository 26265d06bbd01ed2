from django.urls import path

from sharing import views

app_name = "sharing"

urlpatterns = [
    path("c/<int:conversation_id>/share/", views.share_dialog, name="dialog"),
    path("shared/", views.shared_links, name="list"),
    path("shared/policy/", views.sharing_policy, name="policy"),
    path("shared/<int:link_id>/update/", views.update_shared_link, name="update"),
    path("shared/<int:link_id>/settings/", views.link_settings, name="settings"),
    path("shared/<int:link_id>/revoke/", views.revoke_shared_link, name="revoke"),
    # Any token shape reaches the view, so malformed tokens get the same 404 as the rest.
    path("s/<str:token>/", views.shared_conversation, name="view"),
    path("s/<str:token>/continue/", views.continue_shared, name="continue"),
]
