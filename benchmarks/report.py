"""Turn the recorded benchmark results into docs/benchmarks.md and its plots.

    python benchmarks/report.py

Reads benchmarks/results/*.json (written by the bench_*.py scripts), writes
docs/img/*.png with matplotlib and docs/benchmarks.md with every number and
the command that reproduces it. Nothing is typed in by hand.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from payoff.record import FOLD_AT

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs"
IMG = DOCS / "img"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


MATRIX_TARGETS = (
    ("auto vs best peer", "auto vs best peer (<= 1.10x)"),
    ("auto vs loop", "auto vs loop (<= 1.05x)"),
    ("CPU-bound speedup", "CPU-bound speedup (>= 1.8x)"),
    ("trivial, calls 2-6 vs loop", "trivial, calls 2-6 vs loop (<= 1.10x)"),
    ("estimate vs measured", "MapRecord.speedup vs measured (±10%)"),
)


def matrix_section(data: dict[str, Any]) -> list[str]:
    seconds: dict[str, dict[str, float]] = data["seconds"]
    present = {c for secs in seconds.values() for c in secs}
    columns = [c for c in data.get("columns", []) if c in present]
    columns += sorted(present - set(columns))  # rows kept from an older schema may have other columns
    payoff = [c for c in columns if c.startswith("payoff")]
    first_call: dict[str, dict[str, float]] = data.get("first_call", {})
    calls: dict[str, int] = data.get("calls", {})
    cores = data["machine"].get("cores_used", data["machine"]["cpus"])
    lines = [
        "## Executor matrix",
        "",
        "```bash",
        "python benchmarks/bench_executor.py" + (" --quick" if data.get("quick") else ""),
        "```",
        "",
        f"Median of {data['repeat']} repeats on {data['machine']['cpus']} CPUs, Python "
        f"{data['machine']['python']}; each cell is seconds and, in brackets, the ratio to the plain loop "
        "of the same run (lower is better). Every column keeps one warm pool for the whole row, created before "
        "the timing and reused by every repeat and call: `ThreadPoolExecutor()` has its default workers, the "
        f"others {cores} (the cores); `ProcessPoolExecutor chunked` uses `chunksize = ceil(n / (4 * workers))`; "
        "joblib is one `Parallel` object per backend inside a `with` block; mpire is "
        "`WorkerPool(keep_alive=True).map`. payoff columns keep one executor per column for the row (their "
        "first call pays their pool start). A row of several calls is timed over all its calls"
        f"{_interleaved_note(data)}; the trivial row's cell is the median of calls 2-6, its first call is the row "
        "below it.",
        "",
        "| row | calls | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row, secs in seconds.items():
        lines.append(_matrix_line(row, str(calls.get(row, "")), secs, columns))
        if row in first_call:
            lines.append(_matrix_line(f"{row}, first call", "1", first_call[row], columns))
    skipped = [f"{column} on {row.split(' ', 1)[0]} ({n} repeat{'s' if n > 1 else ''})"
               for row, per in data.get("measured_repeats", {}).items() for column, n in per.items()]
    if skipped:
        lines += ["", "Measured fewer times because the first repeat took over 20x the loop (and over 2 s), so "
                  "they could not be the best column: " + "; ".join(skipped) + "."]
    estimates: dict[str, dict[str, float]] = data.get("estimates", {})
    if estimates:
        lines += ["", "Estimate against measurement: each payoff cell's speedup measured against the loop of the "
                  "same run, then payoff's own `MapRecord.speedup` (over several calls "
                  "`sum(serial_estimate_seconds) / sum(wall_seconds)`), then how far the estimate is off.", "",
                  "| row | " + " | ".join(payoff) + " |", "|---|" + "---|" * len(payoff)]
        for row, est in estimates.items():
            secs = seconds.get(row, {})
            cells = []
            for c in payoff:
                if c not in est or c not in secs:
                    cells.append("-")
                    continue
                measured = secs["loop"] / secs[c]
                cells.append(f"{measured:.2f}x / {est[c]:.2f}x ({est[c] / measured - 1:+.0%})")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += _paired_lines(data.get("paired", {}))
    lines += _matrix_targets(data)
    lines += _history_lines()
    plans: dict[str, str] = data.get("auto_plan", {})
    if plans:
        lines += ["", "What `payoff auto` did on its last call of each row:", ""]
        lines += [f"- {row}: {plan}" for row, plan in plans.items() if plan]
    reruns = data.get("rerun", {})
    if reruns:
        lines.append("")
        lines += [f"- row {row} was re-measured alone on {when} (`--rows {row.split()[0]}`)"
                  for row, when in reruns.items()]
    lines += ["", "![executor matrix](img/executor_matrix.png)", ""]
    plot_matrix(seconds, columns, estimates)
    return lines


def _paired_lines(paired: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    if not any(paired.values()):
        return []
    columns = sorted({c for per in paired.values() for c in per}, key=lambda c: c != "payoff auto")
    lines = ["", "The same estimate against a loop moments apart, a second instrument (the ±10% target below "
             "stays on the matrix's comparison): after the matrix, every call runs between two loop calls of "
             "the same batch, 3 times, on the column's warm executor. The matrix compares cells measured seconds "
             "apart in the rotation, which on this machine moves a ratio by several percent by itself. `payoff "
             "auto`'s calls here may hold its one serial check of a function (`auto_serial_check`: once its pool "
             "calls took ten times what a serial call loses, it times the items alone), which both columns count: "
             "a row whose matrix cell reads 1.8x can read about 1.4x here. `payoff serial` is the control: "
             "its estimate is right by construction up to payoff's own per-call cost (the part spent after "
             "the record is built, in observers, is outside `wall_seconds`), so how far it lands off is the "
             "instrument's noise plus that cost.", "",
             "| row | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row, per in paired.items():
        cells = [f"{per[c]['measured']:.2f}x / {per[c]['estimate']:.2f}x "
                 f"({per[c]['estimate'] / per[c]['measured'] - 1:+.1%})" if c in per else "-" for c in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _history_lines() -> list[str]:
    path = RESULTS / "matrix_history.json"
    if not path.exists():
        return []
    runs: list[dict[str, Any]] = json.loads(path.read_text())
    lines = ["", "Every full run, as recorded (`benchmarks/results/matrix_history.json`; each full run of "
             "`bench_executor.py` adds its line). One run is one draw of this machine's noise: on short rows the "
             "same code moves between met and missed from run to run. Within a run it moves too: on 2026-12-01 "
             "the same 50-item chunk of W6 (2 workers, no other load) took 2.4 ms of CPU time in one call and "
             "3.4 ms in another moments later, on both workers at once (`MapRecord.chunks[i].cpu_ns` over 200 "
             "calls), while two processes spinning alone showed none against one (the fastest of 10 spins "
             "each); so cells measured seconds apart, as the matrix's are, differ by up to a third on rows "
             "whose calls last milliseconds.",
             "", "| recorded | commit | targets met | missed |", "|---|---|---|---|"]
    for run in runs[-8:]:
        missed = ", ".join(run.get("missed") or []) or "-"
        lines.append(f"| {run['date']} | {run['commit']} | {run['met']} of {run['total']} | {missed} |")
    return lines


def _matrix_line(row: str, calls: str, secs: dict[str, float], columns: list[str]) -> str:
    loop = secs.get("loop")
    cells = [("-" if c not in secs else f"{secs[c]:.3f} ({secs[c] / loop:.2f}x)" if loop else f"{secs[c]:.3f}")
             for c in columns]
    return f"| {row} | {calls} | " + " | ".join(cells) + " |"


def _matrix_targets(data: dict[str, Any]) -> list[str]:
    targets: dict[str, dict[str, Any]] = data["targets"]
    if not all("target" in t for t in targets.values()):  # a file from before issue 13
        lines = ["", "Targets:", ""]
        for name, verdict in targets.items():
            detail = ", ".join(f"{k} {v:.3f}" for k, v in verdict.items() if isinstance(v, float))
            lines.append(f"- {name}: {'met' if verdict['ok'] else 'MISSED'} ({detail})")
        return lines
    cpu_bound = ", ".join(data.get("cpu_bound", []))
    lines = ["", f"Targets (issue 13). CPU-bound rows: {cpu_bound}; the speedup limit on {data['machine']['cpus']} "
             f"cores is the core count{_cpu_speed_note(data)}. The trivial row is also held to the "
             "every-row limits on its calls 2-6.", "",
             "| row | " + " | ".join(title for _, title in MATRIX_TARGETS) + " |",
             "|---|" + "---|" * len(MATRIX_TARGETS)]
    by_row: dict[str, dict[str, dict[str, Any]]] = {}
    for t in targets.values():
        by_row.setdefault(t["row"], {})[t["target"]] = t
    for row, got in by_row.items():
        cells = []
        for key, _ in MATRIX_TARGETS:
            t = got.get(key)
            if t is None:
                cells.append("-")
                continue
            value = f"{t['value'] - 1:+.1%}" if key == "estimate vs measured" else f"{t['value']:.2f}x"
            note = f" ({t['detail'].split(',')[0]})" if key == "auto vs best peer" else ""
            speeds = data.get("cpu_seconds", {}).get(row)
            if key == "CPU-bound speedup" and speeds:
                note = f" (limit {_cpu_limit(speeds):.2f}x)"
            cells.append(f"{value} {'met' if t['ok'] else '**MISSED**'}{note}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    met = sum(t["ok"] for t in targets.values())
    lines += ["", f"{met} of {len(targets)} targets met."]
    return lines


def _interleaved_note(data: dict[str, Any]) -> str:
    rows = [name.split()[0] for name, yes in data.get("interleaved", {}).items() if yes]
    if not rows:
        return ""
    return (f" ({', '.join(rows)} took turns call by call: each call ran on every column before the next call, "
            "so that a drift in the machine's speed met every column alike)")


def _cpu_speed_note(data: dict[str, Any]) -> str:
    """Where the run read its CPUs' speeds: how far unequal cores moved the limit below the core count."""
    limits = {row: _cpu_limit(speeds) for row, speeds in data.get("cpu_seconds", {}).items() if speeds}
    if not limits:
        return ""
    low, high = min(limits.values()), max(limits.values())
    span = f"{low:.2f}x" if high - low < 0.005 else f"between {low:.2f}x and {high:.2f}x"
    return (" when its cores run at one speed. Before and after each row the run timed the same pure-Python "
            "work pinned to each CPU alone (a virtual machine's CPUs share hosts and can differ): against a loop "
            f"on the fastest CPU no pool could pass {span} in this run; the CPU-bound cells give their row's limit")


