"""Log records an item emits in a worker process, handled in the caller as a loop's would be.

A loop's log records go through the caller's loggers: their levels, filters and handlers (a file, a notebook
cell, pytest's ``caplog``, a list of records). A worker process has its own: a fresh interpreter (joblib's
loky workers, ``spawn``, ``forkserver``) only logging's defaults, so an ``INFO`` record was dropped and a
``WARNING`` printed bare to the worker's stderr; a forked one the handlers of the fork's moment, writing to
copies of their lists and streams. A handler collecting records saw 0-9 of 300 items' records where a loop's
saw 300 (hunt 76). The worker now takes the caller's levels (``payoff._caller_state``); while a chunk runs,
each record its thread emits is kept, instead of going to the worker's handlers, and travels with the chunk's
outcome; the caller hands it to the logger of its name, where the chunk is collected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from payoff._chunk_kept import Kept

RELAY_CAP = 10_000
"""A chunk relays at most this many records (a debug log of a million items); the rest are handled where they
are emitted, as before."""

Relayed = dict[str, Any]
"""A record's attributes, as ``logging.makeLogRecord`` takes them: its message formatted, its exception as
text, any attribute pickle cannot send as its ``repr``."""

_handled_before: Callable[[logging.Logger, logging.LogRecord], None] = logging.Logger.callHandlers
"""``Logger.callHandlers`` as it was before :func:`_install`: where a record goes when none is kept."""


def _install() -> None:
    """Route this process's records through :func:`_kept_or_handled`."""
    global _handled_before
    _handled_before = logging.Logger.callHandlers
    logging.Logger.callHandlers = _kept_or_handled  # type: ignore[method-assign]


_KEPT: Kept[logging.LogRecord] = Kept(RELAY_CAP, _install)


HOLD_SECONDS = 1.0
"""A chunk still running this long hands the records it kept to this worker's own handlers, and so each record
it emits from then on: an item that logged and then hung under a ``timeout=`` lost its records with the chunk
(review 83), where a loop's were out at once. A worker that dies within this long of a record still loses it."""


class _Chunk:
    """The chunk running here: when it began, what it keeps, and whether that went to the worker's handlers."""

    def __init__(self, kept: list[logging.LogRecord]) -> None:
        self.started, self.kept, self.handed = time.monotonic(), kept, False


_held = threading.Lock()
"""Between the chunk's thread keeping a record and the watcher handing the chunk's records over."""
_running: _Chunk | None = None


def collecting() -> AbstractContextManager[list[logging.LogRecord]]:
    """Keep the records this thread emits while a chunk runs (the chunk's thread only: an item's own threads
    log where they are, as they warn); none where a ``worker_initializer`` set logging up."""
    return _collecting()


@contextmanager
def _collecting() -> Iterator[list[logging.LogRecord]]:
    global _running
    if _worker_owns_logging:
        yield []
        return
    with _KEPT.collecting() as kept:
        _watch()
        _running = _Chunk(kept)
        try:
            yield kept
        finally:
            with _held:
                _running = None


_watcher: tuple[int, threading.Thread] | None = None


def _watch() -> None:
    """One thread a worker process, that hands a long chunk's records to the worker's handlers."""
    global _watcher
    if _watcher is not None and _watcher[0] == os.getpid():
        return
    thread = threading.Thread(target=_hand_over_long_chunks, name="payoff-log-hold", daemon=True)
    _watcher = (os.getpid(), thread)
    thread.start()


def _hand_over_long_chunks() -> None:
    while True:
        time.sleep(HOLD_SECONDS / 4)
        with _held:
            running = _running
            if running is None or running.handed or time.monotonic() - running.started < HOLD_SECONDS:
                continue
            records = list(running.kept)
            running.kept.clear()
            running.handed = True  # what the chunk emits from now on is handled here
        for record in records:
            with contextlib.suppress(Exception):
                _handled_before(logging.getLogger(record.name), record)


def _kept_or_handled(self: logging.Logger, record: logging.LogRecord) -> None:
    with _held:
        kept, running = _KEPT.list(), _running
        if kept is not None and not (running is not None and running.handed):
            kept.append(record)
            return
    _handled_before(self, record)


_worker_owns_logging = False
"""A ``worker_initializer`` set this worker's logging up (a handler, a level): its records go where it said, at
its levels, as before relaying (a file per worker got 0 of 20 records: review 83)."""


