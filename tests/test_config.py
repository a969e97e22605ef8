"""ParallelConfig validation and the CE_PARALLEL grammar."""

from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payoff import ParallelConfig, ParallelExecutor
from payoff.config import GRAMMAR, parse_ce_parallel


@pytest.mark.parametrize(("text", "expected"), [
    ("1", {"enabled": True}), ("true", {"enabled": True}), ("on", {"enabled": True}),
    ("yes", {"enabled": True}), ("enable", {"enabled": True}),
    ("0", {"enabled": False}), ("false", {"enabled": False}), ("off", {"enabled": False}),
    ("no", {"enabled": False}), ("disable", {"enabled": False}),
    ("threads", {"strategy": "threads", "enabled": True}),
    ("processes", {"strategy": "processes", "enabled": True}),
    ("joblib", {"strategy": "joblib", "enabled": True}),
    ("sequential", {"strategy": "serial", "enabled": True}),
    ("serial", {"strategy": "serial", "enabled": True}),
    ("auto", {"strategy": "auto", "enabled": True}),
    ("strategy=processes", {"strategy": "processes", "enabled": True}),
    ("workers=3", {"max_workers": 3}), ("workers=auto", {"max_workers": None}),
    ("min_batch=16", {"min_batch_size": 16}),
    ("min_instances=40", {"min_instances_for_parallel": 40}),
    ("tiny=0.05", {"tiny_workload_threshold": 0.05}), ("tiny=50ms", {"tiny_workload_threshold": 0.05}),
    ("tiny=200us", {"tiny_workload_threshold": 0.0002}),
    ("instance_chunk=200", {"instance_chunk_size": 200}),
    ("feature_chunk=4", {"feature_chunk_size": 4}),
    ("task_bytes=1048576", {"task_size_hint_bytes": 1048576}),
    ("task_bytes=16MiB", {"task_size_hint_bytes": 16 * 2**20}),
    ("force_serial=on", {"force_serial_on_failure": True}),
    ("force_serial=off", {"force_serial_on_failure": False}),
    ("granularity=instance", {"granularity": "instance"}),
    ("granularity=feature", {"granularity": "feature"}),
    ("granularity=auto", {"granularity": "auto"}),
    ("idle_timeout=30", {"idle_timeout": 30.0}), ("idle_timeout=none", {"idle_timeout": None}),
    ("start_method=spawn", {"start_method": "spawn"}),
    ("start_timeout=900", {"pool_start_timeout": 900.0}), ("pool_start_timeout=1500ms", {"pool_start_timeout": 1.5}),
    ("inner_threads=1", {"inner_threads": 1}), ("inner_threads=auto", {"inner_threads": None}),
    ("inner_threads=off", {"inner_threads": 0}), ("inner_threads=0", {"inner_threads": 0}),
    ("waiting_workers=auto", {"max_waiting_workers": 32}), ("inner_threads=00", {"inner_threads": 0}),
    # the first field of the tuning table by its own name too, as every other (trial 49, F8)
    ("enabled=off", {"enabled": False}), ("enabled=on", {"enabled": True}), ("enabled=0", {"enabled": False}),
    # every setting spelt as its field too: payoff's advice names fields (advice trial)
    ("tiny_workload_threshold=0,min_batch_size=1", {"tiny_workload_threshold": 0.0, "min_batch_size": 1}),
    ("task_size_hint_bytes=64MiB", {"task_size_hint_bytes": 64 * 2**20}),
    ("min_instances_for_parallel=1", {"min_instances_for_parallel": 1}),
    ("max_waiting_workers=8", {"max_waiting_workers": 8}),
])
def test_every_token_of_the_grammar(text: str, expected: dict[str, object]) -> None:
    assert parse_ce_parallel(text) == expected
    ParallelConfig().with_changes(**expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("processes,tiny=8", {"strategy": "processes", "enabled": True, "min_batch_size": 8}),
    ("tiny=8,min_batch=4", {"min_batch_size": 8}),
    ("min_batch=16,tiny=8", {"min_batch_size": 16}),
    ("tiny=008", {"min_batch_size": 8}),
    ("tiny=0", {"tiny_workload_threshold": 0.0}),
    ("tiny=8s", {"tiny_workload_threshold": 8.0}),
    ("tiny=0.5", {"tiny_workload_threshold": 0.5}),
    ("tiny_workload_threshold=8", {"tiny_workload_threshold": 8.0}),
])
def test_a_bare_whole_number_tiny_in_ce_parallel_is_ces_count_of_items(text: str, expected: dict[str, object]) -> None:
    """CE reads ``tiny=8`` in ``CE_PARALLEL`` as 8 work items (the larger of it and ``min_batch``); read as 8
    seconds, every explain under 8 s of work ran in the caller (hunt 57, F2). A unit, a decimal point or the
    field's own name are payoff's seconds, which CE refuses anyway; 0 is "nothing is tiny" in both."""
    assert parse_ce_parallel(text, "CE_PARALLEL") == expected
    ParallelConfig().with_changes(**expected)


