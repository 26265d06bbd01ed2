# Background mode for high-effort Responses answers (issue 11): the provider's response
# id and the sequence number the checkpointed text covers, so another worker can resume
# the stream, and a claim count that fences off a worker that outlived its lease.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0009_responses_api"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="claims",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="message",
            name="provider_response_id",
            field=models.CharField(
                blank=True, max_length=200,
                help_text="The provider's id of the background response this answer is streaming.",
            ),
        ),
        migrations.AddField(
            model_name="message",
            name="provider_seq",
            field=models.PositiveIntegerField(
                blank=True, null=True,
                help_text="The provider's sequence_number of the last event the saved text covers.",
            ),
        ),
    ]
