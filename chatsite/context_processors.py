from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def product(request: HttpRequest) -> dict[str, Any]:
    return {"product_name": "Team Chat"}
