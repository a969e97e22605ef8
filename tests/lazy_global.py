"""A module holding a lazy object that sets itself up when its class is asked (as ``django.conf.settings``
does) and fails there: payoff's look for module-level context variables must not ask."""

from __future__ import annotations


class _Lazy:
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("the lazy object was set up by payoff's look at the module")


SETTINGS = _Lazy()
