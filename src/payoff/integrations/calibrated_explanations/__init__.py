"""payoff as the parallel executor of calibrated-explanations (CE) 1.0.2.

Two lines switch it on for an already calibrated explainer::

    from payoff.integrations.calibrated_explanations import enable
    executor = enable(wrapper)        # WrapCalibratedExplainer or CalibratedExplainer, calibrated
    wrapper.explain_factual(x_test)   # parallel when it pays off; executor.last_record says how it went

What CE does with an executor, and what this adapter does about it:

- CE only calls ``map`` when the explanation plugin is
  ``core.explanation.factual.instance_parallel`` (or the alternative one);
  :func:`enable` selects both. With CE's default plugins the executor is
  entered and never used, which CE does not mention: this adapter warns
  (:class:`~payoff.ParallelFallbackWarning`) when an explain of two or more
  instances entered it without calling ``map``.
- CE enters the executor three times and leaves it twice per explain, and
  its own executor shuts its pool at the inner exit. Here ``__enter__`` is
  idempotent and ``__exit__`` never closes the pool: it lives until
  :meth:`CEParallelExecutor.close`, the idle timeout or interpreter exit.
- CE hands ``map`` a list of ``(start, stop, state)`` tasks whose ``state``
  holds the *whole explainer*, the same object in every task. The adapter
  asks CE for one task per instance (``instance_chunk_size=1`` in the view
  CE reads), regroups consecutive tasks into guided chunks (large first, small
  last, sized from CE's measured fixed cost per task; ``instance_chunk_size``
  when set), takes the explainer out
  of the items and puts it in the function, which payoff's process
  strategies send once per worker per call instead of once per task.
  Results go back as CE expects: ``(start, CalibratedExplanations)`` pairs.
  In worker processes each chunk is explained and its results encoded with
  the garbage collector paused (CE allocates tens of thousands of small
  objects per chunk; the collections they trigger cost ~10%), and the deep
  copies of the explainer CE embeds in every chunk result (discarded by CE's
  merge) stay in the worker. The explanations travel as columns (``codec``):
  a few arrays per chunk instead of ~200 objects per instance, rebuilt in the
  caller by C-level iteration, equal to what pickle would rebuild.
- The caller's garbage collector is paused from an explain's first ``map``
  until CE leaves the executor (its merge included) and restored in every
  case (``gcpause``); ``enable(..., pause_gc=False)`` leaves it alone.
- CE reads ``config.strategy`` and must never see ``"auto"``: payoff's
  ``auto`` is resolved here (worker processes for this CPU-bound work) and
  the concrete name is reported.
- CE catches any exception from ``map`` (and from its own merge) and
  silently re-runs the explanation serially; when that happens here it is
  warned with reason ``map_failure_retry``.

The modules: ``surface`` (what CE reads), ``tasks`` (CE's tasks, regrouped),
``chunking`` (task sizes), ``worker`` (what runs in worker processes),
``codec`` (chunk results as columns), ``gcpause`` (the collector pause),
``executor`` (:class:`CEParallelExecutor`) and ``wiring`` (:func:`enable`).
"""

from __future__ import annotations

from payoff.integrations.calibrated_explanations.chunking import ce_chunk_sizes
from payoff.integrations.calibrated_explanations.executor import (
    ALTERNATIVE_PLUGIN,
    FACTUAL_PLUGIN,
    WORKLOAD,
    CEParallelExecutor,
)
from payoff.integrations.calibrated_explanations.surface import CEConfig, CEMetrics
from payoff.integrations.calibrated_explanations.wiring import enable, select_parallel_plugins
from payoff.integrations.calibrated_explanations.worker import run_ce_tasks

__all__ = [
    "ALTERNATIVE_PLUGIN",
    "FACTUAL_PLUGIN",
    "WORKLOAD",
    "CEConfig",
    "CEMetrics",
    "CEParallelExecutor",
    "ce_chunk_sizes",
    "enable",
    "run_ce_tasks",
    "select_parallel_plugins",
]
