from __future__ import annotations

from collections.abc import Callable

from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
    QueryDict,
)
from django.views.defaults import page_not_found

from chatsite import metrics
from chatsite.errors import NotFound

# Model output is untrusted: no inline scripts, no remote images (Markdown image
# exfiltration), no framing. KaTeX needs inline style attributes, hence style-src.
DEFAULT_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
        return response


class RejectNullCharactersMiddleware:
    """A NUL in a query string or form field can never be stored in PostgreSQL and makes
    the driver raise mid-query; refuse such requests up front with a 400."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or _has_nul(request.GET) or (
            request.method == "POST" and _has_nul(request.POST)
        ):
            return HttpResponseBadRequest(
                "Requests may not contain NUL characters.", content_type="text/plain"
            )
        return self.get_response(request)


def _has_nul(params: QueryDict) -> bool:
    return any("\x00" in key or any("\x00" in value for value in values)
               for key, values in params.lists())


class NotFoundAs404Middleware:
    """A permission-checked fetch that finds nothing raises NotFound; anywhere it escapes a
    view it is a 404, exactly like an id that does not exist (never a 500)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, NotFound):
            return page_not_found(request, Http404(str(exception)))
        return None


class MetricsEndpoint:
    """``/metrics``: this process's metrics for Prometheus (chatsite/metrics.py), behind
    METRICS_TOKEN. First in MIDDLEWARE: Prometheus reaches each web process at its own
    address over the deployment's network, a Host that is not in ALLOWED_HOSTS over
    plain HTTP, so neither the host check nor the HTTPS redirect may stand before it.
    Nothing but this one path is answered here."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info != metrics.METRICS_PATH:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        status, body, headers = metrics.scrape_response(request.headers.get("Authorization", ""))
        return HttpResponse(body, status=status, headers=headers)
