"""Deleting people and organizations without losing the money.

A person's conversations hold personal data (their questions, the answers, titles,
instructions, share links); the org's usage and budgets hold numbers the org needs
after the person is gone. So deleting a person first ends their live answers (each
settled), empties every conversation of theirs, and only then deletes the account: the
emptied conversations stay, without an owner (``Conversation.user`` is SET_NULL); their
member budget rows go (the org's rows keep the totals); settled reservations, billing's
usage ledger, stay with the org's rows (``Reservation.member_period`` SET_NULL).
Deleting an org deletes everything of it, and nothing of any other org.

The data lives in the apps above accounts, so accounts announces each step and they do
their part: receivers run in the sender's thread, in the order sent, and an exception in
one reaches the sender (``send``, never ``send_robust``): an erasure whose live answers
could not be settled does not go ahead.

``erase_person`` also runs on a plain ``user.delete()`` (the Django admin, a shell)
through a ``pre_delete`` receiver, so every path erases the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

if TYPE_CHECKING:
    from accounts.models import Organization, User

# Sent first, before the transaction that empties the data: each of the person's live
# (pending or streaming) answers ends and its reservation is settled, each in a
# transaction of its own (receiver: answers.lifecycle). kwargs: user
person_erasing = Signal()

# Sent inside the one transaction that empties the person's data, once their answers
# ended (receivers: conversations empties their messages and conversations, which stay
# as rows; sharing deletes the share links of those conversations). kwargs: user, now
person_data_erasing = Signal()

# Sent before an organization is deleted, before the deleting transaction: its live
# answers end and settle, so their tabs get a final frame (receiver: answers.lifecycle).
# kwargs: organization
organization_deleting = Signal()


def erase_person(*, user: User) -> None:
    """End the person's live answers and empty their conversations (rows stay)."""
    person_erasing.send(sender=type(user), user=user)
    with transaction.atomic():
        person_data_erasing.send(sender=type(user), user=user, now=timezone.now())


def delete_user(*, user: User) -> None:
    """Erase the person's data, then delete the account (one transaction)."""
    with transaction.atomic():
        user.delete()  # the pre_delete receiver runs erase_person first


def delete_organization(*, organization: Organization) -> None:
    """End the org's live answers (their tabs get a final frame), then delete the org
    with its conversations, memberships, budgets and billing rows."""
    organization_deleting.send(sender=type(organization), organization=organization)
    with transaction.atomic():
        organization.delete()
