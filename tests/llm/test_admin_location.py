"""Model profiles live in the llm app: their admin pages moved, and old bookmarks land."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from accounts.models import User
from llm.models import ModelProfile

pytestmark = pytest.mark.django_db


def test_an_old_admin_address_of_a_profile_redirects_to_its_new_one() -> None:
    staff = Client()
    staff.force_login(User.objects.create_superuser(email="root@example.com", password="x"))
    profile = ModelProfile.objects.order_by("pk").first()
    assert profile is not None  # the seeded profile

    old = staff.get(f"/admin/conversations/modelprofile/{profile.pk}/change/?_changelist_filters=a")
    assert old.status_code == 301
    assert old["Location"] == (f"/admin/llm/modelprofile/{profile.pk}/change/"
                               "?_changelist_filters=a")
    assert staff.get(old["Location"]).status_code == 200
    assert staff.get("/admin/conversations/modelprofile/")["Location"] == "/admin/llm/modelprofile/"


def test_the_profile_content_type_belongs_to_llm() -> None:
    content_type = ContentType.objects.get_for_model(ModelProfile)
    assert (content_type.app_label, content_type.model) == ("llm", "modelprofile")
    assert not ContentType.objects.filter(app_label="conversations", model="modelprofile").exists()
