"""payoff.explain on the demo's scikit-learn workload: granularity="auto" (strategy auto) against a serial run.

Two shapes of the same perturbation explanation (a logistic regression on a
synthetic task): many instances with few features, where splitting per
instance pays, and few instances with many features, where per-feature tasks
are the only ones big enough. Serial is ``ParallelConfig(strategy="serial")``
on the axis ``auto`` chose, so the ratio is the gain of the parallel run,
not of picking the other axis (the per-feature split vectorises with numpy,
so auto picks it whenever both are allowed; the last row fixes the instance
axis to show that split too). The problem (model, background, rows) is
``shared=``: it travels once per worker. Each row: median of ``--repeat``
warm calls (the first call, which starts the pool and measures the axes,
is reported apart).

    python benchmarks/bench_explain.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from payoff import ParallelConfig, ParallelExecutor
from payoff.demo.workload import explain_feature_of, explain_instance_of, make_problem
from payoff.explain import explain

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = {"20,000 instances x 16 features": (20000, 16, "auto"), "200 instances x 400 features": (200, 400, "auto"),
          "2,000 instances x 16 features, instance axis fixed": (2000, 16, "instance")}


def run_shape(n_instances: int, n_features: int, granularity: str, repeat: int) -> dict[str, Any]:
    problem = make_problem(n_instances, n_features)
    kwargs = {"instances": range(n_instances), "features": range(n_features),
              "instance_task": explain_instance_of, "feature_task": explain_feature_of, "shared": problem}
    with ParallelExecutor(ParallelConfig(granularity=granularity)) as ex:
        t0 = time.perf_counter()
        first = explain(ex, **kwargs)
        first_seconds = time.perf_counter() - t0
        walls = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            got = explain(ex, **kwargs)
            walls.append(time.perf_counter() - t0)
        record = got.record
    axis = got.axis
    with ParallelExecutor(ParallelConfig(strategy="serial", granularity="auto")) as serial_ex:
        serial_walls = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            reference = explain(serial_ex, granularity=axis, **kwargs)
            serial_walls.append(time.perf_counter() - t0)
    assert reference.results == got.results == first.results, "auto and serial explanations differ"
    assert record is not None
    auto, serial = statistics.median(walls), statistics.median(serial_walls)
    return {"axis": axis, "why": got.choice.why, "strategy": record.selected_strategy, "chunks": record.n_chunks,
            "auto_seconds": auto, "serial_seconds": serial, "speedup": serial / auto,
            "first_call_seconds": first_seconds, "utilization": record.utilization,
            "bytes_sent": record.bytes_sent}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| shape | axis | strategy | chunks | serial (s) | auto (s) | speedup | first call (s) | "
             "bytes sent |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["shapes"].items():
        lines.append(f"| {name} | {r['axis']} | {r['strategy']} | {r['chunks']} | {r['serial_seconds']:.3f} | "
                     f"{r['auto_seconds']:.3f} | {r['speedup']:.2f}x | {r['first_call_seconds']:.3f} | "
                     f"{r['bytes_sent'] / 1e3:.0f} kB |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shapes = {}
    for name, (n_instances, n_features, granularity) in SHAPES.items():
        shapes[name] = run_shape(n_instances, n_features, granularity, args.repeat)
        print(name, json.dumps(shapes[name]), flush=True)
    result: dict[str, Any] = {"repeat": args.repeat, "shapes": shapes}
    result["markdown"] = markdown(result)
    print(result["markdown"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "explain.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
