"""Overlapping turns in embedded mode (SQLite, in-memory broker, in-process worker).

Run by tests/chaos/test_embedded_and_faults.py as its own process (embedded settings
are read at start-up): ``python -m tests.chaos.embedded_turns <turns>``, with no
DATABASE_URL / REDIS_URL and VAR_DIR pointing at an empty directory. Prints one JSON
line with what the test checks.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from decimal import Decimal


def main(turns: int) -> dict[str, object]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    assert settings.EMBEDDED and str(settings.DATABASES["default"]["ENGINE"]).endswith("sqlite3")
    call_command("migrate", verbosity=0)

    from accounts.models import Membership, Organization, User
    from answers.replies import start_turn
    from billing.models import Reservation, UsagePeriod
    from chatsite.embedded import start_reaper, start_side_worker, start_worker
    from chatsite.errors import Refused
    from conversations.models import Message
    from emulator.server import serve_in_thread

    emulator = serve_in_thread()
    emulator.emulator.config.tokens_per_second = 400
    emulator.emulator.config.reply_tokens = 80
    emulator.emulator.config.think_ms = {k: 50 for k in ("none", "minimal", "low", "medium", "high")}
    settings.EMULATOR_URL = emulator.url
    start_worker(concurrency=turns)
    start_side_worker()
    start_reaper(every=1.0)

    org = Organization.objects.create(name="Embedded", monthly_budget_usd=Decimal("40.00"))
    user = User.objects.create_user(email="embedded@example.com", password="x" * 20)
    Membership.objects.create(user=user, organization=org, role=Membership.Role.OWNER)
    refused: Counter[str] = Counter()
    conversations: list[int | None] = [None] * turns
    lock = threading.Lock()

    def one(index: int) -> None:
        try:
            turn = start_turn(user=user, organization_id=org.pk, conversation_id=conversations[index],
                              content=f"Overlapping question {index}", reasoning_effort="low")
            with lock:
                conversations[index] = turn.conversation.pk
        except Refused as refusal:
            with lock:
                refused[refusal.code] += 1

    started = time.monotonic()
    waves = 0
    for _wave in range(2):  # a second wave follows up in the same conversations
        threads = [threading.Thread(target=one, args=(i,)) for i in range(turns)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        waves += 1
        deadline = time.monotonic() + 120
        while Message.objects.filter(status__in=Message.LIVE_STATUSES).exists():
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)

    answers = Message.objects.filter(role=Message.Role.ASSISTANT)
    periods = UsagePeriod.objects.all()
    return {
        "waves": waves,
        "statuses": dict(Counter(answers.values_list("status", flat=True))),
        "refused": dict(refused),
        "live": answers.filter(status__in=Message.LIVE_STATUSES).count(),
        "reserved": [str(p.reserved_usd) for p in periods],
        "reserved_is_zero": all(p.reserved_usd == 0 for p in periods),
        "org_spent": str(periods.get(user__isnull=True).spent_usd),
        "cost_sum": str(sum((m.cost_usd for m in answers), Decimal(0))),
        # Titles are billed too (their own reservations): spent is every charge.
        "charged_sum": str(sum((r.charged_usd or Decimal(0) for r in Reservation.objects.all()),
                               Decimal(0))),
        "open_reservations": Reservation.objects.filter(settled_at=None).count(),
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(0)  # daemon worker threads: no orderly shutdown needed