def _cpu_limit(speeds: dict[str, float]) -> float:
    fastest = min(speeds.values())
    return sum(fastest / s for s in speeds.values())


def plot_matrix(seconds: dict[str, dict[str, float]], columns: list[str],
                estimates: dict[str, dict[str, float]]) -> None:
    rows = list(seconds)
    shown = [c for c in columns if c != "loop"]
    fig, (ax, est_ax) = plt.subplots(2, 1, figsize=(14, 10), height_ratios=(3, 2))
    width = 0.84 / len(shown)
    colours = plt.get_cmap("tab20").colors
    for i, column in enumerate(shown):
        xs = [x + i * width for x, r in enumerate(rows) if column in seconds[r]]
        ratios = [seconds[r][column] / seconds[r]["loop"] for r in rows if column in seconds[r]]
        ax.bar(xs, ratios, width, label=column, color=colours[i % len(colours)],
               edgecolor="black" if column == "payoff auto" else None, linewidth=1.2)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--", label="plain loop")
    ax.set_yscale("log")
    ax.set_xticks([x + 0.42 - width / 2 for x in range(len(rows))], [r.split(" ", 1)[0] for r in rows])
    ax.set_ylabel("time / plain loop (log, lower is better)")
    ax.set_title("payoff against a loop and the usual tools, each with one warm pool per row")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.07))
    with_est = [r for r in rows if "payoff auto" in estimates.get(r, {})]
    xs = range(len(with_est))
    measured = [seconds[r]["loop"] / seconds[r]["payoff auto"] for r in with_est]
    estimated = [estimates[r]["payoff auto"] for r in with_est]
    est_ax.bar([x - 0.2 for x in xs], measured, 0.4, label="measured (loop / auto, same run)", color="#4878a8")
    est_ax.bar([x + 0.2 for x in xs], estimated, 0.4, label="MapRecord.speedup (payoff's estimate)",
               color="#e0a040")
    est_ax.errorbar([x - 0.2 for x in xs], measured, yerr=[[0.1 * m for m in measured]] * 2, fmt="none",
                    ecolor="black", capsize=3, label="±10% of measured")
    est_ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    est_ax.set_xticks(list(xs), [r.split(" ", 1)[0] for r in with_est])
    est_ax.set_ylabel("payoff auto: speedup vs loop")
    est_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(IMG / "executor_matrix.png", dpi=110)
    plt.close(fig)


