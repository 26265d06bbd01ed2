from django.contrib import admin
from django.urls import include, path

from conversations.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("healthz", healthz, name="healthz"),
    path("", include("accounts.org_urls")),
    path("", include("sharing.urls")),
    path("", include("conversations.urls")),
]
