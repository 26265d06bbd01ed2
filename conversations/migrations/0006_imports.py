# Reserved in the migration chain for one piece of work; its operations are added by hand
# (copy them from `manage.py makemigrations --dry-run -v 3`) so parallel work stays linear.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("conversations", "0005_message_tree")]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="import_id",
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name="conversation",
            name="import_source",
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.AddConstraint(
            model_name="conversation",
            constraint=models.UniqueConstraint(
                condition=models.Q(("import_id", ""), _negated=True),
                fields=("user", "organization", "import_source", "import_id"),
                name="conversation_unique_import",
            ),
        ),
    ]
