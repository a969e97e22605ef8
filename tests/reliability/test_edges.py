"""Empty input, lazy imap over endless and huge iterators (issue 12)."""

from __future__ import annotations

import collections
import itertools
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import payoff
from payoff import ParallelConfig, ParallelExecutor, Reason
from tests import tasks
from tests.tasks import Counted

STRATEGIES = ["auto", "serial", "threads", "processes", "joblib"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_input_returns_an_empty_list_with_a_record(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy)) as ex:
        assert ex.map(abs, []) == []
        assert list(ex.imap(abs, iter([]))) == []
        record = ex.last_record
    assert record is not None
    assert record.n_items == 0 and record.decision_reason is Reason.EMPTY_INPUT
    assert record.fallback_reason is None and not record.pool_started


def test_module_level_map_of_nothing() -> None:
    assert payoff.map(abs, []) == []


def test_empty_input_under_dask() -> None:
    pytest.importorskip("distributed")
    with ParallelExecutor(ParallelConfig(strategy="dask")) as ex:
        assert ex.map(abs, []) == []
        assert ex.last_record is not None and not ex.last_record.pool_started, "no cluster for nothing"


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes", "auto"])
def test_imap_over_an_endless_iterator_with_islice(strategy: str) -> None:
    source = Counted(itertools.count())
    with ParallelExecutor(ParallelConfig(strategy=strategy, tiny_workload_threshold=0.0)) as ex:
        got = list(itertools.islice(ex.imap(tasks.square, source), 10))
        assert got == [x * x for x in range(10)]
        assert source.read < 50_000, f"imap read {source.read:,} items to give 10"
        assert ex.map(tasks.square, range(5)) == [x * x for x in range(5)], "the executor is usable after"


def test_imap_reads_a_long_stream_lazily_and_records_every_item() -> None:
    source = Counted(iter(range(200_000)))
    with ParallelExecutor(ParallelConfig(strategy="processes", tiny_workload_threshold=0.0)) as ex:
        stream = ex.imap(tasks.square, source, chunksize=500)
        first = list(itertools.islice(stream, 1000))
        assert first == [x * x for x in range(1000)]
        assert source.read < 20_000, f"{source.read:,} items read ahead for 1,000 results"
        total = sum(1 for _ in stream) + len(first)
        record = ex.last_record
    assert total == 200_000
    assert record is not None and record.n_items == 200_000
    assert sum(c.n_items for c in record.chunks) == 200_000
    assert max(c.n_items for c in record.chunks) == 500, "the chunksize asked for is the one used"


def test_map_takes_several_iterables_like_the_builtin() -> None:
    import operator

    with ParallelExecutor(ParallelConfig(strategy="processes", tiny_workload_threshold=0.0)) as ex:
        assert ex.map(operator.add, range(5), range(10, 20)) == list(map(operator.add, range(5), range(10, 20)))
        assert ex.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert sorted(ex.imap_unordered(tasks.square, range(100), chunksize=7)) == [x * x for x in range(100)]
        record = ex.last_record
    assert record is not None and record.n_items == 100 and sum(c.n_items for c in record.chunks) == 100
    assert payoff.map(operator.mul, [1, 2], [3, 4, 5]) == [3, 8]


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes"])
@pytest.mark.parametrize(("fn", "n", "error", "at"), [
    (tasks.checked_add, 1200, None, None), (tasks.checked_add, 1400, ValueError, 1234),
    (tasks.stopping_add, 1000, RuntimeError, 900)])
def test_star_calls_in_blocks_of_many_items_behave_as_fn_called_on_each(
        strategy: str, fn: Any, n: int, error: type[Exception] | None, at: int | None) -> None:
    """``starmap`` and ``map`` over several iterables run blocks of thousands of items through ``starmap`` in C,
    not a Python call per item: the results, an item's error and the item it names are those of one call each
    (StopIteration from fn included, which would end a ``starmap`` silently)."""
    from payoff.worker import RAISED_BY

    pairs = [(i, 2 * i) for i in range(n)]
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0,
                                         min_batch_size=1)) as ex:
        for call in (lambda: ex.starmap(fn, pairs), lambda: ex.map(fn, range(n), range(0, 2 * n, 2))):
            if error is None:
                assert call() == [3 * i for i in range(n)]
                continue
            with pytest.raises(error) as caught:
                call()
            assert any(note.startswith(f"{RAISED_BY}{at} of the map") for note in caught.value.__notes__)
    with ParallelExecutor(ParallelConfig(strategy=strategy)) as ex, \
            pytest.raises(TypeError, match="positional argument"):
        ex.starmap(tasks.checked_add, [(1, 2)] * 50 + [(1, 2, 3)])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_map_over_several_sequences_stops_at_the_shortest_and_sends_columns(strategy: str) -> None:
    """Sequences are zipped lazily (no list of argument tuples is built): results as the builtin's, the shortest
    deciding the length, for a list, a tuple and a range together, in chunks of every backend."""
    import operator

    xs, ys, zs = list(range(3000)), tuple(range(0, 5000, 2)), range(7, 100_000)
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0,
                                         min_batch_size=1)) as ex:
        got = ex.map(_add3, xs, ys, zs)
        record = ex.last_record
        assert ex.map(operator.sub, [5, 6], range(10)) == [5, 5]
    assert got == list(map(_add3, xs, ys, zs)) and len(got) == 2500
    assert record is not None and record.n_items == 2500 and sum(c.n_items for c in record.chunks) == 2500


