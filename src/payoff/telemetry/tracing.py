"""OpenTelemetry spans: one ``payoff.map`` span per call, one child span per chunk.

Chunk spans are built after the fact from the worker's own monotonic stamps
(a call that ran as one chunk in the caller has none: its map span is that chunk),
so they show real queue wait and compute even for process pools, where no
tracer runs. The map span is made current whenever user code runs in the
caller or work is submitted, so spans the user opens inside ``fn`` nest
under it for the serial and thread strategies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from payoff._version import __version__
from payoff.observers import CallInfo, Observer
from payoff.record import ChunkStats, MapRecord

SPAN_NAME = "payoff.map"
CHUNK_SPAN_NAME = "payoff.chunk"
FALLBACK_EVENT = "payoff.fallback"
"""On a call that ran serially instead of as asked: ``payoff.fallback_reason`` and ``payoff.fallback_detail``."""
RECOVERY_EVENT = "payoff.recovery"
"""On a call that survived a failure where it ran (``MapRecord.fell_back`` False, ``payoff_recoveries_total``):
``payoff.recovery_reason`` and ``payoff.recovery_detail``."""


class Tracing(Observer):
    """Spans from calls, through the global TracerProvider unless one is given."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        self._cached: tuple[object, trace.Tracer] | None = None

    def _tracer(self) -> trace.Tracer:
        """One tracer per provider; the global provider may be replaced at any time, so check it."""
        provider = self._provider if self._provider is not None else trace.get_tracer_provider()
        cached = self._cached
        if cached is None or cached[0] is not provider:
            cached = (provider, trace.get_tracer("payoff", __version__, tracer_provider=provider))
            self._cached = cached
        return cached[1]

    def map_started(self, call: CallInfo) -> None:
        span = self._tracer().start_span(
            SPAN_NAME, kind=SpanKind.INTERNAL, start_time=_epoch_ns(call, call.started_ns),
            attributes={"payoff.workload": call.workload, "payoff.requested_strategy": call.requested_strategy,
                        "payoff.items": call.n_items, "payoff.granularity": call.granularity or "none"})
        if not span.is_recording():
            return  # no SDK, or sampled out: nothing will be exported, so skip the per-call work
        call.state["span"] = span
        ctx = span.get_span_context()
        if ctx.is_valid and ctx.trace_flags.sampled:
            call.state["trace_id"] = format(ctx.trace_id, "032x")

    @contextlib.contextmanager
    def scope(self, call: CallInfo) -> Iterator[None]:
        span = call.state.get("span")
        if span is None:
            yield
            return
        token = context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            context.detach(token)

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        span: Span | None = call.state.pop("span", None)
        if span is None:
            return
        if span.is_recording():
            # All of them, also those set at the start: a stream's length (payoff.items) is known only now.
            span.set_attributes(span_attributes(record))
            _reason_event(span, record)
            closed = isinstance(error, GeneratorExit) and record.outcome != "error"  # by its consumer, not an item
            if error is not None and not closed:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        recording = span.is_recording()
        span.end(end_time=_epoch_ns(call, call.started_ns + int(record.wall_seconds * 1e9)))
        if recording:  # after the map span: a queue with room for a few more spans takes it (hunt 69)
            self._chunk_spans(call, record, span)

    def _chunk_spans(self, call: CallInfo, record: MapRecord, parent: Span) -> None:
        if len(record.chunks) == 1 and record.chunks[0].where == "caller":
            return  # the whole call was one chunk in the caller: the map span already is that chunk
        tracer = self._tracer()
        ctx = trace.set_span_in_context(parent)
        for chunk in record.chunks:
            start = _epoch_ns(call, chunk.start_ns)
            span = tracer.start_span(CHUNK_SPAN_NAME, context=ctx, start_time=start,
                                     attributes=chunk_attributes(chunk))
            if chunk.where == "pool" and chunk.start_ns > chunk.submit_ns:
                span.add_event("payoff.submitted", timestamp=_epoch_ns(call, chunk.submit_ns))
            if chunk.n_errors:
                span.set_status(Status(StatusCode.ERROR, "an item raised"))
            span.end(end_time=max(start, _epoch_ns(call, chunk.end_ns)))


