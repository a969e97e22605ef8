"""A pickle whose large buffers stay out of band: sized, hashed and written where they lie, never copied.

Pickling a callable that holds large arrays (a model, an explainer and its data) into one ``bytes`` copies
every array into it. A named process pool did that on every call only to find, by the hash, that its workers
already held that version: 113-133 ms a call for a bound method of a 64 MiB object whose items took 30 ms.
Protocol 5 hands such buffers (numpy's contiguous arrays, ``PickleBuffer``) to a callback instead: the
stream keeps the rest, and the buffers are hashed and written from the objects' own memory.

A worker maps the file (copy-on-write) instead of reading it into memory of its own: the workers of a pool
share one copy in the page cache, as joblib's memory-mapped arrays do. One mapping a file, each buffer on a
64-byte boundary of it.
"""

from __future__ import annotations

import hashlib
import mmap
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from payoff._imported import imported

MAGIC = b"payoff-out-of-band-2\n"
_LENGTH = 8
ALIGN = 64
"""Where each buffer after the stream starts in the file: a multiple of this (a cache line), so an array over it
is aligned as numpy's own allocations are."""


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
    """The object written by :meth:`OutOfBand.write_to`, and the bytes of its file.

    The file is mapped copy-on-write, once: an array over a buffer is aligned and writable (unless it was
    pickled read-only), as from an in-band pickle, and the pages a worker only reads stay the page cache's,
    shared with the pool's other workers. (Slices of one buffer read whole were misaligned, before buffers
    were placed on boundaries: a matmul on them ran 1.7x slower.) A mapping per buffer held a descriptor
    each (``mmap`` duplicates it before Python 3.13): 80 arrays took 80. The mapping outlives the file's
    removal. Where a file cannot be mapped, it is read.
    """
    with open(path, "rb") as fh:
        try:
            whole = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY))
        except (OSError, ValueError):  # a file system without mmap; an empty file
            whole = memoryview(bytearray(fh.read()))
    head = len(MAGIC) + 2 * _LENGTH
    if bytes(whole[:len(MAGIC)]) != MAGIC:
        raise ValueError(f"payoff: {path} is not a function file this version of payoff wrote")
    align = int.from_bytes(whole[len(MAGIC):len(MAGIC) + _LENGTH], "little")
    count = int.from_bytes(whole[len(MAGIC) + _LENGTH:head], "little")
    at = head + count * _LENGTH
    sizes = [int.from_bytes(whole[head + k * _LENGTH:head + (k + 1) * _LENGTH], "little") for k in range(count)]
    parts = []
    for k, size in enumerate(sizes):
        if k:
            at = _aligned(at, align)
        if at + size > len(whole):
            raise ValueError(f"payoff: {path} ends before its last part: it was cut short")
        parts.append(whole[at:at + size])
        at += size
    return pickle.loads(parts[0], buffers=parts[1:]), len(whole)


def _aligned(at: int, align: int) -> int:
    return -(-at // align) * align
