"""ParallelConfig and the ``CE_PARALLEL`` grammar.

The grammar is calibrated-explanations' own, so a ``CE_PARALLEL`` value that
works there works here; payoff adds keys for its extra fields. Unlike the
original, a token that is not understood is an error that names it, because a
silently ignored typo is how people end up with a serial run they think is
parallel.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeGuard, TypeVar

from payoff import _cpus
from payoff._imported import imported

STRATEGY_NAMES: tuple[str, ...] = ("auto", "serial", "threads", "processes", "joblib", "dask")
_STRATEGY_ALIASES = {"sequential": "serial", "thread": "threads", "process": "processes", "loky": "joblib"}
GRANULARITIES: tuple[str, ...] = ("instance", "feature", "auto")
START_METHODS: tuple[str, ...] = ("fork", "forkserver", "spawn")

Granularity = Literal["instance", "feature", "auto"]

_ENABLE = frozenset({"1", "true", "on", "yes", "enable", "enabled"})
_DISABLE = frozenset({"0", "false", "off", "no", "disable", "disabled"})

ENV_VAR = "PAYOFF_PARALLEL"
ALIAS_ENV_VAR = "CE_PARALLEL"
"""calibrated-explanations' name for the same setting, with the same grammar: read when PAYOFF_PARALLEL is unset."""


def is_strategy_object(value: object) -> bool:
    """A user strategy is anything shaped like ``concurrent.futures.Executor``, or a dask ``Client``."""
    return callable(getattr(value, "submit", None)) and (
        callable(getattr(value, "shutdown", None)) or is_dask_client(value))


def is_dask_client(value: object) -> bool:
    return type(value).__name__ == "Client" and type(value).__module__.startswith("distributed")


