"""The demo's explanation workload: perturbation importance of a scikit-learn model.

Per instance, each feature is replaced by background values and the change in
the predicted probability is averaged: the same shape of work as
calibrated-explanations' factual explanations, small enough for a laptop.
The model and background travel once per worker through the initializer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_state: dict[str, Any] = {}


@dataclass(frozen=True)
class Problem:
    model: Any
    background: np.ndarray
    instances: np.ndarray


def make_problem(n_instances: int, n_features: int, seed: int = 0) -> Problem:
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=1000 + n_instances, n_features=n_features,
                               n_informative=max(2, n_features // 2), random_state=seed)
    model = LogisticRegression(max_iter=500).fit(x[:1000], y[:1000])
    return Problem(model, x[:64].copy(), x[1000:].copy())


def install(model: Any, background: np.ndarray) -> None:
    """Worker initializer: shared state arrives once per worker, not once per task."""
    _state["model"] = model
    _state["background"] = background


def explain_instance(row: np.ndarray) -> np.ndarray:
    """Importance of each feature for one instance (pure Python loop over features)."""
    model, background = _state["model"], _state["background"]
    base = float(model.predict_proba(row[None, :])[0, 1])
    out = np.empty(row.shape[0])
    for j in range(row.shape[0]):
        total = 0.0
        for b in range(0, background.shape[0], 8):
            probe = row.copy()
            probe[j] = background[b, j]
            total += _sigmoid_score(model, probe)
        out[j] = base - total / ((background.shape[0] + 7) // 8)
    return out


def explain_feature(j: int) -> float:
    """Importance of feature ``j`` over all instances (the feature axis)."""
    model, background = _state["model"], _state["background"]
    rows = _state["instances"]
    changed = rows.copy()
    changed[:, j] = background[: rows.shape[0] % background.shape[0] or 1, j].mean()
    return float(np.abs(model.predict_proba(rows)[:, 1] - model.predict_proba(changed)[:, 1]).mean())


def _sigmoid_score(model: Any, row: np.ndarray) -> float:
    z = float(model.intercept_[0])
    coef = model.coef_[0]
    for k in range(row.shape[0]):
        z += coef[k] * row[k]
    return float(1.0 / (1.0 + np.exp(-z)))
