"""Which environment variables a model profile may name as its API key.

A profile's key is read from the variable its ``api_key_env`` names and sent to the
profile's endpoint, which staff edit in the admin. Without a rule, a staff user could
name ``SECRET_KEY`` or ``DATABASE_URL`` and read it back from their own endpoint or the
provider's error. So a profile may name only ``LLM_KEY_*`` variables and the names the
operator lists in ``PROFILE_KEY_ENVS``; the rule is checked when the admin form is saved
(a model-field validator) and again before every call (``llm.client``),
for rows that reached the database some other way.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError

KEY_ENV_PREFIX = "LLM_KEY_"
# Upper-case ASCII only: no look-alike letters, no whitespace, no lower-case twins of a
# name that a case-insensitive environment (Windows) would resolve to the real secret.
_PREFIXED_NAME = re.compile(r"LLM_KEY_[A-Z0-9_]+\Z")


def key_env_problem(name: str) -> str | None:
    """Why a profile may not read its key from ``name``, or ``None`` when it may."""
    if name in settings.PROFILE_KEY_ENVS or _PREFIXED_NAME.match(name):
        return None
    listed = ", ".join(settings.PROFILE_KEY_ENVS)
    return (
        f"{name[:80]!r} is not an allowed key variable. Name one that starts with "
        f"{KEY_ENV_PREFIX} (upper case, e.g. {KEY_ENV_PREFIX}GATEWAY)"
        + (f" or one of {listed}" if listed else " or list it in PROFILE_KEY_ENVS")
        + "; leave it empty to use OPENAI_API_KEY / AZURE_OPENAI_API_KEY. Other variables "
        "hold the server's own secrets."
    )


def validate_key_env(value: str) -> None:
    """Model-field validator for ``ModelProfile.api_key_env``."""
    problem = key_env_problem(value)
    if problem is not None:
        raise ValidationError(problem, code="key_env_not_allowed")
