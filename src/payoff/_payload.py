"""What a call's function, items and results cost to send to worker processes: bytes, and time to pickle.

Sizes come from pickling a sample (large buffers out of band, never copied);
for items of a few bytes the per-object pickling time, not the bytes, is what
a process pool pays, so it is timed. What pickle refuses is recorded with what
refused it, for the fallback's detail.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import pickle
import sys
import time
import types
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from payoff import _by_value as by_value
from payoff import _out_of_band as out_of_band
from payoff._globals_read import bound_now
from payoff._item_size import size_of_buffer
from payoff._knowledge import VERDICT_REACH, Pickling, item_kind
from payoff._probe import PROBE_MAX_ITEMS, Probe
from payoff._side_by_side import comparable
from payoff.worker import ArrayRows, Zipped

if TYPE_CHECKING:
    from payoff.planning import Call

PICKLING_SAMPLE_BYTES = 1 << 20
"""Probed items and results are pickled once more to time it when they are this small together (~1 ms)."""
LOAD_CHECK_BYTES = 1 << 20
"""A function cloudpickle sends by value is loaded back in the caller to check it when it is this small (a
model's closure of hundreds of MB is not loaded twice)."""


def cloudpickled_size(obj: Any) -> int | None:
    """Bytes cloudpickle sends ``obj`` in; None when it cannot."""
    try:
        return out_of_band.dumps(obj, by_value.dumps).size
    except Exception:
        return None


def measure_payload(call: Call, probe: Probe) -> None:
    """Pickled sizes of the function (unless measured on this very object), one item and one result, with
    stdlib pickle, and the pickling time of the probed ones; what pickle refuses is noted, saying what it was.

    Items and results are checked on every call, never remembered as the function's: they are the call's.
    """
    if not probe.fn_checked:
        measure_fn(call.fn, probe)
    at = min(probe.n, len(call.items) - 1)
    shared = call.items.item_bytes if isinstance(call.items, ArrayRows | Zipped) else None
    probe.item_bytes = shared if shared is not None else _payload_bytes(probe, call.items[at], f"item {at}")
    results = probe.outcome.results if probe.outcome is not None else []
    if results:
        refused = len(probe.unsendable)
        probe.result_bytes = _payload_bytes(probe, results[0], "the result of item 0")
        probe.result_error = probe.unsendable[-1][0] if len(probe.unsendable) > refused else ""
    if probe.unsendable:
        return
    try:
        _time_payload(call, probe, results)
    except Exception as exc:  # an item or result past the sampled one
        timed = call.items[:PROBE_MAX_ITEMS] if probe.known else call.items[:probe.n]
        probe.unsendable.append((f"an item or result among the first {len(timed):,} {_refusal(exc)}",
                                 (timed, results)))


_BY_VALUE: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], int]] = weakref.WeakKeyDictionary()
"""Per callable, what cloudpickle sends it in, and what it held when that was sized (``_held``)."""


def by_value_size(fn: Callable[..., Any], fallback: int) -> int:
    """Bytes cloudpickle sends ``fn`` in (``fallback`` where it cannot), sized again only once what it holds
    changed: each call sized a later cell's function reading a million small dicts afresh, 176-208 ms a call,
    and a size kept for good priced a global rebound to 8 KB at its old 160 MB (review 69)."""
    key, held = _held(fn)
    try:
        kept = _BY_VALUE.get(key)
    except TypeError:  # unhashable: sized each time
        kept = None
    if kept is not None and kept[0] == held:
        return kept[1]
    size = cloudpickled_size(fn) or fallback
    with contextlib.suppress(TypeError):  # no weak reference to it
        _BY_VALUE[key] = (held, size)
    return size


def _held(fn: Any) -> tuple[Any, tuple[Any, ...]]:
    """What to keep ``fn``'s size under, and what it holds now: the objects the globals of its function read,
    a ``partial``'s arguments, a bound method's or callable instance's attributes, each by ``_shape``. A bound
    method is a new object at each access: kept under its function, with its instance among what it holds."""
    if isinstance(fn, functools.partial):
        return fn, (_held(fn.func)[1], tuple(map(_shape, fn.args)), tuple(map(_shape, fn.keywords.values())))
    if isinstance(fn, types.MethodType):
        owner = fn.__self__
        return fn.__func__, (_shape(owner), _attributes(owner), _held(fn.__func__)[1])
    if isinstance(fn, types.FunctionType):
        return fn, tuple(map(_shape, bound_now(fn)))
    return fn, (_attributes(fn),)


def _attributes(obj: Any) -> tuple[Any, ...]:
    try:
        state = vars(obj)
    except TypeError:  # no __dict__ (slots, a builtin)
        return ()
    return tuple((name, _shape(value)) for name, value in list(state.items()))


def _shape(obj: Any) -> tuple[int, type, int | None]:
    """An object as far as its pickled size goes, without pickling it: its identity, and, since a freed one's
    address is soon another's (a 160 MB array deleted, an 8 KB one made: priced at 160 MB, review 70), its type
    and ``sys.getsizeof`` (an array's data, a list's slots). Never ``len`` or ``nbytes``: a ``__getattr__`` of a
    config dict raised ``KeyError`` into the call, and a lazy collection's length can query a database
    (review 71)."""
    try:
        size: int | None = sys.getsizeof(obj)
    except Exception:  # a __sizeof__ that raises
        size = None
    return id(obj), type(obj), size