def _fingerprint() -> tuple[Any, ...]:
    root = logging.getLogger()
    loggers = list(logging.Logger.manager.loggerDict.items())
    named = tuple((name, logger.level, tuple(map(id, logger.handlers)))
                  for name, logger in loggers if isinstance(logger, logging.Logger))
    return root.level, tuple(map(id, root.handlers)), named


def before_initializer() -> tuple[Any, ...]:
    """In a worker, before the user's ``worker_initializer``: its logging set-up as it was."""
    return _fingerprint()


def after_initializer(before: tuple[Any, ...]) -> None:
    global _worker_owns_logging
    _worker_owns_logging = _fingerprint() != before


def travelling(kept: list[logging.LogRecord], dumps: Callable[[Any], bytes]) -> tuple[Relayed, ...]:
    """The kept records as they can travel: what ``logging.handlers.QueueHandler`` sends, and each attribute
    (an ``extra=``) that cannot travel as its ``repr``."""
    return tuple(_sendable(record, dumps) for record in kept)


def _sendable(record: logging.LogRecord, dumps: Callable[[Any], bytes]) -> Relayed:
    attributes = dict(record.__dict__)
    try:
        attributes["msg"] = record.getMessage()
    except Exception as exc:  # arguments that do not fit the message: a loop's handler would print the error
        attributes["msg"] = f"{record.msg!r} % {record.args!r} failed: {exc!r}"
    attributes["args"] = None
    if record.exc_info:
        attributes["exc_text"] = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip()
    attributes["exc_info"] = None
    try:
        dumps(attributes)  # the usual record at once; one with an attribute pickle refuses, each in turn
    except Exception:
        for name, value in list(attributes.items()):
            try:
                dumps(value)
            except Exception:
                attributes[name] = repr(value)
    return attributes


def handle_here(relayed: Iterable[Relayed]) -> None:
    """Hand a chunk's records to the caller's loggers of their names, as a loop's records go, at the levels set
    here now."""
    for attributes in relayed:
        record = logging.makeLogRecord(attributes)
        logger = logging.getLogger(record.name)  # "root" is the root logger's name and gets it
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


_UNCHANGED = logging.getLogger("payoff.levels_unchanged")
"""A logger whose cache of answers ``setLevel`` and ``logging.disable`` empty, with every other logger's: while it
holds one, no level changed since :func:`levels` last read them all."""
_levels: tuple[tuple[str, int], ...] | None = None


def levels() -> tuple[tuple[str, int], ...]:
    """The levels set here: the root's, each named logger's that is set, and ``logging.disable``'s (as
    ``"\\0disable"``): what decides which records the items' loggers make. Read again only after a level
    changed: with 3,000 loggers a reading took 1.6 ms, each chunk's (review 83)."""
    global _levels
    known = _levels
    if known is not None and getattr(_UNCHANGED, "_cache", None):
        return known
    _UNCHANGED.isEnabledFor(logging.CRITICAL)  # first: a change while they are read empties it again
    manager = logging.Logger.manager
    named = [(name, logger.level) for name, logger in list(manager.loggerDict.items())
             if isinstance(logger, logging.Logger) and logger.level]
    _levels = (("", logging.getLogger().level), ("\0disable", manager.disable), *sorted(named))
    return _levels


_taken: tuple[tuple[str, int], ...] = ()


def take_levels(given: tuple[tuple[str, int], ...]) -> None:
    """In a worker: the caller's levels (:func:`levels`). A logger the caller sets no level for keeps the
    worker's own, unless an earlier chunk gave it the caller's: a library the items imported here set its own
    logger's level, as it did in the caller where a loop's items imported it."""
    global _taken
    if given == _taken or not given or _worker_owns_logging:
        return
    wanted = dict(given)
    manager = logging.Logger.manager
    manager.disable = wanted.pop("\0disable", logging.NOTSET)
    logging.getLogger().level = wanted.pop("", logging.WARNING)
    for name, _ in _taken:
        if name and name != "\0disable" and name not in wanted:
            logging.getLogger(name).level = logging.NOTSET
    for name, level in wanted.items():
        logging.getLogger(name).level = level
    clear = getattr(manager, "_clear_cache", None)  # once: each setLevel empties every logger's cache
    if clear is not None:
        clear()
    else:
        logging.getLogger().setLevel(logging.getLogger().level)
    _taken = given
