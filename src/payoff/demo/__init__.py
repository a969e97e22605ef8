"""``payoff demo``: an explanation workload under every strategy, and the verdict.

It serves ``/metrics`` while it runs (and exports OTLP when ``OTEL_*`` says
where), so the dashboards have something true to show, then prints one table
that answers "did parallel mode pay off?".

The core install is enough: numpy fits the model when scikit-learn is absent.
The variants switch on with their extras: scikit-learn fits the model when
``payoff[demo]`` is installed, ``--ce`` adds calibrated-explanations
(``payoff[ce]``), ``--dask`` adds a dask cluster (``payoff[dask]``), and OTLP
export needs ``payoff[otlp]``. A variant asked for without its extra gets one
line naming the ``pip install`` to run.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from payoff.cli import UsageError
from payoff.config import ParallelConfig
from payoff.demo.workload import Problem, explain_feature, explain_instance, have_sklearn, install, make_problem
from payoff.executor import ParallelExecutor
from payoff.record import PAYS_OFF_MARGIN, MapRecord
from payoff.telemetry.warnings import ParallelFallbackWarning

STRATEGIES = ("serial", "threads", "processes", "joblib", "auto")


@dataclass(frozen=True)
class Row:
    case: str
    record: MapRecord
    wall: float


@dataclass(frozen=True)
class Sizes:
    instances: int
    features: int
    feature_rows: int


QUICK = Sizes(instances=1500, features=16, feature_rows=20_000)
FULL = Sizes(instances=6000, features=24, feature_rows=60_000)
CE_QUICK, CE_FULL = 200, 1000
"""Instances explained by calibrated-explanations with ``--ce``."""

EXTRAS = {
    "ce": (("calibrated_explanations", "sklearn"), "calibrated-explanations and scikit-learn"),
    "dask": (("distributed",), "dask.distributed"),
    "otlp": (("opentelemetry.exporter.otlp.proto.http",), "the OTLP exporter"),
    "demo": (("sklearn",), "scikit-learn"),
}
"""Extra name -> (modules it provides, what to call them in a message)."""


def has_extra(extra: str) -> bool:
    """Whether the modules of ``payoff[extra]`` (one of :data:`EXTRAS`) are importable."""
    for module in EXTRAS[extra][0]:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except ModuleNotFoundError:  # a missing parent package
            return False
    return True


def missing_extra(extra: str, what: str) -> str:
    """The one line for a variant whose extra is not installed."""
    return f"payoff demo: {what} needs {EXTRAS[extra][1]}: pip install 'payoff[{extra}]'"


def run_demo(args: argparse.Namespace) -> int:
    for flag, extra in (("dask", "dask"), ("ce", "ce")):
        if getattr(args, flag, False) and not has_extra(extra):
            print(missing_extra(extra, f"--{flag}"), file=sys.stderr, flush=True)
            return 2
    server = _serve(args.metrics_port, args.metrics_addr)
    otlp = _otlp_from_env()
    sizes = QUICK if args.quick else FULL
    fitted = "scikit-learn" if have_sklearn() else "numpy"
    print(f"payoff demo: perturbation explanations of a logistic regression (fitted with {fitted}); "
          f"{sizes.instances} instances x {sizes.features} features (instance axis), {sizes.features} features x "
          f"{sizes.feature_rows} rows (feature axis)", flush=True)
    if fitted == "numpy":
        print("scikit-learn is not installed, so numpy fits the model (same workload): "
              "pip install 'payoff[demo]' for the scikit-learn variant", flush=True)
    if server is not None:
        print(f"serving metrics at {server.url}", flush=True)
    try:
        while True:
            rows = run_round(sizes, progress=None, dask=args.dask)
            print_table(rows)
            if getattr(args, "ce", False):
                from payoff.demo.ce import print_ce, run_ce

                print_ce(run_ce(CE_QUICK if args.quick else CE_FULL))
            if not args.loop:
                return 0
            time.sleep(args.pause)
    except KeyboardInterrupt:
        return 130
    finally:
        if otlp is not None:
            otlp.shutdown()
        if server is not None:
            server.stop()


def run_round(sizes: Sizes, progress: bool | None = False,
              on_row: Callable[[Row], None] | None = None, dask: bool = False) -> list[Row]:
    """Every strategy on both axes, plus two calls that fall back, on fresh executors.

    ``dask=True`` adds the instance axis on dask: the scheduler named by
    ``CE_PARALLEL``'s ``address=``, or a LocalCluster.
    """
    from payoff.telemetry import metrics_observer

    metrics_observer().declare("demo-instance", "demo-feature",
                               strategies=("serial", "threads", "processes", "joblib"))
    instance_problem = make_problem(sizes.instances, sizes.features)
    feature_problem = make_problem(sizes.feature_rows, sizes.features, seed=1)
    report = on_row or _print_row
    rows: list[Row] = []
    for name in STRATEGIES:
        rows.append(_case(f"instances/{name}", instance_problem, ParallelConfig(strategy=name),
                          explain_instance, range(sizes.instances), "instance", None, progress))
        report(rows[-1])
    if dask:
        address = ParallelConfig.from_env().address
        rows.append(_case("instances/dask", instance_problem, ParallelConfig(strategy="dask", address=address),
                          explain_instance, range(sizes.instances), "instance", None, progress))
        report(rows[-1])
    for name in ("serial", "threads", "auto"):
        rows.append(_case(f"features/{name}", feature_problem, ParallelConfig(strategy=name),
                          explain_feature, range(sizes.features), "feature", True, progress))
        report(rows[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("always", ParallelFallbackWarning)
        # auto, with no initializer: a named backend, or workers that must run an initializer, keep the pool
        # for their work however small (docs/tuning.md)
        rows.append(_case("fallback: 3 instances", instance_problem, ParallelConfig(),
                          explain_instance, range(3), "instance", None, progress, initializer=False))
        report(rows[-1])
        rows.append(_case("fallback: feature-only config", instance_problem,
                          ParallelConfig(strategy="processes", granularity="feature"),
                          explain_instance, range(200), "instance", None, progress))
        report(rows[-1])
    return rows


def _case(case: str, problem: Problem, config: ParallelConfig, fn: Callable[[int], Any], items: Sequence[int],
          granularity: str, releases_gil: bool | None, progress: bool | None, initializer: bool = True) -> Row:
    install(problem)
    if initializer:
        config = config.with_changes(worker_initializer=install, worker_init_args=(problem,))
    with ParallelExecutor(config) as ex:
        t0 = time.perf_counter()
        ex.map(fn, items, granularity=granularity, workload=f"demo-{granularity}", releases_gil=releases_gil,
               progress=progress)
        wall = time.perf_counter() - t0
        record = ex.last_record
    assert record is not None
    return Row(case, record, wall)


def _print_row(row: Row) -> None:
    print(f"  {row.case:<30} {row.record.summary()}", flush=True)


def print_table(rows: Sequence[Row], out: Any = None) -> None:
    out = out or sys.stdout
    print(f"\n{'case':<30} {'ran as':<13} {'wall s':>8} {'vs serial':>10} {'est. speedup':>13} "
          f"{'utilization':>12}  fallback", file=out)
    for axis in ("instances", "features", "fallback"):
        serial = next((r.wall for r in rows if r.case == f"{axis}/serial"), None)
        for r in (r for r in rows if r.case.startswith(axis)):
            rec = r.record
            vs = f"{serial / r.wall:.2f}x" if serial else "-"
            print(f"{r.case:<30} {rec.selected_strategy + ' x' + str(rec.workers):<13} {r.wall:>8.3f} {vs:>10} "
                  f"{rec.speedup:>12.2f}x {rec.utilization:>11.0%}  {rec.fallback_reason or '-'}", file=out)
    print("\n" + verdict(rows), file=out, flush=True)


def verdict(rows: Sequence[Row]) -> str:
    """One paragraph: what auto chose on each axis and whether parallel paid off."""
    lines = []
    for axis in ("instances", "features"):
        serial = next(r for r in rows if r.case == f"{axis}/serial")
        auto = next(r for r in rows if r.case == f"{axis}/auto")
        best = min((r for r in rows if r.case.startswith(axis + "/")), key=lambda r: r.wall)
        measured = serial.wall / auto.wall
        paid = "parallel paid off" if measured >= PAYS_OFF_MARGIN else "serial was the right call"
        lines.append(f"verdict ({axis}): auto chose {auto.record.selected_strategy} "
                     f"({auto.record.decision_reason.value}), {measured:.2f}x against the serial run: "
                     f"{paid}. Fastest: {best.case.split('/')[1]} ({serial.wall / best.wall:.2f}x)."
                     + _estimate_apart(auto.record.speedup, measured))
    return "\n".join(lines)


def _estimate_apart(estimate: float, measured: float) -> str:
    """The record's own estimate, when it tells another story than the two runs measured one after the other."""
    if abs(estimate / measured - 1) <= 0.10:
        return ""
    return (f" payoff's own estimate for that call was {estimate:.2f}x: the two runs here met the machine one"
            " after the other, so other programs' load moves them apart (the estimate compares within the call).")


