"""The one list of reason codes.

Every decision the planner makes and every downgrade to serial carries one of
these codes. Warnings, span attributes, metric labels and the docs all read
this enum, so a code can never exist in one place and be missing in another.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a ``map`` call ran the way it did.

    Members whose ``kind`` is ``"fallback"`` explain why a call that was allowed
    to run in parallel ran serially, except the three that are :attr:`recovered`
    (``map_failure_retry``, ``pool_stopped``, ``unpicklable_result_rerun``): those
    name a failure the call survived where it ran, by rerunning lost chunks in
    fresh workers or, for results that could not travel back, their items in the
    caller. They sit in
    ``MapRecord.fallback_reason`` and warn like fallbacks, but the call did not
    become serial, so metrics and reports count them apart
    (``payoff_recoveries_total``, ``MapRecord.fell_back``). The others explain
    what the planner chose.
    """

    kind: str
    meaning: str
    advice: str

    def __new__(cls, value: str, kind: str, meaning: str, advice: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.kind = kind
        member.meaning = meaning
        member.advice = advice
        return member

    # -- decisions -------------------------------------------------------
    EXPLICIT_OBJECT = (
        "explicit_object",
        "decision",
        "the configuration supplied a strategy object, which is used as given",
        "",
    )
    EXPLICIT_STRATEGY = (
        "explicit_strategy",
        "decision",
        "the configuration or the call named the strategy",
        "",
    )
    AUTO_CPU_BOUND = (
        "auto_cpu_bound",
        "decision",
        "measured CPU-bound work, picklable with small payloads: worker processes pay off",
        "",
    )
    AUTO_RELEASES_GIL = (
        "auto_releases_gil",
        "decision",
        "the work releases the GIL: the releases_gil=True hint, or a probe long enough to sample the GIL saw "
        "CPU-bound items hold it little (numpy on large arrays, an FFT, a tree fit); threads share items and "
        "results that processes would pickle. Once threads were measured, one comparable call runs on "
        "processes, and the faster by the wall clock keeps the work (threads within 5%)",
        "",
    )
    AUTO_SHARED_MEMORY = (
        "auto_shared_memory",
        "decision",
        "the items or results are too large to send to processes, or no pickler can send them; threads "
        "share them in memory (for items of 10 us or more), and stay chosen only while a run measures a gain "
        "(the work releases the GIL)",
        "",
    )
    AUTO_WAITING = (
        "auto_waiting",
        "decision",
        "the items mostly wait (I/O, sleep, remote calls): their CPU share is below 1/cores, where threads (which "
        "the GIL lets run one item's CPU at a time) beat one process per core: threads, more of them than cores, "
        "as many as the wait fraction needs up to max_waiting_workers",
        "",
    )
    AUTO_OUTGREW_ESTIMATE = (
        "auto_outgrew_estimate",
        "decision",
        "planned serial on what its first items cost (or earlier calls' items), the call ran past several times "
        "that estimate in the caller (items that grow dearer along the input, a cheap head; other arguments): the "
        "rest was planned again at what its later items cost and ran on the pool",
        "",
    )
    AUTO_SERIAL_CHECK = (
        "auto_serial_check",
        "decision",
        "auto ran the call serially once, on purpose, to time the items alone: an earlier call on a pool of this "
        "machine measured a gain under 1.6x (or its calls there took ten times what this one loses), and items "
        "may run slower side by side than alone (memory bandwidth, shared caches, a CPU's boost) or faster (data "
        "fresh in a worker's cache), which the pool's own timing cannot see. With the pool calls before and after "
        "it, the items' costs give MapRecord.contention, which the pool's later calls divide their items' time by, "
        "and the verdict that chose the pool is corrected with it",
        "",
    )
    AUTO_NEEDS_CLOUDPICKLE = (
        "auto_needs_cloudpickle",
        "decision",
        "CPU-bound work whose items or results only cloudpickle can send: the joblib (loky) pool runs it (a "
        "function only cloudpickle can send travels to processes by value)",
        "",
    )
    AUTO_ISOLATES_CRASHES = (
        "auto_isolates_crashes",
        "decision",
        "the function crashed a worker process before (a WorkerCrashedError, or a crash a retry recovered), "
        "or its first items, measured on a payoff thread, still ran after a call's timeout having had at least "
        "half of it (a hung item no thread can stop; or too many such probe threads hang already): "
        "it runs only in worker processes (processes, or joblib when only cloudpickle sends it), whatever "
        "the work, and is never measured or run in the caller: after a crash for the life of the process (a "
        "crash there would take the caller down, and no number of calls without one proves it cannot recur), "
        "after a timeout while that item still runs (one that ends was slow, not hung); lambdas and "
        "partials of the same source line share this; payoff.planning.PLANNER.reset() forgets it",
        "",
    )
    AUTO_UNDECIDED = (
        "auto_undecided",
        "decision",
        "auto settled the call before choosing a backend: parallelism was off, one worker was available, the "
        "call was nested, or its first item raised while auto measured it; the fallback reason, if any, says which",
        "",
    )
    EMPTY_INPUT = (
        "empty_input",
        "decision",
        "the call had no items: nothing ran, and no pool was started",
        "",
    )
    # -- fallbacks -------------------------------------------------------
    DISABLED = (
        "disabled",
        "fallback",
        "parallelism is switched off (CE_PARALLEL=off or enabled=False)",
        "switch it on where the detail says it was switched off: enabled=True in the ParallelConfig given, or, for "
        "an executor made without one, a strategy in that variable (PAYOFF_PARALLEL=processes, "
        "CE_PARALLEL=processes)",
    )
    TINY_WORKLOAD = (
        "tiny_workload",
        "fallback",
        "too little estimated work for parallelism to pay off",
        "this is usually right; set tiny_workload_threshold=0 and min_batch_size=1 (and, for instance-level "
        "work, min_instances_for_parallel=1) to force parallel",
    )
    TOO_FEW_ITEMS = (
        "too_few_items",
        "fallback",
        "one item, or one left after the first was run here to measure it: nothing to split across workers, "
        "however long it takes",
        "give the call more items than workers (split one large item into parts); a function whose first call "
        "measured dear items sends every item of its next calls to the pool",
    )
    POOL_START_COST = (
        "pool_start_cost",
        "fallback",
        "starting a pool would cost more than parallelism saves on this call; the pool starts once the calls "
        "kept serial have forgone as much as its start costs",
        "name the strategy (a named backend is started once and kept for every call), or give a call more work",
    )
    NO_MEASURED_GAIN = (
        "no_measured_gain",
        "fallback",
        "an earlier call of the same function at a similar size ran in parallel and measured no gain",
        "this is payoff believing its own measurement; a call several times larger is tried in parallel again",
    )
    GRANULARITY_MISMATCH = (
        "granularity_mismatch",
        "fallback",
        "the call splits on an axis the configured granularity does not allow",
        "set granularity='auto' (or the call's axis) in ParallelConfig or CE_PARALLEL",
    )
    INIT_FAILURE = (
        "init_failure",
        "fallback",
        "the pool or backend could not start",
        "the record's fallback detail names what stopped the start and what to do about it",
    )
    MAP_FAILURE_RETRY = (
        "map_failure_retry",
        "fallback",
        "a worker died (broken pool, lost worker) and the chunks it lost were rerun in fresh workers; "
        "an item that kills a worker again is isolated and raised as WorkerCrashedError, never run in the caller",
        "a worker died (out of memory, os._exit, a crash in native code) and the call recovered; if it recurs, "
        "the WorkerCrashedError names the item",
    )
    THREAD_BOUND = (
        "thread_bound",
        "fallback",
        "items raised on payoff's threads or worker processes an error that names a thread (an object bound to "
        "the thread that made it: an sqlite3 connection, a GUI handle), which the caller's thread does not meet; "
        "auto ran the items not yet done in the caller's thread, each item that raised there again, and keeps "
        "the function there from then on",
        "make such an object in each item, or once per thread (threading.local), and the items can run in "
        "parallel; strategy='serial' keeps them in the caller's thread without the first call's try",
    )
    UNPICKLABLE_RESULT_RERUN = (
        "unpicklable_result_rerun",
        "fallback",
        "some items returned results pickle cannot send back from a worker process (a lock, an open file, a "
        "generator); auto, which chose the pool, ran those items again in the caller's process, where a result "
        "is not pickled, and the call stayed parallel; each of them ran twice. A named backend raises instead",
        "return what pickle can send (plain data, arrays, instances of classes defined at a module's top level), "
        "or use strategy='threads' for results that must stay in this process; keep side effects out of items "
        "whose results cannot travel, since they run twice",
    )
    UNPICKLABLE = (
        "unpicklable",
        "fallback",
        "the function, an item or a result cannot be sent to worker processes",
        "use strategy='joblib' (cloudpickle) or 'threads', or send only what pickle can name (functions and "
        "classes defined at a module's top level; `df.itertuples(name=None)` gives plain tuples)",
    )
    PAYLOAD_TOO_LARGE = (
        "payload_too_large",
        "fallback",
        "moving the data to worker processes and back would cost more than running in parallel saves "
        "(its bytes, or pickling many tiny objects), or one task's pickled payload is above "
        "task_size_hint_bytes",
        "send indices instead of data and load shared state once per worker (worker_initializer), "
        "batch tiny items into larger ones (arrays), or raise task_size_hint_bytes",
    )
    SINGLE_WORKER = (
        "single_worker",
        "fallback",
        "only one worker is available",
        "raise max_workers (workers=) if you set it to 1, or the n_jobs of a joblib.parallel_config around a "
        "strategy=\"joblib\" call; otherwise this machine, its CPU affinity or its cgroup CPU quota (a container's "
        "CPU limit) allows only one",
    )
    EXECUTOR_UNUSED = (
        "executor_unused",
        "fallback",
        "a library entered the executor but did its work itself, serially, without calling map",
        "calibrated-explanations calls map only from its instance_parallel plugins: "
        "payoff.integrations.calibrated_explanations.enable(explainer) selects them",
    )
    THREAD_UNSAFE = (
        "thread_unsafe",
        "fallback",
        "a library's tasks are known to give wrong results run beside each other on threads (calibrated-"
        "explanations 1.0.2 with one threshold per instance: its tasks share one explainer), so they ran one "
        "after another in the caller",
        "name strategy='processes' (or leave auto): each worker process has its own copy of the explainer",
    )
    POOL_STOPPED = (
        "pool_stopped",
        "fallback",
        "another call stopped the pool this call shared (that call's timeout, a cancel, Ctrl-C), and the chunks "
        "this call lost with it were rerun in fresh workers: nothing crashed, the call stays parallel; or the "
        "program began to end while the call ran in a thread the program waits for, the pool's exit hook took no "
        "more work, and the chunks it had not started ran in that thread",
        "give calls that may time out or be cancelled an executor of their own, so stopping them costs the "
        "others no rerun; at the program's end, join the threads that map before the main thread returns",
    )
    NESTED = (
        "nested",
        "fallback",
        "called from inside an item of another payoff map (on its pool, or in the caller unless that map was "
        "asked to run serially: strategy='serial' or enabled=False make its items a loop's), from inside a task "
        "submitted to the pool the map would run on (its chunks would wait behind that task), anywhere in a "
        "payoff worker process (a task given to submit() on a process backend), or, for a "
        "process backend, in a worker of another library's process pool: a daemonic one (a "
        "multiprocessing.Pool's), which may not start processes, or one of a ProcessPoolExecutor, joblib (loky) "
        "or mpire pool whose workers leave it less than 2 CPUs; a worker left more starts at most that many "
        "processes. Nested maps run serially, so pools never nest and oversubscribe the cores",
        "parallelise the outer loop only",
    )

    @property
    def is_fallback(self) -> bool:
        return self.kind == "fallback"

    @property
    def recovered(self) -> bool:
        """A failure the call survived where it ran (lost chunks rerun in fresh workers, items whose results could
        not travel rerun in the caller), not a move to serial.

        ``RecordBuilder.recover`` records these and leaves the mode alone; every
        other fallback code comes from ``fall_back``, which makes the call serial.
        Metrics, reports and warnings read this to tell "recovered" from "fell back".
        """
        return self in _RECOVERED

    @property
    def serial_by_choice(self) -> bool:
        """Serial because it was the better choice or was asked for (too little work or too few items, a pool start
        or data movement costing more than it saves, a measured loss, a nested call, parallelism switched off), not
        because something kept the call from a pool that would have paid (a failed start, unpicklable work, a
        granularity that does not fit, a single CPU). The fallback-rate alert counts only the latter: a
        service of small calls, each rightly serial, read as 67-100% fallbacks and fired it."""
        return self in _BY_CHOICE

    @property
    def advice_sentence(self) -> str:
        """The advice as it ends a warning: capitalised, with a full stop."""
        return f"{self.advice[:1].upper()}{self.advice[1:]}." if self.advice else ""

    def __str__(self) -> str:
        return str(self._value_)


_RECOVERED = frozenset({Reason.MAP_FAILURE_RETRY, Reason.POOL_STOPPED, Reason.UNPICKLABLE_RESULT_RERUN})
_BY_CHOICE = frozenset({Reason.DISABLED, Reason.TINY_WORKLOAD, Reason.TOO_FEW_ITEMS, Reason.POOL_START_COST,
                        Reason.NO_MEASURED_GAIN, Reason.PAYLOAD_TOO_LARGE, Reason.NESTED})

FallbackReason = Reason
"""Alias kept for readers of DESIGN.md: the fallback codes live in :class:`Reason`."""

DecisionReason = Reason
"""Alias kept for readers of DESIGN.md: the decision codes live in :class:`Reason`."""


def fallback_reasons() -> list[Reason]:
    """Every code a record's ``fallback_reason`` may hold, the :attr:`~Reason.recovered` ones included."""
    return [r for r in Reason if r.is_fallback]


def recovered_reasons() -> list[Reason]:
    """The fallback codes of calls that survived a failure where they ran (``payoff_recoveries_total``)."""
    return [r for r in Reason if r.recovered]


def decision_reasons() -> list[Reason]:
    return [r for r in Reason if not r.is_fallback]


def initial_decision(requested: str) -> Reason:
    """The decision a call records until a backend is chosen: auto's own, or the one the user named."""
    if requested == "auto":
        return Reason.AUTO_UNDECIDED
    return Reason.EXPLICIT_OBJECT if requested == "custom" else Reason.EXPLICIT_STRATEGY
