"""The compact chunk format against plain pickle, on real calibrated-explanations 1.0.2 chunk results.

A chunk result is what CE's task function returns in a worker; here it is
produced in this process from the tasks CE hands to the payoff executor. The
compact form must give back what pickle gives back: the same types, bytes,
dict key order, and the same sharing between objects.
"""

from __future__ import annotations

import os
import pickle
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from payoff import ParallelConfig
from tests.conftest import require

try:
    import calibrated_explanations as ce
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
except ImportError:  # pragma: no cover - reported by require() in every test
    ce = None

from payoff.integrations.calibrated_explanations import CEParallelExecutor, enable
from payoff.integrations.calibrated_explanations.codec import decode_chunk, encode_chunk
from payoff.integrations.calibrated_explanations.tasks import Task, merge_tasks, shared_explainer
from payoff.integrations.calibrated_explanations.worker import _lighten, decode_results, run_ce_tasks

N_TEST = 24
ATOMS = (str, int, float, bool, bytes, complex, type(None), Fraction)


@pytest.fixture(autouse=True)
def _ce_installed() -> None:
    require(ce is not None and getattr(ce, "__version__", "") == "1.0.2",
            "calibrated-explanations 1.0.2 with scikit-learn (the [ce] extra)")


class _Capture(CEParallelExecutor):
    """Keeps the task function and tasks CE hands to ``map`` (and runs them as usual)."""

    captured: list[tuple[Any, list[Task]]]

    def _map_tasks(self, fn: Any, tasks: list[Task]) -> list[Any]:
        self.captured.append((fn, tasks))
        return super()._map_tasks(fn, tasks)


def _ce_chunk(task: str, call: str, **kwargs: Any) -> tuple[Any, Task, Any]:
    """(CE's task function, all of one explain's instances as one task, the explainer)."""
    if task == "classification":
        x, y = make_classification(n_samples=500 + N_TEST, n_features=6, n_informative=4, random_state=1)
        model: Any = RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=1)
    else:
        x, y = make_regression(n_samples=500 + N_TEST, n_features=6, noise=5.0, random_state=1)
        model = RandomForestRegressor(n_estimators=10, random_state=0, n_jobs=1)
    wrapper = ce.WrapCalibratedExplainer(model)
    wrapper.fit(x[:300], y[:300])
    wrapper.calibrate(x[300:500], y[300:500])
    ex = _Capture(ParallelConfig(strategy="serial", tiny_workload_threshold=0.0))
    ex.captured = []
    enable(wrapper, executor=ex)
    ex.user_config = ex.user_config.with_changes(enabled=True)  # CE maps; payoff runs it in this process
    getattr(wrapper, call)(x[500:], **kwargs)
    fn, tasks = ex.captured[-1]
    merged = merge_tasks(tasks)
    assert merged is not None
    return fn, merged, shared_explainer(tasks)


def assert_identical(a: Any, b: Any, *, sharing: bool = True) -> None:
    """Same types, values, bytes and key order, and (``sharing``) the same objects shared in both."""
    pairs: dict[int, int] = {}
    reverse: dict[int, int] = {}

    def walk(x: Any, y: Any, path: str) -> None:
        assert type(x) is type(y), f"{path}: {type(x).__name__} != {type(y).__name__}"
        if isinstance(x, np.generic):
            assert x.tobytes() == y.tobytes(), path
            return
        if isinstance(x, ATOMS):
            assert x == y or (x != x and y != y), path
            return
        if isinstance(x, type):
            assert x is y, path
            return
        if id(x) in pairs or id(y) in reverse:
            assert not sharing or (pairs.get(id(x)) == id(y) and reverse.get(id(y)) == id(x)), \
                f"{path}: shared differently"
            if pairs.get(id(x)) == id(y):
                return
        pairs[id(x)], reverse[id(y)] = id(y), id(x)
        if isinstance(x, np.ndarray):
            assert (x.dtype, x.shape) == (y.dtype, y.shape), path
            assert x.dtype.hasobject or x.tobytes() == y.tobytes(), path
            assert x.flags.f_contiguous == y.flags.f_contiguous, path
            if x.dtype.hasobject:
                for i, (u, v) in enumerate(zip(x.ravel().tolist(), y.ravel().tolist(), strict=True)):
                    walk(u, v, f"{path}.flat[{i}]")
        elif isinstance(x, dict):
            assert list(x) == list(y), path
            for k in x:
                walk(x[k], y[k], f"{path}[{k!r}]")
        elif isinstance(x, list | tuple):
            assert len(x) == len(y), path
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                walk(u, v, f"{path}[{i}]")
        else:
            walk(vars(x), vars(y), f"{path}.")

    walk(a, b, "result")


