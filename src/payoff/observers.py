"""How telemetry watches calls without the executor knowing any backend.

The executor calls four hooks. ``scope`` wraps every stretch of the call in
which user code runs in the caller's thread or work is submitted, so a tracing
observer can make its span current there (and thread workers inherit it)
without holding a context across an ``imap`` ``yield``. An observer that
raises is logged once and ignored: telemetry must never break or slow a map.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from payoff import _forks
from payoff.record import ChunkStats, MapRecord

log = logging.getLogger("payoff")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_CONTEXTLIB = os.path.splitext(contextlib.__file__)[0]
"""A ``with`` block's enter and exit frames: never the user's line (a library's context manager can warn)."""


@dataclass(frozen=True)
class CallSite:
    """The user's line that called map: where warnings point."""

    filename: str
    lineno: int
    module: str
    registry: dict[Any, Any] = field(compare=False, repr=False)


@dataclass
class CallInfo:
    """What is known about a call before it has a record."""

    call_id: int
    workload: str
    requested_strategy: str
    granularity: str | None
    n_items: int
    site: CallSite
    started_ns: int = field(default_factory=time.monotonic_ns)
    started_at: float = field(default_factory=time.time)
    selected_strategy: str = ""
    """Filled in once the plan is made (and changed on a fallback), for chunk-level observers."""
    pool: str = ""
    """The last pool strategy the call was to run on ("" while it asked for none): where its pool starts and
    failures count, also when none of its chunks ran there (a start that failed)."""
    workers: int = 1
    progress: bool | None = None
    """The call's ``progress=`` argument: True shows a bar, None decides by interactivity."""
    stream: bool = False
    """The input's length is unknown (an iterator read as the work goes): ``n_items`` is 0 until it ends."""
    told_length: int | None = None
    """A stream's count where its input told it (a dict, a set, a pandas Series): a bar's total, no more."""
    read: Callable[[], int] | None = None
    """For a stream: how many of its items were read so far (handed to workers or run), as the work goes."""
    scoped: bool = False
    """True while the whole call already runs inside the observers' scope (``map``, not ``imap``)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Per-observer scratch space (a span, say), keyed by the observer's name."""


class Observer:
    """Base class with no-op hooks; subclass and override what you need."""

    def map_started(self, call: CallInfo) -> None:
        return None

    def map_planned(self, call: CallInfo) -> None:
        """The strategy and workers are known (``call.selected_strategy``, ``call.workers``)."""
        return None

    @contextlib.contextmanager
    def scope(self, call: CallInfo) -> Iterator[None]:
        yield

    def chunk_finished(self, call: CallInfo, chunk: ChunkStats) -> None:
        return None

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        return None


def _overrides(observer: object, hook: str) -> bool:
    """Whether ``observer``'s ``hook`` is anything but :class:`Observer`'s no-op (set on the instance counts)."""
    bound = getattr(observer, hook, None)
    return getattr(bound, "__func__", bound) is not getattr(Observer, hook)


class Observers:
    """Fans hooks out to observers, isolating their failures."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.items = list(observers)
        self._scoped = [o for o in self.items if type(o).scope is not Observer.scope]
        self._complained: set[tuple[type[Any], str]] = set()
        self._hooked = {hook: [o for o in self.items if _overrides(o, hook)]
                        for hook in ("map_started", "map_planned", "chunk_finished", "map_finished")}
        """Per hook, the observers that override it: a call fans out about 20 hooks, half of them no-ops."""

    def started(self, call: CallInfo) -> None:
        for o in self._hooked["map_started"]:
            self._call(o, "map_started", call)

    def planned(self, call: CallInfo) -> None:
        for o in self._hooked["map_planned"]:
            self._call(o, "map_planned", call)

    @contextlib.contextmanager
    def scope(self, call: CallInfo) -> Iterator[None]:
        if not self._scoped or call.scoped:
            yield
            return
        with contextlib.ExitStack() as stack:
            for o in self._scoped:
                try:
                    stack.enter_context(_Guarded(self, o, o.scope(call)))
                except Exception as exc:
                    self._complain(o, "scope", exc)
            yield

    def chunk(self, call: CallInfo, chunk: ChunkStats) -> None:
        for o in self._hooked["chunk_finished"]:
            self._call(o, "chunk_finished", call, chunk)

    def finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        for o in self._hooked["map_finished"]:
            self._call(o, "map_finished", call, record, error)

    def _call(self, o: Observer, hook: str, *args: Any) -> None:
        try:
            getattr(o, hook)(*args)
        except Warning:
            raise  # a warnings filter set to "error" turned a warning into an exception on purpose
        except Exception as exc:
            self._complain(o, hook, exc)

    def _complain(self, o: Observer, hook: str, exc: Exception) -> None:
        key = (type(o), hook)
        if key not in self._complained:
            self._complained.add(key)
            with contextlib.suppress(Exception):  # logging's last resort writes to a stderr that may be closed
                log.warning("payoff observer %s failed in %s (further failures not logged): %r",
                            type(o).__name__, hook, exc)


class _Guarded:
    """An observer's scope whose way out is isolated as its way in is: one that raised there made every map
    raise it, its results lost, and one that swallowed an item's error made ``map`` return a short list with
    no error (hunt 69). What the call raises goes on whatever the scope does with it."""

    def __init__(self, owner: Observers, observer: Observer, scope: contextlib.AbstractContextManager[Any]) -> None:
        self.owner, self.observer, self.scope = owner, observer, scope

    def __enter__(self) -> Any:
        return self.scope.__enter__()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> Literal[False]:
        try:
            self.scope.__exit__(kind, error, tb)
        except Exception as exc:
            if exc is error:
                return False
            if isinstance(exc, Warning) and error is None:
                raise  # a warnings filter set to "error" turned a warning into an exception on purpose
            self.owner._complain(self.observer, "scope exit", exc)  # the call's own error goes on (review 73)
        return False


_library_dirs: tuple[str, ...] = ()


def skip_frames_from(*paths: str) -> None:
    """Treat frames under ``paths`` as library code: a library that calls ``map`` for its user (an
    integration) makes warnings point at the user's line that called the library, not into it."""
    global _library_dirs
    _library_dirs = tuple(dict.fromkeys((*_library_dirs, *(p for p in paths if p))))


def warn_at_call_site(warning: Warning) -> None:
    """Warn at the user's line, however deep in payoff's generators the cause sits: a fixed ``stacklevel``
    lands inside payoff, where the default filter shows it once per process for every caller."""
    site = find_call_site()
    warnings.warn_explicit(warning, type(warning), site.filename, site.lineno, site.module,
                           registry=site.registry)


def warn_before_raising(warning: Warning) -> str | None:
    """``warn_at_call_site`` for a warning about a call that raises its own error next (a ``TimeoutError``, a
    ``CancelledError``), or about a wait that must go on (``shutdown``): where the filters make it an error
    (``python -W error``, pytest's ``filterwarnings = error``) it would replace that error, which the caller's
    ``except`` names, or cut the wait short. Its text is returned then, for a note on the call's error (or a
    log line); None once it was said as a warning."""
    try:
        warn_at_call_site(warning)
    except Warning as raised:
        return as_note(raised)
    return None


def as_note(raised: Warning) -> str:
    """A warning the filters raised, as a note on the error the call raises instead (``add_note``)."""
    return f"{type(raised).__name__} (an error by the warnings filters): {raised}"


def warning_action(text: str | Callable[[], str], category: type[Warning], module: str, lineno: int) -> str:
    """The action the warnings filters prescribe, matched as ``warnings`` itself does: for a warning whose text
    varies (a count, a duration) but which is said once per call site, where the stdlib would key on the text.
    ``text`` may be a function: it is called only if a filter that matches all else asks for the text."""
    said: str | None = None
    for action, msg, cat, mod, ln in warnings.filters:
        if not (issubclass(category, cat) and (mod is None or mod.match(module)) and (ln == 0 or lineno == ln)):
            continue
        if msg is not None:
            if said is None:
                said = text if isinstance(text, str) else text()
            if not msg.match(said):
                continue
        return str(action)
    return str(getattr(warnings, "defaultaction", "default"))


class SiteWarnings:
    """Warnings said once per call site (as the filters' action scopes it), though their text varies.

    The standard library keys "shown once" on the text, so a count or a
    duration in it would show the warning again on every call. What was shown
    at a line or in a module is kept where the standard library keeps it, in
    that module's ``__warningregistry__``, so whatever empties that registry
    shows it again as it shows any warning again: IPython does for each run of
    a cell (a re-run cell showed its ``UserWarning`` each time, its fallback
    warning only the first time).
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[object, ...], bool] = {}
        """For the "once" action, which the standard library keeps process-wide too."""
        self._generation = 0
        """Bumped when the filters change or on ``reset``: the keys of earlier generations no longer match."""
        self._lock = _forks.Lock()
        self._filters: object = None
        self._filters_as_seen: list[Any] = []

    def warn(self, site: CallSite, warning: Warning, tag: tuple[object, ...] = ()) -> None:
        """Warn ``warning`` at ``site`` unless the filters ignore it or it was shown in their scope; ``tag`` tells
        warnings of one category apart (a fallback's reason)."""
        self.warn_lazily(site, type(warning), lambda: warning, tag)

    def warn_lazily(self, site: CallSite, category: type[Warning], make: Callable[[], Warning],
                    tag: tuple[object, ...] = ()) -> None:
        """:meth:`warn` for a warning made only if it is shown (or a filter matches on its text): a call kept
        serial in a loop of small calls would otherwise format its text each time, to be ignored."""
        made: list[Warning] = []

        def warning() -> Warning:
            if not made:
                made.append(make())
            return made[0]

        action = warning_action(lambda: str(warning()), category, site.module, site.lineno)
        if action == "ignore":
            return
        if action not in ("default", "module", "once"):
            warnings.warn_explicit(warning(), category, site.filename, site.lineno, site.module, registry={})
            return
        with self._lock:
            self._forget_if_filters_changed()
            key = (_SHOWN, self._generation, *((site.filename, site.lineno) if action == "default" else
                                               (site.module,) if action == "module" else ()), *tag)
            seen: dict[Any, Any] = self._seen if action == "once" else site.registry
            if key in seen:
                return
            seen[key] = True
        shown: dict[Any, Any] = {}  # the standard library writes the filters' current version in it
        warnings.warn_explicit(warning(), category, site.filename, site.lineno, site.module, registry=shown)
        if seen is site.registry and "version" in shown and seen.get("version") != shown["version"]:
            with self._lock:  # as the standard library brings a registry up to date: else its next warning
                seen.clear()  # there would, and drop this key with the rest
                seen["version"] = shown["version"]
                seen[key] = True

    def _forget_if_filters_changed(self) -> None:
        """As the standard library forgets what it showed when the filters change: a fresh ``catch_warnings``
        block with ``simplefilter("default")`` (a test, a re-run cell) showed a plain warning again, never a
        fallback seen before. (It holds the list it saw, so that list's id cannot come back as another's.)"""
        filters = warnings.filters
        if filters is not self._filters or filters != self._filters_as_seen:
            self._forget()
            self._filters, self._filters_as_seen = filters, list(filters)

    def _forget(self) -> None:
        self._seen.clear()
        self._generation += 1

    def reset(self) -> None:
        with self._lock:
            self._forget()


_SHOWN = "payoff: shown"
"""First in the keys payoff puts in a module's ``__warningregistry__``: the standard library's own are (text,
category, line), and its ``"version"``."""


def find_call_site() -> CallSite:
    """The first frame outside payoff, registered libraries and contextlib: the user's line, for warnings."""
    prefixes = (_PACKAGE_DIR, _CONTEXTLIB, *_library_dirs)
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(prefixes):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return CallSite("<unknown>", 0, "payoff", {})
    globs = frame.f_globals
    name = str(globs.get("__name__", "<unknown>"))
    return CallSite(frame.f_code.co_filename, frame.f_lineno, name, _registry(globs, frame.f_code.co_filename, name))


_DETACHED: OrderedDict[tuple[str, str], dict[Any, Any]] = OrderedDict()
"""Registries of code whose globals are no module's, one per file and module name, the most recently used last."""
_DETACHED_LIMIT = 256
"""At most this many: code compiled per request under a name of its own would otherwise add one each time."""
_DETACHED_LOCK = _forks.Lock()


def _registry(globs: dict[str, Any], filename: str, name: str) -> dict[Any, Any]:
    """Where "shown at this call site" is kept: the module's own ``__warningregistry__``, as the standard library
    keeps it. A function sent by value (cloudpickle: a lambda, a notebook's function on joblib) gets fresh
    globals each time a chunk is unpickled, so a nested map's fallback warning showed once per chunk (24
    times in a worker for 24 chunks); such globals, no module's ``__dict__``, share one registry per file."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__dict__", None) is globs:
        registry: dict[Any, Any] = globs.setdefault("__warningregistry__", {})
        return registry
    key = (filename, name)
    with _DETACHED_LOCK:
        found = _DETACHED.get(key)
        if found is None:
            found = _DETACHED[key] = {}
            while len(_DETACHED) > _DETACHED_LIMIT:
                _DETACHED.popitem(last=False)
        _DETACHED.move_to_end(key)
        return found