def _serve(port: int | None, addr: str) -> Any:
    """The demo's endpoint; a TLS or auth setting it cannot use is the user's mistake, said in one line."""
    from payoff.telemetry.server import (
        DEFAULT_PORT,
        PORT_ENV,
        PORT_ZERO_ADVICE,
        MetricsConfigError,
        parse_ports,
        serve_from_env,
        serve_metrics,
        web_config_from_env,
    )

    raw = os.environ.get(PORT_ENV, "")
    if port is None and raw.strip():
        try:  # a map call only logs a bad port and runs on; the demo runs to be watched, as with --metrics-port
            parse_ports(raw)
        except ValueError as exc:
            raise UsageError(f"{exc}, or unset it to serve on {DEFAULT_PORT}") from None
        return serve_from_env()
    try:
        return serve_metrics(DEFAULT_PORT if port is None else port, addr, web_config=web_config_from_env())
    except MetricsConfigError as exc:
        raise UsageError(f"the /metrics endpoint's PAYOFF_METRICS_* settings: {exc}") from None
    except OSError as exc:
        said = str(exc).replace(PORT_ZERO_ADVICE, "")
        print(f"payoff demo: not serving /metrics ({said}); {_endpoint_hint(exc, port, addr)}", flush=True)
        return None


def _otlp_from_env() -> Any:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    traces, metrics = _exports("OTEL_TRACES_EXPORTER", "none"), _exports("OTEL_METRICS_EXPORTER", "none, prometheus")
    if not (traces or metrics):
        return None
    if not has_extra("otlp"):
        print(missing_extra("otlp", "OTEL_EXPORTER_OTLP_ENDPOINT (OTLP export)") + "; running without OTLP",
              file=sys.stderr, flush=True)
        return None
    from payoff.telemetry.otlp import configure

    try:
        return configure(traces=traces, metrics_too=metrics)
    except ValueError as exc:
        raise UsageError(f"OTLP export from the OTEL_* settings: {exc}") from None


