"""Small things that mark a product finished (issue 14): help text, a bar asked for and missing."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from payoff import ParallelConfig, ParallelExecutor


def test_report_help_has_no_rst_markup() -> None:
    out = subprocess.run([sys.executable, "-m", "payoff", "report", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "payoff report" in out.stdout
    assert "``" not in out.stdout


def test_a_progress_bar_asked_for_without_tqdm_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import payoff.progress

    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if the [progress] extra were not installed
    monkeypatch.setattr(payoff.progress, "_said", set())
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex.map(abs, range(10), progress=True)
        ex.map(abs, range(10), progress=True)
    said = [w for w in caught if "payoff[progress]" in str(w.message)]
    assert len(said) == 1


@pytest.mark.parametrize("strategy", ["serial", "threads"])
def test_a_progress_bar_counts_a_stream_of_unknown_length(strategy: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An imap over a generator: tqdm counts without a total (it drew nothing before)."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        assert list(ex.imap(abs, (-x for x in range(300)), progress=True)) == list(range(300))
    drawn = capsys.readouterr().err
    assert "default [" in drawn and "item" in drawn, drawn  # a bar (a call this small may run serially)