@pytest.mark.parametrize("text", ["tiny=8,tiny=4", "tiny=8,tiny=0", "tiny=0,tiny=8", "tiny=50ms,tiny=8"])
def test_tiny_given_twice_in_ce_parallel_is_refused_naming_the_second_token(text: str) -> None:
    with pytest.raises(ValueError, match="sets tiny twice") as caught:
        parse_ce_parallel(text, "CE_PARALLEL")
    assert repr(text.split(",")[1]) in str(caught.value)


def test_ces_count_of_items_and_a_payoff_parallel_min_batch_take_the_larger_as_ce_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_PARALLEL", "tiny=8")
    for own, expected in (("min_batch=4", 8), ("min_batch=12", 12)):
        monkeypatch.setenv("PAYOFF_PARALLEL", own)
        assert ParallelConfig.from_env().min_batch_size == expected


def test_a_count_of_items_past_the_limit_is_refused_naming_its_token() -> None:
    with pytest.raises(ValueError, match="token 'tiny=9999999999999999999'"):
        parse_ce_parallel("tiny=9999999999999999999", "CE_PARALLEL")


def test_tiny_in_payoff_parallel_stays_seconds() -> None:
    assert parse_ce_parallel("tiny=8", "PAYOFF_PARALLEL") == {"tiny_workload_threshold": 8.0}


def test_ces_count_of_items_and_payoffs_seconds_add_up_across_the_two_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_PARALLEL", "processes,tiny=8")
    monkeypatch.setenv("PAYOFF_PARALLEL", "tiny=50ms")
    config = ParallelConfig.from_env()
    assert (config.min_batch_size, config.tiny_workload_threshold) == (8, 0.05)


def test_ces_count_of_items_keeps_a_call_of_fewer_items_serial_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_PARALLEL", "threads,workers=2,tiny=8")
    monkeypatch.delenv("PAYOFF_PARALLEL", raising=False)
    with ParallelExecutor(ParallelConfig.from_env()) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ex.map(abs, range(-7, 0)) == list(range(7, 0, -1))
        record = ex.last_record
        assert record is not None and record.selected_strategy == "serial", record
        assert "7 items is below the minimum of 8 for parallel" in record.fallback_detail, record.fallback_detail


def test_a_full_value_builds_a_config() -> None:
    env = {"CE_PARALLEL": " on , processes, workers=2 ,instance_chunk=200, granularity=instance,,"}
    cfg = ParallelConfig.from_env(env)
    assert (cfg.enabled, cfg.strategy, cfg.max_workers, cfg.instance_chunk_size, cfg.granularity) == \
        (True, "processes", 2, 200, "instance")
    assert ParallelConfig.from_env({"CE_PARALLEL": "off"}).enabled is False
    assert ParallelConfig.from_env({}) == ParallelConfig()


def test_environment_is_read_when_the_config_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_PARALLEL", "threads")
    assert ParallelExecutor().config.strategy == "threads"
    monkeypatch.setenv("CE_PARALLEL", "off")
    assert ParallelExecutor().config.enabled is False