def measure_fn(fn: Callable[..., Any], probe: Probe) -> None:
    """Pickle the function itself; when pickle refuses it, ask cloudpickle (it is shipped by it then)."""
    probe.fn_checked, probe.pickle_error, probe.cloudpickle_ok = True, "", None
    try:
        blob = out_of_band.dumps(fn, pickle.dumps)  # a model's arrays sized where they lie
        probe.fn_bytes, probe.names_main = blob.size, blob.holds(b"__main__")
    except Exception as exc:
        probe.pickle_error = f"{_the_function(fn)} {_refusal(exc)}"
        size, unloaded = cloudpickled_fn(fn)
        if unloaded:
            probe.pickle_error += f"; cloudpickle pickles it, but {unloaded}"
        probe.fn_bytes, probe.cloudpickle_ok = size or 0, size is not None and not unloaded


def cloudpickled_fn(fn: Callable[..., Any]) -> tuple[int | None, str]:
    """Bytes cloudpickle sends ``fn`` in (None when it cannot), and why what it writes does not load back ("" when
    it does: ``_load_refusal``): a function is sendable by cloudpickle only with both."""
    try:
        blob = out_of_band.dumps(fn, by_value.dumps)
    except Exception:
        return None, ""
    return blob.size, _load_refusal(blob)


def _load_refusal(blob: out_of_band.OutOfBand) -> str:
    """Why what cloudpickle wrote for a function does not load back, as a worker would load it; "" when it does
    (or is too large to load here twice: ``LOAD_CHECK_BYTES``).

    cloudpickle writes what pickle refuses, and some of it cannot be rebuilt: a ``unittest.mock.Mock`` (one
    wrapping a real function, as test suites pass) loads into a ``RecursionError``. auto sent such a function to
    processes, and the call raised there, where the loop ran it."""
    if blob.size > LOAD_CHECK_BYTES:
        return ""
    try:
        pickle.loads(blob.stream, buffers=blob.buffers)
    except Exception as exc:  # RecursionError included: the worker met the same
        return f"what it writes does not load back: {type(exc).__name__}: {str(exc)[:200]}"
    return ""


def _payload_bytes(probe: Probe, obj: Any, what: str) -> int:
    """Bytes ``obj`` pickles to; 0, with why noted on ``probe``, when pickle refuses it."""
    try:
        return pickled_size(obj)
    except Exception as exc:
        probe.unsendable.append((f"{what} {_refusal(exc)}", obj))
        return 0


def _the_function(fn: Any) -> str:
    """A bound method travels with its instance, whose state is most often what refuses (a lock, a connection,
    an executor it holds): the detail says so, since the method itself may be defined at module top level."""
    owner = getattr(fn, "__self__", None)
    if owner is None or isinstance(owner, type) or inspect.ismodule(owner) or inspect.isbuiltin(fn):
        return "the function"
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"the function (bound method {name}, sent with its {type(owner).__name__} instance and all it holds)"


def _refusal(exc: Exception) -> str:
    return f"cannot be pickled for worker processes: {type(exc).__name__}: {exc}"


def _time_payload(call: Call, probe: Probe, results: Sequence[Any]) -> None:
    """Time pickling the probed items and results; for a known function given items of another size, the
    items alone (no result ran yet)."""
    kind = item_kind(call.items[0]) if len(call.items) else ""
    if not probe.known and results:
        if (probe.item_bytes + probe.result_bytes) * probe.n <= PICKLING_SAMPLE_BYTES:
            timed = _time_pickling(call.items[:probe.n], results)
            probe.pickling = timed._replace(item_bytes=probe.item_bytes, item_kind=kind)
    elif probe.known and probe.item_bytes * PROBE_MAX_ITEMS <= PICKLING_SAMPLE_BYTES \
            and not (comparable(probe.item_bytes, probe.pickling.item_bytes, VERDICT_REACH)
                     and kind == probe.pickling.item_kind):
        out, back = _net_per_item(call.items[:PROBE_MAX_ITEMS], _dumps_loads([]))
        probe.pickling = probe.pickling._replace(items_out=out, items_in=back, item_bytes=probe.item_bytes,
                                                 item_kind=kind)


def _time_pickling(items: Sequence[Any], results: Sequence[Any]) -> Pickling:
    """Dumps and loads of the items and of their results, each per item.

    Each pickle call has a fixed cost of a few us (framing, the memo) that a
    chunk pays once, not per item: timed on an empty list, it is taken off.
    """
    empty = _dumps_loads([])
    items_out, items_in = _net_per_item(items, empty)
    results_out, results_in = _net_per_item(results, empty)
    return Pickling(items_out, items_in, results_out, results_in)


def _net_per_item(part: Sequence[Any], empty: tuple[int, int]) -> tuple[float, float]:
    """Seconds per item to dump and to load ``part`` as one list, less what an empty list takes."""
    dumps, loads = _dumps_loads(part if type(part) in (ArrayRows, Zipped) else list(part))  # as a chunk travels
    n = max(1, len(part)) * 1e9
    return max(0.0, (dumps - empty[0]) / n), max(0.0, (loads - empty[1]) / n)


def _dumps_loads(obj: Any) -> tuple[int, int]:
    clock = time.perf_counter_ns
    t0 = clock()
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    t1 = clock()
    pickle.loads(blob)
    return t1 - t0, clock() - t1


def pickled_size(obj: Any) -> int:
    """Bytes ``obj`` pickles to; arrays in it are sized without copying them (a 1 MiB array pickles in ~1 ms,
    and an item of ``(array of 80 MB, i)`` cost every call 42-72 ms of planning to be weighed)."""
    size = size_of_buffer(obj)
    return out_of_band.dumps(obj, pickle.dumps).size if size is None else size
