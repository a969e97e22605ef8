"""Every ``payoff`` subcommand refuses a bad argument or an unwritable path with one line and status 2.

Like ``argparse`` and ``payoff report``: no traceback, the offending value named,
and what would be accepted instead. Each case runs the real command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from payoff.cli import build_parser

USAGE_ERROR = 2


def payoff(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "payoff", *argv], capture_output=True, text=True, timeout=120)


def the_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line, after checking there is exactly one and no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == USAGE_ERROR, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("payoff"), lines[0]
    return lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file: nothing can be created below it."""
    path = tmp_path / "plain-file"
    path.write_text("x")
    return path


def test_metrics_doc_to_a_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "x.md"
    line = the_error(payoff("metrics-doc", "-o", str(target)))
    assert str(target) in line and "No such file or directory" in line
    assert "-o" in line, "says which option was wrong"
    assert not target.exists()


def test_metrics_doc_to_a_directory(tmp_path: Path) -> None:
    line = the_error(payoff("metrics-doc", "-o", str(tmp_path)))
    assert str(tmp_path) in line


@pytest.mark.parametrize("where", ["/proc/x", "below a file"])
def test_stack_into_an_unwritable_directory(where: str, a_file: Path) -> None:
    target = "/proc/x" if where == "/proc/x" else str(a_file / "stack")
    line = the_error(payoff("stack", target))
    assert target in line or str(a_file) in line, line
    assert "directory" in line, "says what DIR must be"


@pytest.mark.parametrize("where", ["/proc/x", "below a file"])
def test_dashboards_export_into_an_unwritable_directory(where: str, a_file: Path) -> None:
    target = "/proc/x" if where == "/proc/x" else str(a_file / "dash")
    line = the_error(payoff("dashboards", "export", target))
    assert target in line or str(a_file) in line, line
    assert "directory" in line


@pytest.mark.parametrize("port", ["99999", "65536"])
def test_demo_with_a_port_out_of_range(port: str) -> None:
    line = the_error(payoff("demo", "--quick", "--metrics-port", port))
    assert "--metrics-port" in line and port in line and "0-65535" in line, line


