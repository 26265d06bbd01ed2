"""``python -m bench``: set up, run the closed loop at each N (and, on request, the
one-wave sweep and the other measurements), report. See docs/benchmark.md."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    analysis,
    closed_loop,
    cpu,
    fixtures,
    load,
    micro,
    profile,
    ratios,
    report,
    search,
    sustained,
    turn_cost,
)
from bench.stack import ROOT, BenchError, Stack, configure_environment

LOG_ERROR_MARKERS = ("Traceback", " ERROR ", " CRITICAL ", "over capacity")

# How long the emulator takes over a title reply: a low-effort reasoning call. Published
# medians bracket it: GPT-5 at minimal effort answers its first token in 0.89 s
# (artificialanalysis.ai/models/gpt-5-minimal/providers, OpenAI), o3-mini at its default
# medium effort in 8.5-18.6 s (artificialanalysis.ai/models/o3-mini/providers, two
# snapshots). No per-effort table is published; 3.5 s sits between the two and is the
# title time issue 23's measurement used.
TITLE_MS = 3500


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    closed = parser.add_argument_group("sustained closed loop (the default measurement)")
    closed.add_argument("--streams", default="50,100,200,300",
                        help="comma-separated numbers of tabs N (default 50,100,200,300)")
    closed.add_argument("--duration", type=float, default=15.0,
                        help="seconds measured per N, after the ramp (default 15)")
    closed.add_argument("--ramp", type=float, default=None,
                        help="the tabs' first sends are spread over this many seconds before the "
                             "measured window (default: one nominal answer, reasoning + tokens ÷ rate)")
    closed.add_argument("--finish-timeout", type=float, default=60.0,
                        help="after the window, wait at most this long for in-flight turns to end")
    closed.add_argument("--new-conversation-share", type=float, default=0.2,
                        help="share of turns that start a new, untitled conversation (its title is "
                             "asked of the model after the first answer); the others continue an "
                             "existing, titled one (default 0.2)")
    closed.add_argument("--orgs", choices=("team", "own"), default="team",
                        help="team: every tab is a member of one org; own: each tab in an org of "
                             "its own (default team)")
    closed.add_argument("--title-ms", type=int, default=TITLE_MS,
                        help=f"how long the emulator takes over a title reply, a low-effort "
                             f"reasoning call (default {TITLE_MS}; 0 = as an answer's pacing)")
    processes = parser.add_argument_group("stack")
    processes.add_argument("--web-processes", type=int, default=1,
                           help="uvicorn processes, each on its own port; tabs spread round-robin")
    processes.add_argument("--worker-processes", type=int, default=1, help="Celery worker processes")
    processes.add_argument("--concurrency", type=int, default=250, help="answers each Celery worker process streams at once")
    processes.add_argument("--tokens-per-second", type=float, default=100.0)
    processes.add_argument("--reply-tokens", type=int, default=300)
    processes.add_argument("--think-ms", type=int, default=500, help="reasoning pause for every effort")
    processes.add_argument("--chunk-tokens", type=int, default=1)
    processes.add_argument("--effort", default="low", choices=["low", "medium", "high"])
    processes.add_argument("--warmup", type=int, default=5, help="answers streamed before measuring")
    one_wave = parser.add_argument_group("one wave (the earlier method: every tab sends once)")
    one_wave.add_argument("--wave", action="store_true",
                          help="also run the one-wave sweep at the same N: send → message.created, "
                               "first event, DB writes per answer, latency split worker/web, length check")
    one_wave.add_argument("--stagger", type=float, default=1.0,
                          help="spread the N sends evenly over this many seconds (0 = all at once)")
    one_wave.add_argument("--answer-timeout", type=float, default=120.0,
                          help="seconds allowed beyond the nominal answer time")
    one_wave.add_argument("--no-tap", action="store_true",
                          help="don't subscribe to the channel layer to split latency worker/web")
    one_wave.add_argument("--tap-every", type=int, default=10, help="tap one answer in this many (default 10)")
    one_wave.add_argument("--no-length-check", action="store_true",
                          help="skip the DB-writes-vs-answer-length check")
    closed.add_argument("--no-turn-cost", action="store_true",
                        help="skip the per-turn CPU step (one-token answers) that splits CPU per token")
    extra = parser.add_argument_group("other measurements (off by default)")
    extra.add_argument("--page", action="store_true", help="page query count (10 vs 1,000 messages)")
    extra.add_argument("--micro", action="store_true", help="per-operation costs on the idle stack")
    extra.add_argument("--search", action="store_true", help="search benchmark (100,000 messages)")
    extra.add_argument("--search-only", action="store_true",
                       help="run only the search benchmark (no stack, no streams)")
    extra.add_argument("--reference", action="store_true",
                       help="after the product's steps, run the same closed loop at each N against three "
                            "reference servers on the same cores: a bare relay; the floor, the relay plus the "
                            "least per-turn work of a Celery queue and PostgreSQL storage; and the floor with "
                            "DESIGN's worker -> Redis -> web hop (bench/reference.py, bench/reference_hop.py)")
    extra.add_argument("--reference-only", action="store_true",
                       help="run only the reference servers' steps (no product steps)")
    extra.add_argument("--profile", action="store_true",
                       help="py-spy the first web and worker processes during the largest N")
    # Earlier runs had these parts on by default; the old opt-outs still parse (README).
    for old_flag in ("--no-page", "--no-micro", "--no-search"):
        extra.add_argument(old_flag, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="after a step, wait up to this long for answers still live in the worker "
                             "(clients that gave up) before the next step")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each step, wait up to this long for other load on the machine "
                             "to drop below 0.3 cores (0 = don't wait)")
    parser.add_argument("--time-budget", type=float, default=540.0,
                        help="skip remaining steps once this many seconds have passed")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench"))
    args = parser.parse_args(argv)
    try:
        args.stream_list = [int(x) for x in args.streams.split(",") if x.strip()]
    except ValueError:
        parser.error("--streams must be a comma-separated list of integers")
    if not args.stream_list or min(args.stream_list) < 1:
        parser.error("--streams needs at least one positive integer")
    if min(args.web_processes, args.worker_processes, args.concurrency) < 1:
        parser.error("--web-processes, --worker-processes and --concurrency must be at least 1")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if not 0.0 <= args.new_conversation_share <= 1.0:
        parser.error("--new-conversation-share must be between 0 and 1")
    if args.title_ms < 0:
        parser.error("--title-ms must not be negative")
    if args.tokens_per_second <= 0 or args.reply_tokens < 1:
        parser.error("the bench measures against the emulator's pacing: --tokens-per-second must be "
                     "positive and --reply-tokens at least 1")
    if args.ramp is None:
        args.ramp = args.think_ms / 1000 + args.reply_tokens / args.tokens_per_second
    return args


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _log_errors(stack: Stack, offsets: dict[str, int]) -> dict[str, int]:
    """Error lines written to each child's log since ``offsets`` (updated in place)."""
    found: dict[str, int] = {}
    for child in stack.children:
        try:
            with child.log.open("rb") as handle:
                handle.seek(offsets.get(child.name, 0))
                text = handle.read().decode(errors="replace")
                offsets[child.name] = handle.tell()
        except OSError:
            continue
        count = sum(1 for line in text.splitlines() if any(m in line for m in LOG_ERROR_MARKERS))
        if count:
            found[child.name] = count
    return found