def threads_breakdown_section(data: dict[str, Any]) -> list[str]:
    """Why the matrix's W5 misses its best peer: the caller's share of a threads call against a bare pool's."""
    cols = data["columns"]
    loop = cols["loop"]["seconds"]
    lines = ["## Where a threads call's time goes (the matrix's W5)", "", "```bash",
             "python benchmarks/bench_threads_breakdown.py", "```", "",
             f"500 sums of 1 MiB arrays on two threads ({data['date']}, at {data['commit']}; medians of 15 rounds, "
             "the columns in another order each round); `ThreadPoolExecutor(2)` is given as many chunks as payoff "
             f"cut ({data['chunks']}), `ThreadPoolExecutor()` runs unchunked as in the matrix.", "",
             "| column | time | vs loop | speedup measured / recorded | caller's CPU a call | pool's CPU an item |",
             "|---|---|---|---|---|---|"]
    for name, c in cols.items():
        if name == "loop":
            continue
        item = f"{c['pool CPU an item'] * 1e6:.1f} us" if "pool CPU an item" in c else "-"
        said = f" / {c['recorded speedup']:.2f}x" if "recorded speedup" in c else ""
        lines.append(f"| {name} | {c['seconds'] * 1e3:.1f} ms | {c['seconds'] / loop:.2f}x | "
                     f"{loop / c['seconds']:.2f}x{said} | {c['caller CPU'] * 1e3:.2f} ms | {item} |")
    return [*lines, "", "Items of ~110 us on two threads that share two cores leave no idle CPU for the caller: "
            "what payoff's caller spends on a call (planning, its chunks sent and taken back, the record, and its "
            "observers) is taken from the workers, where a bare pool's caller spends about a millisecond, and the "
            "items run a few percent slower beside it (its work evicts what they had cached). That is W5's gap "
            "to its best peer (the matrix adds auto's probe and re-checks). No one piece of it is large: a profile "
            "of the caller's thread is flat over payoff's per-chunk bookkeeping. Fewer chunks would shrink it but "
            "give up the balancing of uneven items (W7, W8); it is left as measured. The record's own speedup prices "
            "the items at their time on the pool, above the loop's here (two threads reading memory at once, and "
            "the caller beside them), so it reads about a tenth more than the speedup measured against the loop: "
            "the error the matrix's W5 estimate-vs-measured line allows, at its edge.", ""]


