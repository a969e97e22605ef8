"""A chunk's explanations as columns: fewer objects to pickle and unpickle, rebuilt by C-level iteration.

Why: a CE chunk result is a ``CalibratedExplanations`` holding one explanation
per instance, each a tree of ~200 small objects (dicts of per-feature
``ndarray`` s of 1-3 floats, lists of numpy scalars, strings). Pickling one
such ``ndarray`` costs ~3 us in the worker and unpickling it ~1 us in the
parent, a numpy scalar ~1.5 and ~0.3 us: for the objects themselves, not
their few bytes. Every explanation of a chunk has the same shape, so the
worker sends each *path* of that tree once for the whole chunk: the arrays
as one stacked array per dtype and shape (1-D arrays of mixed lengths laid
end to end), numpy scalars as one 1-D array, lists flattened with their
lengths. The parent rebuilds the objects with
``list(array)``, ``map``, ``zip`` and ``dict``: iteration in C, no Python
bytecode per object.

What is rebuilt is what pickle would give, value for value and type for type
(``np.float64`` stays ``np.float64``, dict key order is kept), with one
difference: an array is a view (``base`` is set) into its stack, or, for 1-D
arrays of mixed lengths, into their run laid end to end; its data is the
same bytes and no two arrays overlap. Objects pickle would
share stay shared: an array reachable from several paths or instances (CE
reuses its per-feature value grids) is sent once and rebuilt once, and an
object that all explanations share (the chunk's probability matrix, the
chunk itself) is sent as it is. A value of a type not handled here is sent
as it is; a container reachable twice in a pattern the columns cannot
express makes the whole chunk go as plain pickle. So a chunk either
round-trips exactly or is not encoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate, chain, repeat
from operator import attrgetter, itemgetter
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType
from typing import Any

import numpy as np

_CONST, _DICT, _LIST, _TUPLE, _ARRAY, _SCALAR, _RAW = range(7)
Node = tuple[Any, ...]
_ATOMS = (str, int, float, bool, bytes, complex, type(None), np.generic, type, ModuleType, FunctionType,
          BuiltinFunctionType, MethodType)
"""Values with nothing inside that a column could take apart (pickle sends functions by name)."""
_NUMERIC_KINDS = frozenset("biufc")
_SCALAR_TYPES = frozenset(np.dtype(c).type for c in "?bhilqBHILQefdgFDG")
"""numpy's numeric scalar types: a 1-D array of one of them gives back scalars of that exact type."""
MIN_INSTANCES = 2
"""Chunks of fewer explanations go as they are: nothing to share between instances."""


class _Shared(Exception):
    """An object is reachable twice in a way the columns cannot express: pickle the chunk as it is."""


@dataclass(frozen=True)
class CompactChunk:
    """A CE chunk result ``(start, CalibratedExplanations)`` with its explanations stored as columns."""

    start: int
    chunk: Any
    """The chunk's ``CalibratedExplanations`` with an empty ``explanations`` list (refilled on decode)."""
    holders: list[Any]
    """Other collections that held the very same ``explanations`` list (the back-reference of CE's
    alternative explanations), emptied the same way: they share the rebuilt list again."""
    cls: type
    n: int
    tree: Node
    pieces: list[tuple[np.ndarray, list[int] | None]]
    """The chunk's distinct arrays: stacked by dtype and shape (lengths ``None``: one array per row), or
    1-D arrays of one dtype and mixed lengths laid end to end (their lengths)."""
    order: list[int]
    """For each distinct array in the order first met, its place in the pieces' arrays laid end to end."""


def _plain_class(cls: type) -> bool:
    """Classes that pickle as ``object.__new__(cls)`` plus their ``__dict__``: the only ones rebuilt here."""
    same_as_object = ("__new__", "__reduce_ex__", "__reduce__", "__getstate__")
    return (all(getattr(cls, name) is getattr(object, name) for name in same_as_object)
            and not hasattr(cls, "__setstate__") and all(not getattr(c, "__slots__", ()) for c in cls.__mro__))


def encode_chunk(result: Any) -> CompactChunk | None:
    """The compact form of one CE chunk result, or ``None`` to send it as it is."""
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int)):
        return None
    start, chunk = result
    explanations = getattr(chunk, "explanations", None)
    if type(explanations) is not list or len(explanations) < MIN_INSTANCES:
        return None
    cls = type(explanations[0])
    if not _plain_class(cls) or any(type(e) is not cls for e in explanations):
        return None
    holders = [o for o in owners(explanations) if o is not chunk and getattr(o, "explanations", None) is explanations]
    for holder in (chunk, *holders):
        holder.explanations = []  # the explanations' back-references then pickle without them
    try:
        encoder = _Encoder()
        encoder.keep(vars(chunk))
        tree = encoder.column([vars(e) for e in explanations])
        if tree[0] != _DICT:
            raise _Shared("explanations without an instance dict")
        pieces, order = encoder.finish()
    except _Shared:
        for holder in (chunk, *holders):
            holder.explanations = explanations
        return None
    return CompactChunk(start, chunk, holders, cls, len(explanations), tree, pieces, order)


