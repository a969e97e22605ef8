"""calibrated-explanations 1.0.2: explain_factual on payoff against CE's own paths, each run in a fresh interpreter.

The workload: a random forest of 100 trees fitted on 2,000 rows, 1,000
calibration rows, ``explain_factual`` on 1,000 instances x 10 features and on
2,000 x 20, 2 cores. Configurations:

- CE serial: the default sequential plugin, no executor (what users get).
- CE chunked serial, chunk 200: CE's instance-parallel plugin with its
  ``sequential`` strategy. No parallelism; it shows what chunking alone does.
- CE processes / CE joblib, chunk 200: CE's best built-in parallel settings.
- payoff: ``enable(wrapper)`` with the default configuration (auto).
- payoff, pause_gc=False: the same without pausing the caller's collector.

Why fresh interpreters: CE keeps every explainer's last explanation
(``latest_explanation``), so in one process each configuration's collector
would scan the others' explanations; CE serial measured 4.6 s in a first
round and 6.4 s in later ones that way. Here every run is this script with
``--child``: it builds the data and fits the model (same seeds, so the same
forest), explains ``--warmup`` instances twice (imports, payoff's pool start
and cost learning, and CE's explainer state, which its first explain
completes, so payoff sends it to the workers again once; CE's own pools start
per explain anyway), drops that explanation, collects, and times one explain
of all instances. The first warm-up call's time is kept as the cold start.
``--ballast N`` keeps N small objects alive in every run, as a user's
process would (the collector's cost grows with them). Rounds interleave the
configurations, in a rotating order; every figure is the median of
``--repeat`` rounds, with its range.

Equality: every run hashes what CE computes the same however it splits the
instances (feature weights, perturbed predictions, predictions and
intervals, rule conditions), and no number is written unless every
configuration's hash equals CE serial's.

The time budget (payoff runs): where the wall time goes (CE's work before
``map``, the map, CE's merge of the chunk results, CE's work after), the
workers' compute against CE serial, their idle time at the start and the
tail, the parent's CPU during the map and how much of it is decoding the
results; and the ceiling those figures allow on this machine.

``--codec`` adds a micro-benchmark of one chunk's results (worker: encode
and pickle; parent: unpickle and rebuild, per instance): the compact
columns against what the workers sent before (protocol 5 pickle of the
objects, with the explainer copy of alternative explanations).

    python benchmarks/bench_ce.py --codec            # the full run, ~10 min on 2 cores: results/ce.json
    python benchmarks/bench_ce.py --quick            # 300 x 10, one round, prints only (a smoke run)
    python benchmarks/report.py                      # renders docs/benchmarks.md from results/ce.json
    python benchmarks/bench_ce.py --configs serial,payoff,payoff-no-pause --ballast 2000000 \
        --output benchmarks/results/ce-heap.json    # the collector pause when the process holds a big heap
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CE_CHUNK = 200
SIZES = ((1000, 10), (2000, 20))
QUICK_SIZE = (300, 10)
SERIAL, PAYOFF, PAYOFF_NO_PAUSE = "CE serial (default)", "payoff (enable, auto)", "payoff, pause_gc=False"
CE_ROWS = {"CE chunked serial, chunk 200": "sequential", "CE processes, chunk 200": "processes",
           "CE joblib, chunk 200": "joblib"}
BEST_CE = ("CE processes, chunk 200", "CE joblib, chunk 200")
CONFIGS = (SERIAL, *CE_ROWS, PAYOFF, PAYOFF_NO_PAUSE)
KEYS = dict(zip(("serial", "ce-chunked", "ce-processes", "ce-joblib", "payoff", "payoff-no-pause"), CONFIGS,
                strict=True))
"""Short names for ``--configs``."""
TARGET_VS_SERIAL = {1000: 1.6, 2000: 1.5}
TARGET_VS_BEST_CE = 1.3
CHILD_TIMEOUT = 1800


# -- in the child interpreter ---------------------------------------------------------------


def _data(n_test: int, n_features: int) -> tuple[Any, ...]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=2000 + 1000 + n_test, n_features=n_features,
                               n_informative=max(2, n_features // 2), random_state=0)
    return x[:2000], y[:2000], x[2000:3000], y[2000:3000], x[3000:]


def _wrapper(split: tuple[Any, ...], **calibrate: Any) -> Any:
    from calibrated_explanations import WrapCalibratedExplainer
    from sklearn.ensemble import RandomForestClassifier

    x_train, y_train, x_cal, y_cal, _ = split
    wrapper = WrapCalibratedExplainer(RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1))
    wrapper.fit(x_train, y_train)
    wrapper.calibrate(x_cal, y_cal, **calibrate)
    return wrapper


def _digest(explanations: Any) -> str:
    """A hash of what CE computes the same whichever way it splits the instances."""
    import numpy as np

    h = hashlib.sha256()
    for e in explanations.explanations:
        for attr in ("feature_weights", "feature_predict"):
            for key in ("predict", "low", "high"):
                h.update(np.asarray(getattr(e, attr)[key], dtype=float).tobytes())
        for key, value in e.prediction.items():
            if key != "__full_probabilities__":
                h.update(key.encode() + np.asarray(value, dtype=float).tobytes())
        h.update("\x00".join(map(str, e.conditions)).encode())
    return h.hexdigest()


def _timed_executor(workload_stamps: dict[str, float]) -> Any:
    """A ``CEParallelExecutor`` that stamps its map and CE's exit, and times the parent's decoding.

    Benchmark instrumentation only: a few clock reads per explain.
    """
    import payoff.integrations.calibrated_explanations.executor as module
    from payoff.integrations.calibrated_explanations import CEParallelExecutor

    decode = module.decode_results

    def timed_decode(block: Any) -> list[Any]:
        t = time.thread_time()
        try:
            return decode(block)
        finally:
            workload_stamps["decode_cpu"] = workload_stamps.get("decode_cpu", 0.0) + time.thread_time() - t

    module.decode_results = timed_decode

    class Timed(CEParallelExecutor):
        def map(self, fn: Callable[[Any], Any], items: Any, **kwargs: Any) -> list[Any]:
            s = workload_stamps
            s.setdefault("map_start", time.perf_counter())
            s.setdefault("map_start_ns", time.monotonic_ns())
            cpu = time.process_time()
            try:
                return super().map(fn, items, **kwargs)
            finally:
                s["map_cpu"] = s.get("map_cpu", 0.0) + time.process_time() - cpu
                s["map_end"], s["map_end_ns"] = time.perf_counter(), time.monotonic_ns()

        def __exit__(self, *exc: Any) -> None:
            workload_stamps.setdefault("exit", time.perf_counter())  # the first exit: CE's, after its merge
            super().__exit__(*exc)

    return Timed


def _setup(name: str, split: tuple[Any, ...], stamps: dict[str, float]) -> tuple[Any, Any]:
    """(calibrated wrapper, payoff executor or None) for configuration ``name``."""
    from calibrated_explanations.parallel import ParallelConfig as CEConfig
    from calibrated_explanations.parallel import ParallelExecutor as CEExecutor

    from payoff.integrations.calibrated_explanations import ALTERNATIVE_PLUGIN, FACTUAL_PLUGIN, enable

    if name == SERIAL:
        return _wrapper(split), None
    if name in CE_ROWS:
        ce = CEExecutor(CEConfig(enabled=True, strategy=CE_ROWS[name], max_workers=os.cpu_count() or 2,
                                 instance_chunk_size=CE_CHUNK, min_instances_for_parallel=1))
        return _wrapper(split, perf_parallel=ce, factual_plugin=FACTUAL_PLUGIN,
                        alternative_plugin=ALTERNATIVE_PLUGIN), None
    wrapper = _wrapper(split)
    executor = enable(wrapper, executor=_timed_executor(stamps)(), pause_gc=name != PAYOFF_NO_PAUSE)
    return wrapper, executor


def _forget_latest(wrapper: Any) -> None:
    """CE keeps the last explanation on the wrapper and its explainer: drop it before timing."""
    for holder in (wrapper, getattr(wrapper, "explainer", None)):
        if holder is not None and hasattr(holder, "latest_explanation"):
            holder.latest_explanation = None


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration at one size in this interpreter: warm up, then one timed explain."""
    warnings.simplefilter("ignore")  # CE's deprecation chatter; payoff's records carry its fallbacks
    ballast = [(i, str(i)) for i in range(spec["ballast"])]  # a user's heap, which the collector scans
    split = _data(spec["instances"], spec["features"])
    x_test = split[-1]
    stamps: dict[str, float] = {}
    wrapper, executor = _setup(spec["config"], split, stamps)
    warmups = []
    for _ in range(2):  # CE completes its explainer's state in the first explain: payoff re-sends it once
        t0 = time.perf_counter()
        wrapper.explain_factual(x_test[:spec["warmup"]])
        warmups.append(time.perf_counter() - t0)
    _forget_latest(wrapper)
    gc.collect()
    stamps.clear()
    cpu, t0 = time.process_time(), time.perf_counter()
    out = wrapper.explain_factual(x_test)
    t_end = time.perf_counter()
    result: dict[str, Any] = {"config": spec["config"], "wall": t_end - t0, "parent_cpu": time.process_time() - cpu,
                              "first_call_seconds": warmups[0], "digest": _digest(out), "n": len(out.explanations),
                              "ballast": len(ballast)}
    if executor is not None:
        result["budget"] = _budget(executor, stamps, t0, t_end)
        executor.close()
    return result


