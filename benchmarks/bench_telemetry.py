"""What telemetry costs: the same maps with every observer on, and with none.

"On" means spans through an OpenTelemetry SDK (batch processor, in-memory
exporter), Prometheus metrics and the warnings observer: everything a
production user would run. Runs alternate on/off so drift hits both sides.

    python benchmarks/bench_telemetry.py           # 100,000 items of ~50 us, 5 repeats
    python benchmarks/bench_telemetry.py --quick   # 20,000 items, 3 repeats
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import workloads
from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning

RESULTS = Path(__file__).resolve().parent / "results"


def provider() -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    return tp


def big_maps(n: int, repeat: int) -> dict[str, dict[str, float]]:
    items = list(range(n))
    out: dict[str, dict[str, float]] = {}
    for strategy in ("threads", "processes"):
        cfg = ParallelConfig(strategy=strategy, tiny_workload_threshold=0.0)
        on = ParallelExecutor(cfg, tracer_provider=provider())
        off = ParallelExecutor(cfg, observers=[])
        times: dict[str, list[float]] = {"on": [], "off": []}
        for ex in (on, off):
            ex.map(workloads.py_50us, items[:2000])
        for _ in range(repeat):
            for name, ex in (("on", on), ("off", off)):
                t0 = time.perf_counter()
                ex.map(workloads.py_50us, items)
                times[name].append(time.perf_counter() - t0)
        on.close()
        off.close()
        med = {k: statistics.median(v) for k, v in times.items()}
        out[strategy] = {**med, "overhead": med["on"] / med["off"] - 1}
        print(f"{strategy:<10} on {med['on']:.3f}s  off {med['off']:.3f}s  overhead {out[strategy]['overhead']:+.2%}",
              flush=True)
    return out


def one_item(calls: int) -> dict[str, float]:
    on = ParallelExecutor(ParallelConfig(), tracer_provider=provider())
    off = ParallelExecutor(ParallelConfig(), observers=[])
    defaults = ParallelExecutor(ParallelConfig())  # global tracer provider: the OTel API's no-op
    times: dict[str, list[float]] = {"on": [], "off": [], "defaults": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        for _ in range(calls):
            for name, ex in (("on", on), ("off", off), ("defaults", defaults)):
                t0 = time.perf_counter_ns()
                ex.map(workloads.py_2us, [1])
                times[name].append((time.perf_counter_ns() - t0) / 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    added = med["on"] - med["off"]
    print(f"1-item map: on {med['on']:.1f} us, off {med['off']:.1f} us, telemetry adds {added:.1f} us "
          f"(default observers without an SDK: {med['defaults'] - med['off']:.1f} us)", flush=True)
    return {"on_us": med["on"], "off_us": med["off"], "added_us": added, "defaults_us": med["defaults"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, repeat = (20_000, 3) if args.quick else (100_000, 5)
    result: dict[str, Any] = {"items": n, "repeat": repeat, "big": big_maps(n, repeat), "one_item": one_item(3000)}
    result["targets"] = {
        "big_overhead_at_most_3pct": all(v["overhead"] <= 0.03 for v in result["big"].values()),
        "one_item_adds_at_most_150us": result["one_item"]["added_us"] <= 150,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "telemetry.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["targets"]))
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
