"""A pure-Python reader of TensorFlow tensor-bundle checkpoints (the V2 ``Saver`` format).

A bundle named by its *prefix* (``.../checkpoints``) is two kinds of file:

* ``PREFIX.index``: a LevelDB-format sorted table (SSTable). Its entry with the empty key is a
  ``BundleHeaderProto`` (number of shards, byte order, version); every other entry maps a tensor
  name to a ``BundleEntryProto`` (dtype, shape, shard, byte offset and size, masked CRC32C).
* ``PREFIX.data-SSSSS-of-NNNNN``: the shards, raw tensor bytes back to back.

Nothing here imports TensorFlow or protobuf: the table format, a tiny protobuf wire decoder,
CRC32C (vectorised with numpy, so tens of megabytes check in well under a second) and the Snappy
block decompression are implemented below. Every problem raises :class:`TFBundleError`, a
:class:`~bregnet.errors.CheckpointError` whose message is one line naming the file and the fault.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CheckpointError

__all__ = [
    "BundleEntry",
    "BundleHeader",
    "TFBundleError",
    "TensorBundle",
    "crc32c",
    "mask_crc32c",
    "read_index",
    "read_table",
    "resolve_prefix",
    "shard_path",
    "unmask_crc32c",
]


class TFBundleError(CheckpointError):
    """A TensorFlow checkpoint that is missing, truncated, corrupt or unsupported."""


# --------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), as LevelDB and TensorFlow use it, with their "mask" for stored values.
# --------------------------------------------------------------------------------------------

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8


def _make_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_SMALL = 1 << 16  # below this many bytes a plain table loop is fast enough
_shift_cache: dict[int, list[int]] = {}


def _crc_register_py(data: bytes | memoryview, reg: int) -> int:
    """Advance the raw (un-inverted) CRC register over ``data`` one byte at a time."""
    table = _TABLE_LIST
    for b in bytes(data):
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _zero_shift(length: int) -> list[int]:
    """Columns of the GF(2) operator that advances a register over ``length`` zero bytes."""
    cols = _shift_cache.get(length)
    if cols is None:
        regs = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32)).astype(np.uint32)
        for _ in range(length):
            regs = _TABLE[regs & 0xFF] ^ (regs >> 8)
        cols = [int(v) for v in regs]
        _shift_cache[length] = cols
    return cols


def _apply(cols: list[int], reg: int) -> int:
    out = 0
    i = 0
    while reg:
        if reg & 1:
            out ^= cols[i]
        reg >>= 1
        i += 1
    return out


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """CRC32C of ``data`` (continuing from a previous ``crc`` if given), as an unsigned int.

    Large inputs are cut into equal chunks whose raw CRC registers are advanced together with
    numpy, then chained with the linear "advance over L zero bytes" operator: the CRC register is
    linear over GF(2), so ``reg(A + B) = shift_|B|(reg(A)) ^ reg_0(B)``.
    """
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = buf.size
    reg = (crc ^ 0xFFFFFFFF) & 0xFFFFFFFF
    if n < _SMALL:
        return _crc_register_py(buf.tobytes(), reg) ^ 0xFFFFFFFF
    length = max(256, int(np.sqrt(n)) & ~63)  # chunk length: balances the two loops
    chunks = n // length
    body = buf[: chunks * length].reshape(chunks, length).T.astype(np.uint32)  # (L, K)
    regs = np.zeros(chunks, dtype=np.uint32)
    table = _TABLE
    for row in body:
        regs = table[(regs ^ row) & 0xFF] ^ (regs >> 8)
    cols = _zero_shift(length)
    for r in regs.tolist():
        reg = _apply(cols, reg) ^ r
    reg = _crc_register_py(buf[chunks * length:].tobytes(), reg)
    return reg ^ 0xFFFFFFFF


def mask_crc32c(crc: int) -> int:
    """LevelDB/TensorFlow's masking of a stored CRC (so CRCs of CRCs stay well distributed)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc32c(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# Varints and the protobuf wire format (just what the two bundle messages need).
# --------------------------------------------------------------------------------------------


