"""Markdown for the closed-loop sustained steps: the results table (with Open WebUI's
quoted row), the table against the floor, every budget marked in the cell it judges, the
verdicts, the table against the floor with DESIGN's hop (information), and CPU by process."""

from __future__ import annotations

from typing import Any

from bench.budgets import Budget, Row, unjudged, verdicts
from bench.cpu import busy_share
from bench.ratios import FLOOR, HOP, hop_over_floor, ratio

# Quoted, not measured here: the figure issue 10 reports for Open WebUI on this machine
# type under the same load (reasoning 0.5 s, then 300 tokens at 100 tokens/s).
OPEN_WEBUI_LABEL = ("Open WebUI 0.12.4 (quoted from the issue's measurement on this machine "
                    "type, not re-measured)")
OPEN_WEBUI_STREAMS = "≈ 50"
OPEN_WEBUI_TOKEN_P99 = "p99 ≤ 250"
NOT_QUOTED = "not quoted"

COLUMNS = [
    ("system", "system"),
    ("streams", "N"),
    ("turns", "turns finished / started"),
    ("token", "per-token added ms p50 / p99"),
    ("ttft", "added time to first token ms p50 / p99"),
    ("tokens", "tokens/s delivered / offered"),
    ("correctness", "tokens lost / duplicated / out of order"),
    ("frames", "frames/answer/s p50 / max"),
    ("cpu", "CPU ms per 1,000 tokens: web / worker"),
    ("split", "CPU µs per streamed token, web + worker · ms per turn"),
]


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _pair(stats: dict[str, Any], low: str = "p50", high: str = "p99") -> str:
    return f"{_ms(stats.get(low))} / {_ms(stats.get(high))}"


def _cells(row: Row) -> dict[str, str]:
    turns, tokens, c = row["turns"], row["tokens"], row["correctness"]
    frames = row["frames_per_answer_s"]
    cpu = row["cpu_ms_per_1k_tokens"]
    ratio = "–" if tokens["ratio"] is None else f"{100 * tokens['ratio']:.1f} %"
    fps = "–" if frames["p50"] is None else f"{frames['p50']:.1f} / {frames['max']:.1f}"
    return {
        "system": system_label(row),
        "streams": str(row["streams"]),
        "turns": f"{turns['finished']:,} / {turns['started']:,}",
        "token": _pair(row["token_added_ms"]),
        "ttft": _pair(row["ttft_added_ms"]),
        "tokens": f"{tokens['delivered_per_s']:,.0f} / {tokens['offered_per_s']:,.0f} ({ratio})",
        "correctness": f"{c['lost']} / {c['duplicated']} / {c['out_of_order']}",
        "frames": fps,
        "cpu": f"{_ms(cpu.get('web'))} / {_ms(cpu.get('worker'))}",
        "split": _split_cell(row.get("cpu_split")),
    }


def _split_cell(split: dict[str, Any] | None) -> str:
    if split is None:
        return "–"
    token, turn = split["token_us"], split["turn_ms"]
    return (f"{_ms(token['web'])} + {_ms(token['worker'])} = {_ms(token['web + worker'])} · "
            f"{_ms(turn['web + worker'])}")


def system_label(row: Row) -> str:
    return f"teamchat, {row['web_processes']} web + {row['worker_processes']} worker"


def _mark(budget: Budget, passed: bool) -> str:
    return f"{budget.short}: {'pass' if passed else '**FAIL**'}"


def _marks(rows: list[Row]) -> dict[tuple[int, str], list[str]]:
    """The verdicts' marks by (row, column)."""
    marks: dict[tuple[int, str], list[str]] = {}
    for budget, row, passed in verdicts(rows):
        marks.setdefault((id(row), budget.column), []).append(_mark(budget, passed))
    return marks


def _add_marks(cells: dict[str, str], row: Row, marks: dict[tuple[int, str], list[str]]) -> None:
    for (row_id, column), notes in marks.items():
        if row_id == id(row) and column in cells:
            cells[column] += " (" + "; ".join(notes) + ")"


def _open_webui_row() -> dict[str, str]:
    cells = {key: NOT_QUOTED for key, _ in COLUMNS}
    cells.update(system=OPEN_WEBUI_LABEL, streams=OPEN_WEBUI_STREAMS, token=OPEN_WEBUI_TOKEN_P99)
    return cells