@pytest.mark.parametrize(("text", "named"), [
    ("turbo", "'turbo'"), ("workers=0", "'workers=0'"), ("workers=two", "'workers=two'"),
    ("colour=blue", "'colour'"), ("tiny=soon", "'tiny=soon'"), ("granularity=row", "'granularity=row'"),
    ("on,off", "enabled"), ("task_bytes=0", "'task_bytes=0'"), ("force_serial=maybe", "'force_serial=maybe'"),
    ("inner_threads=-1", "'inner_threads=-1'"), ("inner_threads=many", "'inner_threads=many'"),
    ("inner_threads=100000", "'inner_threads=100000'"),
])
def test_bad_tokens_raise_naming_the_token_and_the_grammar(text: str, named: str) -> None:
    with pytest.raises(ValueError, match="CE_PARALLEL") as info:
        parse_ce_parallel(text)
    assert named in str(info.value)
    assert GRAMMAR in str(info.value)


@pytest.mark.parametrize("text", ["inner_threads=-1", "inner_threads=many"])
def test_a_bad_inner_threads_names_every_value_it_takes(text: str) -> None:
    """The error said "a whole number >= 1 or 'auto'", where 0 and off are taken too (trial 49, F8)."""
    with pytest.raises(ValueError, match="inner_threads") as info:
        parse_ce_parallel(text)
    told = str(info.value).split(". PAYOFF_PARALLEL")[0]
    assert ">= 0" in told and "'auto'" in told and "'off'" in told, told


@pytest.mark.parametrize("text", ["processes,workers=0", "bogus", "colour=blue", "threads,processes"])
def test_a_bad_payoff_parallel_is_named_as_the_variable_the_user_set(monkeypatch: pytest.MonkeyPatch,
                                                                     text: str) -> None:
    """The error blamed CE_PARALLEL for a value the user had put in PAYOFF_PARALLEL (and CE_PARALLEL unset)."""
    monkeypatch.delenv("CE_PARALLEL", raising=False)
    monkeypatch.setenv("PAYOFF_PARALLEL", text)
    with pytest.raises(ValueError, match=r"^PAYOFF_PARALLEL ") as info:
        ParallelExecutor()
    assert "CE_PARALLEL token" not in str(info.value)
    assert "dask" in GRAMMAR.split("a strategy:")[1].split(";")[0]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_arbitrary_strings_parse_or_raise_value_error(text: str) -> None:
    try:
        changes = parse_ce_parallel(text)
    except ValueError:
        return
    ParallelConfig().with_changes(**changes)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["on", "off", "threads", "processes", "workers=2", "tiny=1ms", "min_batch=3",
                                 "granularity=feature", "force_serial=off", "x=1", "=", "workers=",
                                 "task_bytes=1KiB"]), max_size=6).map(",".join))