def telemetry_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Telemetry overhead", "", "```bash", "python benchmarks/bench_telemetry.py", "```", "",
             f"{data['items']:,} items of ~50 us. \"On\" is the default observers with spans through an "
             "OpenTelemetry SDK (batch processor and an exporter that takes every span), Prometheus metrics, "
             "progress and warnings; \"off\" is no observer at all. Two measures of the same cost: the time "
             "spent inside telemetry code (every hook timed) as a share of wall time, and the wall-time ratio "
             f"of on to off, the median of {data['repeat']} repeats that each run on, off and a second, "
             "identical off executor back to back, the order rotating. That second one is an A/A control: "
             "two executors without telemetry differ by several percent on this machine, so a wall ratio "
             "cannot resolve an overhead smaller than the A/A differences. The target holds when the time "
             "inside telemetry is at most 3% of wall time; the wall ratio fails it only beyond 3% plus the "
             "largest A/A difference of the run, so it catches gross regressions, not percents.",
             "", "| strategy | on (s) | off (s) | inside telemetry | wall overhead | A/A (off again / off) "
             "| range of on/off pairs |", "|---|---|---|---|---|---|---|"]
    for strategy, v in data["big"].items():
        control = f"{v['a_a']:+.2%} (pairs {min(v['a_a_ratios']) - 1:+.1%} to {max(v['a_a_ratios']) - 1:+.1%})"
        spread = f"{min(v['ratios']) - 1:+.1%} to {max(v['ratios']) - 1:+.1%}"
        lines.append(f"| {strategy} | {v['on']:.3f} | {v['off']:.3f} | {v['inside_telemetry']:.2%} "
                     f"| {v['overhead']:+.2%} | {control} | {spread} |")
    one = data["one_item"]
    lines += ["", f"A 1-item map: {one['off_us']:.0f} us without observers, {one['on_us']:.0f} us with them: "
              f"telemetry adds {one['added_us']:.0f} us (median of {one['calls']:,} calls, the three "
              "executors taking turns call by call)."]
    if "defaults_us" in one:
        lines.append(f"With the default observers and no OpenTelemetry SDK installed (the common case) it adds "
                     f"{one['defaults_us'] - one['off_us']:.0f} us.")
    lines += ["", "Targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in data["targets"].items()),
              ""]
    return lines


def dask_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Dask LocalCluster against local processes", "", "```bash", "python benchmarks/bench_dask.py",
             "```", "", f"400 items of ~5 ms; plain loop {data['loop_seconds']:.3f} s.", "",
             "| strategy | wall (s) | vs loop | per-task overhead | chunks | queue wait p50 |",
             "|---|---|---|---|---|---|"]
    for strategy in ("processes", "dask"):
        r = data[strategy]
        lines.append(f"| {strategy} | {r['wall_seconds']:.3f} | {data['loop_seconds'] / r['wall_seconds']:.2f}x | "
                     f"{r['per_task_overhead_us']:.0f} us | {r['chunks']} | {r['queue_wait_p50_ms']:.1f} ms |")
    return [*lines, ""]


