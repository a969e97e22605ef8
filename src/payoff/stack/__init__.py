"""The demo stack as package data: compose file, dashboards, alert rules, Prometheus, Grafana, OTel, Tempo.

``payoff stack DIR`` writes it, ``payoff stack up|down [DIR]`` runs it with
``docker compose``, ``payoff dashboards export DIR`` writes only the
dashboards. Everything is read through :mod:`importlib.resources`, so it works
from a wheel as from a checkout.

The files under ``files/`` are copies of the repository's ``deploy/``,
``dashboards/json/`` and ``docker-compose.yml``, written by
``scripts/sync_stack.py`` (a test fails when they drift); ``templates/`` holds
what only the stack folder has: its ``Dockerfile`` (which installs payoff from
the wheel in ``wheels/``) and its README.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Any

from payoff._version import __version__
from payoff.stack._wheel import DISTRIBUTION, NoWheel, installed_wheel

COMPOSE_FILE = "docker-compose.yml"
DASHBOARDS = "dashboards/json"
RULES = "deploy/alerts.yml"
WHEELS = "wheels"
DEFAULT_DIR = "payoff-stack"
GRAFANA_URL = "http://127.0.0.1:3000"
_TEMPLATES = {"Dockerfile": "Dockerfile", "README.md": "README.md", f"{WHEELS}/README.txt": "wheels-README.txt"}


class StackError(Exception):
    """A one-line reason why a stack command cannot go on, and what to do about it."""


class FilesExist(StackError):
    """Writing would overwrite files that differ (pass ``force=True``)."""

    def __init__(self, target: Path, conflicts: Sequence[str], stale: Sequence[str] = ()) -> None:
        self.target = target
        self.conflicts, self.stale = list(conflicts), list(stale)
        first = self.conflicts[0]
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        said = "is another payoff wheel" if first in self.stale else "exists and differs"
        does = "replace" if self.stale else "overwrite"  # a stale wheel goes, it is not written over
        super().__init__(f"{target / first} {said}{more}; pass --force to {does}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.target, self.conflicts, self.stale))


@dataclass
class Written:
    """What a write did: files written, files already identical, and a note worth printing (or '')."""

    target: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    note: str = ""


def _walk(node: Traversable, prefix: PurePosixPath) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            out.update(_walk(child, prefix / child.name))
        elif child.is_file():
            out[(prefix / child.name).as_posix()] = child.read_bytes()
    return out


def packaged_files() -> dict[str, bytes]:
    """The stack files shipped in the package (relative posix path -> bytes), before templates and wheel."""
    return _walk(resources.files(__name__) / "files", PurePosixPath())


def template_files(version: str = __version__) -> dict[str, bytes]:
    """The stack folder's own files (Dockerfile, README.md, wheels/README.txt) for ``version``."""
    root = resources.files(__name__) / "templates"
    return {name: (root / source).read_text(encoding="utf-8").replace("@VERSION@", version).encode("utf-8")
            for name, source in _TEMPLATES.items()}


def dashboard_files() -> dict[str, bytes]:
    """Just the Grafana dashboards: file name -> JSON bytes."""
    prefix = DASHBOARDS + "/"
    return {name.removeprefix(prefix): data for name, data in packaged_files().items() if name.startswith(prefix)}


