"""What a turn will probably cost at each reasoning effort, before it is sent.

Reasoning models spend most of a turn's money on hidden reasoning tokens, which the
prompt does not predict. So the range comes from the org's own recent finished turns on
the same profile and effort, as billing's ledger recorded them: the 10th to the 90th
percentile of their completion tokens (reasoning included). With fewer than ``MIN_SAMPLES`` such turns the range is a fixed
share of the effort's completion cap (``DEFAULT_SHARE``) and is marked ``"default"``.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db.models import F, Window
from django.db.models.functions import RowNumber

from billing.models import Reservation
from llm.pricing import range_cost

if TYPE_CHECKING:
    from accounts.models import Organization
    from llm.models import ModelProfile

RECENT_TURNS = 200
MIN_SAMPLES = 5
LOW_PERCENTILE = 0.10
HIGH_PERCENTILE = 0.90
# Without history: between 5% and 50% of the completion cap. Typical o-series answers use a
# few percent of the cap at low effort and a sizeable share at high effort.
DEFAULT_SHARE = (Decimal("0.05"), Decimal("0.50"))
# The outcome of an answer that finished normally (conversations' Message.Status.DONE).
DONE = "done"


def percentile(values: list[int], fraction: float) -> float:
    """Linear interpolation between the closest ranks of the sorted ``values``."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def recent_completion_tokens(*, organization: Organization, profile: ModelProfile,
                             efforts: list[str]) -> dict[str, list[int]]:
    """Completion tokens of the last RECENT_TURNS done turns per effort: one query."""
    ranked = (
        Reservation.objects.filter(
            org_period__organization=organization,
            profile=profile,
            kind=Reservation.Kind.ANSWER,
            outcome=DONE,
            reasoning_effort__in=efforts,
        )
        .annotate(
            recency=Window(
                RowNumber(),
                partition_by=[F("reasoning_effort")],
                order_by=[F("created_at").desc(), F("id").desc()],
            )
        )
        .filter(recency__lte=RECENT_TURNS)
        .values_list("reasoning_effort", "completion_tokens")
    )
    samples: dict[str, list[int]] = defaultdict(list)
    for effort, tokens in ranked:
        samples[effort].append(tokens)
    return samples


def _usd(profile: ModelProfile, prompt_tokens: int, completion_tokens: Decimal) -> str:
    return str(range_cost(profile, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))


def estimate_turn_costs(*, organization: Organization, profile: ModelProfile,
                        prompt_tokens: int) -> dict[str, dict[str, str]]:
    """For each of the profile's reasoning efforts: ``low`` and ``high`` in USD, the
    completion tokens they assume, the ``basis`` ("history" or "default") and the number
    of ``samples`` behind it. Prompt tokens are priced as uncached input (the worst case)."""
    efforts = [str(effort) for effort in (profile.reasoning_efforts or [])]
    if not efforts:
        return {}
    samples = recent_completion_tokens(organization=organization, profile=profile, efforts=efforts)
    prompt_tokens = max(int(prompt_tokens), 0)
    estimates: dict[str, dict[str, str]] = {}
    for effort in efforts:
        tokens = samples.get(effort, [])
        if len(tokens) >= MIN_SAMPLES:
            low = Decimal(percentile(tokens, LOW_PERCENTILE)).quantize(Decimal(1))
            high = Decimal(percentile(tokens, HIGH_PERCENTILE)).quantize(Decimal(1))
            basis = "history"
        else:
            cap = Decimal(profile.completion_cap(effort))
            low = (cap * DEFAULT_SHARE[0]).quantize(Decimal(1))
            high = (cap * DEFAULT_SHARE[1]).quantize(Decimal(1))
            basis = "default"
        estimates[effort] = {
            "low": _usd(profile, prompt_tokens, low),
            "high": _usd(profile, prompt_tokens, high),
            "completion_tokens_low": str(low),
            "completion_tokens_high": str(high),
            "basis": basis,
            "samples": str(len(tokens)),
        }
    return estimates