class _Truncated(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise _Truncated("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Truncated("varint longer than 10 bytes")


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_number, wire_type, value)``: ints for varint/fixed, bytes for length-delimited."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > n:
                raise _Truncated("fixed64 runs past the end")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > n:
                raise _Truncated("length-delimited field runs past the end")
            value = bytes(buf[pos:pos + size])
            pos += size
        elif wire == 5:
            if pos + 4 > n:
                raise _Truncated("fixed32 runs past the end")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise _Truncated(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# TensorFlow DataType enum -> numpy dtype (only fixed-size numeric types can be read).
_DTYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "f4"), 2: ("float64", "f8"), 3: ("int32", "i4"), 4: ("uint8", "u1"),
    5: ("int16", "i2"), 6: ("int8", "i1"), 9: ("int64", "i8"), 10: ("bool", "?"),
    17: ("uint16", "u2"), 19: ("float16", "f2"), 22: ("uint32", "u4"), 23: ("uint64", "u8"),
}
_DTYPE_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 20: "resource",
                21: "variant"}


@dataclass(frozen=True)
class BundleHeader:
    """``BundleHeaderProto``: shard count, byte order of the data, format version."""

    num_shards: int = 1
    endianness: str = "little"
    version: int = 0


@dataclass(frozen=True)
class BundleEntry:
    """One tensor's ``BundleEntryProto``: where its bytes are and what they are."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int | None = None  # masked, as stored
    sliced: bool = False

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


def _parse_header(buf: bytes) -> BundleHeader:
    num_shards, endian, version = 0, 0, 0
    for number, _wire, value in _proto_fields(buf):
        if number == 1:
            num_shards = int(value)
        elif number == 2:
            endian = int(value)
        elif number == 3 and isinstance(value, bytes):
            for n2, _w2, v2 in _proto_fields(value):
                if n2 == 1:
                    version = int(v2)
    return BundleHeader(num_shards=num_shards, endianness="big" if endian == 1 else "little",
                        version=version)


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    for number, _wire, value in _proto_fields(buf):
        if number == 2 and isinstance(value, bytes):
            size = 0
            for n2, _w2, v2 in _proto_fields(value):
                if n2 == 1:
                    size = _int64(int(v2))
            dims.append(size)
        elif number == 3 and value:
            raise _Truncated("tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> BundleEntry:
    dtype_code, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, None, False
    for number, _wire, value in _proto_fields(buf):
        if number == 1:
            dtype_code = int(value)
        elif number == 2:
            shape = _parse_shape(value)  # type: ignore[arg-type]
        elif number == 3:
            shard = int(value)
        elif number == 4:
            offset = _int64(int(value))
        elif number == 5:
            size = _int64(int(value))
        elif number == 6:
            crc = int(value)
        elif number == 7:
            sliced = True
    if dtype_code in _DTYPES:
        dtype = _DTYPES[dtype_code][0]
    else:
        dtype = _DTYPE_NAMES.get(dtype_code, f"dtype#{dtype_code}")
    return BundleEntry(name=name, dtype=dtype, shape=shape, shard_id=shard, offset=offset,
                       size=size, crc32c=crc, sliced=sliced)


# --------------------------------------------------------------------------------------------
# The LevelDB table format.
# --------------------------------------------------------------------------------------------

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_TRAILER_LEN = 5


def _snappy_decompress(buf: bytes) -> bytes:
    """Decompress one raw Snappy block (the format LevelDB uses for compressed blocks)."""
    expected, pos = _varint(buf, 0)
    out = bytearray()
    n = len(buf)
    while pos < n:
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                if pos + extra > n:
                    raise _Truncated("snappy literal length runs past the end")
                length = int.from_bytes(buf[pos:pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > n:
                raise _Truncated("snappy literal runs past the end")
            out += buf[pos:pos + length]
            pos += length
            continue
        if kind == 1:
            if pos >= n:
                raise _Truncated("snappy copy runs past the end")
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | buf[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            if pos + width > n:
                raise _Truncated("snappy copy runs past the end")
            length = (tag >> 2) + 1
            offset = int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise _Truncated("snappy copy offset outside the output")
        start = len(out) - offset
        if offset >= length:
            out += out[start:start + length]
        else:  # overlapping copy repeats the pattern
            for i in range(length):
                out.append(out[start + i])
    if len(out) != expected:
        raise _Truncated(f"snappy block decodes to {len(out)} bytes, header says {expected}")
    return bytes(out)


def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int, verify: bool) -> bytes:
    end = offset + size
    if offset < 0 or end + _TRAILER_LEN > len(data):
        raise _Truncated(f"block at {offset} (+{size}) runs past the end of the file")
    contents = data[offset:end]
    kind = data[end]
    if verify:
        stored = struct.unpack_from("<I", data, end + 1)[0]
        actual = crc32c(data[offset:end + 1])
        if unmask_crc32c(stored) != actual:
            raise _Truncated(f"block at {offset} fails its checksum")
    if kind == 0:
        return contents
    if kind == 1:
        return _snappy_decompress(contents)
    raise _Truncated(f"block at {offset} uses unsupported compression type {kind}")


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Truncated("block shorter than its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _Truncated("block restart array larger than the block")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise _Truncated("block entry runs past its block")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_len]
        pos += value_len


def read_table(data: bytes, verify: bool = True, source: str = "table") -> Iterator[tuple[bytes, bytes]]:
    """Yield every ``(key, value)`` of a LevelDB-format table held in ``data``, in key order."""
    try:
        if len(data) < _FOOTER_LEN:
            raise _Truncated(f"{len(data)} bytes is shorter than a table footer")
        footer = data[-_FOOTER_LEN:]
        if struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
            raise _Truncated("no table magic number at the end (not a TensorFlow .index file, "
                             "or truncated)")
        _meta_off, _meta_size, pos = _block_handle(footer, 0)
        index_off, index_size, _ = _block_handle(footer, pos)
        index = _read_block(data, index_off, index_size, verify)
        for _last_key, handle in _block_entries(index):
            off, size, _ = _block_handle(handle, 0)
            yield from _block_entries(_read_block(data, off, size, verify))
    except _Truncated as exc:
        raise TFBundleError(f"{source}: corrupt or truncated index: {exc}") from None


def read_index(path: str | os.PathLike, verify: bool = True
               ) -> tuple[BundleHeader, dict[str, BundleEntry]]:
    """Parse a bundle's ``.index`` file into its header and ``{tensor name: entry}``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TFBundleError(f"index file not found: {path}") from None
    except OSError as exc:
        raise TFBundleError(f"cannot read index file {path}: {exc.strerror or exc}") from None
    header: BundleHeader | None = None
    entries: dict[str, BundleEntry] = {}
    for key, value in read_table(data, verify=verify, source=str(path)):
        try:
            if key == b"":
                header = _parse_header(value)
                continue
            name = key.decode("utf-8")
            entries[name] = _parse_entry(name, value)
        except (_Truncated, UnicodeDecodeError) as exc:
            raise TFBundleError(f"{path}: corrupt entry {key[:80]!r}: {exc}") from None
    if header is None:
        raise TFBundleError(f"{path}: no bundle header (is this a TensorFlow V2 checkpoint index?)")
    return header, entries


