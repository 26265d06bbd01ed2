"""The one way the product sends email, and the one way it builds an emailed link.

Subjects are built from free text (org names, people's addresses, budget notes); a
newline there would be a header injection, which Django refuses with BadHeaderError in the
middle of a request. ``one_line`` makes any text safe for a header first.
"""

from __future__ import annotations

import logging
import smtplib
import unicodedata

from django.conf import settings
from django.core.mail import send_mail

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "[Team Chat] "
MAX_SUBJECT = 150


def one_line(text: str, *, limit: int = MAX_SUBJECT) -> str:
    """Every control or separator character (CR, LF, NEL, U+2028, …) becomes a space."""
    flat = "".join(
        " " if unicodedata.category(char)[0] in "CZ" else char for char in str(text)
    )
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def absolute_url(path: str) -> str:
    """``path`` on SITE_URL: every link the product emails is built here, never from the
    request's Host header (a client chooses it, and a reset link sent to a victim would
    then carry the token to the client's host)."""
    return settings.SITE_URL.rstrip("/") + "/" + path.lstrip("/")


class MailNotSent(Exception):
    """The mail server refused or could not be reached."""


def send_product_mail(*, subject: str, body: str, to: list[str], quiet: bool = False) -> bool:
    """Send one plain-text email. Raises MailNotSent on failure unless ``quiet``."""
    try:
        send_mail(subject=one_line(SUBJECT_PREFIX + subject), message=body, from_email=None,
                  recipient_list=to)
    except (OSError, smtplib.SMTPException) as exc:
        logger.warning("email to %d recipient(s) not sent: %s", len(to), type(exc).__name__)
        if quiet:
            return False
        raise MailNotSent(str(exc)) from exc
    return True
