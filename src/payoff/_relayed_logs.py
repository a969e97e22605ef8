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

import logging
import traceback
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from payoff._chunk_kept import Kept

RELAY_CAP = 10_000
"""A chunk relays at most this many records (a debug log of a million items); the rest are handled where they
are emitted, as before."""

Relayed = dict[str, Any]
"""A record's attributes, as ``logging.makeLogRecord`` takes them: its message formatted, its exception as
text, any attribute pickle cannot send as its ``repr``."""

def _install() -> None:
    """Route this process's records through :func:`_kept_or_handled`."""
    logging.Logger.callHandlers = _keeping(logging.Logger.callHandlers)  # type: ignore[method-assign,assignment]


_KEPT: Kept[logging.LogRecord] = Kept(RELAY_CAP, _install)


def collecting() -> AbstractContextManager[list[logging.LogRecord]]:
    """Keep the records this thread emits while a chunk runs (the chunk's thread only: an item's own threads
    log where they are, as they warn)."""
    return _KEPT.collecting()


def _keeping(handled_before: Callable[[logging.Logger, logging.LogRecord], None]) \
        -> Callable[[logging.Logger, logging.LogRecord], None]:
    def _kept_or_handled(self: logging.Logger, record: logging.LogRecord) -> None:
        kept = _KEPT.list()
        if kept is None:
            handled_before(self, record)
            return
        kept.append(record)
    return _kept_or_handled


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
        logger = logging.getLogger(record.name) if record.name != "root" else logging.getLogger()
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def levels() -> tuple[tuple[str, int], ...]:
    """The levels set here: the root's, each named logger's that is set, and ``logging.disable``'s (as
    ``"\\0disable"``): what decides which records the items' loggers make."""
    manager = logging.Logger.manager
    named = [(name, logger.level) for name, logger in list(manager.loggerDict.items())
             if isinstance(logger, logging.Logger) and logger.level]
    return (("", logging.getLogger().level), ("\0disable", manager.disable), *sorted(named))


_taken: tuple[tuple[str, int], ...] = ()


def take_levels(given: tuple[tuple[str, int], ...]) -> None:
    """In a worker: the caller's levels (:func:`levels`). A logger the caller sets no level for keeps the
    worker's own, unless an earlier chunk gave it the caller's: a library the items imported here set its own
    logger's level, as it did in the caller where a loop's items imported it."""
    global _taken
    if given == _taken or not given:
        return
    wanted = dict(given)
    logging.disable(wanted.pop("\0disable", logging.NOTSET))
    logging.getLogger().setLevel(wanted.pop("", logging.WARNING))
    for name, _ in _taken:
        if name and name != "\0disable" and name not in wanted:
            logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in wanted.items():
        logging.getLogger(name).setLevel(level)
    _taken = given
