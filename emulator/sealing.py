"""Encrypted reasoning items (``include=["reasoning.encrypted_content"]``).

OpenAI returns the model's reasoning as an opaque blob that only it can read, so a client
that does not store responses (``store=false``) can hand the reasoning back on the next
call. The emulator imitates that with an HMAC-signed token: a client that keeps the item
intact gets it accepted, and one that edits, truncates or invents it gets the provider's
400, so tests can tell a faithful round trip from a lossy one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

# One key per emulator process, like a provider's key per organization: a blob from
# another emulator run does not verify either.
_KEY = secrets.token_bytes(32)
ENCRYPTED_CONTENT = "reasoning.encrypted_content"


def _sign(data: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(_KEY, data, hashlib.sha256).digest()).decode()


def seal(*, item_id: str, model: str, reasoning_tokens: int) -> str:
    payload = json.dumps(
        {"id": item_id, "model": model, "reasoning_tokens": reasoning_tokens},
        separators=(",", ":"), sort_keys=True,
    ).encode()
    return "gAAAAA" + base64.urlsafe_b64encode(payload).decode() + "." + _sign(payload)


def opened(token: Any, *, model: str) -> dict[str, Any] | None:
    """The sealed payload, or None when the token was tampered with or is for another model."""
    if not isinstance(token, str) or not token.startswith("gAAAAA") or "." not in token:
        return None
    body, _, signature = token[6:].rpartition(".")
    try:
        payload = base64.urlsafe_b64decode(body.encode())
    except ValueError:
        return None
    if not hmac.compare_digest(signature, _sign(payload)):
        return None
    value = json.loads(payload)
    return value if isinstance(value, dict) and value.get("model") == model else None
