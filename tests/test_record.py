"""The derived parts of a MapRecord: order statistics and their caching."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelExecutor, progress
from payoff.record import VECTORISE_FROM, ChunkStats, MapRecord, Summary, block_items
from tests import tasks


def test_summary_of_nothing_is_all_zero() -> None:
    assert Summary.weighted([]) == Summary(0, 0.0, 0.0, 0.0, 0.0)
    assert Summary.weighted([(0.5, 0)]) == Summary(0, 0.0, 0.0, 0.0, 0.0)


def test_summary_of_one_timed_block_stands_for_all_its_items() -> None:
    assert Summary.weighted([(0.002, 7)]) == Summary(7, 0.002, 0.002, 0.002, 0.002)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_summary_equals_the_summary_of_the_expanded_values(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pairs = [(float(v), int(w)) for v, w in zip(rng.exponential(size=40), rng.integers(0, 6, size=40), strict=True)]
    expanded = np.sort(np.repeat([v for v, _ in pairs], [w for _, w in pairs]))
    got = Summary.weighted(pairs)
    assert got.count == expanded.size
    assert got.mean == pytest.approx(expanded.mean())
    assert got.p50 == np.quantile(expanded, 0.5, method="inverted_cdf")
    assert got.p95 == np.quantile(expanded, 0.95, method="inverted_cdf")
    assert got.max == expanded[-1]


def _chunk(rng: np.random.Generator, blocks: int) -> ChunkStats:
    sizes = tuple(int(k) for k in rng.integers(0, 8, size=blocks))
    durations = tuple(int(d) for d in rng.integers(1_000, 3_000_000, size=blocks))
    return ChunkStats(0, 0, sum(sizes), "w", 0, 0, sum(durations), 0, durations, sizes, 0, 0, "pool")


@pytest.mark.parametrize("blocks", [VECTORISE_FROM - 1, VECTORISE_FROM, 5_000])
def test_many_blocks_summarise_exactly_as_one_by_one(blocks: int) -> None:
    chunk = _chunk(np.random.default_rng(blocks), blocks)
    slow = Summary.weighted(chunk.item_times())
    fast = Summary.of_blocks(*block_items(chunk.durations_ns, chunk.block_sizes))
    assert (fast.count, fast.p50, fast.p95, fast.max) == (slow.count, slow.p50, slow.p95, slow.max)
    assert fast.mean == pytest.approx(slow.mean, rel=1e-12)


def test_derived_summaries_are_computed_once_and_match_a_fresh_computation() -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", tiny_workload_threshold=0.0), observers=[]) as ex:
        ex.map(tasks.spin, range(40), chunksize=5)
        record = ex.last_record
    assert record is not None
    first = record.task_time
    assert record.task_time is first and record.queue_wait is record.queue_wait
    assert first == Summary.weighted([p for c in record.chunks for p in c.item_times()])
    assert record.queue_wait.count == sum(1 for c in record.chunks if c.where == "pool") > 0
    assert "Per-item time" in (MapRecord.task_time.__doc__ or "")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty
        self.asked = 0

    def isatty(self) -> bool:
        self.asked += 1
        return self.tty


def test_interactivity_is_asked_once_per_stderr_and_again_when_stderr_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    terminal, pipe = _Stream(True), _Stream(False)
    monkeypatch.setattr(sys, "stderr", terminal)
    assert progress.interactive() and progress.interactive()
    assert terminal.asked == 1
    monkeypatch.setattr(sys, "stderr", pipe)
    assert not progress.interactive()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert progress.interactive()
    assert (terminal.asked, pipe.asked) == (2, 1)


def test_summary_counts_in_words_and_a_serial_run_is_not_called_slower() -> None:
    from payoff import ParallelConfig, ParallelExecutor

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(abs, [-1])
        record = ex.last_record
    assert record is not None
    line = record.summary()
    assert "1 item in 1 chunk" in line and "1 chunks" not in line
    assert "ran serially" in line and "slower" not in line


def test_cli_version() -> None:
    import subprocess
    import sys

    from payoff import __version__

    out = subprocess.run([sys.executable, "-m", "payoff", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"payoff {__version__}"
