"""An item's bytes, read without pickling it: an array's buffer, ``bytes``, a few of them in a tuple.

Sizing by pickling costs as much as sending (a 1 MiB array pickles in ~1 ms); these are read from the
objects, so the planner's probe and the chunk sizer may ask on every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from payoff._imported import imported
from payoff.worker import ArrayRows, Zipped

_ARRAY_PICKLE_HEADER = 160
_BYTES_PICKLE_HEADER = 16


def first_item_bytes(items: Sequence[Any]) -> int | None:
    """What the first item adds to a chunk's pickle, when it is sized without pickling: an array's row (or
    element) as its share of the array's buffer (a row of each, for several arrays zipped), an array or bytes
    item as itself; None for others."""
    if isinstance(items, ArrayRows | Zipped):
        return items.item_bytes
    return size_of_buffer(items[0]) if items else None


_FEW = 8
"""The most elements of a tuple or list item sized by its buffers: an ``(x, y)`` pair, a few arrays."""


def item_bytes_in_memory(items: Sequence[Any]) -> int | None:
    """The buffer bytes of the first item, read without pickling: an array or bytes, or a short tuple or list
    holding some (their sum); None for other items, whose size only pickling tells."""
    size = first_item_bytes(items)
    if size is not None or not items:
        return size
    first = items[0]
    if type(first) not in (tuple, list) or len(first) > _FEW:
        return None
    return sum(size_of_buffer(x) or 0 for x in first) or None


def size_of_buffer(obj: Any) -> int | None:
    """The pickled bytes of a numpy array (not of objects) or of ``bytes``, read without pickling; None for others."""
    np = imported("numpy")  # not imported yet: no item can be an array
    if np is not None and type(obj) is np.ndarray and not obj.dtype.hasobject:
        return int(obj.nbytes) + _ARRAY_PICKLE_HEADER
    if type(obj) in (bytes, bytearray):
        return len(obj) + _BYTES_PICKLE_HEADER
    return None
