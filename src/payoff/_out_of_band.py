"""A pickle whose large buffers stay out of band: sized, hashed and written where they lie, never copied.

Pickling a callable that holds large arrays (a model, an explainer and its data) into one ``bytes`` copies
every array into it. A named process pool did that on every call only to find, by the hash, that its workers
already held that version: 113-133 ms a call for a bound method of a 64 MiB object whose items took 30 ms.
Protocol 5 hands such buffers (numpy's contiguous arrays, ``PickleBuffer``) to a callback instead: the
stream keeps the rest, and the buffers are hashed and written from the objects' own memory.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

MAGIC = b"payoff-out-of-band-1\n"
_LENGTH = 8


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
        fh.write(MAGIC + len(parts).to_bytes(_LENGTH, "little"))
        fh.write(b"".join(len(p).to_bytes(_LENGTH, "little") for p in parts))
        for part in parts:
            fh.write(part)

    def _parts(self) -> Sequence[bytes | memoryview]:
        return (self.stream, *self.buffers)


def dumps(obj: Any, dump: Callable[..., bytes]) -> OutOfBand:
    """``obj`` pickled by ``dump`` (``pickle.dumps`` or ``cloudpickle.dumps``) with its buffers left out."""
    found: list[pickle.PickleBuffer] = []
    stream = dump(obj, protocol=5, buffer_callback=found.append)
    try:
        views = tuple(b.raw() for b in found)
    except BufferError:  # a buffer that is not contiguous cannot be read as bytes: pickle it in band
        return OutOfBand(bytes(dump(obj, protocol=5)))
    return OutOfBand(bytes(stream), views)


def load(path: str) -> tuple[Any, int]:
    """The object written by :meth:`OutOfBand.write_to`, and the bytes read for it.

    The buffers are read into one writable ``bytearray`` and handed to ``pickle.loads`` as they lie: an array
    comes back writable, as from an in-band pickle, without a second copy.
    """
    with open(path, "rb") as fh:
        data = bytearray(os.fstat(fh.fileno()).st_size)
        fh.readinto(data)
    view = memoryview(data)
    if view[:len(MAGIC)] != MAGIC:
        raise ValueError(f"payoff: {path} is not a function file this version of payoff wrote")
    at = len(MAGIC)
    count = int.from_bytes(view[at:at + _LENGTH], "little")
    at += _LENGTH
    lengths = [int.from_bytes(view[at + k * _LENGTH:at + (k + 1) * _LENGTH], "little") for k in range(count)]
    at += count * _LENGTH
    parts = []
    for length in lengths:
        parts.append(view[at:at + length])
        at += length
    return pickle.loads(parts[0], buffers=parts[1:]), len(data)