# --------------------------------------------------------------------------------------------
# The bundle.
# --------------------------------------------------------------------------------------------


def shard_path(prefix: str | os.PathLike, shard_id: int, num_shards: int) -> Path:
    return Path(f"{os.fspath(prefix)}.data-{shard_id:05d}-of-{num_shards:05d}")


def resolve_prefix(path: str | os.PathLike) -> Path:
    """Accept a prefix, its ``.index`` file, one of its ``.data-*`` shards, or a directory
    holding exactly one bundle (or a TF ``checkpoint`` state file naming one)."""
    p = Path(path)
    name = p.name
    if name.endswith(".index"):
        return p.with_name(name[: -len(".index")])
    if ".data-" in name and p.is_file():
        return p.with_name(name.split(".data-")[0])
    if p.is_dir():
        state = p / "checkpoint"
        if state.is_file():
            for line in state.read_text(errors="replace").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    target = line.split(":", 1)[1].strip().strip('"')
                    cand = Path(target) if os.path.isabs(target) else p / target
                    if Path(f"{cand}.index").is_file():
                        return cand
        found = sorted(p.glob("*.index"))
        if len(found) == 1:
            return found[0].with_name(found[0].name[: -len(".index")])
        if not found:
            raise TFBundleError(f"no TensorFlow checkpoint (*.index) in directory {p}")
        raise TFBundleError(f"several checkpoints in {p} ({', '.join(f.name for f in found[:4])}"
                            f"{'...' if len(found) > 4 else ''}): name the prefix")
    return p


