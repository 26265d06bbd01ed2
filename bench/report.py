"""Markdown and JSON output."""

from __future__ import annotations

from typing import Any

from bench import sustained_report, turn_cost
from bench.cpu import busy_share

PROCESS_ORDER = ["web", "worker", "emulator", "postgres (bench db)", "redis", "bench clients",
                 "other (not this stack)"]


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _triple(stats: dict[str, Any]) -> str:
    return " / ".join(_ms(stats.get(k)) for k in ("p50", "p95", "p99"))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def latency_table(steps: list[dict[str, Any]]) -> str:
    rows = [
        "| N | answers ok | send→message.created ms p50/p95/p99 | send→first event ms p50/p95/p99 "
        "| first token, added ms p50/p95/p99 | per-token added latency ms p50/p95/p99 (max) "
        "| tokens/s delivered (mean / worst) | lost / dup tokens (late at timeout) | delta frames/answer/s p50 (max) "
        "| DB writes/answer: message rows (all tables) |",
        "|---:|---:|---|---|---|---|---|---|---|---|",
    ]
    for step in steps:
        a = step["analysis"]
        lat = a["token_latency_ms"]
        fps = a["frames_per_s"]
        writes = step.get("db_writes_per_answer") or {}
        fps_cell = f"{fps['p50']:.1f} ({fps['max']:.1f})" if fps["p50"] is not None else "–"
        writes_cell = (f"{writes['message']:.2f} ({writes['all']:.1f})" if writes else "–")
        rows.append(
            f"| {step['streams']} | {a['ok']}/{a['answers']} | {_triple(a['created_ms'])} "
            f"| {_triple(a['first_event_ms'])} | {_triple(a['first_delta_added_ms'])} "
            f"| {_triple(lat)} ({_ms(lat.get('max'))}) "
            f"| {_pct(a['delivered_ratio']['mean'])} / {_pct(a['delivered_ratio']['min'])} "
            f"| {a['tokens_lost']} / {a['tokens_duplicated']} ({a['tokens_undelivered_at_timeout']}) "
            f"| {fps_cell} | {writes_cell} |"
        )
    return "\n".join(rows)


def cpu_table(steps: list[dict[str, Any]]) -> str:
    header = "| N | wave s | " + " | ".join(PROCESS_ORDER) + " | machine busy | worker CPU ms/answer | web CPU ms/answer |"
    rows = [header, "|---:|---:|" + "---:|" * (len(PROCESS_ORDER) + 3)]
    for step in steps:
        cpu = step["cpu_window"]
        wall = step["wave_seconds"]
        cells = [f"{100 * cpu.get(name, 0.0) / wall:.0f}%" for name in PROCESS_ORDER]
        busy = busy_share(cpu)
        n = step["streams"]
        rows.append(
            f"| {n} | {wall:.1f} | " + " | ".join(cells) + f" | {100 * busy:.0f}% of {step['cores']} cores "
            f"| {1000 * cpu.get('worker', 0) / n:.1f} | {1000 * cpu.get('web', 0) / n:.1f} |"
        )
    return "\n".join(rows)


