"""Error pages say what happened and what to do next, in the product's own pages
(STYLE.md rule 14), never Django's bare status text."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.views import defaults

from accounts.models import User

pytestmark = pytest.mark.django_db


def test_a_missing_page_signed_in_offers_the_way_back_to_the_chats(alice: User) -> None:
    client = Client()
    client.force_login(alice)
    response = client.get("/no-such-page/")
    page = response.content.decode()
    assert response.status_code == 404
    assert "<h1 id=\"error-heading\">Page not found</h1>" in page
    assert 'href="/">Back to your chats</a>' in page
    assert alice.email in page  # the site's own header, signed in


def test_a_missing_page_signed_out_offers_sign_in() -> None:
    response = Client().get("/no-such-page/")
    page = response.content.decode()
    assert response.status_code == 404
    assert "Page not found" in page and ">Sign in</a>" in page
    assert "Not Found</h1>" not in page


def test_a_form_sent_without_its_csrf_token_changes_nothing_and_says_so(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/accounts/switch-org/", {"organization": "1"})
    page = response.content.decode()
    assert response.status_code == 403
    assert "Form expired" in page and "nothing was changed" in page
    assert "CSRF verification failed" not in page


def test_server_errors_and_unreadable_requests_get_pages_rendered_without_a_request() -> None:
    request = RequestFactory().get("/")
    error = defaults.server_error(request)
    assert error.status_code == 500
    assert "Something went wrong" in error.content.decode()
    bad = defaults.bad_request(request, Exception("bad"))
    assert bad.status_code == 400
    assert "Request not understood" in bad.content.decode()