def _round_trips(result: Any) -> tuple[Any, Any]:
    """(pickle's copy of ``result``, the codec's copy), both through bytes as between processes."""
    by_pickle = pickle.loads(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    compact = encode_chunk(result)
    assert compact is not None
    return by_pickle, decode_chunk(pickle.loads(pickle.dumps(compact, protocol=4)))


CASES = [
    ("classification", "explain_factual", {}),
    ("classification", "explore_alternatives", {}),
    ("regression", "explain_factual", {}),
    ("regression", "explore_alternatives", {}),
    ("regression", "explain_factual", {"threshold": 0.0}),
    ("regression", "explain_factual", {"threshold": np.linspace(-40.0, 40.0, N_TEST)}),
    ("regression", "explain_factual", {"low_high_percentiles": (10, 90)}),
]


@pytest.mark.parametrize(("task", "call", "kwargs"), CASES,
                         ids=["cls-factual", "cls-alternatives", "reg-factual", "reg-alternatives",
                              "proba-scalar", "proba-per-instance", "reg-percentiles"])
def test_the_compact_form_rebuilds_what_pickle_rebuilds(task: str, call: str, kwargs: dict[str, Any]) -> None:
    fn, merged, explainer = _ce_chunk(task, call, **kwargs)
    result = _lighten(fn((*merged[:2], {**merged[2], "explainer": explainer})))
    assert len(result[1].explanations) == N_TEST
    by_pickle, by_codec = _round_trips(result)
    assert_identical(by_pickle, by_codec)


def test_the_worker_path_encodes_and_the_parent_decodes() -> None:
    """``run_ce_tasks`` as in a worker process (another parent pid), then ``decode_results`` as in the parent."""
    fn, merged, explainer = _ce_chunk("classification", "explain_factual")
    block = run_ce_tasks(fn, explainer, os.getpid() + 1, [merged])
    (start, chunk), = decode_results(block)
    expected = fn((*merged[:2], {**merged[2], "explainer": explainer}))[1]  # another run: CE's caches differ
    assert start == 0 and len(chunk.explanations) == N_TEST
    assert all(e.calibrated_explanations is chunk for e in chunk.explanations)
    for got, want in zip(chunk.explanations, expected.explanations, strict=True):
        for attr in ("feature_weights", "feature_predict", "prediction", "binned", "rules", "conditions"):
            assert_identical(getattr(want, attr), getattr(got, attr), sharing=False)


def test_rebuilt_arrays_are_independent_and_writable() -> None:
    """Arrays are row views of one stacked array each: writing one changes no other explanation."""
    fn, merged, explainer = _ce_chunk("classification", "explain_factual")
    result = _lighten(fn((*merged[:2], {**merged[2], "explainer": explainer})))
    _, (_, chunk) = _round_trips(result)
    first, second = chunk.explanations[0], chunk.explanations[1]
    before = second.feature_weights["predict"].copy()
    first.feature_weights["predict"][:] = 123.0
    np.testing.assert_array_equal(second.feature_weights["predict"], before)


def test_unknown_values_travel_as_they_are() -> None:
    """Types the codec does not take apart (mixed, 0-d, Fortran-ordered, object arrays) are pickled as they are."""
    fn, merged, explainer = _ce_chunk("regression", "explain_factual")
    result = _lighten(fn((*merged[:2], {**merged[2], "explainer": explainer})))
    shared_list = ["shared by all"]
    for i, e in enumerate(result[1].explanations):
        e.mixed = np.float64(i) if i % 2 else float(i)
        e.zero_d = np.array(float(i))
        e.fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3) + i)
        e.objects = np.array([Fraction(i, 3), None], dtype=object)
        e.fraction = Fraction(i, 7)
        e.same_list = shared_list
    by_pickle, by_codec = _round_trips(result)
    assert_identical(by_pickle, by_codec)
    assert by_codec[1].explanations[0].same_list is by_codec[1].explanations[-1].same_list


def test_sharing_the_columns_cannot_express_sends_the_chunk_as_it_is() -> None:
    fn, merged, explainer = _ce_chunk("classification", "explain_factual")
    result = _lighten(fn((*merged[:2], {**merged[2], "explainer": explainer})))
    explanations = result[1].explanations
    explanations[1].rules["feature"] = explanations[0].rules["feature"]  # one list reached from two instances
    assert encode_chunk(result) is None
    assert result[1].explanations is explanations  # left as it was, for plain pickle
    block = run_ce_tasks(lambda task: result, None, os.getpid() + 1, [merged])
    (_, chunk), = decode_results(block)
    assert chunk.explanations[1].rules["feature"] is chunk.explanations[0].rules["feature"]
    assert_identical(pickle.loads(pickle.dumps(result)), (0, chunk))
