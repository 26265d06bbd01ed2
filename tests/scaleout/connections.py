"""Count a process's open TCP connections to a server port, from /proc (Linux).

The scale-out stack runs on one machine, so PostgreSQL's pg_stat_activity and Redis'
CLIENT LIST see every process at once; reading each process's own sockets says which
process holds how many, which is what the sizing in docs/scaling.md is made of.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

ESTABLISHED = "01"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed since the listing
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _connections_to(port: int) -> set[str]:
    """Socket inodes of every established TCP connection whose remote end is ``port``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
                found.add(inode)
    return found


def count_connections(pid: int, port: int) -> int:
    """Established connections from process ``pid`` to any host's ``port``."""
    try:
        mine = _socket_inodes(pid)
    except OSError:
        return 0  # the process is gone
    return len(mine & _connections_to(port))


def peak(samples: Iterable[dict[str, int]]) -> dict[str, int]:
    """The largest count each key reached over the samples."""
    result: dict[str, int] = {}
    for sample in samples:
        for key, value in sample.items():
            result[key] = max(result.get(key, 0), value)
    return result
