# Reserved in the migration chain for one piece of work; its operations are added by hand
# (copy them from `manage.py makemigrations --dry-run -v 3`) so parallel work stays linear.
from django.db import migrations, models

# What 0002 seeded, as the catalog records values (JSON: money and dates as strings).
# The seed is the catalog's first write: sync_models may update a field that still holds
# it, and leaves a field an admin changed since.
O3_MINI_SEED = {
    "display_name": "o3-mini",
    "model": "o3-mini",
    "api_style": "chat",
    "instruction_role": "developer",
    "accepted_params": ["reasoning_effort", "max_completion_tokens", "tools", "response_format"],
    "reasoning_efforts": ["low", "medium", "high"],
    "default_effort": "medium",
    "context_window": 200_000,
    "max_output_tokens": 100_000,
    "max_completion_tokens": 25_000,
    "max_completion_tokens_by_effort": {"low": 10_000, "medium": 25_000, "high": 50_000},
    "input_price": "1.1",
    "cached_input_price": "0.55",
    "output_price": "4.4",
    "shutdown_date": "2026-10-23",
    # Listed by the key or not: a real key no longer lists o3-mini, and sync retires it.
    "is_active": True,
}


def adopt_seed(apps, schema_editor):
    ModelProfile = apps.get_model("conversations", "ModelProfile")
    ModelProfile.objects.filter(name="o3-mini", provider="openai", catalog_key="").update(
        origin="catalog", catalog_key="openai:o3-mini", catalog_values=O3_MINI_SEED
    )


def forget_seed(apps, schema_editor):
    pass  # the fields themselves are dropped


class Migration(migrations.Migration):
    dependencies = [("conversations", "0006_imports")]

    operations = [
        migrations.AddField(
            model_name='modelprofile',
            name='catalog_key',
            field=models.CharField(blank=True, help_text='Catalog entry this profile follows, e.g. openai:gpt-6-sol; empty: none.', max_length=120),
        ),
        migrations.AddField(
            model_name='modelprofile',
            name='catalog_values',
            field=models.JSONField(blank=True, default=dict, help_text='Field values the catalog last wrote; sync_models updates a field only while it still holds that value, so admin edits stay.'),
        ),
        migrations.AddField(
            model_name='modelprofile',
            name='listed_at',
            field=models.DateTimeField(blank=True, help_text="When the provider's GET /v1/models last listed this model.", null=True),
        ),
        migrations.AddField(
            model_name='modelprofile',
            name='origin',
            field=models.CharField(choices=[('admin', 'Added by an admin'), ('catalog', 'From the model catalog'), ('discovered', 'Discovered (needs prices)'), ('environment', 'From the environment (Azure deployment)')], default='admin', max_length=12),
        ),
        migrations.AddField(
            model_name='modelprofile',
            name='reasoning_summaries',
            field=models.BooleanField(default=True, help_text='Ask a Responses-style model for reasoning summaries (the Thinking section). Switched off by itself when the provider refuses them (an unverified OpenAI org).'),
        ),
        migrations.RunPython(adopt_seed, forget_seed),
    ]
