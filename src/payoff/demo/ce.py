"""``payoff demo --ce``: calibrated-explanations alone, then on payoff (the ``[ce]`` extra).

A random forest on a synthetic task, calibrated by CE's ``WrapCalibratedExplainer``;
``explain_factual`` runs once with CE's own serial path, then twice through
:func:`payoff.integrations.calibrated_explanations.enable` (the first call starts
the pool, the second reuses it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from payoff.record import MapRecord

N_FEATURES = 8


@dataclass(frozen=True)
class CERow:
    case: str
    wall: float
    record: MapRecord | None  # None: CE alone, no executor
    instances: int


def run_ce(n_instances: int) -> list[CERow]:
    import calibrated_explanations as ce
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    from payoff.integrations.calibrated_explanations import enable

    x, y = make_classification(n_samples=500 + n_instances, n_features=N_FEATURES, n_informative=5, random_state=0)
    wrapper = ce.WrapCalibratedExplainer(RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1))
    wrapper.fit(x[:300], y[:300])
    wrapper.calibrate(x[300:500], y[300:500])
    x_test = x[500:]
    rows = [CERow("ce/CE alone", _timed(wrapper.explain_factual, x_test), None, n_instances)]
    executor = enable(wrapper)
    try:
        for case in ("ce/payoff, first call", "ce/payoff, second call"):
            rows.append(CERow(case, _timed(wrapper.explain_factual, x_test), executor.last_record, n_instances))
    finally:
        executor.close()
    return rows


def _timed(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def print_ce(rows: Sequence[CERow], out: Any = None) -> None:
    out = out or sys.stdout
    alone = rows[0].wall
    print(f"\ncalibrated-explanations: explain_factual of {rows[0].instances} instances x {N_FEATURES} features "
          "(random forest)", file=out)
    print(f"{'case':<30} {'ran as':<13} {'wall s':>8} {'vs CE alone':>12}", file=out)
    for r in rows:
        ran = "CE serial" if r.record is None else f"{r.record.selected_strategy} x{r.record.workers}"
        print(f"{r.case:<30} {ran:<13} {r.wall:>8.3f} {alone / r.wall:>11.2f}x", file=out)
    warm = rows[-1]
    how = "no executor call" if warm.record is None else warm.record.summary()
    print(f"\nverdict (calibrated-explanations): on its second call payoff ran CE {alone / warm.wall:.2f}x against "
          f"CE alone; {how}", file=out, flush=True)
