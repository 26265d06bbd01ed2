"""ModelProfile now lives in the llm app: the references follow, in state only
(same table, same columns)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0007_model_profile_in_llm'),
        ('conversations', '0015_sqlite_search_by_owner'),
        ('llm', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.AlterField(
                model_name='message',
                name='profile',
                field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='llm.modelprofile'),
            ),
            migrations.AlterField(
                model_name='conversation',
                name='profile',
                field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='llm.modelprofile'),
            ),
            migrations.DeleteModel(
                name='ModelProfile',
            ),
        ]),
    ]
