from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from chatsite.health import healthz

urlpatterns = [
    # Model profiles moved to the llm app: bookmarks of their old admin pages still land.
    re_path(r"^admin/conversations/modelprofile/(?P<rest>.*)$",
            RedirectView.as_view(url="/admin/llm/modelprofile/%(rest)s", permanent=True,
                                 query_string=True)),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("healthz", healthz, name="healthz"),
    path("", include("accounts.org_urls")),
    path("", include("billing.urls")),
    path("", include("sharing.urls")),
    path("", include("answers.urls")),
    path("", include("conversations.urls")),
]