def _budget(executor: Any, s: dict[str, float], t0: float, t_end: float) -> dict[str, Any]:
    """Where a payoff explain's wall time went, from the stamps and the map's record."""
    record = executor.last_record
    chunks = [c for c in record.chunks if c.where == "pool"]
    workers: dict[str, list[Any]] = {}
    for c in chunks:
        workers.setdefault(c.worker, []).append(c)
    busy = sum(c.busy_seconds for c in chunks)
    map_wall = s["map_end"] - s["map_start"]
    start_idle = sum(min(c.start_ns for c in cs) - s["map_start_ns"] for cs in workers.values()) / 1e9
    tail_idle = sum(s["map_end_ns"] - max(c.end_ns for c in cs) for cs in workers.values()) / 1e9
    return {
        "before_map": s["map_start"] - t0, "map": map_wall, "merge": s["exit"] - s["map_end"],
        "after": t_end - s["exit"], "parent_cpu_map": s["map_cpu"], "decode_cpu": s.get("decode_cpu", 0.0),
        "workers": record.workers, "worker_busy": busy, "worker_cpu": sum(c.cpu_seconds for c in chunks),
        "start_idle": start_idle, "tail_idle": tail_idle,
        "gaps": max(0.0, record.workers * map_wall - busy - start_idle - tail_idle),
        "chunks": record.n_chunks, "chunk_sizes": list(executor.last_chunk_sizes),
        "decision": executor.last_decision, "strategy": record.selected_strategy,
        "bytes_sent": record.bytes_sent, "bytes_received": record.bytes_received,
        "utilization": record.utilization, "speedup_record": record.speedup,
    }


