"""A pickle whose large buffers stay out of band: sized, hashed and written where they lie, never copied.

Pickling a callable that holds large arrays (a model, an explainer and its data) into one ``bytes`` copies
every array into it. A named process pool did that on every call only to find, by the hash, that its workers
already held that version: 113-133 ms a call for a bound method of a 64 MiB object whose items took 30 ms.
Protocol 5 hands such buffers (numpy's contiguous arrays, ``PickleBuffer``) to a callback instead: the
stream keeps the rest, and the buffers are hashed and written from the objects' own memory.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from payoff._imported import imported

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

    Each buffer is read into a ``bytearray`` of its own, handed to ``pickle.loads`` as it lies: an array
    comes back writable (unless it was pickled read-only) and aligned, as from an in-band pickle, without a
    second copy. (Slices of one buffer for the whole file were misaligned: a matmul on them ran 1.7x slower.)
    """
    with open(path, "rb") as fh:
        head = fh.read(len(MAGIC) + _LENGTH)
        if head[:len(MAGIC)] != MAGIC:
            raise ValueError(f"payoff: {path} is not a function file this version of payoff wrote")
        count = int.from_bytes(head[len(MAGIC):], "little")
        sizes = fh.read(count * _LENGTH)
        parts = []
        for k in range(count):
            part = bytearray(int.from_bytes(sizes[k * _LENGTH:(k + 1) * _LENGTH], "little"))
            if fh.readinto(part) != len(part):
                raise ValueError(f"payoff: {path} ends before its last part: it was cut short")
            parts.append(part)
    return pickle.loads(parts[0], buffers=parts[1:]), len(head) + len(sizes) + sum(len(p) for p in parts)