def uneven_section(data: dict[str, Any]) -> list[str]:
    columns = ["payoff auto", "payoff processes", "ProcessPoolExecutor chunked", "joblib processes"]
    lines = ["## Uneven item costs", "", "```bash", f"python benchmarks/bench_uneven.py --repeat {data['repeat']}",
             "```", "", f"Median of {data['repeat']} calls on {data['workers']} workers; each cell is the speedup "
             "over the plain loop of the same run (higher is better; the limit is the worker count). auto's "
             "MapRecord.speedup: what auto's own records reported, and how far that is from the measured "
             "speedup. Pieces: chunks that ran past their time budget and handed back the items they had not started "
             "(median per call).", "",
             "| shape | loop (s) | " + " | ".join(columns) + " | auto's MapRecord.speedup | pieces (auto) |",
             "|---|---|" + "---|" * len(columns) + "---|---|"]
    for shape, r in data["shapes"].items():
        cells = " | ".join(f"{r['vs_loop'][c]:.2f}x" for c in columns)
        measured, reported = r["vs_loop"]["payoff auto"], r["reported"]["payoff auto"]
        lines.append(f"| {shape} | {r['seconds']['loop']:.3f} | {cells} | {reported:.2f}x "
                     f"({reported / measured - 1:+.1%}) | {r['pieces']['payoff auto']:.0f} |")
    return [*lines, ""]


def waiting_threads_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Waiting items on many threads: the estimate without the GIL's queue", "", "```bash",
             f"python benchmarks/bench_waiting_threads.py --repeat {data['repeat']}", "```", "",
             f"{data['items']} items of four shapes of waiting work on a warm `threads` executor of each size, and "
             "on `auto` (its calls after the first), each call beside a loop; the median call of "
             f"{data['repeat']} by measured speedup, and how far off the record was on each call. An item's time on "
             "threads is its work and, after each of its waits, its wait for the GIL while the other threads' items "
             "hold it (the item's mean time against the loop's). Python 3.11 has no clock for that wait: a thread "
             "of payoff's own samples it while the call runs, and the record takes it off the loop's estimate "
             "(`MapRecord.gil_priced`; docs/tuning.md). Before, the record summed the items' own times, waits "
             "included: W9 on 32 threads read +37.6% (21.05x measured, 28.97x recorded), auto on 1 ms sleeps "
             "+60-96%, on ten 0.2 ms sleeps +78-91%. The sampler then counted, as waits of each wake-up, those its "
             "own reading of the run queue met after the wake-up's lateness was timed (a file read lets the GIL go): "
             "it read more waits a return than the items met, and counted too few of their returns. The draw "
             "recorded before that was fixed had 25 of its 100 calls over +25% (9.0% off in the median call, 55 "
             "within 10%); this one has " + _offs_said(data) + ". `ThreadPoolExecutor()` is the reference a user "
             "reaches for. One run is one draw of this machine's noise: docs/tuning.md gives a quiet draw and a "
             "noisy one.", "", *_waiting_table(data)]
    short = load("waiting_threads_100_items")
    if short is None:
        return [*lines, ""]
    return [*lines, "", "### Short calls: 100 items", "", "```bash",
            f"python benchmarks/bench_waiting_threads.py --items {short['items']} --repeat {short['repeat']}", "```",
            "", "The same shapes, 100 items a call (20-60 ms on many threads): few of the sampler's wake-ups fall in "
            "such a call, and under 8 of them the record priced the items at their own time, each return's wait for "
            "the GIL included. A short call runs up to 4 sampler threads, from how long its items should keep its "
            "workers busy at their planned cost (`payoff._gil_wait.samplers_for`). Two draws of the code before "
            "(one sampler, the window counted wider than the lateness) had 15 and 12 of their 100 calls over +25% "
            "(8.3% and 8.1% off in the median call), the 1 ms sleeps on 32 threads +173% to +325% in 4 of 5 calls; "
            "this draw has " + _offs_said(short) + ". Items of many short waits on 32 threads stay the weak case "
            "(auto runs them on fewer).", "", *_waiting_table(short), ""]


def _waiting_table(data: dict[str, Any]) -> list[str]:
    lines = ["| shape | threads | item's mean time | loop's item | measured speedup | MapRecord.speedup | "
             "estimate off | each call | ThreadPoolExecutor() |", "|---|---|---|---|---|---|---|---|---|"]
    for shape, rows in data["shapes"].items():
        for name, r in rows.items():
            threads = f"auto ({r['threads']})" if name == "auto" else name
            spread = f"{min(r['off']):+.0%} to {max(r['off']):+.0%}"
            lines.append(f"| {shape} | {threads} | {r['item_ms']:.3f} ms | {r['loop_item_ms']:.3f} ms | "
                         f"{r['measured']:.2f}x | {r['reported']:.2f}x | {r['reported'] / r['measured'] - 1:+.1%} | "
                         f"{spread} | {r['peer']:.2f}x |")
    return lines