def table(rows: list[Row]) -> str:
    """The results table: our rows with budget marks, then Open WebUI's quoted row."""
    marks = _marks(rows)
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|---:|" + "---|" * (len(COLUMNS) - 2)]
    for row in rows:
        cells = _cells(row)
        _add_marks(cells, row, marks)
        lines.append("| " + " | ".join(cells[key] for key, _ in COLUMNS) + " |")
    webui = _open_webui_row()
    lines.append("| " + " | ".join(webui[key] for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def verdict_lines(rows: list[Row]) -> list[str]:
    results = verdicts(rows)
    lines = [f"- N = {row['streams']}: {budget.name}: {'PASS' if passed else '**FAIL**'}"
             for budget, row, passed in results]
    lines += [f"- {budget.name}: not judged, {why}" for budget, why in unjudged(rows)]
    failed = sum(1 for *_, passed in results if not passed)
    lines.append(f"- {len(results) - failed} of {len(results)} budget checks pass.")
    return lines


FLOOR_COLUMNS = [
    ("streams", "N"),
    ("token_p50", "per-token added ms p50"),
    ("token_p99", "per-token added ms p99"),
    ("ttft_p50", "added time to first token ms p50"),
    ("ttft_p99", "added time to first token ms p99"),
    ("cpu_per_turn", "CPU ms per turn, web + worker + PostgreSQL"),
]


def _against_cell(pair: dict[str, float | None], *, excess: bool = False, name: str = FLOOR) -> str:
    """"product / reference = ratio×" (the reference's figure under ``name``), and the
    difference in ms when ``excess``."""
    cell = f"{_ms(pair['product'])} / {_ms(pair[name])} = " + _times(pair["ratio"])
    if excess and pair["excess"] is not None:
        cell += f" ({pair['excess']:+,.0f} ms)"
    return cell


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}×"


def floor_table(rows: list[Row]) -> str:
    """Product / floor = product ÷ floor for each figure of the budgets, at each N whose
    floor was measured (``bench.ratios.attach``), with the budgets' marks."""
    compared = [row for row in rows if row.get("against_floor")]
    if not compared:
        return "(no floor measured in this run: `--reference` adds it and these ratios)"
    marks = _marks(rows)
    lines = ["| " + " | ".join(title for _, title in FLOOR_COLUMNS) + " |",
             "|---:|" + "---|" * (len(FLOOR_COLUMNS) - 1)]
    for row in compared:
        against = row["against_floor"]
        cells = {"streams": str(row["streams"])}
        cells.update({key: _against_cell(against[key], excess=key == "ttft_p50")
                      for key, _ in FLOOR_COLUMNS[1:]})
        _add_marks(cells, row, marks)
        lines.append("| " + " | ".join(cells[key] for key, _ in FLOOR_COLUMNS) + " |")
    return "\n".join(lines)


HOP_COLUMNS = [*FLOOR_COLUMNS, ("architecture", "hop ÷ floor: CPU per turn · per-token p99")]


def hop_table(rows: list[Row]) -> str:
    """Product / hop = product ÷ hop for the floor table's figures, at each N whose hop
    was measured, and hop ÷ floor beside them; no budget marks (information only)."""
    compared = [row for row in rows if row.get("against_hop")]
    if not compared:
        return "(no hop measured in this run: `--reference` adds it and these ratios)"
    lines = ["| " + " | ".join(title for _, title in HOP_COLUMNS) + " |",
             "|---:|" + "---|" * (len(HOP_COLUMNS) - 1)]
    for row in compared:
        against = row["against_hop"]
        cells = {"streams": str(row["streams"])}
        cells.update({key: _against_cell(against[key], excess=key == "ttft_p50", name=HOP)
                      for key, _ in FLOOR_COLUMNS[1:]})
        architecture = hop_over_floor(row)
        cells["architecture"] = f"{_times(architecture['cpu_per_turn'])} · {_times(architecture['token_p99'])}"
        lines.append("| " + " | ".join(cells[key] for key, _ in HOP_COLUMNS) + " |")
    return "\n".join(lines)


def load_model(meta: dict[str, Any]) -> str:
    """How the tabs use the product: their orgs, new and continued conversations."""
    share = meta.get("new_conversation_share", 0.0)
    orgs = ("members of one org (a team)" if meta.get("orgs") == "team"
            else "each in an org of their own")
    title = meta.get("title_ms")
    title_note = f", whose title reply takes {title:,} ms" if title else ""
    return (f"Tabs are signed-in people, {orgs}. {100 * share:.0f} % of turns start a new, untitled "
            f"conversation{title_note}; the others continue an existing, titled conversation that "
            "holds one earlier exchange.")


def _process_names(rows: list[Row]) -> list[str]:
    names = sorted({name for row in rows for name in row["cpu_s"]
                    if name.startswith(("web-", "worker-", "side-"))})
    return names + ["emulator", "postgres (bench db)", "redis", "bench clients",
                    "other (not this stack)"]


def cpu_table(rows: list[Row]) -> str:
    """Share of one core over the window and CPU ms per 1,000 delivered tokens."""
    names = _process_names(rows)
    lines = ["| N | window s | " + " | ".join(names) + " | machine busy |",
             "|---:|---:|" + "---:|" * (len(names) + 1)]
    for row in rows:
        seconds = row["window_s"]
        cpu, per_k = row["cpu_s"], row["cpu_ms_per_1k_tokens"]
        cells = [f"{100 * cpu.get(name, 0.0) / seconds:.0f} % · {_ms(per_k.get(name))}" for name in names]
        busy = busy_share(cpu)
        lines.append(f"| {row['streams']} | {seconds:.1f} | " + " | ".join(cells)
                     + f" | {100 * busy:.0f} % of {row['cores']} cores |")
    return "\n".join(lines)


def detail_lines(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        turns, tokens, c = row["turns"], row["tokens"], row["correctness"]
        pacing = row["emulator_pacing"]
        lines.append(
            f"- N = {row['streams']}: {turns.get('new_conversation', 0):,} of {turns['started']:,} turns "
            f"started a new conversation; {turns['refused']} refused{_codes(turns['refusal_codes'])}, "
            f"{turns['ended_in_error']} ended in error, {turns['unfinished_at_deadline']} unfinished at the "
            f"deadline ({c['undelivered_at_deadline']} tokens undelivered), other failures "
            f"{turns['other_failures'] or 'none'}; {tokens['delivered']:,} of {tokens['offered']:,} offered "
            f"tokens delivered in the window; seq gaps {c['seq_gaps']}, repeated frames dropped "
            f"{c['repeated_frames']}; frames per answer p50 {_ms(row['frames_per_answer']['p50'])}, "
            f"delta frames/answer/s p50 / max {_pair(row['delta_frames_per_answer_s'], 'p50', 'max')}; "
            f"per-token added ms p95 {_ms(row['token_added_ms']['p95'])}, max {_ms(row['token_added_ms']['max'])}; "
            f"ms p50 / p99 from send to message.created {_pair(row['created_ms'])}, to the first frame "
            f"{_pair(row['first_event_ms'])}, to the upstream request {_pair(row['upstream_request_ms'])}; "
            f"emulator pacing {_pct(pacing['mean'])} of nominal (p1 {_pct(pacing['p1'])}); "
            f"other load before the step {row['other_before_cores']:.2f} cores; "
            f"server log errors {row['log_errors'] or 'none'}"
        )
        if row["problems"]:
            lines.append(f"  - problems: {row['problems']}")
    return lines


def _codes(counts: dict[str, int]) -> str:
    return f" ({', '.join(f'{code} {n}' for code, n in counts.items())})" if counts else ""


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def render(rows: list[Row], meta: dict[str, Any]) -> list[str]:
    if not rows:
        return []
    return [
        "## Sustained closed loop",
        "",
        f"Each of N tabs (signed-in websocket sessions, {meta['web_processes']} web process(es) "
        f"round-robin) sends its next message as soon as its answer has ended (people and conversations as "
        f"stated above). "
        f"First sends spread over {meta['ramp_s']:g} s, then {meta['duration_s']:g} s measured, "
        f"then in-flight turns get up to {meta['finish_timeout_s']:g} s to end. Upstream: reasoning "
        f"{meta['think_ms']} ms, then {meta['reply_tokens']} tokens at {meta['tokens_per_second']:g} tokens/s.",
        "",
        table(rows),
        "",
        "- *added* = observed − what the emulator's pacing alone gives. Per-token: receive − the send time "
        "written into the token (tokens sent in the window). Time to first token: first delta − send − "
        "reasoning pause (turns sent in the window).",
        "- *offered* tokens/s: what the emulator's pacing would put in front of the tabs in the window had "
        "the stack added nothing (token k at send + pause + k/rate); *delivered*: tokens received in it.",
        "- *lost / duplicated / out of order*: per answer, the emulator's token numbers against the text "
        "the tab assembled (deltas in seq order, repeats dropped, as the page does); every turn of the step.",
        "- *frames/answer/s*: every frame the tab received for the answer, per second of its phase: "
        "those before the first delta (message.created, queued, thinking) ÷ the time from the send to "
        "it (at least 1 s), the rest (deltas, done) ÷ the emulator's streaming time (first to last "
        "token + one interval); the larger of the two.",
        "- *CPU ms per 1,000 tokens*: user + system CPU of all web (worker) processes over the window ÷ "
        "delivered tokens.",
        "",
        "### Against the floor (same run, same cores)",
        "",
        "Each cell: teamchat / the floor (relay + least Celery and PostgreSQL work per turn, "
        "`--reference`) = teamchat ÷ floor, at the same N. *CPU per turn*: CPU of the serving "
        "processes and the bench database over the window ÷ turns delivered in it (tokens ÷ "
        f"{meta['reply_tokens']}), the stream and title calls included.",
        "",
        floor_table(rows),
        "",
        "### Against the floor with DESIGN's hop (information, not a budget)",
        "",
        "Each cell: teamchat / the hop (the floor, but a Celery worker streams the answer and its "
        "frames reach the web process through Redis pub/sub and a replay list, as DESIGN's parts have "
        "it) = teamchat ÷ hop, at the same N: what teamchat adds over its architecture. Last column: "
        "hop ÷ floor, what the architecture alone costs.",
        "",
        hop_table(rows),
        "",
        "### Budgets (issue 23)",
        "",
        *verdict_lines(rows),
        "",
        "### CPU by process over the window (share of one core · ms per 1,000 delivered tokens)",
        "",
        cpu_table(rows),
        "",
        "*other*: everything on the machine that is not this stack (other sessions' test runs, "
        "other PostgreSQL databases); it competes for the same cores.",
        "",
        *detail_lines(rows),
        "",
    ]


REFERENCE_LABELS = {
    "relay": "bare relay (aiohttp, no storage or queue)",
    "floor": "relay + least Celery and PostgreSQL work per turn",
    "hop": "floor + DESIGN's hop (worker streams, Redis pub/sub + replay list to the web process)",
}


def _core_share(cpu: dict[str, float], name: str, seconds: float) -> str:
    return f"{100 * cpu.get(name, 0.0) / seconds:.0f} %" if name else "–"


def reference_section(rows: list[Row]) -> list[str]:
    """The reference servers' rows (``bench --reference``), beside the product's."""
    if not rows:
        return []
    lines = [
        "## Reference servers on the same cores (`--reference`)",
        "",
        "The same tabs, emulator and closed loop, with the product's processes stopped, against "
        "`bench/reference.py`: a bare relay, and the relay plus the least per-turn work a server with "
        "a Celery queue and PostgreSQL storage does (store the turn, a worker claims it, store the "
        "answer and settle its reservation). Both are lower bounds: no session, no rate limit, no "
        "prompt, no SDK, and the stream never leaves the process that holds the socket. The third "
        "(`bench/reference_hop.py`) is the floor with DESIGN's hop: the worker streams the answer and "
        "publishes its frames to Redis (pub/sub and a replay list), and the web process forwards them.",
        "",
        "| system | N | turns finished / started | per-token added ms p50 / p99 | added time to first token "
        "ms p50 / p99 | tokens/s delivered / offered | tokens lost / duplicated / out of order | "
        "frames/answer/s p50 / max | CPU, share of one core: server · its worker · PostgreSQL · "
        "emulator · clients | machine busy |",
        "|---|---:|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = _cells({**row, "web_processes": 1, "worker_processes": 0})
        cpu, seconds = row["cpu_s"], row["window_s"]
        server = next((name for name in row["processes"] if not name.endswith("worker-1")), "")
        worker = next((name for name in row["processes"] if name.endswith("worker-1")), "")

        busy = busy_share(cpu)
        usage = " · ".join(_core_share(cpu, name, seconds) for name in (
            server, worker, "postgres (bench db)", "emulator", "bench clients"))
        lines.append(f"| {REFERENCE_LABELS.get(row['system'], row['system'])} | {row['streams']} | "
                     f"{cells['turns']} | {cells['token']} | {cells['ttft']} | {cells['tokens']} | "
                     f"{cells['correctness']} | {cells['frames']} | {usage} | "
                     f"{100 * busy:.0f} % of {row['cores']} cores |")
    hop = _hop_lines(rows)
    return [*lines, "", *hop, ""] if hop else [*lines, ""]


def _hop_lines(rows: list[Row]) -> list[str]:
    """hop ÷ floor at each N where both ran: what DESIGN's hop costs by itself."""
    floors = {row["streams"]: row for row in rows if row["system"] == FLOOR}
    lines = []
    for hop in (row for row in rows if row["system"] == HOP):
        floor = floors.get(hop["streams"])
        if floor is None:
            continue
        cpu, token = (ratio(hop.get("cpu_ms_per_turn"), floor.get("cpu_ms_per_turn")),
                      ratio(hop["token_added_ms"].get("p99"), floor["token_added_ms"].get("p99")))
        lines.append(f"- N = {hop['streams']}: hop ÷ floor, CPU ms per turn (server + worker + PostgreSQL) "
                     f"{_ms(hop.get('cpu_ms_per_turn'))} / {_ms(floor.get('cpu_ms_per_turn'))} = {_times(cpu)}, "
                     f"per-token added p99 {_ms(hop['token_added_ms'].get('p99'))} / "
                     f"{_ms(floor['token_added_ms'].get('p99'))} ms = {_times(token)}")
    return lines
