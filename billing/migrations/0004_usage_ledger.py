# The reservation becomes billing's usage ledger: an answer's row records what the usage
# report and the cost estimates read (member, profile, effort, model, day, tokens, cost,
# outcome), which they used to join from the conversation's messages. Existing rows are
# filled from their messages by the next migration (in its own transaction: PostgreSQL
# refuses this one's deferred index creation once rows were updated in it). New columns
# carry a database default (db_default) where they can: a process still running the
# previous release during a rolling deploy inserts rows without naming them.

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("billing", "0003_reservation_cache_write_tokens"),
        ("llm", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="reservation",
            name="user",
            field=models.ForeignKey(blank=True, null=True,
                                    on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="+", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name="reservation",
            name="profile",
            field=models.ForeignKey(blank=True, null=True,
                                    on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="+", to="llm.modelprofile"),
        ),
        migrations.AddField(
            model_name="reservation",
            name="reasoning_effort",
            field=models.CharField(blank=True, db_default="", default="", max_length=16),
        ),
        migrations.AddField(
            model_name="reservation",
            name="cost_usd",
            field=models.DecimalField(blank=True, decimal_places=6, max_digits=14, null=True),
        ),
        migrations.AddField(
            model_name="reservation",
            name="outcome",
            field=models.CharField(blank=True, db_default="", default="", max_length=12),
        ),
        migrations.AlterField(
            model_name="reservation",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
    ]