def _offs_said(data: dict[str, Any]) -> str:
    """How far off the draw's records were, over every call of every row."""
    offs = [off for rows in data["shapes"].values() for r in rows.values() for off in r["off"]]
    return (f"{sum(o > 0.25 for o in offs)} of its {len(offs)} calls over +25% and {sum(o < -0.25 for o in offs)} "
            f"under -25% ({statistics.median(abs(o) for o in offs):.1%} off in the median call, "
            f"{sum(abs(o) <= 0.1 for o in offs)} within 10%)")


def ce_section(data: dict[str, Any]) -> list[str]:
    command = data.get("command") or f"python benchmarks/bench_ce.py --repeat {data['repeat']}"
    lines = ["## calibrated-explanations 1.0.2", "", "```bash", command, "```", "", data["markdown"], "",
             "![calibrated-explanations](img/ce.png)", ""]
    sizes = data.get("sizes") or [data]  # results before bench_ce ran each configuration in a fresh interpreter
    plot_ce(sizes)
    return lines


def plot_ce(sizes: list[dict[str, Any]]) -> None:
    """Every round of every configuration as a dot, the median as a bar: the noise is part of the result."""
    fig, axes = plt.subplots(1, len(sizes), figsize=(10 * len(sizes) / 1.6, 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        rows: dict[str, dict[str, Any]] = size["rows"]
        names = list(rows)
        ax.barh(range(len(names)), [rows[n]["median_seconds"] for n in names], color="#9ab", label="median")
        for i, name in enumerate(names):
            ax.plot(rows[name]["walls"], [i] * len(rows[name]["walls"]), "k.", label="one round" if i == 0 else None)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [""] * len(names))
        ax.invert_yaxis()
        ax.set_xlabel(f"seconds per explain_factual of {size['instances']:,} x {size['features']} (lower is better)")
        ax.legend(fontsize=8)
    fig.suptitle("calibrated-explanations 1.0.2 on 2 cores: its own paths and payoff")
    fig.tight_layout()
    fig.savefig(IMG / "ce.png", dpi=110)
    plt.close(fig)


def explain_section(data: dict[str, Any]) -> list[str]:
    return ["## Explain helpers on the demo workload (auto vs serial)", "", "```bash",
            "python benchmarks/bench_explain.py", "```", "",
            f"Median of {data['repeat']} warm calls; serial is the same axis on `strategy=\"serial\"`. Bytes sent "
            "are those of a warm call: the shared problem went to each worker once, on the first call.", "",
            data["markdown"], ""]


MEMORY_ROWS = {
    "loop": "`for x in gen: f(x)`",
    "imap auto": "`ParallelExecutor().imap(f, gen)`",
    "imap processes": "`imap`, `strategy=\"processes\"`, `tiny_workload_threshold=0`, `chunksize=10_000`",
    "imap threads": "`imap`, `strategy=\"threads\"`, `tiny_workload_threshold=0`, `chunksize=10_000`",
    "map auto": "`ParallelExecutor().map(f, gen)` (contrast)",
}


def memory_section(data: dict[str, Any]) -> list[str]:
    rows: dict[str, dict[str, Any]] = data["rows"]
    mib = 1024.0
    lines = ["## Memory: imap over a generator", "", "```bash",
             "python benchmarks/bench_memory.py" + (" --quick" if data.get("quick") else ""), "```", "",
             f"{data['items']:,} items of `(i for i in range(N))` through `f(x) = x + 1`, results summed as "
             "they come. Peak RSS is `ru_maxrss` of a fresh interpreter per run (payoff imported first in every "
             "row, so the post-import baseline is the same), the median of "
             f"{data['repeat']} runs per row, rows taking turns; Python {data['machine']['python']}, "
             f"{data['machine']['cpus']} CPUs. Process workers are not in the caller's `ru_maxrss`: their own "
             "peaks (`VmHWM`, which counts the caller's pages a forked worker touched) are in a column of their "
             "own. \"Kept chunk stats\" is about what the call's record holds per chunk (`ChunkStats`), which "
             "stays with the executor's records after the call.", "",
             "| row | what runs | peak RSS (MiB) | over baseline (MiB) | vs loop | kept chunk stats (MiB) "
             "| chunks x size | process workers' peak, largest / sum (MiB) | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        stats = f"{r['record_kib'] / mib:.1f}" if "record_kib" in r else "-"
        chunks = f"{r['chunks']:,} x {r['chunk_size']:,} ({r['strategy']})" if "chunks" in r else "-"
        workers = (f"{r['workers_peak_kib'] / mib:.1f} / {r['workers_peak_sum_kib'] / mib:.1f}"
                   if "workers_peak_kib" in r else "-")
        lines.append(f"| {name} | {MEMORY_ROWS.get(name, name)} | {r['peak_kib'] / mib:.1f} "
                     f"| {r['increase_kib'] / mib:.1f} | {r['ratio_to_loop']:.2f}x | {stats} | {chunks} "
                     f"| {workers} | {r['seconds']:.2f} |")
    target = data["target_ratio"]
    lines += ["", f"Target: every imap row's peak RSS at most {target:g}x the loop's.", ""]
    for name, verdict in data["targets"].items():
        lines.append(f"- {name}: {'met' if verdict['ok'] else 'MISSED'} ({verdict['ratio_to_loop']:.2f}x)")
    if "map auto" in rows:
        lines.append(f"- map auto (contrast, no target): {rows['map auto']['ratio_to_loop']:.2f}x; `map` returns "
                     "a list and reads its whole input first")
    streamed = [r for name, r in rows.items() if name.startswith("imap") and "record_kib" in r]
    if streamed:
        per_chunk = statistics.median(r["record_kib"] * 1024 / r["chunks"] for r in streamed)
        items_per_chunk = statistics.median(data["items"] / r["chunks"] for r in streamed)
        lines += ["", f"What imap adds over the loop is mostly the record: about {per_chunk:,.0f} bytes of "
                  f"`ChunkStats` per chunk (a chunk per ~{items_per_chunk:,.0f} items here), kept for the whole "
                  f"call and then with the executor's records. A record keeps at most {FOLD_AT:,} of them: past "
                  "that, its older half folds in pairs (sums exact, timing blocks coarser), so an endless stream's "
                  "record stays under about 1.5 MB (it grew 0.2-0.6 MB a second of a busy stream before)."]
    small = [name for name, r in rows.items() if name.startswith("imap") and r.get("strategy") != "serial"
             and r.get("chunk_size", 0) < data["pool_chunksize"]]
    if small:
        lines.append(f"The {' and '.join(small)} rows asked for `chunksize={data['pool_chunksize']:_}` and ran "
                     "smaller chunks: on an iterator input the planner caps the chunk size at the items it has "
                     "read ahead.")
    return [*lines, ""]


def _shape_cells(row: dict[str, Any]) -> str:
    loop, ours, reported = row["builtin_seconds"], row["payoff_seconds"], row.get("reported_speedup")
    return (f"{loop * 1e3:.2f} | {ours * 1e3:.2f} | {ours / loop:.2f}x | {loop / ours:.2f}x | "
            f"{'-' if reported is None else f'{reported:.2f}x'}")


def call_shapes_section(data: dict[str, Any]) -> list[str]:
    args = "" if data["items"] == 200_000 else f" --items {data['items']}"
    lines = ["## Call shapes: payoff's own path on trivial items", "", "```bash",
             f"python benchmarks/bench_call_shapes.py{args}", "```", "",
             f"{data['items']:,} items of `abs` (or `operator.add`), so `auto` stays serial and each row measures "
             "what payoff adds to the builtin it stands in for: the probe, the record and its observers, and the "
             "shape's own machinery. Each cell is the lowest of "
             f"{data['repeat']} runs, the two columns taking turns; Python {data['python']}.", "",
             "| shape | builtin (ms) | payoff auto (ms) | payoff / builtin | speedup measured | "
             "speedup payoff reported | auto ran |", "|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        lines.append(f"| {row['shape']} | {_shape_cells(row)} | {row['ran']} |")
    by_cost = data.get("imap_by_cost", [])
    if by_cost:
        lines += ["", "A serial `imap` by item cost (pure Python items; `strategy=\"serial\"`, results consumed "
                  "as they come):", "", "| items | builtin (ms) | payoff imap (ms) | payoff / builtin | "
                  "speedup measured | speedup payoff reported |", "|---|---|---|---|---|---|"]
        for row in by_cost:
            lines.append(f"| {row['items']:,} of {row['item']} | {_shape_cells(row)} |")
    lines += ["", "A serial `imap`'s estimate of a loop is its items' timed work plus its consumer's time, read "
              "around the timed items' results with payoff's own handing of each result left out (it read about "
              "1x before, 0.96x on `abs` for a measured 0.26x, its consumer's time holding that handing); items "
              "cheaper than the handing still read higher than measured. The measured column is the comparison "
              "with the builtin.",
              "", "An `imap` hands out each result as it is asked for, through generators (the caller's, the "
              "call's, its block's: 0.1-0.3 us an item), and a serial one times the first item of each block of "
              "about 64 us of work alone and runs the rest through `map` untimed (items of 8 us or more are each "
              "timed). Before, every item was timed: 12x the builtin on trivial items, 1.7x on 1 us items.", ""]
    return lines + _small_calls_lines(data.get("small_calls", [])) + _cold_calls_lines(data.get("cold_calls", []))


def _small_calls_lines(rows: list[dict[str, Any]]) -> list[str]:
    """What a call costs beyond its items, where many small calls meet it."""
    if not rows:
        return []
    lines = ["Many small calls: one warm `auto` executor, calls of pure Python items of ~20 us against the builtin "
             "`map` over the same items (the lowest of the runs, taking turns):", "",
             "| calls | builtin (ms) | payoff auto (ms) | payoff / builtin | payoff's time over the builtin's, "
             "a call | planning (last call's record) | speedup payoff reported | auto ran |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        loop, ours = row["builtin_seconds"], row["payoff_seconds"]
        lines.append(f"| {row['calls']} x {row['items']} items | {loop * 1e3:.1f} | {ours * 1e3:.1f} | "
                     f"{ours / loop:.2f}x | {row['per_call_us']:.0f} us | {row['planning_us']:.0f} us | "
                     f"{row['reported_speedup']:.2f}x | {row['ran']} |")
    return [*lines, "", "Each call carries a cost of its own besides its items: the plan, the record and its "
            "observers (metrics, span, warnings) and what the planner learns from it. On calls of well under "
            "a millisecond of work it is as large as the work, which no choice of strategy can win back: give "
            "each call more items (one call over all of them, or `imap` over a stream), not more calls. A call of "
            "about 10 ms of work gains on warm worker processes only what those workers keep of a loop's pace: on "
            "this machine two workers' identical 250-item chunks took 4.0 and 7.2 ms (10.9 ms of CPU against 9.4 "
            "ms in the loop), so the call tied the loop while its record, which prices the items at their time in "
            "the workers, read more.", ""]


def _cold_calls_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One call's cost by what ran before it: why calls of a few ms pay more than the table above says."""
    if not rows:
        return []
    betweens = list(dict.fromkeys(r["between"] for r in rows))
    subjects = list(dict.fromkeys(r["subject"] for r in rows))
    cell = {(r["between"], r["subject"]): r["median_us"] for r in rows}
    lines = ["One call by what ran before it (the median of 150 calls, each timed alone, the pause not timed):", "",
             "| call | " + " | ".join(betweens) + " | after 5 ms of work / back to back |",
             "|---|" + "---|" * (len(betweens) + 1)]
    for subject in subjects:
        times = [cell[(b, subject)] for b in betweens]
        lines.append(f"| {subject} | " + " | ".join(f"{t:.0f} us" for t in times) + f" | {times[1] / times[0]:.1f}x |")
    return [*lines, "", "On this machine any code run after a pause of a few milliseconds, of work or of sleep, runs "
            "several times slower than the same code run back to back: the stdlib snippet, none of it payoff's, "
            "and even the builtin `map` of 100 items. A loop's items run hot, each like the one before; a call's "
            "plan, record and observers run once per call, so calls spaced out by their own items' work always "
            "meet them cold. That is the per-call cost calls of ~5 ms of work pay (the matrix's W6, 200 calls of "
            "100 items of 50 us: 12-20% of each call on serial, more on auto, whose plan runs more code): the "
            "matrix's 1.05x-the-loop target for W6 asks for at most ~0.3 ms a call, and payoff's cold call costs "
            "about three times that here. Fewer, larger calls are the way around it.", ""]


def main() -> int:
    IMG.mkdir(parents=True, exist_ok=True)
    lines = ["# Benchmarks", "",
             "<!-- Generated by `python benchmarks/report.py` from benchmarks/results/*.json; do not edit. -->",
             "", "All numbers were measured on the project's 2-core machine; speed goals are ratios within one "
             "run, so a slower or busier machine shifts every column together.", ""]
    sections = (("executor_matrix", matrix_section), ("threads_breakdown", threads_breakdown_section),
                ("uneven", uneven_section),
                ("waiting_threads", waiting_threads_section), ("telemetry", telemetry_section),
                ("ce", ce_section),
                ("explain", explain_section), ("dask", dask_section), ("memory", memory_section),
                ("call_shapes", call_shapes_section))
    for name, render in sections:
        data = load(name)
        if data is None:
            lines += [f"## {name}", "", f"(no results yet: run the `{name}` benchmark)", ""]
            continue
        lines += render(data)
    (DOCS / "benchmarks.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