@dataclass(frozen=True)
class ParallelConfig:
    """How a :class:`~payoff.ParallelExecutor` may run work.

    ``None`` in a threshold or size field means "derive it from measured cost",
    which is the point of payoff: flat item-count thresholds are what make
    parallel modes slower than a loop.
    """

    enabled: bool = True
    strategy: Any = "auto"
    max_workers: int | None = None
    min_batch_size: int | None = None
    min_instances_for_parallel: int | None = None
    tiny_workload_threshold: float | None = None
    instance_chunk_size: int | None = None
    feature_chunk_size: int | None = None
    granularity: Granularity = "auto"
    task_size_hint_bytes: int = 16 * 1024 * 1024
    force_serial_on_failure: bool = True
    worker_initializer: Callable[..., object] | None = None
    worker_init_args: tuple[Any, ...] = field(default=())
    idle_timeout: float | None = 300.0
    start_method: str | None = None
    address: str | None = None
    """A dask scheduler address (``tcp://host:8786``) for ``strategy="dask"``; None starts a LocalCluster."""
    pool_start_timeout: float = 300.0
    """Longest a pool start may take when no call ``timeout=`` bounds it: process start-up plus the
    ``worker_initializer`` on every worker. A start still waiting then is stopped and the call falls back with
    ``init_failure`` (or raises ``PoolStartTimeoutError`` without ``force_serial_on_failure``) instead of hanging.
    Raise it for an initializer that loads a large model; it is not part of the pool's identity."""
    max_waiting_workers: int = 32
    """Cap on the threads auto runs for work that mostly waits (I/O, sleep, remote calls): such work is
    limited by waiting, not cores, so auto runs more threads than cores, as many as the measured wait
    fraction needs, up to this (``ThreadPoolExecutor``'s own default cap is 32)."""

    inner_threads: int | None = None
    """Threads each process worker's native libraries (OpenBLAS, MKL, BLIS, OpenMP, numexpr) may run, and the
    CPUs ``joblib.Parallel(n_jobs=-1)`` counts there (``LOKY_MAX_CPU_COUNT``).
    None: the CPU capacity divided by the workers, at least 1, as loky does under ``joblib.Parallel``, leaving
    alone a library whose variable (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``LOKY_MAX_CPU_COUNT``, ...)
    the user set to no more than that (a larger one would have every worker oversubscribe the CPUs). A number:
    that many, over those variables too. 0: leave the libraries as they are. Threads
    and dask workers are not limited. Part of a pool's identity."""

    def __post_init__(self) -> None:
        _plain_numbers(self)
        _validate(self)

    @property
    def strategy_name(self) -> str:
        """The strategy's name: ``"dask"`` for a dask Client, ``"custom"`` for other objects."""
        if isinstance(self.strategy, str):
            return self.strategy
        return "dask" if is_dask_client(self.strategy) else "custom"

    def with_changes(self, **changes: Any) -> ParallelConfig:
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        base: ParallelConfig | None = None,
    ) -> ParallelConfig:
        """Build a config from ``PAYOFF_PARALLEL`` and ``CE_PARALLEL`` (same grammar) as they are *now*.

        Never cached at import. Both may be set, as docs/calibrated-explanations.md advises (CE's keys in
        ``CE_PARALLEL``, which CE reads too; payoff's own in ``PAYOFF_PARALLEL``): their settings add up. A
        setting both give different values is an error: one of them would be ignored.
        """
        env = os.environ if environ is None else environ
        text, alias = _set(env.get(ENV_VAR)), _set(env.get(ALIAS_ENV_VAR))
        start = base if base is not None else cls()
        if text is None and alias is None:
            return start
        changes, ce_tiny = _parsed(alias, ALIAS_ENV_VAR) if alias is not None else ({}, 0)
        if text is not None:
            own = parse_ce_parallel(text, ENV_VAR)
            if "min_batch_size" in own and ce_tiny and ce_tiny == changes["min_batch_size"]:  # the larger of two
                own["min_batch_size"] = changes["min_batch_size"] = max(own["min_batch_size"],
                                                                        changes["min_batch_size"])
            clash = sorted(k for k in own.keys() & changes.keys() if own[k] != changes[k])
            if clash:  # one spelt two ways ("process", "strategy=processes") agrees
                raise ValueError(f"{ENV_VAR}={_shown(text)} and {ALIAS_ENV_VAR}={_shown(alias or '')} disagree on "
                                 f"{', '.join(clash)}; give each setting once (CE's keys in {ALIAS_ENV_VAR}, "
                                 f"payoff's own in {ENV_VAR})")
            changes |= own
        if changes.get("address") is not None \
                and changes.get("strategy", start.strategy_name) != "dask":
            name, token = next((n, t.strip()) for n, v in ((ENV_VAR, text), (ALIAS_ENV_VAR, alias)) if v
                               for t in v.split(",") if t.partition("=")[0].strip().lower() == "address")
            raise ValueError(f"{name} token {_quote(token)} names a dask scheduler, and no variable names the dask "
                             f"strategy: write PAYOFF_PARALLEL=dask,address=... (or leave the address out). {GRAMMAR}")
        return start.with_changes(**changes)


# -- limits ----------------------------------------------------------------

MAX_WORKERS_PER_CPU = 64
"""Workers allowed per usable CPU: enough for I/O-bound threads, far below a fork bomb."""
MAX_COUNT = 2**63 - 1
"""Upper bound of every other count and of byte sizes: anything larger is a typo, not a setting."""
MAX_SECONDS = 365 * 24 * 3600
"""One year: longer seconds settings are typos (``idle_timeout=None`` means never), and
``threading`` waits refuse timeouts above ~292 years."""
TOKEN_QUOTE_CHARS = 80
"""Error messages quote a bad value or ``CE_PARALLEL`` token whole up to this length, else its beginning."""


def usable_cpus() -> int:
    """CPUs a pool can keep busy: the affinity, not the machine's count, and no more than the cgroup CPU quota.

    The quota is re-read every few seconds (``_cpus.QUOTA_TTL_SECONDS``): a container's
    limit is what its workers get, however many cores the host shows.
    """
    return _cpus.cpus_allowed(_affinity(), _cpus.quota_now.get())


def cpu_capacity() -> float:
    """CPU-seconds per second a pool of this process can get: fewer than :func:`usable_cpus` under a fractional
    quota (1.5 CPUs run two workers at three quarters of a CPU each)."""
    quota = _cpus.quota_now.get()
    affinity = _affinity()
    return float(affinity) if quota is None else max(min(float(affinity), quota), 1e-3)


