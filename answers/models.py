"""Where the answers app plugs itself in. It keeps no tables of its own (an answer is a
``conversations.Message``): Django imports this module in every process (web, worker,
management commands, tests) as it loads the apps' models, before any request or task.

``apps.py`` cannot do this: Django imports it before any model may be imported, and
everything below reaches the models.
"""

from __future__ import annotations

# Imported for their receivers: the end of a live answer being deleted (lifecycle), the
# title queued after an answer ends (tasks) and a worker's drain on SIGTERM (worker).
from answers import lifecycle, tasks, worker  # noqa: F401
from answers.turns import AnswerTurns
from realtime import turns

# The chat websocket's send, regenerate and Stop run here (realtime.turns).
turns.register(AnswerTurns())