def _group_channel(message_id: int) -> str:
    """The Redis pub/sub channel the channel layer uses for ``message.<id>``."""
    from django.conf import settings

    layer: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    prefix = layer.get("CONFIG", {}).get("prefix", "asgi")
    return f"{prefix}__group__message.{message_id}"


def _decode_tap(tap: load.Tap | None) -> dict[int, list[tuple[float, dict[str, Any]]]]:
    if tap is None:
        return {}
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    frames: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    for at, channel, data in tap.records:
        try:
            event = layer.deserialize(data)  # type: ignore[union-attr]
            message_id = int(channel.rsplit(b".", 1)[1])
        except Exception:
            continue
        frame = event.get("frame") if isinstance(event, dict) else None
        if isinstance(frame, dict):
            frames.setdefault(message_id, []).append((at, frame))
    return frames


def _log_error_excerpt(stack: Stack, lines: int = 12) -> str:
    """The last error lines of each child's log, for a failure message."""
    parts = []
    for child in stack.children:
        try:
            text = child.log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        hits = [i for i, line in enumerate(text) if any(m in line for m in LOG_ERROR_MARKERS)]
        if hits:
            start = max(0, hits[-1] - 2)
            excerpt = "\n".join(f"    {line}" for line in text[start : start + lines])
            parts.append(f"  {child.name} ({child.log}):\n{excerpt}")
    return "\n".join(parts) or "  no errors in the logs under " + str(stack.log_dir)