def test_token_soup_parses_or_raises_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        ParallelConfig().with_changes(**parse_ce_parallel(text))


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"strategy": "turbo"}, "strategy 'turbo'"),
    ({"strategy": 3}, "strategy must be"),
    ({"max_workers": 0}, "max_workers"),
    ({"max_workers": True}, "max_workers"),
    ({"min_batch_size": -1}, "min_batch_size"),
    ({"tiny_workload_threshold": -0.1}, "tiny_workload_threshold"),
    ({"granularity": "rows"}, "granularity"),
    ({"task_size_hint_bytes": 0}, "task_size_hint_bytes"),
    ({"enabled": "yes"}, "enabled"),
    ({"worker_initializer": 5}, "worker_initializer"),
    ({"worker_init_args": [1]}, "worker_init_args"),
    ({"start_method": "teleport"}, "start_method"),
    ({"idle_timeout": float("nan")}, "idle_timeout"),
    ({"pool_start_timeout": 0}, "pool_start_timeout"),
    ({"pool_start_timeout": None}, "pool_start_timeout"),
    ({"pool_start_timeout": float("inf")}, "pool_start_timeout"),
    ({"inner_threads": -1}, "inner_threads"),
    ({"inner_threads": 1.5}, "inner_threads"),
    ({"inner_threads": True}, "inner_threads"),
    ({"inner_threads": 10**6}, "inner_threads"),
])
def test_invalid_config_raises_naming_the_field(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ParallelConfig(**kwargs)  # type: ignore[arg-type]


def test_strategy_objects_and_aliases() -> None:
    with ThreadPoolExecutor(1) as pool:
        assert ParallelConfig(strategy=pool).strategy_name == "custom"
    assert ParallelConfig(strategy="sequential").strategy == "serial"


@pytest.mark.parametrize(("given", "strategy"), [("Threads", "threads"), (" PROCESSES ", "processes"),
                                                 ("Thread", "threads"), ("Loky", "joblib")])
def test_a_strategy_name_means_in_code_what_it_means_in_ce_parallel(given: str, strategy: str) -> None:
    """``CE_PARALLEL=Threads`` worked and ``ParallelConfig(strategy="Threads")`` was refused, by a message that
    left out the aliases that do work (``thread``, ``process``, ``loky``)."""
    assert ParallelConfig(strategy=given).strategy == strategy
    assert ParallelConfig.from_env({"CE_PARALLEL": given}).strategy == strategy
    with pytest.raises(ValueError, match=r"aliases .*'thread' for 'threads'.*'process' for 'processes'") as raised:
        ParallelConfig(strategy="thraeds")
    assert "'thraeds' is not known" in str(raised.value)


@pytest.mark.parametrize(("primary", "alias", "strategy", "enabled"), [
    ("", "off", "auto", False),            # an empty variable is unset, as it is alone
    ("  ", "threads", "threads", True),
    ("processes", "process", "processes", True),   # one setting spelt two ways
    ("processes", "strategy=processes", "processes", True),
])
def test_the_two_variables_disagree_only_when_they_mean_different_things(primary: str, alias: str, strategy: str,
                                                                        enabled: bool) -> None:
    config = ParallelConfig.from_env({"PAYOFF_PARALLEL": primary, "CE_PARALLEL": alias})
    assert (config.strategy, config.enabled) == (strategy, enabled)


@pytest.mark.parametrize("primary", ["processes,waiting_workers=4", "waiting_workers=4"])
def test_ce_keys_in_ce_parallel_and_payoffs_own_in_payoff_parallel_add_up(primary: str) -> None:
    """docs/calibrated-explanations.md advises both; ``enable()`` raised "disagree; set one" for them."""
    config = ParallelConfig.from_env({"PAYOFF_PARALLEL": primary, "CE_PARALLEL": "processes,workers=2"})
    assert (config.strategy, config.max_workers, config.max_waiting_workers) == ("processes", 2, 4)


@pytest.mark.parametrize(("primary", "alias", "key"), [
    ("threads", "processes", "strategy"), ("workers=3", "processes,workers=2", "max_workers"),
    ("processes", "off", "enabled"),
])
def test_a_setting_the_two_variables_give_differently_is_refused_by_name(primary: str, alias: str, key: str) -> None:
    with pytest.raises(ValueError, match=f"disagree on {key}"):
        ParallelConfig.from_env({"PAYOFF_PARALLEL": primary, "CE_PARALLEL": alias})


def test_a_strategy_class_instead_of_an_instance_is_refused_with_what_to_pass() -> None:
    with pytest.raises(TypeError, match=r"ThreadPoolExecutor\(\)"):
        ParallelConfig(strategy=ThreadPoolExecutor)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="instance"):
        ParallelExecutor(strategy=ThreadPoolExecutor)  # type: ignore[arg-type]


@pytest.mark.parametrize(("address", "problem"), [
    ("tcp://", "no host and port"),
    ("://", "no scheme"),
    ("tcp://127.0.0.1", "no port"),
    ("tcp://127.0.0.1:notaport", "port 'notaport'"),
    ("tcp://127.0.0.1:0", "port '0'"),
    ("tcp://127.0.0.1:65536", "port '65536'"),
    ("tcp://h:1 x", "whitespace"),
    ("tcp://:8786", "no host"),
    ("tcp://h:8786/path", "path"),
    ("tcp://::1:8786", "brackets"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("scheduler:8786", "SCHEME://"),
])
def test_a_malformed_scheduler_address_is_refused_saying_what_is_wrong(address: str, problem: str) -> None:
    """Only '://' was checked: each of these was accepted and became an init_failure on every call
    ("missing port number", "remembered from 0.0 s ago") (helper 45, F8)."""
    with pytest.raises(ValueError, match=r"ParallelConfig\.address") as info:
        ParallelConfig(strategy="dask", address=address)
    assert problem in str(info.value)
    assert "tcp://127.0.0.1:8786" in str(info.value)  # what is accepted
    with pytest.raises(ValueError, match="CE_PARALLEL") as env:
        parse_ce_parallel(f"dask,address={address}")
    assert problem in str(env.value)


@pytest.mark.parametrize("address", ["tls://scheduler:8786", "wss://scheduler:8786"])
def test_a_tls_address_is_refused_naming_the_client_to_pass(address: str) -> None:
    with pytest.raises(ValueError, match=r"TLS settings.*strategy=client"):
        ParallelConfig(strategy="dask", address=address)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "tcp://Scheduler.Example:8786", "TCP://h:1",
                                     "tcp://[::1]:8786", "ucx://10.0.0.1:13337", "ws://h:8786", "tcp://h:65535",
                                     "inproc://10.0.0.1/1234/1"])