def budget_lines(step: dict[str, Any] | None) -> list[str]:
    if step is None:
        return ["(no step to check against the budgets)"]
    a = step["analysis"]
    n = step["streams"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lat = a["token_latency_ms"]
    first = a["first_event_ms"]
    delivered = a["delivered_ratio"]["mean"] or 0.0
    fps = a["frames_per_s"]
    lines = [
        f"One-wave figures against issue 10's absolute streaming limits, at N = {n} (a burst, not the "
        "sustained load; information only: the budgets are judged on the sustained steps against the floor):",
        "",
        f"- per-token added latency p99 ≤ 100 ms: {_ms(lat['p99'])} ms → {verdict((lat['p99'] or 1e9) <= 100)}",
        f"- ≥ 95% of offered tokens/s delivered: {_pct(delivered)} mean, "
        f"{_pct(a['delivered_ratio']['min'])} worst answer → {verdict(delivered >= 0.95)}",
        f"- zero lost or duplicated tokens: {a['tokens_lost']} lost, {a['tokens_duplicated']} duplicated, "
        f"{a['answers'] - a['ok']} answers not ok ({a['answers_timed_out']} not finished within the "
        f"client timeout, {a['tokens_undelivered_at_timeout']} tokens still undelivered then) → "
        f"{verdict(a['tokens_lost'] == 0 and a['tokens_duplicated'] == 0 and a['ok'] == a['answers'])}",
        f"- first visible event p50 ≤ 25 ms, p99 ≤ 150 ms: {_ms(first['p50'])} / {_ms(first['p99'])} ms → "
        f"{verdict((first['p50'] or 1e9) <= 25 and (first['p99'] or 1e9) <= 150)}",
        f"- ≤ 20 websocket frames per answer per second: p50 {fps['p50'] or 0:.1f}, max {fps['max'] or 0:.1f} → "
        f"{verdict((fps['p50'] or 0) <= 20)}",
    ]
    return lines


def header(meta: dict[str, Any]) -> list[str]:
    return [
        "# Streaming benchmark results",
        "",
        f"{meta['started']} · {meta['cpu_model']} · {meta['cores']} cores · Python {meta['python']} · "
        f"load before start {meta['loadavg']}",
        "",
        f"Emulator: {meta['tokens_per_second']:g} tokens/s per answer, {meta['reply_tokens']} tokens, "
        f"{meta['think_ms']} ms reasoning pause (effort `{meta['effort']}`), chunk {meta['chunk_tokens']} token. "
        f"Worker: {meta['worker_processes']} Celery process(es), each streaming up to "
        f"{meta['concurrency']} answers on its event loop. Web: {meta['web_processes']} uvicorn process(es). Channel layer: "
        f"RedisPubSubChannelLayer. Command: `{meta['command']}`.",
        "",
        sustained_report.load_model(meta),
        "",
        f"Product code measured: git {meta['product']['git_head']} with {meta['product']['modified_files']} "
        "uncommitted changes; sha256[:12] of the streaming path: "
        + ", ".join(f"{name.rsplit('/', 1)[-1]} {digest}" for name, digest in meta["product"]["files"].items())
        + ".",
        "",
    ]


def wave_section(result: dict[str, Any]) -> list[str]:
    """The one-wave sweep (--wave)."""
    if not result["steps"]:
        return []
    out = [
        f"## One wave (every tab sends once, sends staggered over {result['meta']['stagger']:g} s)",
        "",
        latency_table(result["steps"]),
        "",
        "- *first event*: first frame of the answer (`thinking` or `delta`) after the send; "
        "*first token, added*: first delta − send − reasoning pause; "
        "*per-token added latency*: websocket receive time − the emulator's send time embedded in each token.",
        "- *tokens/s delivered*: per answer, (tokens ÷ offered rate) ÷ (last delta received − first token sent by the "
        "emulator + one token interval); 100% = the client got the answer as fast as the model offered it.",
        "- *delta frames/answer/s*: delta frames ÷ seconds of upstream streaming (first to last token sent).",
        "",
        "### CPU by process (share of one core, averaged over the wave: first send → last answer done)",
        "",
        cpu_table(result["steps"]),
        "",
        "*other*: everything on the machine that is not this stack (other users' test runs, "
        "other PostgreSQL databases); it competes for the same 2 cores.",
        "",
    ]
    for step in result["steps"]:
        a = step["analysis"]
        extra = [
            f"- N={step['streams']}: first event types {a['first_event_types']}; "
            f"send → upstream request (est.) ms p50/p95/p99 {_triple(a['admission_ms'])}; "
            f"emulator pacing {_pct(a['emulator_pacing_ratio']['mean'])} of nominal "
            f"(min {_pct(a['emulator_pacing_ratio']['min'])}); frames/answer {a['frames_per_answer']:.1f} "
            f"({a['delta_frames_per_answer']:.1f} deltas); after-answer worker CPU "
            f"{step['cpu_tail'].get('worker', 0):.1f} s; worker still busy {step.get('drain_s', 0):.0f} s after the wave; "
            f"kernel share of CPU {step.get('cpu_system_share', {})}; server log errors {step['log_errors']}"
        ]
        split = a.get("split")
        if split and split["answers_sampled"]:
            extra.append(
                f"  - latency split at the Redis PUBLISH ({split['answers_sampled']} answers tapped), ms p50/p95/p99: "
                f"token worker side {_triple(split['token_worker_ms'])}, web side {_triple(split['token_web_ms'])}; "
                f"first event until published {_triple(split['first_event_until_published_ms'])}, "
                f"published → client {_triple(split['first_event_published_to_client_ms'])}"
            )
        if a["tokens_undelivered_at_timeout"]:
            extra.append(f"  - {a['answers_timed_out']} answers were not finished when the clients stopped "
                         f"waiting; their {a['tokens_undelivered_at_timeout']} missing tokens have no latency, "
                         "so the latency percentiles of this row are lower bounds.")
        if a["problems"]:
            extra.append(f"  - problems: {a['problems']}")
        out.extend(extra)
    out.append("")
    out.extend(budget_lines(result.get("budget_step")))
    return out


def render(result: dict[str, Any]) -> str:
    out = header(result["meta"])
    out.extend(turn_cost.render(result.get("turn_cost")))
    out.extend(sustained_report.render(result.get("sustained", []), result["meta"]))
    out.extend(sustained_report.reference_section(result.get("reference", [])))
    out.extend(wave_section(result))
    if result.get("search"):
        from bench.search import render as render_search

        out.extend(render_search(result["search"]))
    page = result.get("page_queries")
    if page:
        pages = page["pages"]
        out += [
            "",
            "## Conversation page queries (GET /c/<id>/, in-process django.test.Client)",
            "",
            "| messages | queries | render ms | bytes |",
            "|---:|---:|---:|---:|",
            *(f"| {size} | {p['queries']} | {p['render_ms']} | {p['bytes']:,} |" for size, p in pages.items()),
            "",
            f"Constant number of queries: {'yes' if page['constant'] else 'NO'}.",
        ]
    length = result.get("length_check")
    if length:
        out += [
            "",
            "## DB writes per answer vs answer length",
            "",
            "| answers | tokens | tokens/s | message-row writes/answer | all-table writes/answer |",
            "|---:|---:|---:|---:|---:|",
            *(f"| {row['streams']} | {row['tokens']} | {row['tokens_per_second']:g} | "
              f"{row['writes']['message']:.2f} | {row['writes']['all']:.1f} |" for row in length),
        ]
    costs = result.get("micro")
    if costs:
        out += ["", "## Per-operation costs (one at a time, idle stack, this process)", ""]
        stream, pub, turn = costs.get("provider_stream", {}), costs.get("publish", {}), costs.get("start_turn", {})
        if "error" not in stream:
            out.append(f"- provider stream (openai SDK + HTTP + product event translation), unpaced: "
                       f"{stream['cpu_us_per_chunk']} µs CPU per chunk ({stream['chunks']} chunks)")
        if "error" not in pub:
            out.append(f"- `realtime.publish` of one delta frame (replay RPUSH + group_send): "
                       f"{pub['cpu_us_per_frame']} µs CPU, {pub['wall_us_per_frame']} µs wall")
        if "error" not in turn:
            out.append(f"- `replies.start_turn` without the enqueue: {turn['queries']} queries, "
                       f"{turn['wall_ms_p50']} ms wall p50, {turn['cpu_ms_mean']} ms CPU; "
                       f"Celery enqueue alone {turn['celery_enqueue_ms_p50']} ms p50")
        hop = costs.get("dispatch_hop", {})
        if "error" not in hop and hop:
            out.append(f"- Channels consumer dispatch hop (`aclose_old_connections` through the single "
                       f"sync thread, before every handler): {hop['hops_per_s']:,} hops/s at most; "
                       f"{hop['latency_ms_p50']} ms p50 / {hop['latency_ms_p99']} ms p99 per hop with "
                       f"{hop['hops']:,} queued at once")
        for name, value in costs.items():
            if "error" in value:
                out.append(f"- {name}: {value['error']}")
    profiles = result.get("profiles")
    if profiles:
        out += ["", "## Where the CPU goes (py-spy, on-CPU samples during the largest step)", ""]
        for name, prof in profiles.items():
            if "error" in prof:
                out.append(f"- {name}: {prof['error']}")
                continue
            out.append(f"### {name} ({prof['samples']} samples)")
            out.append("")
            out.append("Self time by package: " + ", ".join(f"{k} {v}%" for k, v in prof["self_by_package_pct"][:10]))
            out.append("")
            out.append("Inclusive time in product functions: " + ", ".join(
                f"`{k}` {v}%" for k, v in prof["inclusive_product_pct"][:10]))
            out.append("")
    if result.get("notes"):
        out += ["", "## Notes", "", *(f"- {note}" for note in result["notes"])]
    return "\n".join(out) + "\n"
