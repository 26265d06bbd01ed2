"""Streaming benchmark of the full production topology (``python -m bench``).

PostgreSQL, Redis, the model emulator, the ASGI web processes and the Celery workers
each run as separate OS processes on this machine; N websocket clients in this process
play N signed-in tabs, each sending its next message as soon as its answer has ended
(a closed loop). See ``docs/benchmark.md`` for the method.
"""