def _product_fingerprint() -> dict[str, Any]:
    """Which code was measured: others edit the repository while the bench runs."""
    import hashlib
    import subprocess

    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    files = {}
    for name in ("realtime/publishing.py", "answers/generation.py", "answers/rounds.py",
                 "answers/relay.py", "realtime/consumers.py", "realtime/replay.py",
                 "answers/replies.py", "answers/live.py", "llm/client.py", "llm/stream.py",
                 "llm/sse.py", "chatsite/settings.py"):
        try:
            files[name] = hashlib.sha256((ROOT / name).read_bytes()).hexdigest()[:12]
        except OSError:
            files[name] = "missing"
    return {"git_head": git("rev-parse", "--short", "HEAD"),
            "modified_files": len(git("status", "--porcelain").splitlines()), "files": files}


def _connection_note(pg: Any, web: int, workers: int, concurrency: int) -> str:
    """A warning when the processes' database pools could together exceed what the
    PostgreSQL server has free (shared with other databases on the same server)."""
    from chatsite.dbpool import web_pool_size, worker_pool_size
    from conversations.management.commands.runstack import claim_threads

    could_open = web * web_pool_size() + workers * worker_pool_size(claim_threads(concurrency))
    limit = int(pg.execute("SHOW max_connections").fetchone()[0])
    in_use = int(pg.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0])
    if could_open <= limit - in_use:
        return ""
    return (f"The pools of {web} web and {workers} worker process(es) may open up to {could_open} "
            f"PostgreSQL connections; the server allows {limit} and {in_use} are in use. Pools grow "
            "only on demand, but a step that needs more fails its queries.")