def owners(explanations: list[Any]) -> list[Any]:
    """The distinct collections the explanations point back to (``calibrated_explanations``)."""
    found: dict[int, Any] = {}
    for explanation in explanations:
        owner = vars(explanation).get("calibrated_explanations")
        if owner is not None:
            found.setdefault(id(owner), owner)
    return list(found.values())


def decode_chunk(compact: CompactChunk) -> tuple[int, Any]:
    """``(start, CalibratedExplanations)`` as the worker had it, built in one pass per column."""
    rows: list[np.ndarray] = []
    for data, lengths in compact.pieces:
        if lengths is None:
            rows.extend(data)
        else:
            ends = list(accumulate(lengths))
            rows.extend(map(data.__getitem__, map(slice, [0, *ends[:-1]], ends)))
    arrays = list(map(rows.__getitem__, compact.order))
    cls = compact.cls
    explanations: list[Any] = list(map(object.__new__, repeat(cls, compact.n)))
    for explanation, state in zip(explanations, _decode(compact.tree, compact.n, arrays), strict=True):
        object.__setattr__(explanation, "__dict__", state)  # as pickle's BUILD, without copying the dict
    for holder in (compact.chunk, *compact.holders):
        holder.explanations = explanations
    return compact.start, compact.chunk


_DTYPE = attrgetter("dtype")
_SHAPE = attrgetter("shape")
_DTYPE_STR = attrgetter("dtype.str")
_FORTRAN = attrgetter("flags.fnc")
"""Only Fortran-ordered arrays keep their order through pickle: a stacked row is C-ordered."""
_GroupKey = tuple[str, tuple[int, ...] | None]
"""(dtype, shape) of a stack, or (dtype, None) for 1-D arrays of mixed lengths laid end to end."""