def _add3(x: int, y: int, z: int) -> int:
    return x + y * z


def test_zipped_sequences_slice_index_and_pickle_as_their_columns() -> None:
    import pickle

    from payoff.worker import Zipped

    z = Zipped([list(range(10)), "abcdefgh", range(100, 200)])
    assert len(z) == 8 and list(z) == list(zip(range(10), "abcdefgh", range(100, 200), strict=False))
    assert z[0] == (0, "a", 100) and z[-1] == (7, "h", 107)
    assert list(z[2:5]) == [(2, "c", 102), (3, "d", 103), (4, "e", 104)] and len(z[6:50]) == 2
    with pytest.raises(IndexError):
        z[8]
    back = pickle.loads(pickle.dumps(z[2:4]))
    assert list(back) == [(2, "c", 102), (3, "d", 103)]
    assert len(pickle.dumps(z[2:4])) < len(pickle.dumps(z)) < 400, "a slice carries its columns' slices only"


def test_shutdown_closes_until_entered_again() -> None:
    ex = ParallelExecutor(ParallelConfig(strategy="threads"))
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(abs, [1])
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)
    with ex:
        assert ex.map(abs, [-1]) == [1]


def test_concurrent_futures_style_constructor() -> None:
    assert ParallelExecutor(4).config.max_workers == 4
    ex = ParallelExecutor(max_workers=3, strategy="threads")
    assert (ex.config.max_workers, ex.config.strategy) == (3, "threads")
    assert ParallelExecutor(ParallelConfig(strategy="serial")).config.strategy == "serial"
    with pytest.raises(ValueError, match="max_workers"):
        ParallelExecutor(0)


def test_payoff_parallel_is_the_primary_name_and_ce_parallel_an_alias() -> None:
    assert ParallelConfig.from_env({"PAYOFF_PARALLEL": "threads"}).strategy == "threads"
    assert ParallelConfig.from_env({"CE_PARALLEL": "threads"}).strategy == "threads"
    with pytest.raises(ValueError, match="disagree"):
        ParallelConfig.from_env({"PAYOFF_PARALLEL": "threads", "CE_PARALLEL": "processes"})


