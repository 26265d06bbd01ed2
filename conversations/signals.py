"""What conversations announce to the apps above them, which own the rest of the work.

Receivers run in the sender's thread and transaction, in the order sent, and an exception
in one reaches the sender (``send``, never ``send_robust``): a deletion whose answers
could not be settled does not go ahead.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent for each live (pending or streaming) answer of a conversation being deleted, before
# its text is erased: the answer must end and its reservation be settled first (receiver:
# answers.lifecycle, which cancels it and charges what it showed).
# kwargs: message_id
live_answer_deleting = Signal()

# Sent inside the transaction that erases deleted conversations (a person's delete, or
# retention's batch), after their messages were emptied and before the conversation rows
# are (receiver: sharing, which revokes the conversations' links and deletes their copied
# messages, or with keep_share_links leaves them readable). A receiver returns counts
# ({"share_links_deleted": n, "share_links_kept": n}), which the sender adds up.
# kwargs: conversation_ids, now, keep_share_links
conversation_erasing = Signal()