def test_well_formed_scheduler_addresses_are_accepted(address: str) -> None:
    assert ParallelConfig(strategy="dask", address=address).address == address


_ADDRESS_BY_ITSELF = r"ParallelConfig\.address 'tcp://127\.0\.0\.1:8786' is a dask scheduler's, for strategy='dask'"
_ADDRESS_TOKEN = r"token 'address=tcp://127\.0\.0\.1:8786' names a dask scheduler, and no variable names the dask"


@pytest.mark.parametrize(("build", "says"), [
    (lambda: ParallelConfig(strategy="threads", address="tcp://127.0.0.1:8786"), _ADDRESS_BY_ITSELF),
    (lambda: ParallelConfig(address="tcp://127.0.0.1:8786"), _ADDRESS_BY_ITSELF),
    (lambda: ParallelConfig.from_env({"CE_PARALLEL": "address=tcp://127.0.0.1:8786"}), "CE_PARALLEL " + _ADDRESS_TOKEN),
    (lambda: ParallelConfig.from_env({"CE_PARALLEL": "processes", "PAYOFF_PARALLEL": "address=tcp://127.0.0.1:8786"}),
     "PAYOFF_PARALLEL " + _ADDRESS_TOKEN),
], ids=["threads", "auto", "CE_PARALLEL without dask", "PAYOFF_PARALLEL beside processes"])
def test_a_scheduler_address_without_the_dask_strategy_is_refused(build: Any, says: str) -> None:
    """It was dropped without a word: a user who left out ``dask,`` never used the cluster (helper 75, F4). The
    fix names PAYOFF_PARALLEL: calibrated-explanations reads CE_PARALLEL too and warns of the keys it does not
    know, dask and address among them (review)."""
    assert ParallelConfig.from_env({"CE_PARALLEL": "dask", "PAYOFF_PARALLEL": "address=tcp://127.0.0.1:8786"}).address
    with pytest.raises(ValueError, match=says + r".*PAYOFF_PARALLEL=dask,address="):
        build()


@pytest.mark.parametrize("build", [
    lambda: ParallelConfig(strategy="threads", inner_threads=1),
    lambda: ParallelConfig.from_env({"CE_PARALLEL": "threads", "PAYOFF_PARALLEL": "inner_threads=1"}),
    lambda: ParallelConfig(inner_threads=1).with_changes(strategy="threads"),
], ids=["config", "two variables", "with_changes"])
def test_inner_threads_on_named_threads_warns_saying_what_limits_them(build: Any) -> None:
    """Worker threads share the caller's native libraries, which ``inner_threads`` never touched: items still ran
    2 OpenBLAS threads each, with no word (trial 43, sklearn F2). A warning, not an error: a setting composed from
    two variables, or a strategy switched on a config, must still run (the review)."""
    with pytest.warns(UserWarning, match=r"inner_threads=1 has no effect with strategy='threads'.*"
                                         r"OPENBLAS_NUM_THREADS=1"):
        config = build()
    assert config.strategy_name == "threads"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ParallelConfig(strategy="threads", inner_threads=0).inner_threads == 0  # "off" is what threads do
        assert ParallelConfig(inner_threads=1).inner_threads == 1  # auto: for the processes it may choose
