"""The site's URLs plus the org pages, for tests, until chatsite/urls.py includes
``accounts.org_urls`` itself (then this adds nothing)."""

from django.urls import include, path

from chatsite.urls import urlpatterns as site_patterns

_included = any(getattr(pattern, "namespace", None) == "org" for pattern in site_patterns)

urlpatterns = list(site_patterns) if _included else [
    path("", include("accounts.org_urls")),
    *site_patterns,
]
