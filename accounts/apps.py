from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and organizations"

    def ready(self) -> None:
        # Receivers that close a person's websockets when their sign-in or access changes.
        from accounts import signals  # noqa: F401