def cpus_described() -> str:
    """What limits :func:`usable_cpus` now, for the detail of a decision it made."""
    affinity, quota = _affinity(), _cpus.quota_now.get()
    if quota is not None and _cpus.cpus_allowed(affinity, quota) < affinity:
        return f"a cgroup CPU quota of {quota:g} CPU{'' if quota == 1 else 's'}, of {affinity} in the CPU affinity"
    return f"{affinity} CPU{'' if affinity == 1 else 's'} in the CPU affinity"


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def max_workers_limit() -> int:
    """The largest ``max_workers`` accepted: :data:`MAX_WORKERS_PER_CPU` per usable CPU.

    Read at validation time, so a process whose affinity changes gets the limit of now.
    """
    return MAX_WORKERS_PER_CPU * usable_cpus()


# -- validation -------------------------------------------------------------

_NONE_MEANS = {"tiny_workload_threshold": "derive it from measured cost", "idle_timeout": "never release the pool"}


def _validate(cfg: ParallelConfig) -> None:
    if not isinstance(cfg.enabled, bool):
        raise ValueError(f"ParallelConfig.enabled must be True or False, got {_shown(cfg.enabled)}")
    _validate_strategy(cfg)
    for name, check in _FIELD_CHECKS.items():
        check(name, getattr(cfg, name))
    if cfg.granularity not in GRANULARITIES:
        raise ValueError(
            f"ParallelConfig.granularity must be one of {', '.join(GRANULARITIES)}; got {_shown(cfg.granularity)}"
        )
    if not isinstance(cfg.force_serial_on_failure, bool):
        raise ValueError("ParallelConfig.force_serial_on_failure must be True or False, "
                         f"got {_shown(cfg.force_serial_on_failure)}")
    if cfg.worker_initializer is not None and not callable(cfg.worker_initializer):
        raise ValueError(f"ParallelConfig.worker_initializer must be callable, got {_shown(cfg.worker_initializer)}")
    if cfg.worker_initializer is not None and cfg.strategy_name == "custom":
        raise ValueError(
            "ParallelConfig.worker_initializer cannot run on a strategy object: your executor starts its own "
            "workers, which payoff never sees start. Give the initializer to that executor (for example "
            "ThreadPoolExecutor(initializer=..., initargs=...)), or name a strategy")
    if not isinstance(cfg.worker_init_args, tuple):
        raise ValueError(f"ParallelConfig.worker_init_args must be a tuple, got {_shown(cfg.worker_init_args)}")
    if cfg.address is not None and cfg.strategy_name != "dask":  # silently unused, a cluster would never be used
        raise ValueError(
            f"ParallelConfig.address {_shown(cfg.address)} is a dask scheduler's, for strategy='dask'; the strategy "
            f"is {_shown(cfg.strategy_name)}. Name dask to run on that cluster (PAYOFF_PARALLEL=dask,address=...), or "
            "leave the address out")
    if cfg.inner_threads and cfg.strategy_name == "threads":  # unused: worker threads share the caller's libraries
        warnings.warn(
            f"payoff: ParallelConfig.inner_threads={cfg.inner_threads} has no effect with strategy='threads': it "
            "limits the native threads (BLAS, OpenMP) of each worker process (processes, joblib, auto's "
            "processes), and worker threads share this process's libraries, whose threads payoff does not "
            "change (other threads may be calling them). Set OPENBLAS_NUM_THREADS=1 (or OMP_NUM_THREADS=1) "
            "before numpy is imported, or name processes; threadpoolctl.threadpool_limits(1) around the map "
            "works if no other thread of yours calls BLAS meanwhile", UserWarning, stacklevel=4)
    if cfg.start_method is not None and cfg.start_method not in START_METHODS:
        raise ValueError(
            f"ParallelConfig.start_method must be None or one of {', '.join(START_METHODS)}; "
            f"got {_shown(cfg.start_method)}"
        )


