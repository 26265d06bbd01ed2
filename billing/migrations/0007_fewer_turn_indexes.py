"""Two foreign-key indexes that a unique constraint's index already serves go: a group
hold's reservation (one_hold_per_group_period leads with it) and a group month's group
(one_group_period leads with it). A turn of a group member writes both tables.
docs/decisions.md#0053."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0011_audit_account_deleted"),
        ("billing", "0006_group_budgets"),
    ]

    operations = [
        migrations.AlterField(
            model_name="grouphold",
            name="reservation",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.CASCADE,
                related_name="group_holds", to="billing.reservation",
            ),
        ),
        migrations.AlterField(
            model_name="groupusageperiod",
            name="group",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.CASCADE,
                related_name="usage_periods", to="accounts.group",
            ),
        ),
    ]
