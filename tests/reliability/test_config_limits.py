"""Issue 12, config side: CE_PARALLEL and ParallelConfig under bad input.

Every value a user can put in ``CE_PARALLEL`` or pass to ``ParallelConfig``
must either build a config that is safe to run, or raise a ``ValueError`` that
names the bad input. Nothing here asserts wall-clock time (the machine is
noisy): long inputs carry a generous ``timeout`` mark and the fuzz test relies
on hypothesis' per-example deadline, so a quadratic parser still fails loudly.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payoff import ParallelConfig, ParallelExecutor
from payoff import config as config_module
from payoff.config import GRAMMAR

INT64_MAX = 2**63 - 1


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _limit() -> int:
    """The module's limit, looked up at call time so a missing function fails one test, not collection."""
    limit = config_module.max_workers_limit()
    assert isinstance(limit, int)
    return limit


def _from_env(text: str) -> ParallelConfig:
    return ParallelConfig.from_env({"CE_PARALLEL": text})


def _names_a_token(message: str, text: str) -> bool:
    """True when the message quotes one of the value's tokens, whole or (when long) its beginning."""
    head = getattr(config_module, "TOKEN_QUOTE_CHARS", 80)
    parts = {part.strip() for part in text.split(",")} - {""}
    return any(repr(part) in message or repr(part[:head]) in message for part in parts)


def _short_id(value: object) -> str:
    """Readable test ids for 30,000-character parameters."""
    text = str(value)
    return text if len(text) <= 32 else f"{text[:24]}...({len(text)}chars)"


def _rejected(text: str) -> str:
    with pytest.raises(ValueError, match="CE_PARALLEL") as info:
        _from_env(text)
    message = str(info.value)
    assert GRAMMAR in message
    assert _names_a_token(message, text), message[:300]
    return message


# -- fault 1: linear parsing and bounded values ----------------------------


@pytest.mark.timeout(20)
def test_a_32000_character_duration_is_rejected_without_backtracking() -> None:
    message = _rejected("tiny=" + "1" * 32000 + "x")
    assert len(message) < 2000, "a long token is quoted by its beginning, not in full"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", [
    "idle_timeout=." + "5" * 32000 + "e",
    "tiny=" + "1" * 16000 + "." + "1" * 16000 + "e+",
    "task_bytes=" + "1" * 32000 + "k",
    "workers=" + "1" * 32000 + "x",
], ids=_short_id)
def test_other_long_malformed_numbers_are_rejected_without_backtracking(text: str) -> None:
    _rejected(text)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", [
    "tiny=" + "1" * 30000,
    "idle_timeout=" + "9" * 30000,
    "workers=" + "9" * 30000,
    "min_batch=" + "9" * 30000,
    "task_bytes=" + "9" * 30000,
    "tiny=1e999",
    "idle_timeout=1e999",
    "idle_timeout=1e10",
    "tiny=" + "9" * 60 + "e" + "9" * 60,
    "task_bytes=99999999999999999999",
    "task_bytes=9999999999gib",
    "instance_chunk=" + "9" * 25,
], ids=_short_id)
def test_absurd_numbers_are_rejected_with_a_clear_error(text: str) -> None:
    message = _rejected(text)
    assert "at most" in message
    assert "Exceeds the limit" not in message, "not Python's int() digit limit"


@pytest.mark.parametrize(("text", "field", "value"), [
    ("tiny=0." + "0" * 40 + "5", "tiny_workload_threshold", 5e-41),
    ("workers=000000000000000000000002", "max_workers", 2),
    (f"task_bytes={INT64_MAX}", "task_size_hint_bytes", INT64_MAX),
    ("idle_timeout=31536000", "idle_timeout", 31536000.0),
    ("tiny=1.5e-3ms", "tiny_workload_threshold", 1.5e-6),
    ("tiny=.5s", "tiny_workload_threshold", 0.5),
    ("tiny=2E-1", "tiny_workload_threshold", 0.2),
    ("task_bytes=512KiB", "task_size_hint_bytes", 512 * 1024),
])
def test_the_grammar_still_accepts_long_but_sane_values(text: str, field: str, value: object) -> None:
    assert getattr(_from_env(text), field) == pytest.approx(value)


