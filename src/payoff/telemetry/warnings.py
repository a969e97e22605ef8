"""Fallback warnings: one clear line per call site and reason.

A loop that calls ``map`` a thousand times with a tiny workload should say so
once, not a thousand times, yet ``warnings.simplefilter("always")`` and
``"error"`` must still behave as users expect. So payoff applies the warnings
module's own filter list, deduplicating by (call site, reason) where that list
says "default", by (module, reason) for "module" and by reason for "once".
"""

from __future__ import annotations

from typing import Any

from payoff.observers import CallInfo, CallSite, Observer, SiteWarnings, as_note
from payoff.reasons import Reason
from payoff.record import RERUN_BY_LIBRARY, RUN_INLINE, MapRecord, advice_of


class ParallelFallbackWarning(UserWarning):
    """A call that was allowed to run in parallel ran serially; ``.reason`` says why."""

    def __init__(self, message: str, reason: Reason, record: MapRecord | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.record = record

    def __reduce__(self) -> tuple[Any, ...]:
        """Raised by a ``-W error`` filter in a task of the user's own process pool, it travels back to their
        process: one that did not unpickle hung ``multiprocessing.Pool.map`` (its result thread died)."""
        return (type(self), (str(self), self.reason, self.record))


_ENDED = {"cancelled": "it was cancelled", "error": "it failed", "timeout": "it timed out"}
"""How a call that fell back ended, where its items did not all run (``MapRecord.outcome``): "ran serially"
told 50 items of a call that raised on its first as run (hunt 56, F3)."""


_LEFT = "its reader stopped asking for results"
"""How an ``imap`` its reader left (closed, dropped, or an ``islice`` of it done) ended: its outcome is
"cancelled", but "it was cancelled" told the docs' own ``islice(ex.imap(f, count()), 10)`` that something
had stopped it (hunt 65)."""


def fallback_message(record: MapRecord, left: bool = False) -> str:
    """``left``: an ``imap`` whose reader stopped before its end (it ended with ``GeneratorExit``)."""
    reason = record.fallback_reason
    assert reason is not None
    wanted = record.requested_strategy
    what = (f"recovered on {record.selected_strategy}" if not record.fell_back
            else f"ran serially instead of {wanted}")
    ended = _LEFT if left and record.outcome == "cancelled" else _ENDED.get(record.outcome)
    if ended is not None and record.fell_back:  # its plan's items did not all run: say how many did
        what = f"were planned to run serially instead of {wanted}, and {record.items_done:,} ran before {ended}"
    advice = advice_of(record)
    return (f"payoff: {record.items_text} of workload "
            f"{record.workload!r} {what} ({reason.value}): "
            f"{record.fallback_detail or reason.meaning}. {advice[:1].upper()}{advice[1:]}{'.' * bool(advice)}")


class FallbackWarnings(Observer):
    """Warns at the user's call site whenever a call fell back to serial."""

    def __init__(self) -> None:
        self._shown = SiteWarnings()

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        reason = record.fallback_reason
        if reason is None or reason is Reason.DISABLED or record.fallback_detail.startswith(RUN_INLINE):
            return  # as asked, or what no setting changes (one instance a library explains itself)
        if record.fallback_detail.startswith(RERUN_BY_LIBRARY):
            return  # warned as its map failed, with what failed there
        if reason is Reason.MAP_FAILURE_RETRY and error is not None:
            return  # the call did not recover: its exception (WorkerCrashedError) says what happened

        try:
            self._shown.warn_lazily(call.site, ParallelFallbackWarning,
                                    lambda: ParallelFallbackWarning(
                                        fallback_message(record, isinstance(error, GeneratorExit)), reason, record),
                                    (reason,))
        except ParallelFallbackWarning as raised:
            if error is None or isinstance(error, GeneratorExit):  # an imap closed early: nobody reads its notes
                raise
            error.add_note(as_note(raised))  # a filter's "error" must not replace the call's own (its timeout)

    def emit(self, site: CallSite, reason: Reason, text: str, record: MapRecord | None) -> None:
        self._shown.warn(site, ParallelFallbackWarning(text, reason, record), (reason,))

    def reset(self) -> None:
        """Forget what was shown (tests and long-lived notebooks)."""
        self._shown.reset()
