# Reserved in the migration chain for the lifecycle and money work (issue 9): deleting a
# person keeps their emptied conversations for the org's usage (docs/decisions.md).
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0007_model_catalog"),
        ("billing", "0002_lifecycle"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="conversation",
            name="user",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="conversations", to=settings.AUTH_USER_MODEL),
        ),
    ]