@pytest.mark.parametrize("text", ["tiny=1.", "tiny=.", "tiny=1e", "tiny=e5", "tiny=1..2", "tiny=1e5.5",
                                  "tiny=ms", "tiny=1mss", "tiny=1 ms", "tiny=-1", "tiny=+1", "task_bytes=kib",
                                  "task_bytes=1.5mib", "workers=+2", "workers=-2", "workers= 2 2"])
def test_malformed_numbers_are_still_rejected(text: str) -> None:
    _rejected(text)


# -- fault 2: finite seconds -------------------------------------------------


@pytest.mark.parametrize("field", ["idle_timeout", "tiny_workload_threshold"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e300, 10**400, -1], ids=_short_id)
def test_seconds_fields_must_be_finite_and_bounded(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field) as info:
        ParallelConfig(**{field: value})  # type: ignore[arg-type]
    assert "finite" in str(info.value)


@pytest.mark.parametrize("field", ["idle_timeout", "tiny_workload_threshold"])
def test_seconds_fields_accept_zero_none_and_one_year(field: str) -> None:
    for value in (None, 0, 0.0, 1e-9, 365 * 24 * 3600):
        assert getattr(ParallelConfig(**{field: value}), field) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["idle_timeout=inf", "idle_timeout=nan", "tiny=inf", "tiny=infinity",
                                  "idle_timeout=-inf", "tiny=1e400ms"])
def test_ce_parallel_rejects_infinite_seconds(text: str) -> None:
    _rejected(text)


# -- fault 3: bounded worker counts and sizes ------------------------------


def test_the_worker_limit_is_64_per_usable_cpu() -> None:
    assert config_module.MAX_WORKERS_PER_CPU == 64
    assert _limit() == 64 * _usable_cpus()


def test_the_worker_limit_follows_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert _limit() == 64
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert _limit() == 3 * 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert _limit() == 64


@pytest.mark.parametrize("excess", [1, 10**23])
def test_max_workers_above_the_limit_is_rejected(excess: int) -> None:
    limit = _limit()
    value = limit + excess
    with pytest.raises(ValueError, match="max_workers") as info:
        ParallelConfig(max_workers=value)
    assert str(value) in str(info.value)
    assert str(limit) in str(info.value)


def test_max_workers_at_the_limit_is_accepted() -> None:
    assert ParallelConfig(max_workers=_limit()).max_workers == _limit()


def test_ce_parallel_workers_above_the_limit_is_rejected() -> None:
    limit = _limit()
    message = _rejected(f"threads, workers={limit + 1}")
    assert f"'workers={limit + 1}'" in message
    assert str(limit) in message
    assert _from_env(f"workers={limit}").max_workers == limit


@pytest.mark.parametrize("field", ["task_size_hint_bytes", "min_batch_size", "min_instances_for_parallel",
                                   "instance_chunk_size", "feature_chunk_size"])
def test_int_fields_reject_values_beyond_int64(field: str) -> None:
    assert getattr(ParallelConfig(**{field: INT64_MAX}), field) == INT64_MAX  # type: ignore[arg-type]
    for value in (2**63, 2**64 + 1, 10**400):
        with pytest.raises(ValueError, match=field) as info:
            ParallelConfig(**{field: value})  # type: ignore[arg-type]
        assert "at most" in str(info.value)


# -- fault 5: ASCII digits only --------------------------------------------