def _validate_strategy(cfg: ParallelConfig) -> None:
    value = cfg.strategy
    if isinstance(value, str):
        text = value.strip().lower()  # as CE_PARALLEL reads it: "Threads" works in both or in neither
        canonical = _STRATEGY_ALIASES.get(text, text)
        if canonical not in STRATEGY_NAMES:
            aliases = ", ".join(f"'{a}' for '{c}'" for a, c in _STRATEGY_ALIASES.items())
            raise ValueError(
                f"ParallelConfig.strategy {_shown(value)} is not known; accepted: {', '.join(STRATEGY_NAMES)} "
                f"(aliases {aliases}), or an object with submit() and shutdown() "
                "such as a concurrent.futures.Executor"
            )
        object.__setattr__(cfg, "strategy", canonical)
    elif isinstance(value, type):  # its submit and shutdown are unbound functions: calls would fail later, oddly
        raise TypeError(
            f"ParallelConfig.strategy got the class {value.__module__}.{value.__qualname__}, not an instance "
            f"of it; pass one, e.g. {value.__qualname__}(), or a name ({', '.join(STRATEGY_NAMES)})"
        )
    elif not is_strategy_object(value):
        raise ValueError(
            f"ParallelConfig.strategy must be a name ({', '.join(STRATEGY_NAMES)}) or an object with "
            f"submit() and shutdown(); got {_shown(value)}"
        )


def _set(value: str | None) -> str | None:
    """An environment variable set to blanks is unset, as an empty one is when it stands alone."""
    return value if value is not None and value.strip() else None