class _Encoder:
    """Turns one path's values across the chunk's instances (a column) into a node.

    Each column is checked and gathered with ``map``, ``set`` and ``itemgetter``
    (C loops): this runs in the worker, whose time is the explain's time.
    """

    def __init__(self) -> None:
        self.split: set[int] = set()
        """Containers taken apart into columns: each must be reachable once."""
        self.kept: set[int] = set()
        """Objects sent as they are, and everything inside them: pickle keeps their sharing."""
        self.pooled: dict[int, int] = {}
        """id of each distinct array -> its number in the order first met."""
        self.groups: dict[_GroupKey, list[np.ndarray]] = {}
        self.members: dict[_GroupKey, list[int]] = {}

    def column(self, values: list[Any]) -> Node:
        first = values[0]
        kind = type(first)
        if len(set(map(type, values))) != 1:
            return self._raw(values)
        if kind is np.ndarray:
            return self._arrays(values)
        if kind in _SCALAR_TYPES:
            return (_SCALAR, np.array(values, dtype=kind))
        if len(set(map(id, values))) == 1:
            self.keep(first)
            return (_CONST, first)
        if kind is dict:
            return self._dict(values)
        if kind is list:
            return self._list(values)
        if kind is tuple:
            return self._tuple(values)
        return self._raw(values)

    def keep(self, value: Any) -> None:
        """Remember ``value`` and what it holds, so no column takes apart or pools an object it holds."""
        stack = [value]
        while stack:
            obj = stack.pop()
            if isinstance(obj, _ATOMS) or id(obj) in self.kept:
                continue
            self.kept.add(id(obj))
            if isinstance(obj, dict):
                stack.extend(obj.values())
            elif isinstance(obj, list | tuple | set | frozenset):
                stack.extend(obj)
            elif isinstance(obj, np.ndarray):
                if obj.dtype.hasobject:
                    stack.extend(obj.ravel().tolist())
            elif isinstance(getattr(obj, "__dict__", None), dict):
                stack.extend(vars(obj).values())

    def _take_apart(self, values: list[Any]) -> None:
        ids = set(map(id, values))
        if len(ids) != len(values) or not ids.isdisjoint(self.split):
            raise _Shared("a container is reachable from two instances or paths")
        self.split |= ids

    def _raw(self, values: list[Any]) -> Node:
        if not isinstance(values[0], _ATOMS) or len(set(map(type, values))) != 1:
            for v in values:
                self.keep(v)
        return (_RAW, values)

    def _dict(self, values: list[dict[Any, Any]]) -> Node:
        keys = tuple(values[0])
        if not all(map(keys.__eq__, map(tuple, values))):
            return self._raw(values)
        self._take_apart(values)
        return (_DICT, keys, [self.column(list(map(itemgetter(k), values))) for k in keys])

    def _list(self, values: list[list[Any]]) -> Node:
        self._take_apart(values)
        lengths = list(map(len, values))
        flat = list(chain.from_iterable(values))
        child = self.column(flat) if flat else (_RAW, flat)
        width = lengths[0]
        return (_LIST, width if lengths.count(width) == len(lengths) else lengths, child)

    def _tuple(self, values: list[tuple[Any, ...]]) -> Node:
        widths = set(map(len, values))
        width = len(values[0])
        if width == 0 or len(widths) != 1:
            return self._raw(values)
        self._take_apart(values)
        return (_TUPLE, [self.column(list(map(itemgetter(i), values))) for i in range(width)])

    def _arrays(self, values: list[np.ndarray]) -> Node:
        """Arrays go to the chunk's pool (once each, however often reached); the column holds their numbers."""
        dtypes, shapes = set(map(_DTYPE, values)), set(map(_SHAPE, values))
        if () in shapes or any(d.kind not in _NUMERIC_KINDS for d in dtypes) or any(map(_FORTRAN, values)):
            return self._raw(values)
        ids = list(map(id, values))
        pooled = self.pooled
        fresh = dict(zip(ids, values, strict=True))  # each array once, in the order first met
        for known in fresh.keys() & pooled.keys():
            del fresh[known]
        numbers = range(len(pooled), len(pooled) + len(fresh))
        pooled.update(zip(fresh, numbers, strict=True))
        arrays = list(fresh.values())
        if len(dtypes) == 1 and (len(shapes) == 1 or all(len(shape) == 1 for shape in shapes)):
            # the common cases: the whole column joins one stack, or one run of 1-D arrays of mixed lengths
            key = (values[0].dtype.str, values[0].shape if len(shapes) == 1 else None)
            self.groups.setdefault(key, []).extend(arrays)
            self.members.setdefault(key, []).extend(numbers)
        else:
            keys = zip(map(_DTYPE_STR, arrays), map(_SHAPE, arrays), strict=True)
            for key, array, number in zip(keys, arrays, numbers, strict=True):
                self.groups.setdefault(key, []).append(array)
                self.members.setdefault(key, []).append(number)
        if len(arrays) == len(ids):
            return (_ARRAY, numbers)
        return (_ARRAY, list(map(pooled.__getitem__, ids)))

    def finish(self) -> tuple[list[tuple[np.ndarray, list[int] | None]], list[int]]:
        """The pool as a few arrays, and where each array is in them; fails if a pooled array is also kept."""
        if not self.kept.isdisjoint(self.pooled) or not self.kept.isdisjoint(self.split):
            raise _Shared("an object taken apart is also held by an object sent as it is")
        if not self.pooled:
            return [], []
        pieces: list[tuple[np.ndarray, list[int] | None]] = [
            (np.concatenate(group), list(map(len, group))) if shape is None
            else (np.concatenate(group).reshape(len(group), *shape), None)
            for (_, shape), group in self.groups.items()]
        order = np.empty(len(self.pooled), dtype=np.intp)
        order[np.concatenate([np.asarray(m, dtype=np.intp) for m in self.members.values()])] = np.arange(
            len(self.pooled))
        return pieces, order.tolist()


def _decode(node: Node, n: int, arrays: list[np.ndarray]) -> list[Any]:
    """The column's ``n`` values."""
    return _DECODERS[node[0]](node, n, arrays)


def _decode_dict(node: Node, n: int, arrays: list[np.ndarray]) -> list[Any]:
    _, keys, children = node
    if not keys:
        return [{} for _ in range(n)]
    return list(map(dict, map(zip, repeat(keys, n), zip(*[_decode(c, n, arrays) for c in children], strict=True))))


def _decode_list(node: Node, n: int, arrays: list[np.ndarray]) -> list[Any]:
    _, lengths, child = node
    if isinstance(lengths, int):
        total = lengths * n
        starts: Any = range(0, total, lengths) if lengths else repeat(0, n)
        stops: Any = range(lengths, total + 1, lengths) if lengths else repeat(0, n)
    else:
        stops = np.cumsum(lengths).tolist()
        starts, total = [0, *stops[:-1]], stops[-1]
    flat = _decode(child, total, arrays)
    return list(map(flat.__getitem__, map(slice, starts, stops)))


def _decode_tuple(node: Node, n: int, arrays: list[np.ndarray]) -> list[Any]:
    return list(zip(*[_decode(c, n, arrays) for c in node[1]], strict=True))


_DECODERS: dict[int, Callable[[Node, int, list[np.ndarray]], list[Any]]] = {
    _CONST: lambda node, n, arrays: [node[1]] * n,
    _DICT: _decode_dict,
    _LIST: _decode_list,
    _TUPLE: _decode_tuple,
    _ARRAY: lambda node, n, arrays: list(map(arrays.__getitem__, node[1])),
    _SCALAR: lambda node, n, arrays: list(node[1]),
    _RAW: lambda node, n, arrays: node[1],
}