class IntIndexOnly(Sequence[int]):
    """A legal Sequence that takes integer indices only (lazy readers, database cursors)."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: Any) -> Any:
        if not isinstance(i, int):
            raise TypeError("integer indices only")
        if not 0 <= i < 40:
            raise IndexError(i)
        return i * 10


class NewestFirst(list[int]):
    """A list iterated newest first: ``map`` over it reads its ``__iter__``, not its slices."""

    def __iter__(self) -> Iterator[int]:
        return reversed(list(list.__iter__(self)))


class Labelled(list[int]):
    """A list whose integer indexing formats the item (and whose slices would be strings)."""

    def __getitem__(self, i: Any) -> Any:
        return f"<{list.__getitem__(self, i)}>"


class ShortLen(tuple[int, ...]):
    """A tuple whose ``len()`` disagrees with what iterating it gives: the builtin ``map`` never asks ``len``."""

    def __len__(self) -> int:
        return 2


SEQUENCES = {
    "list iterated newest first": lambda: NewestFirst(range(50)),
    "list formatting what it indexes": lambda: Labelled(range(50)),
    "tuple with a len shorter than its items": lambda: ShortLen(range(30)),
    "deque": lambda: collections.deque(range(50)),
    "memoryview": lambda: memoryview(bytes(range(80))),
    "integer-index-only Sequence": IntIndexOnly,
    "str": lambda: "payoff maps any sequence",
}


@pytest.mark.parametrize("strategy", ["auto", "serial", "threads", "processes"])
@pytest.mark.parametrize("kind", list(SEQUENCES))
def test_any_sequence_maps_like_the_builtin(kind: str, strategy: str) -> None:
    """Slicing is only trusted where it gives a picklable list-like part: other Sequences are read as iterables."""
    items = SEQUENCES[kind]()
    with ParallelExecutor(ParallelConfig(strategy=strategy, tiny_workload_threshold=0.0, min_batch_size=1)) as ex:
        assert ex.map(tasks.identity, items, chunksize=7) == list(map(tasks.identity, items))
        assert list(ex.imap(tasks.identity, items, chunksize=7)) == list(map(tasks.identity, items))


class CountedCalls:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        return x


@pytest.mark.parametrize("config", [ParallelConfig(strategy="serial"), ParallelConfig(enabled=False)],
                         ids=["serial", "disabled"])
def test_a_serial_imap_runs_no_further_than_its_chunksize_ahead(config: ParallelConfig) -> None:
    fn = CountedCalls()
    with ParallelExecutor(config=config) as ex:
        assert list(itertools.islice(ex.imap(fn, itertools.count(), chunksize=1), 3)) == [0, 1, 2]
    assert fn.calls == 3, "chunksize=1: one item run per result taken, like the builtin map"


@pytest.mark.parametrize("items", [itertools.count(), list(range(5000))], ids=["stream", "list"])
def test_a_serial_imap_gives_its_first_result_after_one_item(items: Any) -> None:
    """Without a chunksize, serial imap chunks start at one item and grow with the measured cost."""
    fn = CountedCalls()
    with ParallelExecutor(config=ParallelConfig(strategy="serial")) as ex:
        results = ex.imap(fn, items)
        assert next(results) == 0
        assert fn.calls == 1
        rest = list(itertools.islice(results, 4999))
    assert rest == list(range(1, 5000))


def _fails_at_thirty() -> Iterator[int]:
    yield from range(30)
    raise ValueError("the input broke at item 30")


@pytest.mark.parametrize("strategy", ["auto", "serial", "threads", "processes"])
def test_imap_gives_the_results_before_an_input_that_fails_then_its_error(strategy: str) -> None:
    """The builtin map yields what came before the input's error: read-ahead must not swallow those results."""
    got: list[int] = []
    with ParallelExecutor(ParallelConfig(strategy=strategy, tiny_workload_threshold=0.0)) as ex:
        with pytest.raises(ValueError, match="broke at item 30"):
            got.extend(ex.imap(tasks.square, _fails_at_thirty(), chunksize=4))
        assert ex.map(tasks.square, range(5)) == [0, 1, 4, 9, 16], "the executor is still usable"
    assert got == [x * x for x in range(30)]


def _fails_at_once() -> Iterator[int]:
    raise ValueError("the input broke before its first item")
    yield 0  # pragma: no cover


@pytest.mark.parametrize("strategy", ["auto", "processes"])
def test_an_input_that_fails_on_its_first_item_raises_its_error(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy)) as ex, \
            pytest.raises(ValueError, match="before its first item"):
        list(ex.imap(tasks.square, _fails_at_once()))


def test_a_calls_options_take_numpy_numbers_and_auto_granularity_as_the_config_does() -> None:
    """``chunksize=np.int64(4)`` (from an array's shape) and ``granularity="auto"`` were refused by map though
    ParallelConfig and concurrent.futures take them (helper 27, fault 8)."""
    import numpy as np

    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, tiny_workload_threshold=0.0)) as ex:
        assert ex.map(tasks.square, range(12), chunksize=np.int64(4)) == [x * x for x in range(12)]
        record = ex.last_record
        assert record is not None and record.chunk_size == 4 and type(record.chunk_size) is int
        assert list(ex.imap(tasks.square, range(6), chunksize=np.int32(2))) == [x * x for x in range(6)]
        assert ex.map(tasks.square, range(6), granularity="auto", timeout=np.float32(30)) == [x * x for x in range(6)]
        with pytest.raises(ValueError, match="chunksize must be None"):
            ex.map(tasks.square, range(6), chunksize=np.float64(2.0))


def test_a_bad_keyword_to_starmap_is_blamed_on_starmap() -> None:
    """starmap passed its keywords on to map, whose name the TypeError then gave."""
    with ParallelExecutor() as ex, pytest.raises(TypeError, match=r"starmap\(\) got an unexpected keyword"):
        ex.starmap(pow, [(2, 3)], bogus=1)  # type: ignore[call-arg]


class _OldStyleSequence:
    """Only ``__getitem__`` raising IndexError at the end: the sequence protocol ``iter()`` and ``map`` accept."""

    def __getitem__(self, i: int) -> int:
        if i >= 6:
            raise IndexError(i)
        return i * 10


@pytest.mark.parametrize("strategy", ["serial", "threads", "auto"])
def test_an_old_style_sequence_is_read_as_the_builtin_reads_it(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy, tiny_workload_threshold=0.0)) as ex:
        assert ex.map(abs, _OldStyleSequence()) == list(map(abs, _OldStyleSequence()))
        assert list(ex.imap(abs, _OldStyleSequence())) == list(map(abs, _OldStyleSequence()))
        assert ex.map(operator.add, _OldStyleSequence(), range(3)) == [0, 11, 22]
    with pytest.raises(TypeError, match="iterable of items, got int"):
        payoff.map(abs, 5)
