"""Creating accounts and organizations."""

from __future__ import annotations

from django.db import transaction

from accounts.models import Membership, Organization, User


@transaction.atomic
def sign_up(*, email: str, password: str, organization_name: str = "") -> User:
    """A new account becomes the owner of a new organization."""
    user = User.objects.create_user(email=email, password=password)
    name = organization_name.strip() or email.split("@", 1)[-1]
    organization = Organization.objects.create(name=name)
    Membership.objects.create(user=user, organization=organization, role=Membership.Role.OWNER)
    return user
