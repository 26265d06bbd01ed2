"""ModelProfile now lives in the llm app: the references follow, in state only
(same table, same columns)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0006_user_email_verified_at'),
        ('llm', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.AlterField(
                model_name='organization',
                name='default_profile',
                field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='llm.modelprofile'),
            ),
            migrations.AlterField(
                model_name='organization',
                name='enabled_profiles',
                field=models.ManyToManyField(blank=True, related_name='organizations', to='llm.modelprofile'),
            ),
        ]),
    ]
