"""Objects: how one checkpoint array is kept on disk, and read back exactly.

An array is named by the sha256 of its raw bytes, always; only the way its bytes are stored varies:

- ``objects/<sha256>``: the raw bytes (what flor wrote before compression, and what it still
  writes where compressing does not pay: small or random-looking arrays);
- ``objects/<sha256>.z``: a header line ``FLORZ1 <json>\\n`` then one zstd frame. The JSON says
  how to undo the encoding: ``shuffle`` (the item size whose bytes were grouped by position
  before compressing: the sign and exponent bytes of floats are alike across an array, the low
  mantissa bytes are noise, and grouped they compress apart), ``base`` (the sha256 of the array
  whose bytes were taken out first: the same tensor at the previous checkpoint of the run),
  ``delta`` (how: ``sub``, each item's bits as an unsigned integer minus the base's, wrapping; absent,
  an XOR of the bytes, which objects written before ``sub`` use and items of other sizes still do)
  and ``size`` (the raw length). Subtracting beats XOR on floats that moved a little: a carry
  across the mantissa (0x3f7fffff to 0x3f800000) is a difference of 1 but an XOR of 24 bits; on
  the nanoGPT-shaped GPT's AdamW state 50 iterations apart it stored 0.72 of the raw bytes against
  XOR's 0.77 (``benchmarks/checkpoint_space.py``).

Because the name is the hash of the raw bytes, an object can be re-encoded in place (a delta made
standalone before its base is removed, see ``gc.py``) and every reader still verifies what it
decodes against the name, deltas included: a damaged link of a chain is found at once.

Measured on real training state (benchmarks/checkpoint_space.py): zstd at level 1 after the byte
shuffle saves 10-15 % of float32 weights and Adam moments, a delta against the previous
checkpoint 10-15 % more (level 3 or 9 saved under 1 % more than level 1, at 1.3x and 5x the CPU);
both cost the background writer tens of milliseconds per 10 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..environment.imported import imported

MAGIC = b"FLORZ1 "
SUFFIX = ".z"
LEVEL = 1  # zstd level: 3 saved under 1 % more on training state, for 1.5x the CPU
MIN_BYTES = 4096  # smaller arrays are stored raw: a frame and a header cost more than they save
WORTH = 0.97  # an encoding is kept only when it is at most this fraction of the raw bytes
MAX_CHAIN = 64  # no delta chain is ever this long: a longer one is a cycle (a damaged header)
PREFETCH_THREADS = 4  # threads decoding one checkpoint's arrays (Reader.prefetch)


@dataclass(frozen=True)
class Encoded:
    """The stored form of one array."""

    data: bytes  # what goes in the file
    suffix: str  # "" raw, ".z" encoded
    base: str | None  # the sha256 of the array it is a delta against


def _zstd():
    module = imported("zstandard")
    if module is None:
        try:
            import zstandard as module  # noqa: PLC0415 - a dependency, imported on first use
        except ImportError:
            return None
    return module


def _numpy():
    import numpy  # a dependency; imported when an object is first encoded or decoded

    return numpy


def import_codecs() -> None:
    """Import now what encoding an array needs (numpy, the compressor), which is otherwise imported
    on first use: a process about to fork a writer calls this, because a module that another of its
    threads is importing at the fork stays locked in the child forever (the lock's owner is not
    there), and the child hangs on its first import of it."""
    _numpy()
    _zstd()


def available() -> bool:
    """Whether the compressor is installed (it is a dependency; a copy without it writes raw)."""
    return _zstd() is not None


_LANES = {2: "uint16", 4: "uint32", 8: "uint64"}  # items whose bytes are split with shifts (fast)


def shuffle(view, itemsize: int, out=None):
    """The bytes of ``view`` grouped by position in their item (a numpy uint8 array, into
    ``out`` where given). Byte k of every item is ``(item >> 8k) & 0xff``: a shift and a
    narrowing per lane run several times faster than numpy's strided transpose."""
    numpy = _numpy()
    flat = numpy.frombuffer(view, dtype=numpy.uint8)
    count = len(flat) // itemsize
    out = numpy.empty(len(flat), dtype=numpy.uint8) if out is None else out[: len(flat)]
    lanes = out[: count * itemsize].reshape(itemsize, count)
    if itemsize in _LANES:
        items = flat[: count * itemsize].view(_LANES[itemsize])
        for k in range(itemsize):
            numpy.copyto(lanes[k], items >> (8 * k), casting="unsafe")  # little-endian byte k
    else:
        lanes[...] = flat[: count * itemsize].reshape(count, itemsize).T
    out[count * itemsize:] = flat[count * itemsize:]
    return out


