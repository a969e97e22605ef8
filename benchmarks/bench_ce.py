"""calibrated-explanations 1.0.2: explain_factual on payoff against CE's own paths, side by side in one run.

The workload of issue 5: a random forest of 100 trees, 1,000 calibration rows,
``explain_factual`` on 2,000 instances x 20 features, 2 cores. Columns:

- CE serial: the default sequential plugin, no executor (what users get).
- CE chunked serial: CE's instance-parallel plugin with its ``sequential``
  strategy and chunk 200. No parallelism at all; it shows how much of any
  "parallel" gain comes from chunking alone (CE's serial path grows faster
  than linearly with the number of instances).
- CE processes / CE joblib, chunk 200: CE's best built-in parallel settings.
- payoff: ``enable(wrapper)`` with the default configuration (auto). The
  first explain starts the pool and learns the cost; later ones reuse both.

Every configuration explains the same rows, in rounds (each round runs
every configuration once, in turn); their explanations are checked equal to
CE serial's (feature weights and intervals) before any number is written.
Bytes per task: payoff's are measured by payoff; CE's are the pickled size
of one of its tasks (its explainer rides in every task).

    python benchmarks/bench_ce.py [--repeat 3] [--instances 2000] [--features 20]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from calibrated_explanations import WrapCalibratedExplainer
from calibrated_explanations import __version__ as ce_version
from calibrated_explanations.parallel import ParallelConfig as CEConfig
from calibrated_explanations.parallel import ParallelExecutor as CEExecutor
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from payoff.integrations.calibrated_explanations import ALTERNATIVE_PLUGIN, FACTUAL_PLUGIN, enable

RESULTS = Path(__file__).resolve().parent / "results"
CE_CHUNK = 200


def data(n_test: int, n_features: int) -> tuple[np.ndarray, ...]:
    x, y = make_classification(n_samples=2000 + 1000 + n_test, n_features=n_features,
                               n_informative=max(2, n_features // 2), random_state=0)
    return x[:2000], y[:2000], x[2000:3000], y[2000:3000], x[3000:]


def wrapper_for(split: tuple[np.ndarray, ...], model: Any, **calibrate: Any) -> Any:
    x_train, y_train, x_cal, y_cal, _ = split
    wrapper = WrapCalibratedExplainer(model)
    wrapper.fit(x_train, y_train)  # a fitted forest is deterministic (random_state), refitting is the same
    wrapper.calibrate(x_cal, y_cal, **calibrate)
    return wrapper


def weights(explanations: Any) -> np.ndarray:
    return np.array([[np.asarray(e.feature_weights[k], dtype=float) for k in ("predict", "low", "high")]
                     for e in explanations.explanations])


def ce_executor(strategy: str) -> CEExecutor:
    return CEExecutor(CEConfig(enabled=True, strategy=strategy, max_workers=os.cpu_count() or 2,
                               instance_chunk_size=CE_CHUNK, min_instances_for_parallel=1))


def ce_task_bytes(wrapper: Any, x_test: np.ndarray) -> int:
    """Pickled size of one CE task of ``CE_CHUNK`` instances: its slice and the whole explainer."""
    return len(pickle.dumps((0, CE_CHUNK, {"subset": x_test[:CE_CHUNK].copy(), "explainer": wrapper.explainer}),
                            protocol=pickle.HIGHEST_PROTOCOL))


CE_ROWS = (("CE chunked serial, chunk 200", "sequential"), ("CE processes, chunk 200", "processes"),
           ("CE joblib, chunk 200", "joblib"))
SERIAL, PAYOFF = "CE serial (default)", "payoff (enable, auto)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Each round runs every configuration once, in turn, so drift of the machine hits them all alike."""
    split = data(args.instances, args.features)
    x_test = split[-1]

    def model() -> RandomForestClassifier:
        return RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)

    wrappers = {SERIAL: wrapper_for(split, model())}
    for name, strategy in CE_ROWS:
        wrappers[name] = wrapper_for(split, model(), perf_parallel=ce_executor(strategy),
                                     factual_plugin=FACTUAL_PLUGIN, alternative_plugin=ALTERNATIVE_PLUGIN)
    wrappers[PAYOFF] = wrapper_for(split, model())
    executor = enable(wrappers[PAYOFF])
    walls: dict[str, list[float]] = {name: [] for name in wrappers}
    equal: dict[str, bool] = {}
    reference = None
    try:
        for round_ in range(args.repeat):
            for name, wrapper in wrappers.items():
                t0 = time.perf_counter()
                out = wrapper.explain_factual(x_test)
                walls[name].append(time.perf_counter() - t0)
                if name == SERIAL:
                    reference = weights(out)
                else:
                    equal[name] = equal.get(name, True) and bool(np.array_equal(weights(out), reference))
                del out
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in walls.items()), flush=True)
        records = list(executor.records)[-args.repeat:]
    finally:
        executor.close()
    if not all(equal.values()):
        raise SystemExit(f"explanations differ from CE serial's: {equal}; no numbers written")
    ce_bytes = ce_task_bytes(wrappers[SERIAL], x_test)
    rows: dict[str, dict[str, Any]] = {SERIAL: {"walls": walls[SERIAL]}}
    for name, strategy in CE_ROWS:
        rows[name] = {"walls": walls[name], "bytes_per_task": ce_bytes if strategy != "sequential" else 0,
                      "tasks": -(-len(x_test) // CE_CHUNK), "equal_to_serial": equal[name]}
    last = records[-1]
    rows[PAYOFF] = {
        "walls": walls[PAYOFF], "equal_to_serial": equal[PAYOFF], "strategy": last.selected_strategy,
        "tasks": last.n_chunks, "bytes_per_task": last.bytes_sent / max(1, last.n_chunks),
        "bytes_sent": last.bytes_sent, "bytes_received": last.bytes_received, "utilization": last.utilization,
        "speedup_record": last.speedup, "first_call_seconds": walls[PAYOFF][0], "decision": executor.last_decision,
        "calls": [{"wall": r.wall_seconds, "tasks": r.n_chunks, "pool_started": r.pool_started,
                   "bytes_sent": r.bytes_sent} for r in records],
    }
    return rows


def summarize(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for row in rows.values():
        row["median_seconds"] = statistics.median(row["walls"])
        row["best_seconds"] = min(row["walls"])
    payoff = rows[PAYOFF]["median_seconds"]
    serial = rows[SERIAL]["median_seconds"]
    best_parallel = min(rows[k]["median_seconds"] for k in ("CE processes, chunk 200", "CE joblib, chunk 200"))
    return {"vs_serial": serial / payoff, "vs_best_ce_parallel": best_parallel / payoff,
            "targets": {"vs_serial": 2.0, "vs_best_ce_parallel": 1.6}}


def markdown(result: dict[str, Any]) -> str:
    rows, s = result["rows"], result["summary"]
    serial = rows[SERIAL]["median_seconds"]
    lines = [f"Random forest of 100 trees, 1,000 calibration rows, `explain_factual` on {result['instances']:,} "
             f"instances x {result['features']} features, {result['machine']['cpus']} cores, calibrated-explanations "
             f"{result['ce_version']}; median of {result['repeat']} rounds in one process, "
             "each round running every configuration in turn.",
             "",
             "| configuration | median (s) | best (s) | vs CE serial | tasks | bytes per task | same as serial |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        per_task = row.get("bytes_per_task")
        lines.append(
            f"| {name} | {row['median_seconds']:.2f} | {row['best_seconds']:.2f} | "
            f"{serial / row['median_seconds']:.2f}x | {row.get('tasks', 1)} | "
            f"{'-' if not per_task else f'{per_task / 1e6:.2f} MB'} | {row.get('equal_to_serial', 'reference')} |")
    p = rows[PAYOFF]
    lines += ["", f"payoff: **{s['vs_serial']:.2f}x** faster than CE serial (target 2.0x) and "
              f"**{s['vs_best_ce_parallel']:.2f}x** faster than CE's best built-in parallel configuration "
              f"(target 1.6x). It ran on {p['strategy']} in {p['tasks']} tasks ({p['decision']}); "
              f"a warm explain sent {p['bytes_sent'] / 1e6:.2f} MB (the first sent the explainer once per worker, "
              f"{p['calls'][0]['bytes_sent'] / 1e6:.2f} MB) and received "
              f"{p['bytes_received'] / 1e6:.2f} MB; first explain (pool start and cost learning included) "
              f"{p['first_call_seconds']:.2f} s."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--output", default=str(RESULTS / "ce.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # CE's own deprecation chatter; payoff's records carry its fallbacks
    rows = run(args)
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "ce_version": ce_version, "instances": args.instances, "features": args.features, "repeat": args.repeat,
        "rows": rows, "summary": summarize(rows),
    }
    result["markdown"] = markdown(result)
    print(result["markdown"])
    Path(args.output).parent.mkdir(exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
