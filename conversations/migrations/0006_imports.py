# Reserved in the migration chain for one piece of work; its operations are added by hand
# (copy them from `manage.py makemigrations --dry-run -v 3`) so parallel work stays linear.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("conversations", "0005_message_tree")]

    operations: list = []
