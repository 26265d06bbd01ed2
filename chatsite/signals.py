"""What a process's launcher announces to the apps (the base layer: any app may listen)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by embedded mode's web process (``manage.py runstack --serve``) from its event loop,
# before it serves: the in-memory channel layer lives on that loop, so whatever sends on
# the layer from other threads (realtime's publisher) must send on it.
# kwargs: loop
embedded_loop_started = Signal()
