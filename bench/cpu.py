"""CPU accounting from /proc (psutil is not a dependency of the product).

Per process: utime + stime of all its threads. PostgreSQL and Redis are found by
process name; PostgreSQL backends serving the bench database are told apart from the
rest (other databases on the same server, background writers) by their title.
The machine total comes from /proc/stat, so CPU used by anything else running on the
same cores during a step (other people's test suites, editors) is visible as "other".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")
# Processes started several times are named "<role>-<n>" (web-1, web-2, worker-1...;
# side-1: the side worker that makes title calls).
ROLES = ("web", "worker", "side")


def role_of(name: str) -> str | None:
    """"web" for "web-2": the role a numbered process plays, None for anything else."""
    role, _, index = name.rpartition("-")
    return role if role in ROLES and index.isdigit() else None


def process_times(pid: int) -> tuple[int, int] | None:
    """(user, system) clock ticks of all threads of a process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name may contain spaces or parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14 and 15)


def process_ticks(pid: int) -> int | None:
    times = process_times(pid)
    return None if times is None else times[0] + times[1]


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as handle:
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies summed over all CPUs."""
    with open("/proc/stat") as handle:
        parts = handle.readline().split()[1:]
    values = [int(v) for v in parts[:8]]  # user nice system idle iowait irq softirq steal
    total = sum(values)
    idle = values[3] + values[4]
    return total - idle, total


@dataclass
class Snapshot:
    named: dict[str, int | None]
    named_sys: dict[str, int | None]
    services: dict[int, tuple[str, int]]  # pid -> (group, ticks)
    busy: int
    total: int


@dataclass
class CpuMeter:
    """Snapshots CPU of the named child processes plus PostgreSQL and Redis."""

    pids: dict[str, int]
    database: str
    extra: dict[str, int] = field(default_factory=dict)

    def _services(self) -> dict[int, tuple[str, int]]:
        found: dict[int, tuple[str, int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            comm = _comm(entry)
            if comm in ("postgres", "postmaster"):
                title = _cmdline(entry)
                group = "postgres (bench db)" if f" {self.database} " in f" {title} " else "postgres (other)"
            elif comm.startswith("redis-server"):
                group = "redis"
            else:
                continue
            ticks = process_ticks(int(entry))
            if ticks is not None:
                found[int(entry)] = (group, ticks)
        return found

    def snapshot(self) -> Snapshot:
        times = {name: process_times(pid) for name, pid in {**self.pids, **self.extra}.items()}
        named = {name: None if t is None else t[0] + t[1] for name, t in times.items()}
        named_sys = {name: None if t is None else t[1] for name, t in times.items()}
        busy, total = machine_ticks()
        return Snapshot(named, named_sys, self._services(), busy, total)

    @staticmethod
    def system_share(before: Snapshot, after: Snapshot) -> dict[str, float]:
        """Kernel share of each named process's CPU (thread switching, syscalls)."""
        shares: dict[str, float] = {}
        for name, ticks in after.named.items():
            start, sys_start, sys_end = before.named.get(name), before.named_sys.get(name), after.named_sys.get(name)
            if None in (ticks, start, sys_start, sys_end) or ticks == start:
                continue
            shares[name] = round((sys_end - sys_start) / (ticks - start), 3)  # type: ignore[operator]
        return shares

    @staticmethod
    def diff(before: Snapshot, after: Snapshot) -> dict[str, float]:
        """CPU seconds per process group between two snapshots, per role (all web
        processes together, all workers together) and machine totals."""
        result: dict[str, float] = {}
        for name, ticks in after.named.items():
            start = before.named.get(name)
            if ticks is not None and start is not None:
                result[name] = (ticks - start) / TICK
        for pid, (group, ticks) in after.services.items():
            start = before.services.get(pid, (group, 0))[1]  # a new backend: all of it
            result[group] = result.get(group, 0.0) + (ticks - start) / TICK
        for group in ("postgres (bench db)", "postgres (other)", "redis"):
            result.setdefault(group, 0.0)
        machine_busy = (after.busy - before.busy) / TICK
        ours = sum(v for k, v in result.items() if k != "postgres (other)")
        # Totals per role ("web" = all web processes), added after `ours` is summed so
        # nothing is counted twice.
        for name, seconds in list(result.items()):
            role = role_of(name)
            if role is not None:
                result[role] = result.get(role, 0.0) + seconds
        result["machine busy"] = machine_busy
        result["other (not this stack)"] = max(0.0, machine_busy - ours)
        result["machine capacity"] = (after.total - before.total) / TICK
        return result


def busy_share(cpu_s: dict[str, float]) -> float:
    """How busy the machine was over a window, 0..1, from ``CpuMeter.diff``'s totals."""
    capacity = cpu_s["machine capacity"]
    return cpu_s["machine busy"] / capacity if capacity else 0.0
