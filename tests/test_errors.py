"""payoff's own exceptions survive pickling with their fields: they cross processes (a test runner's workers,
a multiprocessing result, a logging queue) like any exception a user catches."""

from __future__ import annotations

import pickle

import pytest

from payoff import errors

CASES = [
    errors.WorkerCrashedError("item 3 crashed", item_index=3, chunk_index=1, exitcode=-11, completed={0: 1}),
    errors.ClusterNotReadyError("the dask cluster at tcp://127.0.0.1:8786 has no workers"),
    errors.PoolStoppedError("stopped by another call", stopped_by="call 7 (timeout=2.0)"),
    errors.PoolStartTimeoutError("start took too long", by_call=True),
    errors.WorkerInitError("initializer raised", pid=1234),
    errors.RemoteError("LocalOnlyError", "boom", "Traceback (most recent call last): ..."),
    errors.RemoteTraceback("Traceback (most recent call last): ..."),
]


@pytest.mark.parametrize("error", CASES, ids=lambda e: type(e).__name__)
def test_an_error_round_trips_through_pickle_with_its_fields(error: BaseException) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert vars(back) == vars(error)


def test_every_public_error_is_covered() -> None:
    public = {name for name in errors.__all__ if isinstance(getattr(errors, name), type)
              and issubclass(getattr(errors, name), Exception) and not issubclass(getattr(errors, name), Warning)}
    assert public <= {type(e).__name__ for e in CASES}
    assert "PoolStoppedError" in errors.__all__