def codec_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One chunk's results, worker and parent side, before (plain pickle) and after (compact columns)."""
    warnings.simplefilter("ignore")
    split = _data(spec["instances"], spec["features"])
    wrapper = _wrapper(split)
    out: dict[str, Any] = {"chunk": spec["chunk"]}
    for call in ("explain_factual", "explore_alternatives"):
        result = _one_chunk_result(wrapper, call, split[-1][:spec["chunk"]])
        out[call] = _codec_timings(pickle.dumps(result, protocol=4), spec["chunk"], spec["reps"])
    return out


def _one_chunk_result(wrapper: Any, call: str, x: Any) -> Any:
    """What CE's task function returns in a worker for instances ``x`` (one task, as payoff sends it)."""
    from payoff import ParallelConfig
    from payoff.integrations.calibrated_explanations import CEParallelExecutor, enable
    from payoff.integrations.calibrated_explanations.tasks import merge_tasks, shared_explainer

    captured: list[Any] = []

    class Capture(CEParallelExecutor):
        def _map_tasks(self, fn: Any, tasks: Any) -> list[Any]:
            captured.append((fn, tasks))
            return super()._map_tasks(fn, tasks)

    ex = Capture(ParallelConfig(strategy="serial", tiny_workload_threshold=0.0))
    enable(wrapper, executor=ex)
    ex.user_config = ex.user_config.with_changes(enabled=True)  # CE maps; payoff runs it in this process
    getattr(wrapper, call)(x)
    fn, tasks = captured[-1]
    start, stop, state = merge_tasks(tasks) or tasks[0]
    return fn((start, stop, {**state, "explainer": shared_explainer(tasks)}))