def unshuffle(data, itemsize: int):
    """The inverse of :func:`shuffle`."""
    numpy = _numpy()
    flat = numpy.frombuffer(data, dtype=numpy.uint8)
    count = len(flat) // itemsize
    out = numpy.empty(len(flat), dtype=numpy.uint8)
    lanes = flat[: count * itemsize].reshape(itemsize, count)
    if itemsize in _LANES:
        kind = numpy.dtype(_LANES[itemsize])
        items = out[: count * itemsize].view(kind)
        items[...] = lanes[0]
        for k in range(1, itemsize):
            items |= lanes[k].astype(kind) << kind.type(8 * k)
    else:
        out[: count * itemsize].reshape(count, itemsize)[...] = lanes.T
    out[count * itemsize:] = flat[count * itemsize:]
    return out


class Encoder:
    """Compresses arrays for one writer thread (a zstd context is not shared between threads)."""

    def __init__(self, level: int = LEVEL) -> None:
        module = _zstd()
        self._compressor = module.ZstdCompressor(level=level) if module is not None else None
        self._scratch: list = [None, None]  # reused buffers: fresh pages for every array cost more than the copy

    def _buffer(self, slot: int, size: int):
        numpy = _numpy()
        found = self._scratch[slot]
        if found is None or len(found) < size:
            found = self._scratch[slot] = numpy.empty(size, dtype=numpy.uint8)
        return found[:size]

    def encode(self, view, itemsize: int, previous=None, base: str | None = None) -> Encoded:
        """The stored form of ``view`` (its raw bytes); ``previous``: the raw bytes of the same
        array at the run's previous checkpoint (named ``base``), for a delta."""
        size = len(view)
        if self._compressor is None or size < MIN_BYTES:
            return Encoded(view, "", None)
        numpy = _numpy()
        body = numpy.frombuffer(view, dtype=numpy.uint8)
        grouped = itemsize > 1 and size % itemsize == 0
        delta = None
        if previous is not None and base is not None and len(previous) == size:
            out = self._buffer(0, size)
            if grouped and itemsize in _LANES:
                lane = numpy.dtype(_LANES[itemsize])
                numpy.subtract(body.view(lane), numpy.frombuffer(previous, dtype=lane), out=out.view(lane))
                delta = "sub"
            else:
                numpy.bitwise_xor(body, numpy.frombuffer(previous, dtype=numpy.uint8), out=out)
            body = out
        else:
            base = None
        if grouped:
            body = shuffle(body, itemsize, self._buffer(1, size))
        packed = self._compressor.compress(body)
        if len(packed) > WORTH * size:
            return Encoded(view, "", None)  # does not pay: read back without decoding
        header = {"size": size, "shuffle": itemsize if grouped else 1, "base": base}
        if delta:
            header["delta"] = delta
        return Encoded(MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + packed, SUFFIX, base)


def itemsize_of(dtype: str) -> int:
    """Bytes per item of a stored array's dtype (1 where unknown: no shuffle)."""
    numpy = _numpy()
    try:
        return int(numpy.dtype(dtype).itemsize)
    except TypeError:
        torch_sizes = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4, "float64": 8, "double": 8,
                       "int64": 8, "long": 8, "int32": 4, "int": 4, "int16": 2, "bool": 1, "uint8": 1, "int8": 1}
        return torch_sizes.get(str(dtype), 1)


class _Undecodable(Exception):
    """Stored bytes that do not decode (a damaged header or frame); the reader names the file."""


def header(data: bytes) -> dict | None:
    """The header of an encoded object's bytes (None: raw bytes)."""
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\n", len(MAGIC))
    try:
        return json.loads(data[len(MAGIC):end])
    except ValueError:
        raise _Undecodable("its header is corrupt") from None


def decode(data: bytes, read_base) -> bytes:
    """The raw bytes of an encoded object; ``read_base(sha256)`` gives a delta's base, raw."""
    found = header(data)
    if found is None:
        return data
    module = _zstd()
    if module is None:
        raise _Undecodable("it is compressed and zstandard is not installed (pip install zstandard)")
    numpy = _numpy()
    start = data.find(b"\n", len(MAGIC)) + 1
    try:
        size = int(found["size"])
        body = module.ZstdDecompressor().decompress(data[start:], max_output_size=size)
    except (module.ZstdError, KeyError, TypeError, ValueError) as exc:
        raise _Undecodable(f"its compressed bytes are damaged ({exc})") from None
    if len(body) != size:
        raise _Undecodable("its compressed bytes are damaged (wrong length)")
    itemsize = int(found.get("shuffle") or 1)
    if itemsize > 1:
        body = unshuffle(body, itemsize)
    else:
        body = numpy.frombuffer(body, dtype=numpy.uint8)
    base = found.get("base")
    if base:
        previous = read_base(str(base))
        if len(previous) != size:
            raise _Undecodable(f"its base {str(base)[:12]} has another size")
        delta = found.get("delta")
        if delta == "sub":
            lane = numpy.dtype(_LANES.get(itemsize, "uint8"))
            if itemsize not in _LANES or size % itemsize:
                raise _Undecodable("its header is corrupt (a subtracted delta of unsized items)")
            body = numpy.add(body.view(lane), numpy.frombuffer(previous, dtype=lane)).view(numpy.uint8)
        elif delta is None:
            body = numpy.bitwise_xor(body, numpy.frombuffer(previous, dtype=numpy.uint8))
        else:
            raise _Undecodable(f"its header names an unknown delta {str(delta)[:20]!r} (written by a newer flor?)")
    return body.tobytes()


