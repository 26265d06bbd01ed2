"""Streaming benchmark of the full production topology (``python -m bench``).

PostgreSQL, Redis, the model emulator, the ASGI web process and one Celery worker each
run as a separate OS process on this machine; N websocket clients in this process each
send one message and follow its answer. See ``docs/benchmark.md`` for the method.
"""