@pytest.mark.parametrize("text", [
    "workers=\u0663",                 # ARABIC-INDIC DIGIT THREE
    "workers=\uff13",                 # FULLWIDTH DIGIT THREE
    "min_batch=\u00b2",               # SUPERSCRIPT TWO: isdigit() is True
    "workers=1_0",                    # int() accepts underscores
    "task_bytes=\u0661\u0660kib",
    "tiny=\u0660.\u0665",
    "tiny=1_0ms",
    "idle_timeout=\u0663\u0660",
    "tiny=\U0001d7d9",                # MATHEMATICAL DOUBLE-STRUCK DIGIT ONE
])
def test_only_ascii_digits_are_numbers(text: str) -> None:
    _rejected(text)


# -- fault 4: fuzzing --------------------------------------------------------

_MAX_FUZZ_CHARS = 40_000
_NUMBER_KEYS = ["workers", "max_workers", "min_batch", "min_instances", "tiny", "instance_chunk", "feature_chunk",
                "task_bytes", "idle_timeout"]
_KEYS = [*_NUMBER_KEYS, "force_serial", "granularity", "strategy", "start_method", "address"]
_WORDS = ["on", "off", "auto", "none", "never", "threads", "processes", "serial", "sequential", "joblib", "dask",
          "instance", "feature", "fork", "spawn", "forkserver", "inf", "nan", "infinity", "tcp://h:1", "1e999",
          "ms", "us", "s", "kib", "MiB", "gb", "b", ".", "e", "e-", "+", "-", "_", " ", "=", "\u0663", "\uff11"]
_UNITS = ["", "s", "ms", "us", "b", "kb", "kib", "mb", "mib", "gb", "gib", "MiB", "Ms"]
_JUNK_ENDS = ["", "x", "e", "e+", "e-5", "E5", ".", "..", "_", " ", "\u0663", "ms", "mss", "kib", "ib", "=", "-"]

_short_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=24)
_number_text = st.text(alphabet="0123456789.eE+-_", max_size=12)


