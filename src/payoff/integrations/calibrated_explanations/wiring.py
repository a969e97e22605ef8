"""``enable``: wire a payoff executor into a calibrated explainer, with the plugins that use it."""

from __future__ import annotations

import pickle
import warnings
from typing import Any

from payoff._extras import extra_needed
from payoff.config import ParallelConfig
from payoff.integrations.calibrated_explanations import saved
from payoff.integrations.calibrated_explanations.executor import (
    ALTERNATIVE_PLUGIN,
    FACTUAL_PLUGIN,
    CEParallelExecutor,
    plugin_chain,
    warn_user,
)
from payoff.reasons import Reason
from payoff.record import CLOUDPICKLE_CANNOT
from payoff.strategies import CROSSES_PROCESSES


def _explainer_of(target: Any) -> tuple[Any, Any]:
    """(wrapper or None, CalibratedExplainer) for a calibrated wrapper or an explainer."""
    with extra_needed("ce", "payoff.integrations.calibrated_explanations.enable()"):
        from calibrated_explanations import CalibratedExplainer, WrapCalibratedExplainer

    if isinstance(target, WrapCalibratedExplainer):
        if not target.calibrated or getattr(target, "explainer", None) is None:
            raise ValueError(
                "enable() needs a calibrated WrapCalibratedExplainer: call wrapper.calibrate(x_cal, y_cal) "
                "first, or pass **executor.calibrate_kwargs() to calibrate for a CEParallelExecutor you made"
            )
        return target, target.explainer
    if isinstance(target, CalibratedExplainer):
        return None, target
    raise TypeError(f"enable() needs a WrapCalibratedExplainer or CalibratedExplainer, got {type(target).__name__}")


def select_parallel_plugins(explainer: Any) -> dict[str, str]:
    """Make CE's factual and alternative explanations use the instance-parallel plugins.

    The same steps CE itself takes when it overrides a plugin after construction
    (``CalibratedExplainer`` with a feature filter). Returns the plugins replaced.
    """
    manager = explainer.plugin_manager
    before = {mode: plugin_chain(explainer, mode) for mode in ("factual", "alternative")}
    manager.explanation_plugin_overrides["factual"] = FACTUAL_PLUGIN
    manager.explanation_plugin_overrides["alternative"] = ALTERNATIVE_PLUGIN
    manager.clear_explanation_plugin_instances()
    manager.clear_explanation_plugin_identifiers()
    manager.initialize_chains()
    return before


def _check_picklable(executor: CEParallelExecutor, explainer: Any) -> None:
    """Processes need a picklable explainer; fall back to joblib (cloudpickle), else to the caller, and say so.

    Not to threads: CE's work holds the GIL most of its time, and an explainer holding a lock explained 300
    instances on two threads in 1.15-1.8x a plain explain's time while the record said 1.04x faster (CE
    trial). A user who wants to try them names ``strategy="threads"``."""
    executor.mark_unsendable(explainer, "")
    if executor.strategy not in CROSSES_PROCESSES:
        return
    try:
        pickle.dumps(explainer, protocol=pickle.HIGHEST_PROTOCOL)
        return
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    try:
        import cloudpickle

        cloudpickle.dumps(explainer)
    except Exception:
        why = f"the explainer cannot be pickled for worker processes ({problem}){CLOUDPICKLE_CANNOT}; " \
              f"strategy='threads' runs it on threads"  # the marker: its advice is then not joblib's
        executor.mark_unsendable(explainer, why)
        warn_user(Reason.UNPICKLABLE, f"payoff: {why}. calibrated-explanations will run in your "
                                      f"process, as without payoff: CE's work holds the GIL most of its time.")
        return
    if executor.strategy != "joblib":
        warn_user(Reason.UNPICKLABLE, f"payoff: the explainer cannot be pickled for worker processes ({problem}); "
                                      f"calibrated-explanations will run on joblib (cloudpickle) instead of "
                                      f"{executor.strategy}.")
        executor.use_strategy("joblib")


