from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, organizations, members, invitations, onboarding and revocation.

    Its receivers are connected at the end of ``accounts/models.py``, which Django imports
    once models can be."""

    name = "accounts"
    verbose_name = "Accounts and organizations"
