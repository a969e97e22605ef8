"""The watcher that ends a serial run's block at its budget (``payoff._budget_cut``), on real threads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from itertools import islice
from pathlib import Path

import pytest

from payoff import _budget_cut
from payoff.worker import run_chunk


def _sleep_then(x: int) -> int:
    time.sleep(0.005)
    return x


@pytest.mark.parametrize("items", [list(range(100)), tuple(range(100)), range(100)], ids=["list", "tuple", "range"])
def test_the_timer_ends_a_map_over_the_items_own_iterator_after_the_item_it_is_in(items: object) -> None:
    source = iter(items)  # type: ignore[call-overload]
    cut = _budget_cut.arm(source, time.perf_counter_ns() + 20_000_000)
    results = list(map(_sleep_then, islice(source, 100)))
    assert cut.end() is True
    assert 0 < len(results) < 100 and results == list(range(len(results))), "the items before it, in order"
    assert next(source, None) is None, "the iterator stays ended"


def test_a_timer_disarmed_in_time_never_touches_the_iterator() -> None:
    source = iter(list(range(10)))
    cut = _budget_cut.arm(source, time.perf_counter_ns() + 50_000_000)
    assert list(islice(source, 5)) == [0, 1, 2, 3, 4]
    assert cut.end() is False
    time.sleep(0.1)  # past the budget: a disarmed timer stays quiet
    assert list(source) == [5, 6, 7, 8, 9]


def test_a_budgeted_serial_run_whose_large_block_turns_dear_hands_back_what_it_did() -> None:
    """Blocks grow on the cheap head until one covers the dear items; the timer ends it at the budget and the
    chunk returns the items before, no error (the run plans the rest again)."""
    items = [0] * 5_000 + [1] * 200

    def cheap_then_sleepy(x: int) -> int:
        if x:
            time.sleep(0.005)
        return x

    outcome = run_chunk(cheap_then_sleepy, items, 0, 0, budget_ns=20_000_000, tail_in_budget=True)
    assert outcome.error is None
    assert 5_000 <= outcome.n_done < len(items), outcome.n_done
    assert outcome.results == items[:outcome.n_done]
    assert sum(outcome.block_sizes) == outcome.n_done


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "payoff-budget-cut" and t.is_alive()]


def test_armings_in_a_row_share_one_watcher_which_ends_on_its_own_once_nothing_is_armed() -> None:
    """A thread per arming (a spare thread woken through a queue) cost 80-180 us a call, and 2,000 armings in a
    row left 70 threads: the last had not gone back to idle when the next arming came."""
    for _ in range(500):
        source = iter(list(range(50)))
        cut = _budget_cut.arm(source, time.perf_counter_ns() + 20_000_000)
        assert sum(source) == sum(range(50))
        assert cut.end() is False
    assert len(_watchers()) == 1, [t.name for t in threading.enumerate()]
    deadline = time.monotonic() + 30
    while _watchers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _watchers() == [], "the watcher outlived its linger with nothing armed"
    source = iter(list(range(400)))
    cut = _budget_cut.arm(source, time.perf_counter_ns() + 30_000_000)
    assert 0 < len(list(map(_sleep_then, islice(source, 400)))) < 400, "the next arming is watched by a new one"
    assert cut.end() is True


def test_runs_armed_at_once_on_two_threads_end_each_at_its_own_budget() -> None:
    sources = {"soon": iter(list(range(400))), "late": iter(list(range(400)))}
    cuts = {"soon": _budget_cut.arm(sources["soon"], time.perf_counter_ns() + 30_000_000),
            "late": _budget_cut.arm(sources["late"], time.perf_counter_ns() + 60_000_000_000)}
    done: dict[str, list[int]] = {}

    def run(name: str, n: int) -> None:
        done[name] = list(map(_sleep_then, islice(sources[name], n)))

    threads = [threading.Thread(target=run, args=("soon", 400)), threading.Thread(target=run, args=("late", 20))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert cuts["soon"].end() is True and 0 < len(done["soon"]) < 400
    assert cuts["late"].end() is False and done["late"] == list(range(20))
    assert list(sources["late"]) == list(range(20, 400)), "the run with time left is untouched"


def test_an_item_that_raises_stop_iteration_after_the_budget_is_its_error_not_a_cut() -> None:
    """``map`` takes an item's StopIteration for the end of its input; when the watcher had also ended the run
    meanwhile, the run read a cut and handed the item back to be run again elsewhere (review 82: item 150 ran
    twice, then moved to threads). A cut leaves every item it took with a result; this run does not."""
    calls: list[int] = []

    def stops_at_150(x: int) -> int:
        calls.append(x)
        if x == 150:
            time.sleep(0.05)  # past the budget
            raise StopIteration
        return x

    outcome = run_chunk(stops_at_150, list(range(300)), 0, 0, budget_ns=20_000_000, tail_in_budget=True)
    assert isinstance(outcome.error, RuntimeError) and "StopIteration" in str(outcome.error), outcome.error
    assert outcome.results == list(range(150)) and calls.count(150) == 1


def test_a_map_in_an_exit_hook_runs_unwatched_and_starts_no_thread(tmp_path: Path) -> None:
    """Python 3.12.0-3.12.1 refuse to start a thread once the program's end has begun: arming a watcher there
    raised ``RuntimeError`` out of the map, as an item's error (review 82). Exit hooks arm none."""
    script = tmp_path / "at_exit.py"
    script.write_text(textwrap.dedent("""
        import atexit, threading, warnings
        import payoff

        def inc(x):
            return x + 1

        def at_end():
            warnings.simplefilter("ignore")
            out = payoff.ParallelExecutor().map(inc, list(range(300)))
            watchers = [t for t in threading.enumerate() if t.name == "payoff-budget-cut"]
            print("mapped", out == list(range(1, 301)), "watchers", len(watchers), flush=True)

        atexit.register(at_end)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mapped True watchers 0" in done.stdout, (done.stdout, done.stderr)


def test_the_count_of_items_left_and_the_end_of_the_iterator_are_one_step() -> None:
    """The watcher counted the items left and then ended the iterator in two calls from Python: the run's
    thread could take the GIL between them and take more items, which then read as more taken than results
    (an item's StopIteration: a RuntimeError of no item; helper's stress runs on 3.12 and 3.13, 3 in ~24,000
    cuts). A profile hook stands in for that thread: it takes an item wherever Python code calls the end."""
    items = list(range(100))
    source = iter(items)
    taken = [next(source)]
    cut = _budget_cut.Cut(source, 0)

    def between(frame: object, event: str, arg: object) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") == "__setstate__":
            taken.append(next(source))

    sys.setprofile(between)
    try:
        with _budget_cut._LOCK:
            cut._fire()
    finally:
        sys.setprofile(None)
    assert len(items) - cut.left == len(taken), (cut.left, taken)
    assert next(source, None) is None