def _shown(value: object) -> str:
    """``repr`` for error messages, short even for absurd input.

    ``repr`` of an int with more than 4300 digits raises ValueError itself, and a
    30,000-character string would bury the message, so both are abbreviated.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= TOKEN_QUOTE_CHARS else f"{text[:TOKEN_QUOTE_CHARS]}... ({len(text)} characters)"


def _plain_numbers(config: ParallelConfig) -> None:
    """A numpy scalar (``np.int64(4)`` from an array's shape or a grid, ``np.True_``) is taken as the Python
    number it holds, as the stdlib executors and joblib take it; the config keeps plain ints, floats and bools."""
    np = imported("numpy")  # not imported yet: no value can be one of its scalars
    if np is None:
        return
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            object.__setattr__(config, f.name, value.item())


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_workers(name: str, value: object) -> None:
    """Bounded because each worker may be a process: 100 on 2 cores is a fork storm, not a setting."""
    if value is None:
        return
    limit = max_workers_limit()
    if not _is_int(value) or not 1 <= value <= limit:
        raise ValueError(
            f"ParallelConfig.{name} must be None (one per usable CPU) or an int from 1 to at most {limit} "
            f"({MAX_WORKERS_PER_CPU} per usable CPU, {usable_cpus()} usable), got {_shown(value)}"
        )


def _check_waiting_workers(name: str, value: object) -> None:
    limit = max_workers_limit()
    if not _is_int(value) or not 1 <= value <= limit:
        raise ValueError(f"ParallelConfig.{name} must be an int from 1 to at most {limit} "
                         f"({MAX_WORKERS_PER_CPU} per usable CPU), got {_shown(value)}")


def _check_count(name: str, value: object) -> None:
    """Counts may be large (a chunk of a million items is fine) but must fit in 64 bits."""
    if value is None:
        return
    if not _is_int(value) or not 1 <= value <= MAX_COUNT:
        raise ValueError(
            f"ParallelConfig.{name} must be None (automatic) or an int >= 1 and at most {MAX_COUNT} (2**63 - 1), "
            f"got {_shown(value)}"
        )


def _check_bytes(name: str, value: object) -> None:
    if not _is_int(value) or not 1 <= value <= MAX_COUNT:
        raise ValueError(
            f"ParallelConfig.{name} must be a positive int and at most {MAX_COUNT} (2**63 - 1), got {_shown(value)}"
        )


def _check_seconds(name: str, value: object) -> None:
    """Finite and at most a year: ``inf`` or ``1e300`` crash the idle thread's ``wait(timeout)``.

    The chained comparison rejects NaN and compares huge ints exactly, without converting to float.
    """
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= MAX_SECONDS:
        raise ValueError(
            f"ParallelConfig.{name} must be None ({_NONE_MEANS[name]}) or a finite number of seconds "
            f"from 0 to at most {MAX_SECONDS} (one year), got {_shown(value)}"
        )


MAX_INNER_THREADS_PER_CPU = 4
"""Native threads allowed per usable CPU in one worker: more is oversubscription on purpose, or a typo."""


def _check_inner_threads(name: str, value: object) -> None:
    if value is None:
        return
    limit = MAX_INNER_THREADS_PER_CPU * usable_cpus()
    if not _is_int(value) or not 0 <= value <= limit:
        raise ValueError(
            f"ParallelConfig.{name} must be None (CPU capacity // workers), 0 (leave native thread pools alone) "
            f"or an int from 1 to at most {limit} ({MAX_INNER_THREADS_PER_CPU} per usable CPU), got {_shown(value)}"
        )


def _check_start_timeout(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= MAX_SECONDS:
        raise ValueError(f"ParallelConfig.{name} must be a finite number of seconds above 0 and at most "
                         f"{MAX_SECONDS} (one year), got {_shown(value)}")


ADDRESS_SCHEMES: tuple[str, ...] = ("tcp", "ucx", "ws", "inproc")
"""Schemes of a dask scheduler address payoff can connect to by itself (``tls``/``wss`` need TLS settings)."""
_TLS_SCHEMES = ("tls", "wss")


def _check_address(name: str, value: object) -> None:
    """A dask scheduler address payoff can connect to: ``SCHEME://HOST:PORT`` (``inproc://`` takes its own form).

    Only ``"://"`` was checked, so ``"tcp://"``, ``"tcp://host"`` (no port) or ``"file:///etc/passwd"`` were
    accepted and failed on every call as an ``init_failure`` after a connect attempt.
    """
    if value is None:
        return
    accepted = (f"must be None or a dask scheduler address SCHEME://HOST:PORT with SCHEME one of "
                f"{', '.join(ADDRESS_SCHEMES)}, a host, and a port from 1 to 65535, such as 'tcp://127.0.0.1:8786'")
    if not isinstance(value, str):
        raise ValueError(f"ParallelConfig.{name} {accepted}; got {_shown(value)}")
    problem = _address_problem(value)
    if problem is not None:
        raise ValueError(f"ParallelConfig.{name} {accepted}; got {_shown(value)}: {problem}")


def _address_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a scheduler address, or None."""
    if any(ch.isspace() for ch in value):
        return "it contains whitespace"
    scheme, sep, rest = value.partition("://")
    if not sep:
        return "no SCHEME:// (tcp://, ...)"
    scheme = scheme.lower()
    if scheme in _TLS_SCHEMES:
        return (f"a {scheme}:// cluster needs TLS settings, which payoff cannot pass with an address: connect "
                "yourself with distributed.Client(address, security=...) and pass that Client as "
                "ParallelConfig(strategy=client)")
    if scheme not in ADDRESS_SCHEMES:
        return f"scheme {scheme!r} is not one dask connects to" if scheme else "no scheme before ://"
    if scheme == "inproc":
        return None if rest else "no address after inproc://"
    if not rest:
        return "no host and port after the scheme"
    if "/" in rest or "?" in rest or "#" in rest or "@" in rest:
        return "a path, query or user part after the host (only HOST:PORT)"
    if rest.startswith("["):  # an IPv6 literal: [::1]:8786
        host, bracket, port_part = rest[1:].partition("]")
        if not bracket or not port_part.startswith(":"):
            return "no port (an IPv6 host is written [HOST]:PORT)"
        port = port_part[1:]
    else:
        host, colon, port = rest.rpartition(":")
        if not colon:
            return "no port"
        if ":" in host:
            return "an IPv6 host must be written in brackets, [HOST]:PORT"
    if not host:
        return "no host"
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        return f"port {port!r} is not a number from 1 to 65535"
    return None


_FIELD_CHECKS: dict[str, Callable[[str, object], None]] = {
    "max_workers": _check_workers,
    "max_waiting_workers": _check_waiting_workers,
    "min_batch_size": _check_count,
    "min_instances_for_parallel": _check_count,
    "instance_chunk_size": _check_count,
    "feature_chunk_size": _check_count,
    "tiny_workload_threshold": _check_seconds,
    "idle_timeout": _check_seconds,
    "pool_start_timeout": _check_start_timeout,
    "task_size_hint_bytes": _check_bytes,
    "address": _check_address,
    "inner_threads": _check_inner_threads,
}
"""Checks of single fields, shared by the constructor and the CE_PARALLEL parser so that a
bad value in the environment is reported with the token that set it."""


# -- CE_PARALLEL ------------------------------------------------------------

GRAMMAR = (
    "PAYOFF_PARALLEL and CE_PARALLEL are comma-separated lists of tokens: "
    "on|off (also 1,true,yes,enable / 0,false,no,disable, or enabled=on|off); "
    "a strategy: auto|serial|sequential|threads|processes|joblib|dask (or strategy=NAME); "
    "workers=N; waiting_workers=N; min_batch=N; min_instances=N; tiny=SECONDS (e.g. 0.05, 50ms or 2s; in CE_PARALLEL "
    "a bare whole number is CE's count of items, as min_batch=N); "
    "instance_chunk=N; feature_chunk=N; task_bytes=BYTES (e.g. 1048576 or 16MiB); "
    "force_serial=on|off; granularity=instance|feature|auto; idle_timeout=SECONDS|none; start_timeout=SECONDS; "
    "start_method=fork|forkserver|spawn; address=tcp://HOST:PORT (dask); "
    "inner_threads=N|auto|off (native BLAS/OpenMP threads, and joblib's n_jobs=-1, per process worker). "
    "N may be 'auto' for automatic. Each key may also be spelt as its ParallelConfig field "
    "(tiny_workload_threshold=, min_batch_size=, task_size_hint_bytes=, ...). "
    "Numbers use ASCII digits; workers is at most 64 per usable CPU, other N and BYTES at most 2**63-1, "
    "SECONDS at most one year."
)

_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {}

# Numbers are parsed by hand, not by regex: each check below is one linear pass, so a
# 40,000-character value costs microseconds (a backtracking regex took a minute), and
# only ASCII digits count (``int`` and ``float`` also take Arabic-Indic and fullwidth
# digits, and '1_0').

_MAX_NUMBER_CHARS = 64
"""A longer decimal is a paste accident; it is refused before ``float`` sees it."""


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _whole_number(text: str, expected: str) -> int:
    """A count from ASCII digits, bounded by :data:`MAX_COUNT` before ``int`` converts it."""
    if not _ascii_digits(text):
        raise ValueError(expected)
    significant = text.lstrip("0")
    if len(significant) > len(str(MAX_COUNT)):
        raise ValueError(f"{expected}; at most {MAX_COUNT}, got a number of {len(significant)} digits")
    value = int(significant or "0")
    if value < 1:
        raise ValueError(expected)
    return value


def _whole_count(text: str) -> int:
    return _whole_number(text, "expected a whole number >= 1")


def _whole_count_or_default(text: str) -> int:
    """A count whose automatic value is its default (``waiting_workers=auto``: the grammar says N may be auto)."""
    if text == "auto":
        return int(ParallelConfig.max_waiting_workers)
    return _whole_number(text, "expected a whole number >= 1 or 'auto'")


def _threads(text: str) -> int | None:
    if text == "off" or (text and not text.strip("0")):
        return 0
    if text in ("auto", "none"):
        return None
    return _whole_number(text, "expected a whole number >= 0, 'auto' or 'off'")


def _int_or_auto(text: str) -> int | None:
    if text in ("auto", "none"):
        return None
    return _whole_number(text, "expected a whole number >= 1 or 'auto'")


_SECOND_UNITS: tuple[tuple[str, float], ...] = (("us", 1e6), ("ms", 1e3), ("s", 1.0))
_SECONDS_EXPECTED = "expected seconds such as 0.05, 50ms or 200us"


_Scale = TypeVar("_Scale", int, float)


def _split_unit(text: str, units: tuple[tuple[str, _Scale], ...], default: _Scale) -> tuple[str, _Scale]:
    """``("50", 1e3)`` from ``"50ms"``: the first unit that ends the text (list longer suffixes first)."""
    for suffix, scale in units:
        if text.endswith(suffix):
            return text[: -len(suffix)], scale
    return text, default


def _is_decimal(text: str) -> bool:
    """``DIGITS``, ``DIGITS.DIGITS`` or ``.DIGITS``, then optionally ``e[+-]DIGITS`` (the historical grammar)."""
    mantissa, e, exponent = text.partition("e")
    if e and not _ascii_digits(exponent[1:] if exponent[:1] in ("+", "-") else exponent):
        return False
    whole, dot, fraction = mantissa.partition(".")
    if dot:
        return (not whole or _ascii_digits(whole)) and _ascii_digits(fraction)
    return _ascii_digits(whole)


def _seconds(text: str) -> float:
    number, per_second = _split_unit(text, _SECOND_UNITS, 1.0)
    if not _is_decimal(number):
        raise ValueError(_SECONDS_EXPECTED)
    if len(number) > _MAX_NUMBER_CHARS:
        raise ValueError(f"{_SECONDS_EXPECTED}, in at most {_MAX_NUMBER_CHARS} characters; "
                         f"got a number of {len(number)}")
    return float(number) / per_second


def _seconds_or_none(text: str) -> float | None:
    return None if text in ("none", "never", "auto") else _seconds(text)


_BYTE_UNITS: tuple[tuple[str, int], ...] = (
    ("kib", 2**10), ("mib", 2**20), ("gib", 2**30), ("kb", 10**3), ("mb", 10**6), ("gb", 10**9), ("b", 1),
)


def _bytes(text: str) -> int:
    number, scale = _split_unit(text, _BYTE_UNITS, 1)
    count = _whole_number(number, "expected a byte count >= 1 such as 1048576, 512KiB or 16MiB")
    return count * scale


def _switch(text: str) -> bool:
    if text in _ENABLE:
        return True
    if text in _DISABLE:
        return False
    raise ValueError("expected on or off")


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        canonical = _STRATEGY_ALIASES.get(text, text) if options is STRATEGY_NAMES else text
        if canonical not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return canonical

    return parse


_KEYS.update({
    "workers": ("max_workers", _int_or_auto),
    "waiting_workers": ("max_waiting_workers", _whole_count_or_default),
    "max_workers": ("max_workers", _int_or_auto),
    "min_batch": ("min_batch_size", _int_or_auto),
    "min_instances": ("min_instances_for_parallel", _int_or_auto),
    "tiny": ("tiny_workload_threshold", _seconds_or_none),
    "instance_chunk": ("instance_chunk_size", _int_or_auto),
    "feature_chunk": ("feature_chunk_size", _int_or_auto),
    "task_bytes": ("task_size_hint_bytes", _bytes),
    "force_serial": ("force_serial_on_failure", _switch),
    "granularity": ("granularity", _choice(GRANULARITIES)),
    "idle_timeout": ("idle_timeout", _seconds_or_none),
    "start_timeout": ("pool_start_timeout", _seconds),
    "pool_start_timeout": ("pool_start_timeout", _seconds),
    "strategy": ("strategy", _choice(STRATEGY_NAMES)),
    "start_method": ("start_method", _choice(START_METHODS)),
    "address": ("address", lambda text: text),
    "inner_threads": ("inner_threads", _threads),
    "enabled": ("enabled", _switch),
})
_KEYS.update({entry[0]: entry for entry in list(_KEYS.values()) if entry[0] not in _KEYS})
"""Each setting is also spelt as its ParallelConfig field: the advice payoff prints names fields
(``tiny_workload_threshold=0``), and the variables refused them (advice trial)."""


def parse_ce_parallel(text: str, name: str = ALIAS_ENV_VAR) -> dict[str, Any]:
    """Parse a ``CE_PARALLEL`` value (or a ``PAYOFF_PARALLEL`` one: ``name``) into ParallelConfig field changes.

    Raises ``ValueError`` naming the variable and the offending token and quoting the grammar. Every
    value is checked here as the constructor would check it, so no error from the
    environment reaches the user without the token that caused it. Linear in
    ``len(text)``: no regular expressions.
    """
    return _parsed(text, name)[0]


def _parsed(text: str, name: str) -> tuple[dict[str, Any], int]:
    """:func:`parse_ce_parallel`'s changes, and CE's ``tiny=N`` count of items among them (0: none), which they
    hold as ``min_batch_size``: a ``PAYOFF_PARALLEL`` ``min_batch`` beside it adds up the way CE takes the two,
    the larger, rather than disagreeing with a setting ``CE_PARALLEL`` never wrote."""
    changes: dict[str, Any] = {}
    ce_tiny_items = 0
    for raw in text.split(","):
        original = raw.strip()
        key, eq, value = original.partition("=")
        keep_case = key.strip().lower() == "address"
        token = key.strip().lower() + eq + (value.strip() if keep_case else value.strip().lower())
        if not token:
            continue
        if name == ALIAS_ENV_VAR and _ce_count_of_items(token):
            try:
                items = _whole_number(token.partition("=")[2].strip(), "expected a count of items >= 1")
                _FIELD_CHECKS["min_batch_size"]("min_batch_size", items)
            except ValueError as exc:
                raise ValueError(f"{name} token {_quote(original)}: {exc}. {GRAMMAR}") from None
            if (ce_tiny_items and items != ce_tiny_items) or "tiny_workload_threshold" in changes:
                raise ValueError(f"{name} sets tiny twice with different values (token {_quote(original)}). {GRAMMAR}")
            ce_tiny_items = items
            continue
        field_name, value = _parse_token(token, original, name)
        if field_name == "tiny_workload_threshold" and ce_tiny_items:
            raise ValueError(f"{name} sets tiny twice with different values (token {_quote(original)}). {GRAMMAR}")
        if field_name in changes and changes[field_name] != value:
            raise ValueError(f"{name} sets {field_name} twice with different values "
                             f"(token {_quote(original)}). {GRAMMAR}")
        changes[field_name] = value
    if ce_tiny_items:
        changes["min_batch_size"] = max(changes.get("min_batch_size") or 0, ce_tiny_items)
    if "strategy" in changes and "enabled" not in changes:
        changes["enabled"] = True
    return changes, ce_tiny_items


def _ce_count_of_items(token: str) -> bool:
    """Whether ``token`` is CE's own ``tiny=N``: a bare whole number N >= 1, which CE compares with the work
    items of a call (the larger of it and ``min_batch``). payoff's ``tiny`` is seconds; read as such in
    ``CE_PARALLEL``, CE's ``tiny=8`` kept every explain under 8 s of work in the caller (hunt 57). Seconds
    are still taken there with a unit or a decimal point (which CE refuses), and 0 is "nothing is tiny" in both."""
    key, _, text = token.partition("=")
    text = text.strip()
    return key.strip() == "tiny" and _ascii_digits(text) and text.strip("0") != ""


def _quote(token: str) -> str:
    """The token as ``repr`` shows it, or the beginning of a long one: enough to find it, not 40 kB of it."""
    if len(token) <= TOKEN_QUOTE_CHARS:
        return repr(token)
    return f"{token[:TOKEN_QUOTE_CHARS]!r}... ({len(token)} characters)"


def _parse_token(token: str, original: str, name: str) -> tuple[str, Any]:
    if token in _ENABLE:
        return "enabled", True
    if token in _DISABLE:
        return "enabled", False
    if "=" not in token:
        try:
            return "strategy", _choice(STRATEGY_NAMES)(token)
        except ValueError:
            raise ValueError(f"{name} token {_quote(original)} is not understood. {GRAMMAR}") from None
    key, _, text = token.partition("=")
    key, text = key.strip(), text.strip()
    if key not in _KEYS:
        raise ValueError(f"{name} key {_quote(key)} (token {_quote(original)}) is not known. {GRAMMAR}")
    field_name, parse = _KEYS[key]
    try:
        value = parse(text)
        if field_name in _FIELD_CHECKS:
            _FIELD_CHECKS[field_name](field_name, value)
    except ValueError as exc:
        raise ValueError(f"{name} token {_quote(original)}: {exc}. {GRAMMAR}") from None
    return field_name, value


def config_field_names() -> list[str]:
    return [f.name for f in fields(ParallelConfig)]
