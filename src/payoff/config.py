"""ParallelConfig and the ``CE_PARALLEL`` grammar.

The grammar is calibrated-explanations' own, so a ``CE_PARALLEL`` value that
works there works here; payoff adds keys for its extra fields. Unlike the
original, a token that is not understood is an error that names it, because a
silently ignored typo is how people end up with a serial run they think is
parallel.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

STRATEGY_NAMES: tuple[str, ...] = ("auto", "serial", "threads", "processes", "joblib", "dask")
_STRATEGY_ALIASES = {"sequential": "serial", "thread": "threads", "process": "processes", "loky": "joblib"}
GRANULARITIES: tuple[str, ...] = ("instance", "feature", "auto")
START_METHODS: tuple[str, ...] = ("fork", "forkserver", "spawn")

Granularity = Literal["instance", "feature", "auto"]

_ENABLE = frozenset({"1", "true", "on", "yes", "enable", "enabled"})
_DISABLE = frozenset({"0", "false", "off", "no", "disable", "disabled"})

ENV_VAR = "CE_PARALLEL"


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

    def __post_init__(self) -> None:
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
        """Build a config from ``CE_PARALLEL`` as it is *now* (never cached at import)."""
        env = os.environ if environ is None else environ
        text = env.get(ENV_VAR)
        start = base if base is not None else cls()
        if text is None or not text.strip():
            return start
        return start.with_changes(**parse_ce_parallel(text))


# -- validation -------------------------------------------------------------


def _validate(cfg: ParallelConfig) -> None:
    if not isinstance(cfg.enabled, bool):
        raise ValueError(f"ParallelConfig.enabled must be True or False, got {cfg.enabled!r}")
    _validate_strategy(cfg)
    for name in ("max_workers", "min_batch_size", "min_instances_for_parallel",
                 "instance_chunk_size", "feature_chunk_size"):
        _positive_int_or_none(name, getattr(cfg, name))
    _nonnegative_number_or_none("tiny_workload_threshold", cfg.tiny_workload_threshold)
    _nonnegative_number_or_none("idle_timeout", cfg.idle_timeout)
    if cfg.granularity not in GRANULARITIES:
        raise ValueError(
            f"ParallelConfig.granularity must be one of {', '.join(GRANULARITIES)}; got {cfg.granularity!r}"
        )
    if isinstance(cfg.task_size_hint_bytes, bool) or not isinstance(cfg.task_size_hint_bytes, int) \
            or cfg.task_size_hint_bytes < 1:
        raise ValueError(
            f"ParallelConfig.task_size_hint_bytes must be a positive int, got {cfg.task_size_hint_bytes!r}"
        )
    if not isinstance(cfg.force_serial_on_failure, bool):
        raise ValueError("ParallelConfig.force_serial_on_failure must be True or False, "
                         f"got {cfg.force_serial_on_failure!r}")
    if cfg.worker_initializer is not None and not callable(cfg.worker_initializer):
        raise ValueError(f"ParallelConfig.worker_initializer must be callable, got {cfg.worker_initializer!r}")
    if not isinstance(cfg.worker_init_args, tuple):
        raise ValueError(f"ParallelConfig.worker_init_args must be a tuple, got {cfg.worker_init_args!r}")
    if cfg.address is not None and (not isinstance(cfg.address, str) or "://" not in cfg.address):
        raise ValueError(f"ParallelConfig.address must be None or a scheduler address such as "
                         f"'tcp://127.0.0.1:8786', got {cfg.address!r}")
    if cfg.start_method is not None and cfg.start_method not in START_METHODS:
        raise ValueError(
            f"ParallelConfig.start_method must be None or one of {', '.join(START_METHODS)}; "
            f"got {cfg.start_method!r}"
        )


def _validate_strategy(cfg: ParallelConfig) -> None:
    value = cfg.strategy
    if isinstance(value, str):
        canonical = _STRATEGY_ALIASES.get(value, value)
        if canonical not in STRATEGY_NAMES:
            raise ValueError(
                f"ParallelConfig.strategy {value!r} is not known; accepted: {', '.join(STRATEGY_NAMES)} "
                "(alias 'sequential' for 'serial'), or an object with submit() and shutdown() "
                "such as a concurrent.futures.Executor"
            )
        object.__setattr__(cfg, "strategy", canonical)
    elif not is_strategy_object(value):
        raise ValueError(
            f"ParallelConfig.strategy must be a name ({', '.join(STRATEGY_NAMES)}) or an object with "
            f"submit() and shutdown(); got {value!r}"
        )


def _positive_int_or_none(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ParallelConfig.{name} must be None (automatic) or an int >= 1, got {value!r}")


def _nonnegative_number_or_none(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"ParallelConfig.{name} must be None or a number of seconds >= 0, got {value!r}")


# -- CE_PARALLEL ------------------------------------------------------------

GRAMMAR = (
    "CE_PARALLEL is a comma-separated list of tokens: "
    "on|off (also 1,true,yes,enable / 0,false,no,disable); "
    "a strategy: auto|serial|sequential|threads|processes|joblib (or strategy=NAME); "
    "workers=N; min_batch=N; min_instances=N; tiny=SECONDS (e.g. 0.05 or 50ms); "
    "instance_chunk=N; feature_chunk=N; task_bytes=BYTES (e.g. 1048576 or 16MiB); "
    "force_serial=on|off; granularity=instance|feature|auto; idle_timeout=SECONDS|none; "
    "start_method=fork|forkserver|spawn; address=tcp://HOST:PORT (dask). N may be 'auto' for automatic."
)

_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {}


def _int_or_auto(text: str) -> int | None:
    if text in ("auto", "none"):
        return None
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise ValueError("expected a whole number >= 1 or 'auto'")
    return int(text)


_DURATION = re.compile(r"([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)(us|ms|s)?")
_UNITS_PER_SECOND = {"us": 1e6, "ms": 1e3, "s": 1.0, None: 1.0}


def _seconds(text: str) -> float:
    m = _DURATION.fullmatch(text)
    if not m:
        raise ValueError("expected seconds such as 0.05, 50ms or 200us")
    return float(m.group(1)) / _UNITS_PER_SECOND[m.group(2)]


def _seconds_or_none(text: str) -> float | None:
    return None if text in ("none", "never", "auto") else _seconds(text)


_BYTES = re.compile(r"([0-9]+)(b|kb|kib|mb|mib|gb|gib)?")
_UNIT_BYTES = {None: 1, "b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


def _bytes(text: str) -> int:
    m = _BYTES.fullmatch(text)
    if not m or int(m.group(1)) < 1:
        raise ValueError("expected a byte count >= 1 such as 1048576, 512KiB or 16MiB")
    return int(m.group(1)) * _UNIT_BYTES[m.group(2)]


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
    "strategy": ("strategy", _choice(STRATEGY_NAMES)),
    "start_method": ("start_method", _choice(START_METHODS)),
    "address": ("address", lambda text: text),
})


def parse_ce_parallel(text: str) -> dict[str, Any]:
    """Parse a ``CE_PARALLEL`` value into ParallelConfig field changes.

    Raises ``ValueError`` naming the offending token and quoting the grammar.
    """
    changes: dict[str, Any] = {}
    for raw in text.split(","):
        key, eq, value = raw.strip().partition("=")
        keep_case = key.strip().lower() == "address"
        token = key.strip().lower() + eq + (value.strip() if keep_case else value.strip().lower())
        if not token:
            continue
        field_name, value = _parse_token(token, raw.strip())
        if field_name in changes and changes[field_name] != value:
            raise ValueError(f"CE_PARALLEL sets {field_name} twice with different values "
                             f"(token {raw.strip()!r}). {GRAMMAR}")
        changes[field_name] = value
    if "strategy" in changes and "enabled" not in changes:
        changes["enabled"] = True
    return changes


def _parse_token(token: str, original: str) -> tuple[str, Any]:
    if token in _ENABLE:
        return "enabled", True
    if token in _DISABLE:
        return "enabled", False
    if "=" not in token:
        try:
            return "strategy", _choice(STRATEGY_NAMES)(token)
        except ValueError:
            raise ValueError(f"CE_PARALLEL token {original!r} is not understood. {GRAMMAR}") from None
    key, _, value = token.partition("=")
    key, value = key.strip(), value.strip()
    if key not in _KEYS:
        raise ValueError(f"CE_PARALLEL key {key!r} (token {original!r}) is not known. {GRAMMAR}")
    field_name, parse = _KEYS[key]
    try:
        return field_name, parse(value)
    except ValueError as exc:
        raise ValueError(f"CE_PARALLEL token {original!r}: {exc}. {GRAMMAR}") from None


def config_field_names() -> list[str]:
    return [f.name for f in fields(ParallelConfig)]
