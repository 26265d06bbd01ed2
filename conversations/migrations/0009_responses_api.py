# The Responses API done fully (issue 11, items 3-4): encrypted reasoning items kept with
# each answer; verbosity, service tier and tier prices per profile; the tier that served.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0008_lifecycle"),
    ]

    operations = [
        migrations.AddField(
            model_name='message',
            name='service_tier',
            field=models.CharField(blank=True, help_text='The service tier the provider reported serving.', max_length=16),
        ),
        migrations.AddField(
            model_name='modelprofile',
            name='service_tier',
            field=models.CharField(blank=True, choices=[('', 'Standard'), ('flex', 'Flex (cheaper, slower, may be unavailable)')], help_text='Responses API service_tier. Answers are billed at the tier the provider reports serving, using Tier prices; a tier without prices there is billed at the standard prices.', max_length=16),
        ),
        migrations.AddField(
            model_name='modelprofile',
            name='tier_prices',
            field=models.JSONField(blank=True, default=dict, help_text='USD per 1M tokens per service tier, e.g. {"flex": {"input": "0.55", "cached_input": "0.275", "output": "2.20"}}.'),
        ),
        migrations.AddField(
            model_name='modelprofile',
            name='verbosity',
            field=models.CharField(blank=True, choices=[('', 'Provider default'), ('low', 'Low'), ('medium', 'Medium'), ('high', 'High')], help_text='Responses API text.verbosity: how long the visible answer is.', max_length=8),
        ),
        migrations.AddField(
            model_name="message",
            name="reasoning_items",
            field=models.JSONField(blank=True, default=list, help_text="The provider's encrypted reasoning items that led to this answer (Responses API, store=false), sent back before it on later turns."),
        ),
    ]