def files(objects: Path, digest: str) -> list[Path]:
    """Where the object ``digest`` may be stored (raw first)."""
    return [objects / digest, objects / f"{digest}{SUFFIX}"]


def stored(objects: Path, digest: str) -> Path | None:
    """The file that holds ``digest`` in ``objects`` (None: neither form is there)."""
    for path in files(objects, digest):
        if path.exists():
            return path
    return None


MISSING, DAMAGED, UNREADABLE = "missing", "damaged", "unreadable"


class ObjectError(CheckpointError):
    """An object that cannot be read back: ``kind`` is MISSING, DAMAGED or UNREADABLE (``flor
    doctor`` tells them apart: only damage is repaired by unlisting)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Reader:
    """Reads objects by sha256 from a folder (and, where one is given, a remote store), decoding
    deltas through their chains, verifying every array it decodes against its name."""

    def __init__(self, objects: Path, remote=None) -> None:
        """``remote``: a RemoteStore, or a function giving one (or None) when first needed."""
        self.objects = Path(objects) if objects is not None else None
        self.remote = remote
        self.cache: dict[str, bytes] = {}

    def _stored_bytes(self, digest: str) -> tuple[bytes, str]:
        """The stored bytes of ``digest`` and where they came from."""
        missing = None
        for path in files(self.objects, digest) if self.objects is not None else ():
            try:
                return path.read_bytes(), str(path)
            except FileNotFoundError as exc:
                missing = missing or exc
            except OSError as exc:
                raise ObjectError(f"checkpoint data {path} is unreadable ({exc.strerror or exc}); run `flor doctor`",
                                  UNREADABLE) from exc
        if self.objects is None and self.remote is None:
            raise ObjectError(f"objects/{digest} is missing", MISSING)
        remote = self.remote() if callable(self.remote) else self.remote
        if remote is not None:
            self.remote = remote
            for relative in (f"objects/{digest}", f"objects/{digest}{SUFFIX}"):
                data = remote.fetch(relative)
                if data is not None:
                    return data, remote.path(relative)
            raise ObjectError(f"objects/{digest} is in neither .flor/ nor {remote.url}; run `flor doctor`", MISSING)
        path = (self.objects or Path("objects")) / digest
        raise ObjectError(f"checkpoint data {path} is missing or unreadable "
                          f"({getattr(missing, 'strerror', None) or 'not found'}); run `flor doctor`", MISSING)

    def read(self, digest: str, _depth: int = 0) -> bytes:
        """The raw bytes of ``digest``, verified against it."""
        data = self.cache.get(digest)
        if data is not None:
            return data
        if _depth > MAX_CHAIN:
            raise ObjectError(f"checkpoint data {digest[:12]}: its delta chain loops; run `flor doctor`", DAMAGED)
        stored_bytes, where = self._stored_bytes(digest)
        try:
            data = decode(stored_bytes, lambda base: self.read(base, _depth + 1))
        except _Undecodable as exc:  # links further down the chain name themselves
            raise ObjectError(f"checkpoint data {where} is damaged: {exc}; run `flor doctor`", DAMAGED) from None
        # Content addressed: bytes that no longer hash to their name are damaged; never restore them.
        if hashlib.sha256(data).hexdigest() != digest:
            raise ObjectError(f"checkpoint data {where} is damaged (its content does not match its hash); "
                              "run `flor doctor`", DAMAGED)
        self.cache[digest] = data
        return data

    def prefetch(self, digests) -> None:
        """Decode ``digests`` (those stored in the local folder) into the cache on a few threads:
        reading, decompressing, undoing the shuffle and delta, and hashing release the GIL, so a
        checkpoint of many arrays decodes on several cores. Every array is verified as in
        :meth:`read`; one that fails is left for the caller's own read to report."""
        todo = [d for d in dict.fromkeys(digests) if d not in self.cache and self.objects is not None
                and stored(self.objects, d) is not None]
        threads = min(PREFETCH_THREADS, os.cpu_count() or 1, len(todo))
        if threads < 2:
            return
        from concurrent.futures import ThreadPoolExecutor

        def one(digest: str) -> None:
            try:
                self.read(digest)
            except ObjectError:
                pass  # read again, and reported, where the caller asks for it

        with ThreadPoolExecutor(threads, thread_name_prefix="flor-restore") as pool:
            list(pool.map(one, todo))



def base_of(objects: Path, digest: str) -> str | None:
    """The sha256 a stored object is a delta against (None: it stands alone or is absent)."""
    path = stored(objects, digest)
    if path is None or path.suffix != SUFFIX:
        return None
    try:
        with open(path, "rb") as handle:
            start = handle.read(512)
        found = header(start)
    except (OSError, _Undecodable):
        return None
    return (found or {}).get("base")