def _is_wheel(path: Path) -> bool:
    """A zip archive with payoff's package and its metadata, as pip reads a wheel."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.startswith("payoff/") for n in names) and any(".dist-info/" in n for n in names)


def stack_files(wheel: Path | None = None) -> tuple[dict[str, bytes], str]:
    """Everything ``payoff stack`` writes, and a note when no wheel goes into ``wheels/``.

    ``wheel`` is a payoff wheel to put there; without one, the installed payoff is repacked.
    """
    files = {**packaged_files(), **template_files()}
    note = ""
    if wheel is not None:
        if not (wheel.name.startswith(DISTRIBUTION + "-") and wheel.name.endswith(".whl")):
            raise StackError(f"--wheel {wheel}: not a payoff-*.whl file")
        if not wheel.is_file():
            raise StackError(f"--wheel {wheel}: no such file (build one with: pip wheel --no-deps .)")
        if not _is_wheel(wheel):  # else docker build fails minutes later, far from the cause
            raise StackError(f"--wheel {wheel}: named like a payoff wheel but not one (a wheel is a zip archive "
                             f"holding payoff/ and a .dist-info/ folder); build one with: pip wheel --no-deps .")
        files[f"{WHEELS}/{wheel.name}"] = wheel.read_bytes()
    else:
        try:
            name, data = installed_wheel()
        except NoWheel as exc:
            note = (f"note: {exc}, so no wheel went into {WHEELS}/: the app image will install "
                    f"payoff=={__version__} from PyPI (pass --wheel PATH to use a local build)")
        else:
            files[f"{WHEELS}/{name}"] = data
    return files, note


def write_files(target: Path, files: Mapping[str, bytes], *, force: bool = False,
                stale: Sequence[str] = ()) -> Written:
    """Write ``files`` under ``target``; existing files that differ are an error unless ``force``.

    Identical files are left alone, so writing twice is harmless. ``stale`` names existing files
    that must go (other payoff wheels): a conflict too, removed with ``force``.
    """
    done = Written(target)
    conflicts = list(stale)
    for name, data in files.items():
        path = target / name
        if path.is_file() and path.read_bytes() == data:
            done.unchanged.append(name)
        elif path.exists() or path.is_symlink():
            conflicts.append(name)
    if conflicts and not force:
        raise FilesExist(target, sorted(conflicts), stale)
    for name in stale:
        (target / name).unlink()
        done.removed.append(name)
    for name, data in files.items():
        if name in done.unchanged:
            continue
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_dir():
            raise StackError(f"{path} is a {'symlink' if path.is_symlink() else 'directory'}; remove it first")
        path.write_bytes(data)
        done.written.append(name)
    return done


def write_stack(target: Path, *, force: bool = False, wheel: Path | None = None) -> Written:
    """Write the ready stack into ``target`` (created if missing); see :func:`stack_files`."""
    files, note = stack_files(wheel)
    wheels = target / WHEELS
    stale = sorted(f"{WHEELS}/{p.name}" for p in wheels.glob(f"{DISTRIBUTION}-*.whl")
                   if f"{WHEELS}/{p.name}" not in files) if wheels.is_dir() else []
    done = write_files(target, files, force=force, stale=stale)
    done.note = note
    return done


def export_dashboards(target: Path, *, force: bool = False) -> Written:
    """Write the Grafana dashboards JSON into ``target``."""
    return write_files(target, dashboard_files(), force=force)


# -- running it -------------------------------------------------------------------------------------

def compose_command(docker: str | None = None) -> list[str]:
    """``[docker, "compose"]`` when Docker, its Compose plugin and a reachable daemon are all there.

    Otherwise :class:`StackError` says, in one line, what to install or start.
    """
    docker = docker or shutil.which("docker")
    if docker is None:
        raise StackError("Docker is not installed: install Docker Engine with the Compose plugin "
                         "(https://docs.docker.com/engine/install/), then run this again")
    if _quiet([docker, "compose", "version"]) != 0:
        raise StackError("Docker is installed but not its Compose plugin: install docker-compose-plugin "
                         "(https://docs.docker.com/compose/install/linux/), then run this again")
    if _quiet([docker, "info", "--format", "{{.ServerVersion}}"]) != 0:
        raise StackError("the Docker daemon is not reachable: start it (sudo systemctl start docker) "
                         "or give your user access to it (the docker group), then run this again")
    return [docker, "compose"]


def _quiet(argv: list[str]) -> int:
    try:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                              check=False).returncode
    except (OSError, subprocess.TimeoutExpired):
        return 1


def up(target: Path, *, force: bool = False, wheel: Path | None = None,
       docker: str | None = None) -> tuple[int, Written | None]:
    """``docker compose up -d --build`` in ``target``, writing the stack there first if it has none.

    ``force`` or ``wheel`` (re)write it as :func:`write_stack` does. Docker is checked first: when it
    is missing nothing is written.
    """
    command = compose_command(docker)
    written = None
    if force or wheel is not None or not (target / COMPOSE_FILE).is_file():
        written = write_stack(target, force=force, wheel=wheel)
    argv = [*command, "-f", str(target / COMPOSE_FILE), "--project-directory", str(target), "up", "-d", "--build"]
    return subprocess.run(argv, check=False).returncode, written


def down(target: Path, *, volumes: bool = False, docker: str | None = None) -> int:
    """``docker compose down`` (``-v`` with ``volumes``) for the stack in ``target``."""
    if not (target / COMPOSE_FILE).is_file():
        raise StackError(f"no stack in {target} (no {COMPOSE_FILE}): nothing to stop")
    command = compose_command(docker)
    argv = [*command, "-f", str(target / COMPOSE_FILE), "--project-directory", str(target), "down",
            *(["--volumes"] if volumes else [])]
    return subprocess.run(argv, check=False).returncode


__all__ = [
    "COMPOSE_FILE",
    "DASHBOARDS",
    "DEFAULT_DIR",
    "RULES",
    "FilesExist",
    "StackError",
    "Written",
    "compose_command",
    "dashboard_files",
    "down",
    "export_dashboards",
    "packaged_files",
    "stack_files",
    "template_files",
    "up",
    "write_files",
    "write_stack",
]
