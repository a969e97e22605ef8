"""The demo's explanation workload: perturbation importance of a logistic regression.

The model is fitted with scikit-learn when it is installed (the ``[demo]``
extra), and otherwise with numpy alone (Newton's method on the same
L2-penalised loss), so the demo runs on the core install.

Two axes, as in calibrated-explanations: per instance (each feature of one row
replaced by background values, scored in pure Python: CPU-bound, holds the
GIL) and per feature (one feature replaced across every row, scored with
numpy: releases the GIL). Shared state (model weights, background, rows)
lives in module globals installed once per worker by the initializer.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

_state: dict[str, Any] = {}


@dataclass(frozen=True)
class Problem:
    coef: np.ndarray
    intercept: float
    background: np.ndarray
    instances: np.ndarray
    fitted_with: str = "scikit-learn"

    @property
    def n_features(self) -> int:
        return int(self.instances.shape[1])


def have_sklearn() -> bool:
    """Whether scikit-learn (the ``[demo]`` extra) is importable."""
    return importlib.util.find_spec("sklearn") is not None


def make_problem(n_instances: int, n_features: int, seed: int = 0, fit: str = "auto") -> Problem:
    """A logistic regression on a synthetic classification task, trained on 1,000 rows.

    ``fit``: ``"scikit-learn"`` (``make_classification`` and ``LogisticRegression``, the ``[demo]``
    extra), ``"numpy"`` (core install only) or ``"auto"``: scikit-learn when it is installed.
    """
    if fit == "auto":
        fit = "scikit-learn" if have_sklearn() else "numpy"
    if fit == "numpy":
        return _numpy_problem(n_instances, n_features, seed)
    if fit != "scikit-learn":
        raise ValueError(f"fit must be 'auto', 'scikit-learn' or 'numpy', not {fit!r}")
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=1000 + n_instances, n_features=n_features,
                               n_informative=max(2, n_features // 2), random_state=seed)
    model = LogisticRegression(max_iter=1000).fit(x[:1000], y[:1000])
    return Problem(model.coef_[0].copy(), float(model.intercept_[0]), x[:48].copy(), x[1000:].copy())


def _numpy_problem(n_instances: int, n_features: int, seed: int) -> Problem:
    """Gaussian features, half of them informative, labels from a noisy linear rule; fitted with numpy."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1000 + n_instances, n_features))
    truth = np.zeros(n_features)
    informative = max(2, n_features // 2)
    truth[:informative] = rng.normal(0.0, 1.5, informative)
    y = (x @ truth + rng.normal(0.0, 1.0, x.shape[0]) > 0).astype(float)
    coef, intercept = fit_logistic(x[:1000], y[:1000])
    return Problem(coef, intercept, x[:48].copy(), x[1000:].copy(), fitted_with="numpy")


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0, steps: int = 100) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression (scikit-learn's default loss, ``C=c``) by Newton's method."""
    design = np.hstack([x, np.ones((x.shape[0], 1))])
    penalty = np.eye(design.shape[1]) / c
    penalty[-1, -1] = 0.0  # the intercept is not penalised
    beta = np.zeros(design.shape[1])
    for _ in range(steps):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (p - y) + penalty @ beta
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return beta[:-1].copy(), float(beta[-1])


def install(problem: Problem) -> None:
    """Worker initializer: the problem arrives once per worker, not once per task."""
    _state["problem"] = problem
    _state["weights"] = [float(w) for w in problem.coef]


def explain_instance(index: int) -> list[float]:
    """Importance of each feature for one instance: pure-Python scoring, holds the GIL."""
    p: Problem = _state["problem"]
    weights: list[float] = _state["weights"]
    row = [float(v) for v in p.instances[index]]
    base = _score(weights, p.intercept, row)
    out = []
    for j in range(len(row)):
        original, total = row[j], 0.0
        for b in range(0, p.background.shape[0], 2):
            row[j] = float(p.background[b, j])
            total += _score(weights, p.intercept, row)
        row[j] = original
        out.append(base - total / ((p.background.shape[0] + 1) // 2))
    return out


def explain_feature(j: int) -> float:
    """Mean absolute effect of feature ``j`` over every instance: numpy, releases the GIL."""
    p: Problem = _state["problem"]
    z = p.instances @ p.coef + p.intercept
    effects = np.zeros(p.instances.shape[0])
    for b in range(p.background.shape[0]):
        shifted = z + (p.background[b, j] - p.instances[:, j]) * p.coef[j]
        effects += np.abs(_sigmoid(z) - _sigmoid(shifted))
    return float(effects.mean() / p.background.shape[0])


def _score(weights: list[float], intercept: float, row: list[float]) -> float:
    z = intercept
    for w, v in zip(weights, row, strict=True):
        z += w * v
    return 1.0 / (1.0 + math.exp(-z))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


def explain_instance_of(problem: Problem, index: int) -> list[float]:
    """``explain_instance`` with the problem passed in (``payoff.explain``'s ``shared=``), not pre-installed."""
    _use(problem)
    return explain_instance(index)


def explain_feature_of(problem: Problem, j: int) -> float:
    """``explain_feature`` with the problem passed in (``payoff.explain``'s ``shared=``), not pre-installed."""
    _use(problem)
    return explain_feature(j)


def _use(problem: Problem) -> None:
    """Install ``problem`` unless it is already the worker's current one (it arrives once per worker)."""
    if _state.get("problem") is not problem:
        install(problem)