def _exports(variable: str, without: str) -> bool:
    """Whether OpenTelemetry's ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` asks for OTLP (unset: yes).
    The compose stack's collector takes spans only (Prometheus scrapes ``/metrics``): the app's metrics
    exports met a 404 every 10 s until its image said ``OTEL_METRICS_EXPORTER=none`` (hunt 61). Exporters
    the demo has not (``console``, set for a whole environment) are said and left out, never refused."""
    from payoff.telemetry.otlp import OTLP_EXPORTERS, exporter_names

    raw, names = os.environ.get(variable, ""), exporter_names(variable)
    otlp = names & OTLP_EXPORTERS  # as configure() reads them
    others = names - otlp - {name.strip() for name in without.split(",")}
    if others:
        print(f"payoff demo: {variable}={raw!r}: it exports over OTLP only; {', '.join(sorted(others))} left out",
              file=sys.stderr, flush=True)
    return bool(otlp)


def _endpoint_hint(exc: OSError, port: int | None, addr: str) -> str:
    """What to change: the port when it is taken, the address when it is not this machine's (or not a name)."""
    if exc.errno == errno.EADDRINUSE and port != 0:
        return "pass --metrics-port 0 for a free port"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"--metrics-addr {addr!r} is not an address of this machine; leave it out for 127.0.0.1"
    return "the demo runs without it"
