# Reserved in the migration chain for the lifecycle and money work (issue 9): title
# reservations with their own usage, and billing rows that survive deleting a message or
# a member (docs/decisions.md, "Deleting people and orgs").
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial"), ("conversations", "0007_model_catalog")]

    operations = [
        migrations.AddField(
            model_name="reservation",
            name="cached_tokens",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="reservation",
            name="completion_tokens",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="reservation",
            name="kind",
            field=models.CharField(choices=[("answer", "Answer"), ("title", "Title")], default="answer", max_length=8),
        ),
        migrations.AddField(
            model_name="reservation",
            name="model_name",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="reservation",
            name="prompt_tokens",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="reservation",
            name="reasoning_tokens",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="reservation",
            name="member_period",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to="billing.usageperiod"),
        ),
        migrations.AlterField(
            model_name="reservation",
            name="message",
            field=models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="reservation", to="conversations.message"),
        ),
        migrations.AlterField(
            model_name="reservation",
            name="org_period",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="billing.usageperiod"),
        ),
    ]
