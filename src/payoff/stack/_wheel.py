"""The installed payoff, repacked as a wheel, for the stack's app image.

A regular (non-editable) install keeps every file of its wheel: the package,
and the ``.dist-info`` folder with METADATA, WHEEL and entry points. Zipped
back with a fresh RECORD they make the wheel that was installed (pure Python,
so it installs in the container as it did here). An editable install (a
checkout) keeps only the ``.dist-info``; its package files are the source tree
it points at, so they are read from there, as a build of that tree would.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import urllib.parse
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "payoff"
_SKIP_IN_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
_EPOCH = (1980, 1, 1, 0, 0, 0)


class NoWheel(Exception):
    """The installed payoff cannot be repacked; the message says why, in one line."""


def wheel_name(version: str) -> str:
    return f"{DISTRIBUTION}-{version}-py3-none-any.whl"


def installed_wheel() -> tuple[str, bytes]:
    """The installed payoff as (``payoff-VERSION-py3-none-any.whl``, its bytes); raises :class:`NoWheel`."""
    dist = metadata.distribution(DISTRIBUTION)
    dist_info = f"{DISTRIBUTION}-{dist.version}.dist-info"
    members: dict[str, bytes] = {}
    for file in dist.files or ():
        parts = file.parts
        if not parts or parts[0] == ".." or "__pycache__" in parts or file.suffix == ".pyc":
            continue
        if parts[0] == dist_info and len(parts) == 2 and parts[1] in _SKIP_IN_DIST_INFO:
            continue
        if parts[0] not in (DISTRIBUTION, dist_info):
            continue
        path = Path(str(dist.locate_file(file)))
        if not path.is_file():
            raise NoWheel(f"{path} is listed in payoff's RECORD but missing")
        members[file.as_posix()] = path.read_bytes()
    root = _editable_root(dist)
    if root is not None:
        members.update(_source_members(root, dist_info))
    if f"{DISTRIBUTION}/__init__.py" not in members or f"{dist_info}/WHEEL" not in members:
        raise NoWheel("the installed payoff has no package files of its own (not installed from a wheel)")
    return wheel_name(dist.version), wheel_bytes(members, dist_info)


def _editable_root(dist: metadata.Distribution) -> Path | None:
    """The project folder of an editable install, or None for a regular one."""
    direct_url = dist.read_text("direct_url.json")
    info = json.loads(direct_url) if direct_url else {}
    if not info.get("dir_info", {}).get("editable"):
        return None
    url = urllib.parse.urlsplit(str(info.get("url", "")))
    if url.scheme != "file" or url.netloc not in ("", "localhost"):
        raise NoWheel(f"payoff is an editable install of {url.geturl() or 'an unknown place'}, not of a local folder")
    return Path(urllib.request.url2pathname(url.path))


def _source_members(root: Path, dist_info: str) -> dict[str, bytes]:
    """The package files an editable install runs from, and its license, as the wheel names them."""
    package = Path(__file__).resolve().parents[1]
    if not package.is_relative_to(root.resolve()):
        raise NoWheel(f"the payoff imported from {package} is not the editable install's source in {root}")
    members = {f"{DISTRIBUTION}/{path.relative_to(package).as_posix()}": path.read_bytes()
               for path in sorted(package.rglob("*"))
               if path.is_file() and not _stray(path.relative_to(package))}
    license_file = root / "LICENSE"
    if license_file.is_file():
        members[f"{dist_info}/licenses/LICENSE"] = license_file.read_bytes()
    return members


def wheel_bytes(members: dict[str, bytes], dist_info: str) -> bytes:
    """A wheel with ``members`` and a RECORD; byte-identical for identical members (fixed timestamps)."""
    record_name = f"{dist_info}/RECORD"

    def order(name: str) -> tuple[bool, bool, str]:  # the dist-info folder last, its RECORD at the very end
        return name.startswith(dist_info + "/"), name == record_name, name

    record = []
    for name in sorted(members, key=order):
        digest = base64.urlsafe_b64encode(hashlib.sha256(members[name]).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(members[name])}")
    record.append(f"{dist_info}/RECORD,,")
    entries = {**members, record_name: ("\n".join(record) + "\n").encode()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(entries, key=order):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, entries[name])
    return buffer.getvalue()


def _stray(relative: Path) -> bool:
    """Bytecode, caches and hidden files (editor swap files, .DS_Store): never part of a build."""
    return "__pycache__" in relative.parts or relative.suffix == ".pyc" or \
        any(part.startswith(".") for part in relative.parts)