def _reason_event(span: Span, record: MapRecord) -> None:
    """A fallback event for a call that fell back, a recovery event for one that recovered: the span tells
    them apart as the record (``fell_back``) and the metrics (fallbacks against recoveries) do."""
    reason = record.fallback_reason
    if reason is None:
        return
    kind = "recovery" if reason.recovered else "fallback"
    span.add_event(RECOVERY_EVENT if reason.recovered else FALLBACK_EVENT,
                   {f"payoff.{kind}_reason": reason.value, f"payoff.{kind}_detail": record.fallback_detail})


def _epoch_ns(call: CallInfo, monotonic_ns: int) -> int:
    """Map a monotonic stamp onto wall-clock nanoseconds via the call's own start pair."""
    return int(call.started_at * 1e9) + (monotonic_ns - call.started_ns)


def span_attributes(record: MapRecord) -> dict[str, Any]:
    """Every attribute the telemetry contract puts on a ``payoff.map`` span, as the finished call's record has it.

    ``map_started`` sets the few known when the call starts (a sampler or processor may read them then); the
    span ends with all of these, so none keeps its start value when the record knows better (``payoff.items``
    is 0 at the start of an ``imap`` over an iterator, whose length is known only at its end).
    """
    qw, tt = record.queue_wait, record.task_time
    return {
        "payoff.workload": record.workload,
        "payoff.requested_strategy": record.requested_strategy,
        "payoff.items": record.n_items,
        "payoff.granularity": record.granularity or "none",
        "payoff.selected_strategy": record.selected_strategy,
        "payoff.decision_reason": record.decision_reason.value,
        **_reason_attributes(record),
        "payoff.chunks": record.n_chunks,
        "payoff.chunk_size": record.chunk_size,
        "payoff.workers": record.workers,
        "payoff.speedup": record.speedup,
        "payoff.efficiency": record.efficiency,
        "payoff.utilization": record.utilization,
        "payoff.pays_off": record.pays_off,
        "payoff.wall_seconds": record.wall_seconds,
        "payoff.serial_estimate_seconds": record.serial_estimate_seconds,
        "payoff.contention": record.contention,
        "payoff.queue_wait.p50_seconds": qw.p50,
        "payoff.queue_wait.p95_seconds": qw.p95,
        "payoff.task_time.p50_seconds": tt.p50,
        "payoff.task_time.p95_seconds": tt.p95,
        "payoff.task_time.max_seconds": tt.max,
        "payoff.pool_start_seconds": record.pool_start_seconds,
        "payoff.pool_reused": record.pool_reused,
        "payoff.pool_shared": record.pool_shared,
        "payoff.bytes_sent": record.bytes_sent,
        "payoff.bytes_received": record.bytes_received,
        "payoff.errors": record.n_errors,
        "payoff.outcome": record.outcome,
        "payoff.items_done": record.items_done,
    }


def _reason_attributes(record: MapRecord) -> dict[str, str]:
    """A recovered call (``map_failure_retry``, ``pool_stopped``, ``unpicklable_result_rerun``) stayed
    parallel: its code is a ``payoff.recovery_reason``, as its span event and ``payoff_recoveries_total``
    say, so a query on ``payoff.fallback_reason != none`` finds only the calls that fell back. The record keeps
    its one ``fallback_reason`` field (the records file's format); each attribute is ``none`` when it does not apply."""
    reason = record.fallback_reason
    recovered = reason is not None and reason.recovered
    return {"payoff.fallback_reason": reason.value if reason is not None and not recovered else "none",
            "payoff.recovery_reason": reason.value if reason is not None and recovered else "none"}


def chunk_attributes(chunk: ChunkStats) -> dict[str, Any]:
    return {
        "payoff.chunk.index": chunk.index,
        "payoff.chunk.first_item": chunk.first_item,
        "payoff.chunk.items": chunk.n_items,
        "payoff.chunk.worker": chunk.worker,
        "payoff.chunk.where": chunk.where,
        "payoff.chunk.queue_wait_seconds": chunk.queue_wait_seconds,
        "payoff.chunk.cpu_seconds": chunk.cpu_seconds,
    }