def _codec_timings(blob: bytes, n: int, reps: int) -> dict[str, Any]:
    """Medians per instance over ``reps`` fresh copies, the two paths taking turns."""
    from payoff.integrations.calibrated_explanations import worker

    def old_lighten(result: Any) -> Any:  # what the workers did before: the chunk's explainer copy only
        result[1].calibrated_explainer = None
        return result

    times: dict[str, list[float]] = {k: [] for k in ("worker_before", "worker_after", "parent_before",
                                                      "parent_after")}
    sizes = {}
    for _ in range(reps):
        before, after = pickle.loads(blob), pickle.loads(blob)
        gc.disable()  # both sides ran with the collector paused
        t = time.perf_counter()
        sent_before = pickle.dumps([old_lighten(before)], protocol=5)
        t1 = time.perf_counter()
        sent_after = pickle.dumps([worker._compact(worker._lighten(after))], protocol=worker.RESULT_PROTOCOL)
        t2 = time.perf_counter()
        pickle.loads(sent_before)
        t3 = time.perf_counter()
        worker.decode_results(worker._Encoded(sent_after))
        t4 = time.perf_counter()
        gc.enable()
        for key, seconds in zip(times, (t1 - t, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[key].append(seconds / n * 1e6)
        sizes = {"bytes_before": len(sent_before) / n, "bytes_after": len(sent_after) / n}
    return {**{f"{k}_us": statistics.median(v) for k, v in times.items()},
            **{f"{k}_range_us": [min(v), max(v)] for k, v in times.items()}, **sizes}


# -- in the parent ------------------------------------------------------------------------------


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          check=False, timeout=CHILD_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(n: int, features: int, args: argparse.Namespace, configs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every configuration once per round, fresh interpreters, the order rotating from round to round."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for r in range(args.repeat):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for name in order:
            spec = {"config": name, "instances": n, "features": features, "warmup": min(args.warmup, n),
                    "ballast": args.ballast}
            runs[name].append(run_child(spec))
        print(f"{n}x{features} round {r + 1}/{args.repeat}: "
              + ", ".join(f"{k} {v[-1]['wall']:.2f}s" for k, v in runs.items()), flush=True)
    return runs


def _median_range(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(n: int, features: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    reference = {r["digest"] for r in runs[SERIAL]}
    rows: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        walls = [r["wall"] for r in rs]
        rows[name] = {"walls": walls, "median_seconds": statistics.median(walls), "best_seconds": min(walls),
                      "worst_seconds": max(walls), "parent_cpu": _median_range([r["parent_cpu"] for r in rs]),
                      "first_call_seconds": statistics.median(r["first_call_seconds"] for r in rs),
                      "equal_to_serial": len(reference) == 1 and all(r["digest"] in reference for r in rs)}
        if name in CE_ROWS:
            rows[name].update(tasks=-(-n // CE_CHUNK))
        if "budget" in rs[0]:
            rows[name]["budget"] = _budget_summary([r["budget"] for r in rs])
    serial = rows[SERIAL]["median_seconds"]
    for row in rows.values():
        row["vs_serial"] = serial / row["median_seconds"]
        row["vs_serial_range"] = [serial / row["worst_seconds"], serial / row["best_seconds"]]
    return {"instances": n, "features": features, "rows": rows, "summary": _targets(n, rows),
            "ceiling": _ceiling(rows) if PAYOFF in rows else None}


def _budget_summary(budgets: list[dict[str, Any]]) -> dict[str, Any]:
    numeric = [k for k, v in budgets[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    out: dict[str, Any] = {k: _median_range([b[k] for b in budgets]) for k in numeric}
    for k in ("chunk_sizes", "decision", "strategy"):
        out[k] = budgets[-1][k]
    return out


def _targets(n: int, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if PAYOFF not in rows:
        return {}
    payoff = rows[PAYOFF]["median_seconds"]
    out: dict[str, Any] = {"vs_serial": rows[SERIAL]["median_seconds"] / payoff,
                           "target_vs_serial": TARGET_VS_SERIAL.get(n)}
    best = [rows[k]["median_seconds"] for k in BEST_CE if k in rows]
    if best:
        out.update(vs_best_ce_parallel=min(best) / payoff, target_vs_best_ce_parallel=TARGET_VS_BEST_CE)
    return out


def _ceiling(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    """What the measured parts allow: the parent's serial parts plus the workers' compute spread evenly.

    ``with_this_compute`` keeps the workers' measured compute (above serial's: two processes
    share the memory bus and the caches, and CE's per-chunk fixed costs); ``at_serial_speed``
    assumes they computed at CE serial's speed.
    """
    serial = rows[SERIAL]["median_seconds"]
    b = {k: v["median"] for k, v in rows[PAYOFF]["budget"].items() if isinstance(v, dict)}
    in_parent = b["before_map"] + b["merge"] + b["after"]
    return {"in_parent_seconds": in_parent, "worker_compute_vs_serial": b["worker_busy"] / serial,
            "with_this_compute": serial / (in_parent + b["worker_busy"] / b["workers"]),
            "at_serial_speed": serial / (in_parent + serial / b["workers"])}


# -- reporting --------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Random forest of 100 trees, 1,000 calibration rows, `explain_factual`, "
             f"{result['machine']['cpus']} cores, calibrated-explanations {result['ce_version']}. Every run is a "
             f"fresh interpreter that explains {result['warmup']} instances twice to warm up, then times one explain; "
             f"median "
             f"of {result['repeat']} interleaved round{'s' if result['repeat'] > 1 else ''}, ranges as min-max."
             + (f" Each run kept {result['ballast']:,} small objects alive." if result["ballast"] else ""), ""]
    for size in result["sizes"]:
        lines += _size_markdown(size)
    if result.get("codec"):
        lines += _codec_markdown(result["codec"])
    return "\n".join(lines)


def _size_markdown(size: dict[str, Any]) -> list[str]:
    rows, s = size["rows"], size["summary"]
    lines = [f"**{size['instances']:,} instances x {size['features']} features**", "",
             "| configuration | median (s) | range (s) | vs CE serial | parent CPU (s) | tasks | same as serial |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        tasks = row.get("tasks") or row.get("budget", {}).get("chunks", {}).get("median", 1)
        lines.append(f"| {name} | {row['median_seconds']:.2f} | {row['best_seconds']:.2f}-{row['worst_seconds']:.2f}"
                     f" | {row['vs_serial']:.2f}x ({row['vs_serial_range'][0]:.2f}-{row['vs_serial_range'][1]:.2f})"
                     f" | {row['parent_cpu']['median']:.2f} | {tasks:g} | "
                     f"{'reference' if name == SERIAL else row['equal_to_serial']} |")
    if s:
        target = f" (target {s['target_vs_serial']}x)" if s["target_vs_serial"] else ""
        lines += ["", f"payoff: **{s['vs_serial']:.2f}x** CE serial{target}"
                  + (f", **{s['vs_best_ce_parallel']:.2f}x** CE's best built-in parallel configuration "
                     f"(target {s['target_vs_best_ce_parallel']}x)" if "vs_best_ce_parallel" in s else "") + "."]
    if size.get("ceiling"):
        lines += ["", *_budget_markdown(rows[PAYOFF]["budget"], size["ceiling"], rows[SERIAL]["median_seconds"])]
    return [*lines, ""]


def _budget_markdown(b: dict[str, Any], ceiling: dict[str, float], serial: float) -> list[str]:
    def m(key: str) -> str:
        return f"{b[key]['median']:.3f}"

    return [
        "| payoff's time budget (median s) | |", "|---|---|",
        f"| CE before `map` (tasks, calibration), in the parent | {m('before_map')} |",
        f"| `map` wall | {m('map')} |",
        f"| - workers' compute, summed ({b['workers']['median']:g} workers) | {m('worker_busy')} "
        f"({ceiling['worker_compute_vs_serial']:.2f}x CE serial's {serial:.3f}) |",
        f"| - workers idle at the start / at the tail / between tasks, summed | {m('start_idle')} / "
        f"{m('tail_idle')} / {m('gaps')} |",
        f"| - parent CPU during `map` (of which decoding results) | {m('parent_cpu_map')} ({m('decode_cpu')}) |",
        f"| CE's merge of the chunk results | {m('merge')} |",
        f"| CE after the merge (its result object) | {m('after')} |",
        "", f"Tasks: {b['decision']}. Ceiling on this machine: **{ceiling['with_this_compute']:.2f}x** CE serial "
        f"with this worker compute and nothing idle; **{ceiling['at_serial_speed']:.2f}x** if the workers also "
        f"computed at CE serial's speed ({ceiling['in_parent_seconds']:.3f} s stays in the parent).",
    ]


def _codec_markdown(codec: dict[str, Any]) -> list[str]:
    lines = [f"**One chunk's results** ({codec['chunk']} instances x {codec['features']} features), per instance, "
             "median of fresh copies: the objects pickled as before (protocol 5; alternative explanations also "
             "carried a copy of the explainer) against the compact columns.", "",
             "| call | worker: pickle before | worker: encode + pickle | parent: unpickle before | "
             "parent: unpickle + rebuild | bytes before | bytes after |", "|---|---|---|---|---|---|---|"]
    for call in ("explain_factual", "explore_alternatives"):
        c = codec[call]
        lines.append(f"| `{call}` | {c['worker_before_us']:.0f} us | {c['worker_after_us']:.0f} us | "
                     f"{c['parent_before_us']:.0f} us | {c['parent_after_us']:.0f} us | "
                     f"{c['bytes_before']:,.0f} | {c['bytes_after']:,.0f} |")
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 x 10, one round, nothing written")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--sizes", default=None, help="e.g. 1000x10,2000x20 (the default)")
    parser.add_argument("--configs", default=None, help="comma-separated subset of: " + ",".join(KEYS))
    parser.add_argument("--warmup", type=int, default=100, help="instances explained twice before timing")
    parser.add_argument("--ballast", type=int, default=0, help="small objects every run keeps alive")
    parser.add_argument("--codec", action="store_true", help="also the one-chunk codec micro-benchmark")
    parser.add_argument("--output", default=None, help="default results/ce.json; --quick writes only if given")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(codec_child(spec) if spec.get("codec") else child(spec)))
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    args.repeat = args.repeat or (1 if args.quick else 3)
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")] if args.sizes else (
        [QUICK_SIZE] if args.quick else list(SIZES))
    keys = args.configs.split(",") if args.configs else list(KEYS)
    if "serial" not in keys or not set(keys) <= set(KEYS):
        raise SystemExit(f"--configs must include serial and name only: {','.join(KEYS)}")
    configs = [KEYS[k] for k in keys]
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "ce_version": version("calibrated-explanations"), "repeat": args.repeat, "warmup": args.warmup,
        "ballast": args.ballast, "quick": args.quick, "fresh_interpreters": True, "command": _command(args),
        "sizes": [summarize(n, f, measure(n, f, args, configs)) for n, f in sizes],
    }
    if args.codec:
        n, f = sizes[-1]
        chunk = min(n, 250 if n <= 1000 else 500)
        result["codec"] = {"features": f, **run_child({"codec": True, "instances": n, "features": f,
                                                       "chunk": chunk, "reps": 3 if args.quick else 7})}
    result["markdown"] = markdown(result)
    print(result["markdown"])
    unequal = [(s["instances"], k) for s in result["sizes"] for k, r in s["rows"].items() if not r["equal_to_serial"]]
    if unequal:
        print(f"explanations differ from CE serial's: {unequal}; no numbers written", file=sys.stderr)
        return 1
    output = args.output or (None if args.quick else str(RESULTS / "ce.json"))
    if output:
        Path(output).parent.mkdir(exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: {output}")
    return 0


def _command(args: argparse.Namespace) -> str:
    parts = ["python benchmarks/bench_ce.py"]
    for flag in ("quick", "codec"):
        if getattr(args, flag):
            parts.append(f"--{flag}")
    for flag, default in (("repeat", 1 if args.quick else 3), ("sizes", None), ("configs", None),
                          ("warmup", 100), ("ballast", 0)):
        value = getattr(args, flag)
        if value is not None and value != default:
            parts.append(f"--{flag} {value}")
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
