"""A saved wrapper's explainer gets its executor back when loaded.

``CalibratedExplainer.__getstate__`` drops the explainer's executor (CE's own holds a pool), while the
wrapper keeps its own reference, which payoff's executor pickles as its settings. A loaded wrapper's
explainer then ran the instance-parallel plugins ``enable`` chose without payoff: unrecorded, and through
CE's own merge, which gives every explanation the whole test matrix, so ``add_conjunctions`` found no rules
(CE trial 44, F4). ``enable`` puts a :class:`Relink` on the wrapper: pickled with it, it names the wrapper's
explainer and executor, and once both are loaded it joins them again. Saved files name this class: keep its
name and module.
"""

from __future__ import annotations

import weakref
from typing import Any

from payoff.integrations.calibrated_explanations.executor import CEParallelExecutor

ATTRIBUTE = "_payoff_relink"
"""Where ``enable`` keeps it on the wrapper."""


class Relink:
    """Held by an enabled wrapper; never by an explainer, which pickles alone without it."""

    def __init__(self, wrapper: Any) -> None:
        self._wrapper = weakref.ref(wrapper)

    def __reduce__(self) -> tuple[Any, ...]:
        """The wrapper's explainer and executor, as they are when saved: an explainer re-calibrated since (and not
        enabled again) runs without payoff, and is saved so."""
        wrapper = self._wrapper()
        explainer = getattr(wrapper, "explainer", None)
        executor = getattr(explainer, "parallel_executor", None)
        if wrapper is None or not isinstance(executor, CEParallelExecutor):
            return Relink, (wrapper,), {}
        return Relink, (wrapper,), {"explainer": explainer, "executor": executor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Both are whole here (the explainer loaded before this state, or within it); its own ``__setstate__``,
        which restores the dropped executor as None, has run."""
        explainer: Any = state.get("explainer")
        executor = state.get("executor")
        if isinstance(executor, CEParallelExecutor) and getattr(explainer, "parallel_executor", 0) is None:
            explainer.parallel_executor = executor
            executor.bind(explainer)


def keep(wrapper: Any) -> None:
    setattr(wrapper, ATTRIBUTE, Relink(wrapper))