class TensorBundle:
    """A TensorFlow V2 checkpoint read without TensorFlow.

    >>> bundle = TensorBundle("Snapshots/categorical_attempt_1/checkpoints")   # doctest: +SKIP
    >>> bundle.names()[:2], bundle.read("Conv2D/W").shape                       # doctest: +SKIP
    """

    def __init__(self, prefix: str | os.PathLike, verify_index: bool = True) -> None:
        self.prefix: Path = resolve_prefix(prefix)
        self.header: BundleHeader
        self.entries: dict[str, BundleEntry]
        self.header, self.entries = read_index(self.index_path, verify=verify_index)
        if self.header.num_shards < 1:
            raise TFBundleError(f"{self.index_path}: header declares {self.header.num_shards} shards")

    def __repr__(self) -> str:
        return f"TensorBundle({str(self.prefix)!r}, {len(self.entries)} tensors)"

    @property
    def index_path(self) -> Path:
        return Path(f"{os.fspath(self.prefix)}.index")

    def shard_path(self, shard_id: int) -> Path:
        return shard_path(self.prefix, shard_id, self.header.num_shards)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def missing_shards(self, names: list[str] | None = None) -> list[Path]:
        """Data shards needed by ``names`` (default: every tensor) that do not exist."""
        ids = {self.entries[n].shard_id for n in (names if names is not None else self.entries)}
        return [self.shard_path(i) for i in sorted(ids) if not self.shard_path(i).is_file()]

    def require_shards(self, names: list[str] | None = None) -> None:
        missing = self.missing_shards(names)
        if missing:
            raise TFBundleError(
                f"data shard missing: {missing[0]} (download it together with "
                f"{self.index_path.name}; both files are needed)")

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """The tensor ``name`` as a numpy array (its checksum checked unless ``verify=False``)."""
        try:
            entry = self.entries[name]
        except KeyError:
            raise TFBundleError(f"{self.index_path}: no tensor named {name!r}") from None
        if entry.sliced:
            raise TFBundleError(f"{name}: partitioned (sliced) variables are not supported")
        if entry.dtype not in {v[0] for v in _DTYPES.values()}:
            raise TFBundleError(f"{name}: dtype {entry.dtype} cannot be read")
        code = next(c for c, (n, _) in _DTYPES.items() if n == entry.dtype)
        np_dtype = np.dtype(("<" if self.header.endianness == "little" else ">") + _DTYPES[code][1])
        expected = entry.numel * np_dtype.itemsize
        if entry.size != expected:
            raise TFBundleError(f"{name}: index says {entry.size} bytes but shape {list(entry.shape)} "
                                f"of {entry.dtype} needs {expected}")
        path = self.shard_path(entry.shard_id)
        try:
            with open(path, "rb") as f:
                f.seek(entry.offset)
                raw = f.read(entry.size)
        except FileNotFoundError:
            raise TFBundleError(f"data shard missing: {path} (download it together with "
                                f"{self.index_path.name}; both files are needed)") from None
        except OSError as exc:
            raise TFBundleError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(raw) != entry.size:
            raise TFBundleError(f"{path} is truncated: {name} needs bytes {entry.offset}.."
                                f"{entry.offset + entry.size}, the file ends at "
                                f"{entry.offset + len(raw)}")
        if verify and entry.crc32c is not None:
            if crc32c(raw) != unmask_crc32c(entry.crc32c):
                raise TFBundleError(f"checksum failure in {path} for tensor {name} "
                                    f"(the file is corrupt or does not belong to this index)")
        arr = np.frombuffer(raw, dtype=np_dtype).reshape(entry.shape)
        return arr.astype(np_dtype.newbyteorder("="), copy=True)

    def read_all(self, names: list[str] | None = None, verify: bool = True) -> dict[str, np.ndarray]:
        names = self.names() if names is None else list(names)
        self.require_shards(names)
        return {n: self.read(n, verify=verify) for n in names}
