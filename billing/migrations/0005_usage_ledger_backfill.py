# Fills the usage ledger's new columns (0004) on existing reservations from the joins the
# usage report and the estimates made until now: an answer's row takes its message's
# member, profile, effort, model, time, token counts, cost and final status; a title's row
# its member from its budget row. A row whose message was deleted keeps only its charge.

from typing import Any

from django.db import migrations
from django.db.models import F, OuterRef, Subquery


def fill_from_messages(apps: Any, schema_editor: Any) -> None:
    Message = apps.get_model("conversations", "Message")
    Reservation = apps.get_model("billing", "Reservation")
    UsagePeriod = apps.get_model("billing", "UsagePeriod")
    message = Message.objects.filter(pk=OuterRef("message_id"))

    def copied(field: str) -> Subquery:
        return Subquery(message.values(field)[:1])

    member = UsagePeriod.objects.filter(pk=OuterRef("member_period_id"))
    Reservation.objects.filter(member_period__isnull=False).update(
        user_id=Subquery(member.values("user_id")[:1]))
    answers = Reservation.objects.filter(kind="answer")
    answers.filter(message__isnull=False).update(
        user_id=Subquery(message.values("conversation__user_id")[:1]),
        profile_id=copied("profile_id"),
        reasoning_effort=copied("reasoning_effort"),
        model_name=copied("model_name"),
        created_at=copied("created_at"),
        prompt_tokens=copied("prompt_tokens"),
        cached_tokens=copied("cached_tokens"),
        cache_write_tokens=copied("cache_write_tokens"),
        completion_tokens=copied("completion_tokens"),
        reasoning_tokens=copied("reasoning_tokens"),
        cost_usd=copied("cost_usd"),
    )
    answers.filter(message__isnull=False, settled_at__isnull=False).update(
        outcome=copied("status"))
    # A row whose message was deleted keeps only its charge: that is its cost.
    answers.filter(message__isnull=True).update(cost_usd=F("charged_usd"))


class Migration(migrations.Migration):

    dependencies = [
        ("billing", "0004_usage_ledger"),
        ("conversations", "0016_model_profile_in_llm"),
    ]

    operations = [
        migrations.RunPython(fill_from_messages, migrations.RunPython.noop, elidable=True),
    ]