def enable(target: Any, config: ParallelConfig | None = None, *,
           executor: CEParallelExecutor | None = None, pause_gc: bool | None = None) -> CEParallelExecutor:
    """Run ``target``'s explanations on payoff; returns the executor (for its records).

    ``target`` is a calibrated ``WrapCalibratedExplainer`` or a
    ``CalibratedExplainer``. ``config`` is a payoff :class:`~payoff.ParallelConfig`
    (default: from ``CE_PARALLEL``, payoff's grammar); pass ``executor`` to share
    one pool between several explainers. The executor becomes the explainer's
    ``perf_parallel`` (and the wrapper's, for later ``calibrate`` calls), and
    the factual and alternative explanation plugins become CE's
    instance-parallel ones, without which CE never calls an executor.
    Re-calibrating a wrapper builds a new explainer: call ``enable`` again.

    ``pause_gc`` (default: on for a new executor, unchanged for a given one)
    pauses your process's garbage collector across each explain's map and CE's
    merge, restored afterwards even on an error or Ctrl-C: those collections
    scan your whole heap while the workers need the cores, and free nothing.
    Pass ``pause_gc=False`` if your process must never have it paused.
    """
    if executor is not None and config is not None:
        raise ValueError("pass either config or executor, not both")
    if executor is not None and not isinstance(executor, CEParallelExecutor):
        raise TypeError(f"executor must be a CEParallelExecutor (what an earlier enable() returned), "
                        f"got {type(executor).__name__}; pass config= for a new one")
    if config is not None and not isinstance(config, ParallelConfig):
        raise TypeError(f"config must be a payoff.ParallelConfig, got {type(config).__name__}; "
                        f"ParallelConfig.from_env() reads CE_PARALLEL")
    wrapper, explainer = _explainer_of(target)
    ex = executor if executor is not None else _current_or_new(explainer, config)
    if pause_gc is not None:
        ex.pause_gc = pause_gc
    if wrapper is not None:
        wrapper.parallel_executor = ex
        saved.keep(wrapper)
    explainer.parallel_executor = ex
    select_parallel_plugins(explainer)
    ex.bind(explainer)
    _check_picklable(ex, explainer)
    _keep_fallback_warnings_once_per_site()
    return ex


def _current_or_new(explainer: Any, config: ParallelConfig | None) -> CEParallelExecutor:
    """The executor an earlier ``enable`` gave this explainer, if it runs the configuration asked for now (its
    warm pool kept); else a new one. A second ``enable(wrapper)`` made a second pool beside the first, which
    nobody used any more (4 workers on 2 CPUs until the collector found the first executor)."""
    current = getattr(explainer, "parallel_executor", None)
    wanted = config if config is not None else ParallelConfig.from_env()
    if isinstance(current, CEParallelExecutor) and current.user_config == wanted:
        return current
    return CEParallelExecutor(wanted)


_BLANKET_ALWAYS = ("always", None, UserWarning, None, 0)
"""The filter ``crepes`` (which CE imports) installs at import: every UserWarning shown every time."""


def _keep_fallback_warnings_once_per_site() -> None:
    """payoff's fallback warnings are said once per call site and reason; crepes' blanket filter, set for its
    own warnings, made each explain of a notebook loop say it again. Where that filter is the first to match
    payoff's category, a filter for the category goes just before it: filters the user set later stay first,
    and one the user set before crepes' import was already shadowed by it."""
    from payoff.telemetry.warnings import ParallelFallbackWarning

    for i, entry in enumerate(warnings.filters):
        if not issubclass(ParallelFallbackWarning, entry[2]):
            continue
        if entry == _BLANKET_ALWAYS:
            filters: list[Any] = warnings.filters  # type: ignore[assignment]  # a list at runtime, typed Sequence
            filters.insert(i, ("default", None, ParallelFallbackWarning, None, 0))
            mutated = getattr(warnings, "_filters_mutated", None)  # the stdlib's own cache reset, as it calls it
            if mutated is not None:
                mutated()
        return
