"""ModelProfile moves from conversations to llm: state only, the table keeps its name
(conversations_modelprofile), and its content type follows so admin history and
permissions stay attached."""

from decimal import Decimal

from django.db import migrations, models

import llm.key_envs


def _relabel(apps, source, target):
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label=target, model="modelprofile").exists():
        content_type.objects.filter(app_label=source, model="modelprofile").update(
            app_label=target)


def move_content_type(apps, schema_editor):
    _relabel(apps, "conversations", "llm")


def reverse_content_type(apps, schema_editor):
    _relabel(apps, "llm", "conversations")


class Migration(migrations.Migration):

    initial = True

    dependencies = [("conversations", "0015_sqlite_search_by_owner"),
                    ("contenttypes", "0002_remove_content_type_name")]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name='ModelProfile',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('name', models.SlugField(help_text='Key used by CHAT_MODEL.', max_length=80, unique=True)),
                    ('display_name', models.CharField(max_length=120)),
                    ('provider', models.CharField(choices=[('openai', 'OpenAI'), ('azure', 'Azure OpenAI'), ('compatible', 'OpenAI-compatible')], default='openai', max_length=16)),
                    ('model', models.CharField(help_text='Model name, or the deployment name on Azure OpenAI.', max_length=200)),
                    ('endpoint', models.URLField(blank=True, help_text='Base URL. Empty: OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT from the environment.')),
                    ('api_version', models.CharField(blank=True, help_text='Azure api-version; empty uses the v1 GA path.', max_length=40)),
                    ('api_key_env', models.CharField(blank=True, help_text="Name of the environment variable holding this profile's key (never the key): LLM_KEY_… or a name listed in PROFILE_KEY_ENVS. Empty: OPENAI_API_KEY / AZURE_OPENAI_API_KEY.", max_length=80, validators=[llm.key_envs.validate_key_env], verbose_name='API key environment variable')),
                    ('api_style', models.CharField(choices=[('chat', 'Chat Completions'), ('responses', 'Responses (reasoning summaries)')], default='chat', max_length=12)),
                    ('instruction_role', models.CharField(choices=[('developer', 'developer'), ('system', 'system')], default='developer', max_length=12)),
                    ('accepted_params', models.JSONField(blank=True, default=list, help_text='Optional request parameters this model accepts, e.g. reasoning_effort, max_completion_tokens, tools, response_format, temperature.')),
                    ('reasoning_efforts', models.JSONField(blank=True, default=list)),
                    ('default_effort', models.CharField(blank=True, max_length=16)),
                    ('context_window', models.PositiveIntegerField()),
                    ('max_output_tokens', models.PositiveIntegerField()),
                    ('max_completion_tokens', models.PositiveIntegerField(help_text='Default cap on visible + reasoning tokens per turn.')),
                    ('max_completion_tokens_by_effort', models.JSONField(blank=True, default=dict)),
                    ('input_price', models.DecimalField(decimal_places=4, help_text='USD per 1M', max_digits=10)),
                    ('cached_input_price', models.DecimalField(decimal_places=4, help_text='USD per 1M', max_digits=10)),
                    ('output_price', models.DecimalField(decimal_places=4, help_text='USD per 1M', max_digits=10)),
                    ('shutdown_date', models.DateField(blank=True, null=True)),
                    ('is_active', models.BooleanField(default=True)),
                    ('origin', models.CharField(choices=[('admin', 'Added by an admin'), ('catalog', 'From the model catalog'), ('discovered', 'Discovered (needs prices)'), ('environment', 'From the environment (Azure deployment)')], default='admin', max_length=12)),
                    ('catalog_key', models.CharField(blank=True, help_text='Catalog entry this profile follows, e.g. openai:gpt-6-sol; empty: none.', max_length=120)),
                    ('catalog_values', models.JSONField(blank=True, default=dict, help_text='Field values the catalog last wrote; sync_models updates a field only while it still holds that value, so admin edits stay.')),
                    ('listed_at', models.DateTimeField(blank=True, help_text="When the provider's GET /v1/models last listed this model.", null=True)),
                    ('verbosity', models.CharField(blank=True, choices=[('', 'Provider default'), ('low', 'Low'), ('medium', 'Medium'), ('high', 'High')], help_text='Responses API text.verbosity: how long the visible answer is.', max_length=8)),
                    ('service_tier', models.CharField(blank=True, choices=[('', 'Standard'), ('flex', 'Flex (cheaper, slower, may be unavailable)')], help_text='Responses API service_tier. Answers are billed at the tier the provider reports serving, using Tier prices; a tier without prices there is billed at the standard prices.', max_length=16)),
                    ('tier_prices', models.JSONField(blank=True, default=dict, help_text='USD per 1M tokens per service tier, e.g. {"flex": {"input": "0.55", "cached_input": "0.275", "output": "2.20"}}.')),
                    ('cache_write_price', models.DecimalField(blank=True, decimal_places=4, help_text='USD per 1M prompt tokens written to the cache (30-minute retention); empty: billed as plain input.', max_digits=10, null=True)),
                    ('long_cache_write_price', models.DecimalField(blank=True, decimal_places=4, help_text='USD per 1M prompt tokens written to the 12-hour cache, where published.', max_digits=10, null=True)),
                    ('long_context_threshold', models.PositiveIntegerField(blank=True, help_text='Input tokens above which the whole request is billed at the long-context multipliers (272,000 on gpt-6.x); empty: no long-context rate.', null=True)),
                    ('long_context_input_multiplier', models.DecimalField(db_default=Decimal('1'), decimal_places=3, default=Decimal('1'), help_text='Multiplier on input, cached-input and cache-write prices above the threshold.', max_digits=6)),
                    ('long_context_output_multiplier', models.DecimalField(db_default=Decimal('1'), decimal_places=3, default=Decimal('1'), help_text='Multiplier on the output price above the threshold.', max_digits=6)),
                    ('chat_tools_need_effort_none', models.BooleanField(db_default=False, default=False, help_text="Chat Completions refuses function tools with any reasoning effort but 'none' for this model (gpt-5.4 and later): tools go through the Responses API.")),
                    ('successor', models.CharField(blank=True, db_default='', default='', help_text='Catalog key of the model that replaces this one at its shutdown date.', max_length=120)),
                    ('reasoning_summaries', models.BooleanField(default=True, help_text='Ask a Responses-style model for reasoning summaries (the Thinking section). Switched off by itself when the provider refuses them (an unverified OpenAI org).')),
                ],
                options={
                    'db_table': 'conversations_modelprofile',
                    'ordering': ['display_name'],
                },
            ),
        ]),
        migrations.RunPython(move_content_type, reverse_content_type),
    ]