@st.composite
def _long_run(draw: st.DrawFn, pieces: st.SearchStrategy[str], max_chars: int = _MAX_FUZZ_CHARS) -> str:
    """A short piece repeated up to ``max_chars``: long inputs without a huge hypothesis buffer."""
    piece = draw(pieces.filter(bool))
    times = draw(st.integers(min_value=0, max_value=max_chars // len(piece)))
    return piece * times


_digits = _long_run(st.sampled_from("0123456789"), max_chars=_MAX_FUZZ_CHARS // 2)

# A key that takes a number, then long digit runs and an ending that may or may not fit the
# grammar: the shape that made the old duration regex backtrack for a minute.
_long_number_token = st.tuples(
    st.sampled_from(_NUMBER_KEYS), st.just("="), st.sampled_from(["", ".", "0.", "-", "+"]), _digits,
    st.sampled_from(["", ".", "e", "e+"]), _digits, st.sampled_from(_UNITS + _JUNK_ENDS),
).map("".join)

# Values in the grammar for every key, so that accepted configs are common too (the other
# strategies supply the values outside it).
_seconds_values = st.tuples(st.floats(0, 3e7).map(lambda f: f"{f:.6g}"), st.sampled_from(["", "s", "ms", "us"]))
_VALID_VALUES: dict[str, st.SearchStrategy[str]] = {
    **{key: st.one_of(st.integers(1, 10**6).map(str), st.just("auto")) for key in _NUMBER_KEYS},
    "workers": st.one_of(st.integers(1, 64 * _usable_cpus()).map(str), st.just("auto")),
    "max_workers": st.one_of(st.integers(1, 64 * _usable_cpus()).map(str), st.just("auto")),
    "tiny": _seconds_values.map("".join),
    "idle_timeout": st.one_of(_seconds_values.map("".join), st.sampled_from(["none", "never", "auto"])),
    "task_bytes": st.tuples(st.integers(1, 2**32).map(str),
                            st.sampled_from(["", "b", "kb", "kib", "mb", "mib", "gb", "gib", "MiB"])).map("".join),
    "force_serial": st.sampled_from(["on", "off", "yes", "0"]),
    "granularity": st.sampled_from(["instance", "feature", "auto"]),
    "strategy": st.sampled_from(["auto", "serial", "sequential", "threads", "processes", "joblib", "loky"]),
    "start_method": st.sampled_from(["fork", "forkserver", "spawn"]),
    "address": st.sampled_from(["tcp://127.0.0.1:8786", "TCP://Host:1", "tls://scheduler:8786"]),
}
_valid_token = st.sampled_from(_KEYS).flatmap(lambda key: _VALID_VALUES[key].map(lambda value: f"{key}={value}"))

_values = st.one_of(
    st.sampled_from(_WORDS),
    st.integers(min_value=-3, max_value=300).map(str),
    st.integers(min_value=0, max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.tuples(_number_text, st.sampled_from(_UNITS)).map("".join),
    _short_text,
)

_grammar_token = st.one_of(
    _valid_token,
    _valid_token.map(lambda token: f" {token.upper()} "),
    st.tuples(st.sampled_from(_KEYS), st.sampled_from(["=", " = ", "=="]), _values).map("".join),
    st.sampled_from(_WORDS),
)

_ce_parallel_text = st.one_of(
    _short_text,
    st.text(alphabet=st.sampled_from(",= 0123456789.eEmsuk\u0663\uff11_-+\t"), max_size=200),
    st.tuples(_short_text, _long_run(st.text(alphabet=st.characters(codec="utf-8"), max_size=5)), _short_text).map(
        "".join),
    _long_run(st.sampled_from(["1", ",", "=", "1,", "workers=1,", "tiny=1", "\u0663", ".1", "e1", "on,"])),
    _long_number_token,
    st.tuples(st.lists(_valid_token, max_size=6), _long_number_token).map(lambda t: ",".join([*t[0], t[1]])),
    st.lists(_valid_token, min_size=1, max_size=8, unique_by=lambda token: token.split("=")[0].removeprefix("max_")
             ).map(",".join),
    st.lists(st.one_of(_grammar_token, _short_text), max_size=8).map(",".join),
)


@pytest.mark.timeout(180)
@settings(max_examples=2500, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(_ce_parallel_text)
def test_fuzzed_ce_parallel_builds_a_config_or_names_the_bad_token(text: str) -> None:
    try:
        cfg = _from_env(text)
    except ValueError as exc:
        message = str(exc)
        assert GRAMMAR in message
        assert _names_a_token(message, text), message[:300]
    else:
        assert isinstance(cfg, ParallelConfig)


def test_numpy_scalars_are_taken_as_the_numbers_they_hold() -> None:
    """``max_workers=np.int64(2)`` (from an array's shape, a grid search) was refused as not an int, though
    the stdlib executors and joblib take it; the config keeps plain Python numbers, so it equals and hashes
    as the config written with them."""
    config = ParallelConfig(max_workers=np.int64(2), enabled=np.True_, idle_timeout=np.float64(5),
                            min_batch_size=np.int32(3))
    plain = ParallelConfig(max_workers=2, enabled=True, idle_timeout=5.0, min_batch_size=3)
    assert config == plain and hash(config) == hash(plain)
    assert [type(v) for v in (config.max_workers, config.enabled, config.idle_timeout, config.min_batch_size)] \
        == [int, bool, float, int]
    with pytest.raises(ValueError, match="max_workers"):
        ParallelConfig(max_workers=np.int64(0))  # still checked as the number it holds
    with pytest.raises(ValueError, match="max_workers"):
        ParallelConfig(max_workers=np.float64(2.0))  # a float is no worker count, numpy or not


@pytest.mark.parametrize("bad", [-1, 2.5, "10", True])
def test_max_records_is_checked_and_named(bad: object) -> None:
    with pytest.raises(ValueError, match=r"max_records must be an int >= 0"):
        ParallelExecutor(max_records=bad)  # type: ignore[arg-type]