@pytest.mark.parametrize("port", ["abc", "99999"])
def test_demo_with_a_bad_port_in_the_environment(port: str) -> None:
    """As ``--metrics-port``: the demo is run to be watched, so a port it cannot serve on stops it before it runs
    (it ran a minute without metrics). A library map call with the same variable only logs it and runs on."""
    done = subprocess.run([sys.executable, "-m", "payoff", "demo", "--quick"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PAYOFF_METRICS_PORT": port})
    line = the_error(done)
    assert "PAYOFF_METRICS_PORT" in line and port in line and "0-65535" in line, line
    assert "serving metrics" not in done.stdout, done.stdout


def test_report_already_says_one_line() -> None:
    line = the_error(payoff("report", "/nonexistent/calls.jsonl"))
    assert "/nonexistent/calls.jsonl" in line


# -- the parser's own checks, in process (a demo that wrongly starts would run for a minute) ---------


@pytest.mark.parametrize(("argv", "words"), [
    (["demo", "--metrics-port", "\u0663"], "ASCII digits"),  # int() reads the Arabic-Indic 3 as port 3
    (["demo", "--metrics-port", "-5"], "0-65535"),
    (["demo", "--pause", "-1"], "--pause"),
    (["demo", "--pause", "nan"], "--pause"),
    (["demo", "--pause", "inf"], "--pause"),
])
def test_demo_arguments_are_checked_before_anything_runs(argv: list[str], words: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == USAGE_ERROR
    err = capsys.readouterr().err
    assert words in err, err


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_metrics_addr_is_the_default_loopback(blank: str) -> None:
    args = build_parser().parse_args(["demo", "--metrics-addr", blank])
    assert args.metrics_addr == "127.0.0.1"


def test_good_demo_arguments_still_parse() -> None:
    args = build_parser().parse_args(["demo", "--metrics-port", "0", "--pause", "0.5", "--metrics-addr", "::1"])
    assert (args.metrics_port, args.pause, args.metrics_addr) == (0, 0.5, "::1")
    assert build_parser().parse_args(["demo"]).metrics_port is None


@pytest.mark.parametrize(("variable", "value", "names"), [
    ("PAYOFF_METRICS_WEB_CONFIG", "/nonexistent/web.yml", "/nonexistent/web.yml"),
    ("PAYOFF_METRICS_CERT_FILE", "/etc/hostname", "key"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"),
])
def test_demo_with_a_bad_telemetry_setting_in_the_environment(variable: str, value: str, names: str) -> None:
    """Settings the demo reads from the environment are the user's input too: one line, before any work."""
    env = {**os.environ, variable: value, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-m", "payoff", "demo", "--quick", "--metrics-port", "0"],
                          capture_output=True, text=True, timeout=120, env=env)
    line = the_error(done)
    assert names in line and "payoff demo: error:" in line, line
    assert "perturbation explanations" not in done.stdout, "the demo ran before refusing its settings"


# -- standard output that cannot take the output ------------------------------------------------------------


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """A records file of a few real calls, as PAYOFF_RECORDS writes it."""
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.telemetry.records import record_line

    path = tmp_path / "calls.jsonl"
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        lines = []
        for n in (10, 20, 30):
            ex.map(abs, range(n))
            assert ex.last_record is not None
            lines.append(record_line(ex.last_record))
    path.write_text("".join(line if line.endswith("\n") else line + "\n" for line in lines))
    return path


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("command", ["metrics-doc", "report --text RECORDS"])
def test_a_full_standard_output_is_one_error_line(command: str, records: Path) -> None:
    """``> /dev/full`` stands for a full disk: the text cannot be written, and the user is told so, not shown a
    traceback (``-o`` to such a place already said so in one line)."""
    argv = [str(records) if word == "RECORDS" else word for word in command.split()]
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "payoff", *argv], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    line = the_error(done)
    assert "standard output" in line and "No space left" in line, line


@pytest.mark.parametrize("command", ["metrics-doc", "report --text RECORDS", "demo --quick --metrics-port 0"])
def test_a_reader_that_leaves_early_ends_the_command_quietly(command: str, records: Path) -> None:
    """``payoff demo | head -2``: the reader closed the pipe; the command ends as ``yes | head`` does (status
    141, as if by SIGPIPE), without a BrokenPipeError traceback."""
    argv = [str(records) if word == "RECORDS" else word for word in command.split()]
    proc = subprocess.Popen([sys.executable, "-m", "payoff", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    proc.stdout.close()  # before the command wrote anything: its first write meets a closed pipe
    _, err = proc.communicate(timeout=180)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141, (proc.returncode, err)


def test_the_demo_names_the_setting_its_endpoint_could_not_use(capsys: pytest.CaptureFixture[str]) -> None:
    """A taken port: --metrics-port 0 helps. An address not of this machine (TEST-NET-1, nothing is sent): the
    port was never the problem, and the demo said "pass --metrics-port 0" for it too."""
    import socket

    from payoff.demo import _serve
    from payoff.telemetry.server import MetricsExposureWarning

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert _serve(taken.getsockname()[1], "127.0.0.1") is None
    told = capsys.readouterr().out
    assert "--metrics-port 0" in told and "port=0" not in told, told  # the CLI's own flag, not the Python API's
    with pytest.warns(MetricsExposureWarning, match="about to serve"):  # warned before the bind, as it must be
        assert _serve(0, "192.0.2.1") is None
    told = capsys.readouterr().out
    assert "--metrics-addr '192.0.2.1'" in told and "--metrics-port 0" not in told, told


@pytest.mark.parametrize(("argv", "usage", "words"), [
    (["demo", "--fast"], "usage: payoff demo", "unrecognized arguments: --fast"),
    (["stack", "sideways", "dir"], "usage: payoff stack", "up or down"),
    (["dashboards", "import", "x"], "usage: payoff dashboards", "COMMAND"),
    (["dashboards"], "usage: payoff dashboards", "COMMAND"),
    (["dashboards", "export", "x", "--fast"], "usage: payoff dashboards export", "--fast"),
    (["stack", ""], "usage: payoff stack", "an empty path"),
    (["stack", "up", " "], "usage: payoff stack", "an empty path"),
    (["stack", "x", "--wheel", ""], "usage: payoff stack", "--wheel: an empty path"),
    (["dashboards", "export", ""], "usage: payoff dashboards export", "DIR: an empty path"),
])
def test_a_subcommands_error_shows_its_own_usage_and_what_it_takes(argv: list[str], usage: str, words: str) -> None:
    """``payoff demo --fast`` showed the top-level usage, which lists no demo option; ``payoff stack sideways
    dir`` said "one directory at most" without saying that only up or down may come first; ``payoff
    dashboards import`` named an internal ``dashboards_command``. An empty DIR (an unset shell variable) wrote
    the stack or the dashboards into the current directory (hunt 61)."""
    done = payoff(*argv)
    line = the_error(done)
    assert usage in done.stderr, done.stderr
    assert words in line, line
    assert "dashboards_command" not in done.stderr, done.stderr


@pytest.mark.parametrize(("value", "exported", "said"), [
    ("", True, ""), ("none", False, ""), ("prometheus", False, ""), ("otlp,prometheus", True, ""),
    ("console", False, "console left out"), ("otlp, console", True, "console left out"),
])
def test_the_demo_reads_otel_metrics_exporter_as_opentelemetry_does(value: str, exported: bool, said: str,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The stack's image sets ``OTEL_METRICS_EXPORTER=none`` (its collector takes spans only: hunt 61); a list
    naming otlp exports, and an exporter the demo has not (``console``, set for a whole environment) is said
    and left out, not refused: the demo refused to start (review 61)."""
    from payoff.demo import _exports

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", value)
    assert _exports("OTEL_METRICS_EXPORTER", "none, prometheus") is exported
    err = capsys.readouterr().err
    assert (said in err) if said else err == "", err
