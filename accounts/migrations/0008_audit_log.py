"""The org audit log (accounts.audit): an append-only table.

On PostgreSQL a trigger refuses UPDATE and DELETE of its rows, whoever sends them, with two
exceptions: Django setting a deleted person's ``actor_id`` to NULL (nothing else in the row
may change), and retention (``accounts.audit.prune``) deleting rows older than the
transaction-local ``teamchat.audit_delete_before`` it sets for each batch. SQLite (the
embedded mode) has no trigger; the model and its queryset refuse changes there.
"""

import django.core.serializers.json
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

APPEND_ONLY = """
CREATE FUNCTION accounts_auditentry_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    delete_before text := current_setting('teamchat.audit_delete_before', true);
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF coalesce(delete_before, '') <> '' AND OLD.at < delete_before::timestamptz THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit log entry % cannot be deleted: only retention removes entries', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.actor_id IS NOT NULL AND NEW.actor_id IS NULL
            AND to_jsonb(NEW) - 'actor_id' = to_jsonb(OLD) - 'actor_id' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit log entry % cannot be changed', OLD.id
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""

TRIGGER = """
CREATE TRIGGER accounts_auditentry_append_only
    BEFORE UPDATE OR DELETE ON accounts_auditentry
    FOR EACH ROW EXECUTE FUNCTION accounts_auditentry_append_only()
"""

DROP = [
    "DROP TRIGGER IF EXISTS accounts_auditentry_append_only ON accounts_auditentry",
    "DROP FUNCTION IF EXISTS accounts_auditentry_append_only()",
]


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # No parameters: the % in the messages are plpgsql's, not placeholders.
        schema_editor.execute(APPEND_ONLY, params=None)
        schema_editor.execute(TRIGGER, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in DROP:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0007_model_profile_in_llm'),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('actor_email', models.CharField(blank=True, max_length=254)),
                ('action', models.CharField(choices=[('auth.sign_in', 'Signed in'), ('auth.sign_in_failed', 'Sign-in failed'), ('auth.locked_out', 'Sign-in paused'), ('auth.sign_out', 'Signed out'), ('auth.password_changed', 'Password changed'), ('auth.password_reset', 'Password reset'), ('member.added', 'Member added'), ('member.removed', 'Member removed'), ('member.role_changed', 'Role changed'), ('invitation.sent', 'Invitation sent'), ('invitation.accepted', 'Invitation accepted'), ('invitation.revoked', 'Invitation revoked'), ('budget.changed', 'Budget changed'), ('org.settings_changed', 'Org settings changed'), ('domain.added', 'Allowed domain added'), ('domain.removed', 'Allowed domain removed'), ('model_profile.changed', 'Model profile changed'), ('share.created', 'Share link created'), ('share.opened', 'Share link opened'), ('share.revoked', 'Share link revoked'), ('share.forked', 'Shared conversation continued'), ('data.exported', 'Data exported'), ('data.imported', 'Data imported'), ('conversation.deleted', 'Conversation deleted'), ('retention.run', 'Retention run')], max_length=40)),
                ('object_type', models.CharField(blank=True, max_length=64)),
                ('object_id', models.CharField(blank=True, max_length=64)),
                ('client_ip', models.GenericIPAddressField(blank=True, null=True)),
                ('outcome', models.CharField(choices=[('success', 'Success'), ('failure', 'Failure'), ('refused', 'Refused')], default='success', max_length=8)),
                ('details', models.JSONField(blank=True, default=dict, encoder=django.core.serializers.json.DjangoJSONEncoder)),
                ('actor', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('organization', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='accounts.organization')),
            ],
            options={
                'verbose_name': 'audit entry',
                'verbose_name_plural': 'audit log',
                'ordering': ['-at', '-id'],
                'indexes': [models.Index(fields=['organization', '-at'], name='audit_org_at'), models.Index(fields=['organization', 'action', '-at'], name='audit_org_action_at')],
            },
        ),
        migrations.RunPython(create_trigger, drop_trigger),
    ]
