"""The global names a function's code may read, and what they are bound to now.

Process workers look a ``__main__`` function up by name, or get it by value with every global it reads:
both the pickling of such a function and what it weighs sent so change when one of those globals is bound
to another object.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator
from typing import Any


@functools.lru_cache(maxsize=1024)
def global_names(code: types.CodeType) -> frozenset[str]:
    """The global names a function's code (and the code nested in it: lambdas, comprehensions) may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= global_names(const)
    return frozenset(names)


@functools.lru_cache(maxsize=1024)
def names_read(code: types.CodeType) -> tuple[str, ...]:
    """``global_names`` in a fixed order."""
    return tuple(sorted(global_names(code)))


def bound_now(fn: types.FunctionType) -> Iterator[Any]:
    """The objects the globals a plain function reads are bound to now, in ``names_read`` order (``_UNBOUND``
    for one bound to none)."""
    scope = fn.__globals__
    return (scope.get(name, _UNBOUND) for name in names_read(fn.__code__))


def bindings(fn: Any) -> tuple[int, ...] | None:
    """The identities of the objects the globals a plain function reads are bound to now (by id: nothing is
    kept alive); None for any other callable, whose globals are not read here."""
    if not isinstance(fn, types.FunctionType):
        return None
    return tuple(map(id, bound_now(fn)))


_UNBOUND = object()
"""A global not bound at all: told apart from one bound to None (review 71)."""