def _wait_for(profilers: dict[str, Any]) -> None:
    """Let py-spy write its output (it stops on its own after its duration)."""
    for proc in profilers.values():
        try:
            proc.wait(timeout=30)
        except Exception:
            proc.kill()


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.log_dir = self.out / "logs"
        self.stack = Stack(self.log_dir)
        self.started = time.monotonic()
        self.token_base = 0
        self.notes: list[str] = []
        self.log_offsets: dict[str, int] = {}
        self.pg: Any = None
        self.meter: cpu.CpuMeter | None = None
        self.team_id: int | None = None  # --orgs team: the org every tab is a member of

    # --- setup -------------------------------------------------------------------------

    def prepare(self) -> list[fixtures.BenchUser]:
        from bench import stack as st

        self.out.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        database_url, redis_url = os.environ["DATABASE_URL"], os.environ["REDIS_URL"]
        if not database_url.startswith(("postgres://", "postgresql://")) or not redis_url:
            raise BenchError("the bench measures the full topology: DATABASE_URL must be PostgreSQL "
                             "and REDIS_URL must be set")
        st.check_postgres(database_url)
        st.check_redis(redis_url)
        if st.ensure_database(database_url):
            say(f"created database {database_url.rsplit('/', 1)[-1]}")
        say("migrating the bench database")
        st.migrate(self.log_dir)
        st.flush_redis(redis_url)
        self.pg = st.pg_connect(database_url)
        fixtures.setup_django()
        fixtures.raise_message_ids()
        leftovers = fixtures.cancel_leftovers()
        if leftovers:
            say(f"cancelled {leftovers} answers left live by an earlier, aborted run")
        say("vacuuming the bench database")
        autovacuum = st.vacuum(self.pg)
        if autovacuum != "on":
            self.notes.append(f"PostgreSQL runs with autovacuum {autovacuum}: the bench vacuumed and analysed "
                              "its database before the steps, as autovacuum does on a production server; "
                              "dead row versions written during the run stay until the next run.")
        # Each step has its own people: a person's sends are rate limited per minute
        # (SENDS_PER_MINUTE), and a tab that kept sending through several steps would
        # reach the limit where a real person would not.
        count = max(self.args.warmup + self.turn_cost_tabs() + sum(self.args.stream_list), 1)
        say(f"creating {count} users and sessions"
            + (", all members of one org" if self.args.orgs == "team" else ""))
        users, self.team_id = fixtures.users_and_sessions(count, team=self.args.orgs == "team")
        return users

    def start_stack(self) -> None:
        args = self.args
        say("starting emulator, web and worker processes")
        self.stack.start_emulator(tokens_per_second=args.tokens_per_second, think_ms=args.think_ms,
                                  reply_tokens=args.reply_tokens, chunk_tokens=args.chunk_tokens)
        # Title calls ask for JSON: the emulator gives those replies their own latency.
        turn_cost.emulator_config(self.stack.emulator_url, {"json_reply_ms": args.title_ms})
        self.stack.start_workers(args.concurrency, args.worker_processes)
        self.stack.start_web(args.web_processes)
        self.stack.wait_for_workers()
        dbname = os.environ["DATABASE_URL"].rsplit("/", 1)[-1].split("?", 1)[0]
        self.meter = cpu.CpuMeter(self.stack.pids(), dbname, extra={"bench clients": os.getpid()})
        note = _connection_note(self.pg, args.web_processes, args.worker_processes, args.concurrency)
        if note:
            say(note)
            self.notes.append(note)

    # --- one wave ----------------------------------------------------------------------

    def expected_tokens(self, count: int | None = None) -> list[int]:
        count = self.args.reply_tokens if count is None else count
        return list(range(self.token_base, self.token_base + count))

    def wave(self, users: list[fixtures.BenchUser], tag: str, *, stagger: float,
             profile_dir: Path | None = None, answer_timeout: float | None = None) -> dict[str, Any]:
        from django.conf import settings

        args = self.args
        assert self.meter is not None
        nominal = args.think_ms / 1000 + args.reply_tokens / args.tokens_per_second
        timeout = nominal + (args.answer_timeout if answer_timeout is None else answer_timeout)
        hosts = load.endpoints(self.stack.web_ports, len(users))
        profilers: dict[str, Any] = {}

        tap = None if args.no_tap else load.Tap(os.environ["REDIS_URL"], _group_channel)

        async def main() -> dict[str, Any]:
            clients = await load.open_clients(hosts, settings.SESSION_COOKIE_NAME,
                                              [u.session_key for u in users])
            if tap is not None:
                await tap.start()
            try:
                if profile_dir is not None:
                    profilers.update(self.start_profilers(profile_dir, stagger + nominal + 1))
                assert self.meter is not None
                before = self.meter.snapshot()
                answers, wall_start, wall_end = await load.run_wave(
                    clients, tag=tag, stagger=stagger, answer_timeout=timeout, effort=args.effort,
                    tap=tap, tap_every=args.tap_every)
                after = self.meter.snapshot()
            finally:
                await load.close_clients(clients)
                if tap is not None:
                    await tap.stop()
            return {"answers": answers, "start": wall_start, "end": wall_end,
                    "before": before, "after": after}

        return load.event_loop_runner()(main()) | {"profilers": profilers,
                                                    "tapped": _decode_tap(tap)}

    def quiet(self) -> float:
        """Wait (bounded) for CPU use outside this stack to settle; returns it in cores."""
        assert self.meter is not None
        deadline = time.monotonic() + self.args.quiet_wait
        while True:
            first = self.meter.snapshot()
            time.sleep(1.0)
            other = cpu.CpuMeter.diff(first, self.meter.snapshot())["other (not this stack)"]
            if other < 0.3 or time.monotonic() >= deadline:
                return other

    def step(self, users: list[fixtures.BenchUser], *, label: str, profile_dir: Path | None = None,
             stagger: float | None = None) -> dict[str, Any]:
        from bench.fixtures import wait_for_pg_stats

        assert self.meter is not None
        stagger = self.args.stagger if stagger is None else stagger
        self.stack.check_alive()
        other_before = self.quiet()
        # Let the statistics collector catch up first: the page fixture's 1,010 inserts
        # just before the first wave would otherwise be counted against it.
        writes_before = wait_for_pg_stats(self.pg)
        run = self.wave(users, label, stagger=stagger, profile_dir=profile_dir)
        self.stack.check_alive()
        result = analysis.analyse_wave(run["answers"], expected=self.expected_tokens(),
                                       tokens_per_second=self.args.tokens_per_second,
                                       think_s=self.args.think_ms / 1000)
        if run["tapped"]:
            result["split"] = analysis.analyse_split(run["answers"], run["tapped"])
        _wait_for(run["profilers"])
        tail_start = run["after"]
        drained_s, still_live = fixtures.drain(self.args.drain_timeout)
        if still_live:
            self.notes.append(f"{label}: {still_live} answers were still live {drained_s:.0f}s after the "
                              "wave ended (--drain-timeout); later steps ran alongside them.")
        writes_after = wait_for_pg_stats(self.pg)
        tail = cpu.CpuMeter.diff(tail_start, self.meter.snapshot())
        n = len(users)
        return {
            "streams": n,
            "label": label,
            "stagger_s": stagger,
            "cores": os.cpu_count(),
            "wave_seconds": run["end"] - run["start"],
            "other_load_before_cores": round(other_before, 2),
            "analysis": result,
            "cpu_window": cpu.CpuMeter.diff(run["before"], run["after"]),
            "cpu_tail": tail,
            "drain_s": round(drained_s, 1),
            "cpu_system_share": cpu.CpuMeter.system_share(run["before"], run["after"]),
            "db_writes_per_answer": {k: (writes_after[k] - writes_before[k]) / n for k in writes_after},
            "log_errors": _log_errors(self.stack, self.log_offsets),
        }

    # --- phases --------------------------------------------------------------------------

    def start_profilers(self, profile_dir: Path, seconds: float) -> dict[str, Any]:
        """py-spy on the first web and the first worker process for ``seconds``."""
        profilers = {}
        for role in ("web", "worker"):
            proc = profile.start(self.stack.first_pid(role), profile_dir / f"{role}.txt", seconds)
            if proc is not None:
                profilers[role] = proc
        return profilers

    # --- sustained closed loop -----------------------------------------------------------

    def pacing(self) -> sustained.Pacing:
        return sustained.Pacing(tokens=self.args.reply_tokens, tokens_per_second=self.args.tokens_per_second,
                                think_s=self.args.think_ms / 1000)

    def sustained_timing(self) -> closed_loop.Timing:
        """The closed loop's ramp, measured window and wind-down, from the options."""
        args = self.args
        return closed_loop.Timing(ramp=args.ramp, duration=args.duration, finish_timeout=args.finish_timeout)

    def turns_per_tab(self, timing: closed_loop.Timing) -> int:
        """The most turns a tab can start: a turn that ends normally lasts at least the
        nominal answer (reasoning + tokens ÷ rate); one more for rounding."""
        if timing.max_turns is not None:
            return timing.max_turns
        nominal = self.args.think_ms / 1000 + self.args.reply_tokens / self.args.tokens_per_second
        return math.ceil((timing.ramp + timing.duration) / nominal) + 1

    def closed_loop(self, users: list[fixtures.BenchUser], *, tag: str, timing: closed_loop.Timing,
                    reference: tuple[int, cpu.CpuMeter] | None = None,
                    new_share: float = 0.0) -> closed_loop.LoopRun:
        """Open one signed-in tab per user and run them, ``new_share`` of the turns in
        new conversations and the others in existing ones (against a reference server's
        port and meter when ``reference`` is given)."""
        from django.conf import settings

        conversations: list[list[int | None]]
        if reference is None:
            meter = self.meter
            conversations = fixtures.tab_conversations(
                [u.pk for u in users], self.turns_per_tab(timing), new_share=new_share,
                organization_id=self.team_id, history_tokens=self.args.reply_tokens)
            hosts = load.endpoints(self.stack.web_ports, len(users))
        else:
            port, meter = reference
            conversations = [[] for _ in users]  # a reference server keeps no conversations
            hosts = load.endpoints([port], len(users))
        assert meter is not None

        async def main() -> closed_loop.LoopRun:
            clients = await load.open_clients(hosts, settings.SESSION_COOKIE_NAME,
                                              [u.session_key for u in users])
            try:
                return await closed_loop.run(clients, conversations, tag=tag, effort=self.args.effort,
                                             timing=timing, snapshot=meter.snapshot)
            finally:
                await load.close_clients(clients)

        return load.event_loop_runner()(main())

    def sustained_step(self, users: list[fixtures.BenchUser], *, profile_dir: Path | None) -> dict[str, Any]:
        args = self.args
        n = len(users)
        self.stack.check_alive()
        other_before = self.quiet()
        timing = self.sustained_timing()
        profilers = (self.start_profilers(profile_dir, args.ramp + args.duration)
                     if profile_dir is not None else {})
        run = self.closed_loop(users, tag=f"n{n}-{os.getpid()}", timing=timing,
                               new_share=args.new_conversation_share)
        self.stack.check_alive()
        _wait_for(profilers)
        row = sustained.analyse(run, expected=self.expected_tokens(), pacing=self.pacing())
        drained_s, still_live = fixtures.drain(args.drain_timeout)
        if still_live:
            self.notes.append(f"N={n}: {still_live} answers were still live {drained_s:.0f}s after the "
                              "step ended (--drain-timeout); later steps ran alongside them.")
        return {
            "streams": n,
            "web_processes": args.web_processes,
            "worker_processes": args.worker_processes,
            "cores": os.cpu_count(),
            "other_before_cores": round(other_before, 2),
            "drain_s": round(drained_s, 1),
            "log_errors": _log_errors(self.stack, self.log_offsets),
            **row,
        }

    def warm_up(self, users: list[fixtures.BenchUser]) -> None:
        """One turn per warm-up tab, unmeasured; also learns how the emulator numbers tokens."""
        if not users:
            return
        say(f"warm-up: {len(users)} answers (not measured)")
        timing = closed_loop.Timing(ramp=0.5, duration=0.1, finish_timeout=30.0, max_turns=1)
        run = self.closed_loop(users, tag=f"warmup-{os.getpid()}", timing=timing)
        numbers: list[int] = []
        for answer in run.answers:
            if answer.failure or not answer.frames or answer.frames[-1][1].get("type") != "done":
                last = answer.frames[-1][1] if answer.frames else {}
                raise BenchError(
                    f"a warm-up answer did not complete ({answer.failure or last or 'no frames'}).\n"
                    + _log_error_excerpt(self.stack)
                )
            text = "".join(f.get("text", "") for _, f in answer.frames if f.get("type") == "delta")
            numbers.extend(int(m.group(1)) for m in analysis.TOKEN.finditer(text))
        if not numbers:
            raise BenchError("the warm-up answers carried no timestamped tokens: is the emulator "
                             "in --timestamps mode?")
        self.token_base = min(numbers)
        self.notes.append(f"The emulator numbers tokens from {self.token_base}; each answer must carry "
                          f"exactly {self.token_base}..{self.token_base + self.args.reply_tokens - 1}.")
        _log_errors(self.stack, self.log_offsets)  # warm-up noise is not counted

    def length_check(self, users: list[fixtures.BenchUser], base_step: dict[str, Any] | None) -> list[dict[str, Any]]:
        """DB writes per answer for a 10× longer answer streamed in the same time."""
        import urllib.request

        rows = []
        if base_step is not None:
            rows.append({"streams": base_step["streams"], "tokens": self.args.reply_tokens,
                         "tokens_per_second": self.args.tokens_per_second,
                         "writes": base_step["db_writes_per_answer"]})
        longer = self.args.reply_tokens * 10
        rate = self.args.tokens_per_second * 10

        def configure(tokens: int, tps: float) -> None:
            body = json.dumps({"reply_tokens": tokens, "tokens_per_second": tps}).encode()
            request = urllib.request.Request(f"{self.stack.emulator_url}/_emulator/config", data=body,
                                             headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()

        say(f"length check: 10 answers of {longer} tokens at {rate:g} tokens/s")
        configure(longer, rate)
        saved = (self.args.reply_tokens, self.args.tokens_per_second)
        try:
            self.args.reply_tokens, self.args.tokens_per_second = longer, rate
            step = self.step(users[:10], label=f"length-{os.getpid()}")
        finally:
            self.args.reply_tokens, self.args.tokens_per_second = saved
            configure(*saved)
        rows.append({"streams": step["streams"], "tokens": longer, "tokens_per_second": rate,
                     "writes": step["db_writes_per_answer"], "ok": step["analysis"]["ok"]})
        return rows

    def meta(self) -> dict[str, Any]:
        args = self.args
        return {
            "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu_model": _cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "tokens_per_second": args.tokens_per_second,
            "reply_tokens": args.reply_tokens,
            "think_ms": args.think_ms,
            "effort": args.effort,
            "chunk_tokens": args.chunk_tokens,
            "duration_s": args.duration,
            "ramp_s": args.ramp,
            "finish_timeout_s": args.finish_timeout,
            "stagger": args.stagger,
            "web_processes": args.web_processes,
            "worker_processes": args.worker_processes,
            "concurrency": args.concurrency,
            "new_conversation_share": args.new_conversation_share,
            "orgs": args.orgs,
            "title_ms": args.title_ms,
            "command": "python -m bench " + " ".join(sys.argv[1:]),
            "streams": args.stream_list,
            "product": _product_fingerprint(),
        }

    def over_time(self, what: str) -> bool:
        """True (and noted) once the run has used its --time-budget."""
        elapsed = time.monotonic() - self.started
        if elapsed <= self.args.time_budget:
            return False
        self.notes.append(f"Skipped {what}: the run had used {elapsed:.0f}s of its "
                          f"{self.args.time_budget:.0f}s budget (--time-budget).")
        return True

    def profile_dir(self, n: int) -> Path | None:
        """Where --profile writes for the largest N (None: not this N, or no py-spy)."""
        if not self.args.profile or n != max(self.args.stream_list):
            return None
        if profile.py_spy() is None:
            self.notes.append("--profile: py-spy is not installed (pip install py-spy).")
            return None
        directory = self.out / f"profile-N{n}"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def turn_cost_tabs(self) -> int:
        return 0 if self.args.no_turn_cost or self.args.search_only else turn_cost.TABS

    def run_turn_cost(self, users: list[fixtures.BenchUser]) -> dict[str, Any] | None:
        """CPU per turn outside the stream (bench.turn_cost): one-token answers with no
        reasoning pause, on the same stack, before the sustained steps."""
        if not users or self.over_time("the per-turn CPU step"):
            return None
        say(f"per-turn CPU: {len(users)} tabs, one-token answers, up to {turn_cost.TURNS_PER_TAB} turns each")
        saved = turn_cost.emulator_config(self.stack.emulator_url, turn_cost.one_token_answers(self.args.effort))
        try:
            timing = closed_loop.Timing(ramp=0.5, duration=8.0, finish_timeout=20.0,
                                        max_turns=turn_cost.TURNS_PER_TAB)
            run = self.closed_loop(users, tag=f"turns-{os.getpid()}", timing=timing)
        finally:
            turn_cost.emulator_config(self.stack.emulator_url, saved)
        fixtures.drain(self.args.drain_timeout)
        _log_errors(self.stack, self.log_offsets)
        result = turn_cost.analyse(run)
        per_turn = result["cpu_ms_per_turn"]
        say(f"  {result['turns']} turns in the window: web {report._ms(per_turn['web'])} ms, worker "
            f"{report._ms(per_turn['worker'])} ms, PostgreSQL {report._ms(per_turn['postgres (bench db)'])} ms per turn")
        return result

    def run_sustained(self, users: list[fixtures.BenchUser], result: dict[str, Any]) -> None:
        """Each N on its own slice of ``users`` (see prepare)."""
        args = self.args
        offset = 0
        for n in args.stream_list:
            step_users, offset = users[offset : offset + n], offset + n
            if self.over_time(f"N={n}"):
                continue
            say(f"step N={n}: {n} tabs over {len(self.stack.web_ports)} web process(es), "
                f"{args.ramp:g}s ramp + {args.duration:g}s measured")
            profile_dir = self.profile_dir(n)
            row = self.sustained_step(step_users, profile_dir=profile_dir)
            turns, tokens = row["turns"], row["tokens"]
            say(f"  N={n}: {turns['finished']}/{turns['started']} turns finished "
                f"({turns['new_conversation']} in new conversations), per-token added p99 "
                f"{report._ms(row['token_added_ms']['p99'])} ms, first token added p50 "
                f"{report._ms(row['ttft_added_ms']['p50'])} ms, delivered "
                f"{report._pct(tokens['ratio'])} of offered")
            if result.get("turn_cost"):
                row["cpu_split"] = turn_cost.split(row["cpu_ms_per_1k_tokens"], result["turn_cost"],
                                                   args.reply_tokens)
            result["sustained"].append(row)
            if profile_dir is not None:
                result["profiles"] = {role: profile.summarise(profile_dir / f"{role}.txt")
                                      for role in ("web", "worker")}

    def run_waves(self, users: list[fixtures.BenchUser], result: dict[str, Any]) -> None:
        """The one-wave sweep (--wave): every tab sends once; see docs/benchmark.md."""
        args = self.args
        for n in args.stream_list:
            if self.over_time(f"the one-wave step N={n}"):
                continue
            say(f"one wave N={n}: opening {n} websockets, sending over {args.stagger:g}s")
            step = self.step(users[:n], label=f"wave{n}-{os.getpid()}")
            a = step["analysis"]
            say(f"  N={n}: {a['ok']}/{a['answers']} ok, per-token p99 "
                f"{report._ms(a['token_latency_ms']['p99'])} ms, first event p50 "
                f"{report._ms(a['first_event_ms']['p50'])} ms")
            result["steps"].append(step)
        steps = result["steps"]
        result["budget_step"] = next((s for s in steps if s["streams"] == 200), None) or (
            max(steps, key=lambda s: s["streams"]) if steps else None)
        if not args.no_length_check and not self.over_time("the length check"):
            base = next((s for s in steps if s["streams"] == min(args.stream_list)), None)
            result["length_check"] = self.length_check(users, base)

    def run_reference(self, users: list[fixtures.BenchUser], result: dict[str, Any]) -> None:
        """The same closed loop at each N against ``bench.reference``'s servers, with the
        product's web and workers stopped: what these cores carry without the product."""
        from django.conf import settings

        from bench import reference

        args = self.args
        self.stack.stop_children(("web-", "worker-", "side-"))
        reference.create_tables(self.pg)
        timing = self.sustained_timing()
        for mode in ("relay", "floor", "hop"):
            children, port = self.stack.start_reference(mode, flush_ms=settings.STREAM_FLUSH_MS)
            pids = {child.name: child.pid for child in children}
            meter = cpu.CpuMeter({**pids, "emulator": self.stack.pids()["emulator"]},
                                 self.meter.database if self.meter else "",
                                 extra={"bench clients": os.getpid()})
            for n in args.stream_list:
                if self.over_time(f"the {mode} reference at N={n}"):
                    continue
                say(f"reference {mode} N={n}: {n} tabs, {args.ramp:g}s ramp + {args.duration:g}s measured")
                other_before = self.quiet()
                run = self.closed_loop(users[:n], tag=f"ref-{mode}-{n}-{os.getpid()}", timing=timing,
                                       reference=(port, meter))
                self.stack.check_alive()
                row = sustained.analyse(run, expected=self.expected_tokens(), pacing=self.pacing())
                row.update(system=mode, streams=n, cores=os.cpu_count(),
                           other_before_cores=round(other_before, 2), processes=sorted(pids))
                say(f"  {mode} N={n}: {row['turns']['finished']}/{row['turns']['started']} turns finished, "
                    f"per-token added p99 {report._ms(row['token_added_ms']['p99'])} ms")
                result["reference"].append(row)
            self.stack.stop_children(tuple(pids))

    def run(self) -> dict[str, Any]:
        args = self.args
        result: dict[str, Any] = {"meta": self.meta(), "sustained": [], "steps": [], "reference": [],
                                  "notes": self.notes}
        users = self.prepare()
        if args.page:
            say("page query count: conversations with 10 and 1,000 messages")
            result["page_queries"] = fixtures.page_queries(users[0].pk)
        if args.search or args.search_only:
            say("search: 100,000 messages, websearch queries, p50/p95")
            result["search"] = search.run(users[0].pk)
        if not args.search_only:
            self.start_stack()
            if not args.reference_only:
                self.warm_up(users[: args.warmup])
                step_users = users[args.warmup : args.warmup + self.turn_cost_tabs()]
                result["turn_cost"] = self.run_turn_cost(step_users)
                self.run_sustained(users[args.warmup + self.turn_cost_tabs() :], result)
            if args.wave:
                self.run_waves(users, result)
            if args.micro:
                say("per-operation costs (provider stream, publish, start_turn)")
                result["micro"] = micro.run(self.stack.emulator_url, users[0].pk)
            if args.reference or args.reference_only:
                self.run_reference(users, result)
        ratios.attach(result["sustained"], result["reference"], args.reply_tokens)
        result["elapsed_s"] = round(time.monotonic() - self.started, 1)
        return result


def _write(result: dict[str, Any], out: Path) -> str:
    markdown = report.render(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown)
    serialisable = dict(result)
    serialisable.pop("budget_step", None)
    payload = json.dumps(serialisable, indent=2, default=str)
    (out / "results.json").write_text(payload)
    # Keep every run: the product changes under the bench and runs get compared.
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (runs / f"{stamp}.md").write_text(markdown)
    (runs / f"{stamp}.json").write_text(payload)
    # The servers' logs are rewritten by the next run: a run whose servers logged errors
    # keeps its own copy, so the errors can still be read after the runs that follow.
    logs = out / "logs"
    if logs.is_dir() and any(step.get("log_errors") for step in result.get("sustained", [])):
        shutil.copytree(logs, runs / f"{stamp}-logs")
    return markdown


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_environment()
    _raise_fd_limit()
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    runner = Runner(args)
    try:
        result = runner.run()
    except BenchError as error:
        say(f"FAILED: {error}")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        say("interrupted")
        raise SystemExit(130) from None
    finally:
        runner.stack.stop()
    markdown = _write(result, Path(args.out))
    print(markdown)
    say(f"wrote {Path(args.out) / 'results.md'} and results.json in {result['elapsed_s']}s")
