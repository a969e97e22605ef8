"""A pickle whose large buffers stay out of band: sized, hashed and written where they lie, never copied.

Pickling a callable that holds large arrays (a model, an explainer and its data) into one ``bytes`` copies
every array into it. A named process pool did that on every call only to find, by the hash, that its workers
already held that version: 113-133 ms a call for a bound method of a 64 MiB object whose items took 30 ms.
Protocol 5 hands such buffers (numpy's contiguous arrays, ``PickleBuffer``) to a callback instead: the
stream keeps the rest, and the buffers are hashed and written from the objects' own memory.

In the file each large buffer starts on a page, so a worker maps it (copy-on-write) instead of reading it into
memory of its own: the workers of a pool share one copy in the page cache, as joblib's memory-mapped arrays do.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from payoff._imported import imported

MAGIC = b"payoff-out-of-band-2\n"
_LENGTH = 8
ALIGN = max(mmap.ALLOCATIONGRANULARITY, 4096)
"""Where each buffer after the stream starts in the file: a multiple of this, as ``mmap`` offsets must be."""
MAP_FROM_BYTES = 1 << 20
"""Buffers this large are mapped from the file; smaller ones are read (a mapping costs a few system calls)."""


@dataclass(frozen=True)
class OutOfBand:
    """A pickle stream and the buffers it refers to, in order."""

    stream: bytes
    buffers: tuple[memoryview, ...] = ()

    @property
    def size(self) -> int:
        return len(self.stream) + sum(b.nbytes for b in self.buffers)

    def holds(self, marker: bytes) -> bool:
        """Whether the stream (names, references: never the buffers' raw data) holds ``marker``."""
        return marker in self.stream

    def digest(self) -> str:
        """A content hash over the stream and every buffer, each with its length (no two splits hash alike)."""
        h = hashlib.sha256()
        for part in self._parts():
            h.update(len(part).to_bytes(_LENGTH, "little"))
            h.update(part)
        return h.hexdigest()[:32]

    def write_to(self, fh: IO[bytes]) -> None:
        parts = self._parts()
        head = MAGIC + ALIGN.to_bytes(_LENGTH, "little") + len(parts).to_bytes(_LENGTH, "little") \
            + b"".join(len(p).to_bytes(_LENGTH, "little") for p in parts)
        fh.write(head)
        at = len(head)
        for k, part in enumerate(parts):
            if k:
                fh.write(bytes(_aligned(at, ALIGN) - at))
                at = _aligned(at, ALIGN)
            fh.write(part)
            at += len(part) if isinstance(part, bytes) else part.nbytes

    def _parts(self) -> Sequence[bytes | memoryview]:
        return (self.stream, *self.buffers)


def dumps(obj: Any, dump: Callable[..., bytes]) -> OutOfBand:
    """``obj`` pickled by ``dump`` (``pickle.dumps`` or ``cloudpickle.dumps``) with its arrays' buffers left out.

    Only numpy's arrays go out of band: they come back as arrays over the buffer they are given, as from an
    in-band pickle. Another class's ``PickleBuffer`` stays in band, where its rebuild gets the ``bytes`` or
    ``bytearray`` it expects (out of band it would get a ``memoryview``).
    """
    found: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        np = imported("numpy")
        if np is None or not isinstance(memoryview(buffer).obj, np.ndarray):
            return True  # pickled in band
        try:
            found.append(buffer.raw())
        except BufferError:  # not contiguous: cannot be read as bytes
            return True
        return False

    stream = dump(obj, protocol=5, buffer_callback=out_of_band)
    return OutOfBand(bytes(stream), tuple(found))


def load(path: str) -> tuple[Any, int]:
    """The object written by :meth:`OutOfBand.write_to`, and the bytes read for it.

    A buffer of ``MAP_FROM_BYTES`` or more is mapped from the file copy-on-write: an array over it is aligned
    (it starts on a page) and writable (unless it was pickled read-only), as from an in-band pickle, and the
    pages a worker only reads stay the page cache's, shared with the pool's other workers. A smaller one is
    read into a ``bytearray`` of its own. (Slices of one buffer for the whole file were misaligned: a matmul
    on them ran 1.7x slower.) A mapping outlives the file's removal.
    """
    with open(path, "rb") as fh:
        head = fh.read(len(MAGIC) + 2 * _LENGTH)
        if head[:len(MAGIC)] != MAGIC:
            raise ValueError(f"payoff: {path} is not a function file this version of payoff wrote")
        align = int.from_bytes(head[len(MAGIC):len(MAGIC) + _LENGTH], "little")
        count = int.from_bytes(head[len(MAGIC) + _LENGTH:], "little")
        raw = fh.read(count * _LENGTH)
        sizes = [int.from_bytes(raw[k * _LENGTH:(k + 1) * _LENGTH], "little") for k in range(count)]
        at = len(head) + len(raw)
        parts: list[bytearray | memoryview] = []
        for k, size in enumerate(sizes):
            if k:
                at = _aligned(at, align)
            parts.append(_part(fh, path, at, size, mapped=k > 0 and size >= MAP_FROM_BYTES))
            at += size
    return pickle.loads(parts[0], buffers=parts[1:]), at


def _part(fh: io.BufferedReader, path: str, at: int, size: int, *, mapped: bool) -> bytearray | memoryview:
    if mapped:
        try:
            return memoryview(mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY, offset=at))
        except ValueError as exc:  # the file is shorter than its header says
            raise ValueError(f"payoff: {path} ends before its last part: it was cut short") from exc
    part = bytearray(size)
    fh.seek(at)
    if fh.readinto(part) != size:
        raise ValueError(f"payoff: {path} ends before its last part: it was cut short")
    return part


def _aligned(at: int, align: int) -> int:
    return -(-at // align) * align
