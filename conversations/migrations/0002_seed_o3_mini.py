import datetime
from decimal import Decimal

from django.db import migrations

O3_MINI = {
    "name": "o3-mini",
    "display_name": "o3-mini",
    "provider": "openai",
    "model": "o3-mini",
    "api_style": "chat",
    "instruction_role": "developer",
    "accepted_params": ["reasoning_effort", "max_completion_tokens", "tools", "response_format"],
    "reasoning_efforts": ["low", "medium", "high"],
    "default_effort": "medium",
    "context_window": 200_000,
    "max_output_tokens": 100_000,
    # Reasoning counts against the cap; too small a cap returns empty answers.
    "max_completion_tokens": 25_000,
    "max_completion_tokens_by_effort": {"low": 10_000, "medium": 25_000, "high": 50_000},
    "input_price": Decimal("1.10"),
    "cached_input_price": Decimal("0.55"),
    "output_price": Decimal("4.40"),
    "shutdown_date": datetime.date(2026, 10, 23),
}


def seed(apps, schema_editor):
    ModelProfile = apps.get_model("conversations", "ModelProfile")
    ModelProfile.objects.update_or_create(name=O3_MINI["name"], defaults=O3_MINI)


def unseed(apps, schema_editor):
    apps.get_model("conversations", "ModelProfile").objects.filter(name=O3_MINI["name"]).delete()


class Migration(migrations.Migration):
    dependencies = [("conversations", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
