"""FER2013: one CSV ``emotion,pixels,Usage`` of 48x48 grayscale faces (Kaggle / ICML 2013).

Classes, in the data set's order: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral.
Splits: ``train`` / ``val`` / ``test`` = Usage ``Training`` / ``PublicTest`` / ``PrivateTest`` (the
Usage names are accepted as split names too), and ``all`` (every row, the only split of a file
without a Usage column, such as Kaggle's ``train.csv``). A file without an ``emotion`` column gives
labels -1. Faces are up-sampled to 64x64 (``cv2.INTER_LINEAR``) and repeated to 3 channels, as the
official BReG-NeXt code did. The images are face crops: a model trained on them is run on
detector boxes by the named rule ``fer2013-like`` (:data:`bregnet.preprocess.CROP_RULES`).

Root: the CSV file itself, or a directory holding ``fer2013.csv`` (also looked for:
``fer2013/fer2013.csv``, ``icml_face_data.csv``). Option ``csv=PATH`` names the file (relative
paths are taken from the root directory).

Parsing is vectorised and strict: the 35,887-row, 290 MB file takes about 2-2.5 s of CPU (a file
with irregular whitespace between the values takes a slower, careful path: about 9 s). A pixel
string that is not 2,304 integers in 0..255, a label out of range, an unknown Usage, or a short row
raise :class:`~bregnet.errors.DataError` ``"file:line: reason"`` (the first bad row in file order).
Quoted fields, extra columns, columns in any order (``emotion, Usage, pixels`` with spaces, as in
``icml_face_data.csv``), CRLF line endings and a UTF-8 BOM are accepted. The parsed file is cached
(one file, keyed by path, size, mtime and inode) so opening its three splits parses it once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from ...errors import DataError
from ...fileio import utf8_error_message
from ..base import Sample
from ._util import check_text_encoding, csv_rows, header_index, header_text, parse_int, require_file
from .base import FaceReader

__all__ = ["FER2013_CLASSES", "FER2013Reader", "Fer2013Table", "parse_fer2013_csv", "resolve_split"]

FER2013_CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
FER_SIDE = 48
FER_PIXELS = FER_SIDE * FER_SIDE
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
USAGE_CODES = {"training": 0, "publictest": 1, "privatetest": 2}
SPLIT_ALIASES = {
    "training": "train", "publictest": "val", "privatetest": "test",
    "valid": "val", "validation": "val",
}
_CHUNK_ROWS = 2048


def resolve_split(split: str) -> str:
    """``Training``/``PublicTest``/``PrivateTest`` (any case) -> ``train``/``val``/``test``."""
    s = str(split).strip()
    return SPLIT_ALIASES.get(s.lower(), s)


@dataclass
class Fer2013Table:
    """The whole parsed file: ``images`` (N, 48, 48) uint8, ``labels`` (N,) int64 (-1 without an
    emotion column), ``usage`` (N,) int8 (0 train, 1 val, 2 test, -1 without a Usage column) and
    ``lines`` (N,) int64, the CSV line of each row."""

    path: Path
    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    lines: np.ndarray
    has_usage: bool
    has_labels: bool


_DIGITS_SPACE = b"0123456789 "


def _parse_pixels_fast(chunk: list[bytes]) -> np.ndarray | None:
    """The common case: single spaces, 2,304 tokens of 1-3 digits per row, all <= 255.

    Returns None whenever anything differs, and the careful parser then finds the reason."""
    n = len(chunk)
    blob = b" ".join(chunk).replace(b"\t", b" ")
    if not blob or blob.translate(None, _DIGITS_SPACE):
        return None
    a = np.frombuffer(blob, dtype=np.uint8)
    spaces = np.flatnonzero(a == 32)
    if len(spaces) != n * FER_PIXELS - 1:
        return None
    # the row separators must fall exactly after every 2,304th token
    lengths = np.fromiter((len(r) for r in chunk), dtype=np.int64, count=n)
    if n > 1 and not np.array_equal(spaces[FER_PIXELS - 1:: FER_PIXELS], np.cumsum(lengths[:-1] + 1) - 1):
        return None
    ends = np.empty(len(spaces) + 1, dtype=np.int64)
    ends[:-1] = spaces
    ends[:-1] -= 1
    ends[-1] = len(a) - 1
    width = np.diff(ends, prepend=-2) - 1  # token lengths
    if width.min() < 1 or width.max() > 3:
        return None
    d = a - np.uint8(48)  # digits 0..9 (spaces become 240, always masked out below)
    values = d[ends].astype(np.int16)
    tens = d[ends - 1].astype(np.int16)
    tens *= 10
    tens *= width >= 2
    values += tens
    hundreds = d[ends - 2].astype(np.int16)
    hundreds *= 100
    hundreds *= width >= 3
    values += hundreds
    if values.max() > 255:
        return None
    return values.astype(np.uint8).reshape(n, FER_SIDE, FER_SIDE)


def _parse_pixel_block(chunk: list[bytes]) -> tuple[np.ndarray | None, tuple[int, str] | None]:
    """Parse pixel fields (bytes), each ``FER_PIXELS`` whitespace-separated integers in 0..255.

    Returns ``(values (n, 48, 48) uint8, None)`` or ``(None, (row, reason))`` for the first bad row.
    Any whitespace between values is accepted; anything else is an error.
    """
    n = len(chunk)
    if n == 0:
        return np.zeros((0, FER_SIDE, FER_SIDE), np.uint8), None
    fast = _parse_pixels_fast(chunk)
    if fast is not None:
        return fast, None
    lengths = np.fromiter((len(s) for s in chunk), dtype=np.int64, count=n)
    row_start = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1] + 1, out=row_start[1:])
    blob = np.frombuffer(b" ".join(chunk), dtype=np.uint8)
    if blob.size == 0 or not np.any(blob != 32):
        return None, (0, f"pixels has 0 values, expected {FER_PIXELS} (48x48)")

    digit = (blob >= 48) & (blob <= 57)
    space = (blob == 32) | (blob == 9) | (blob == 10) | (blob == 13) | (blob == 11) | (blob == 12)
    problems: list[tuple[int, str]] = []

    bad_pos = np.flatnonzero(~(digit | space))
    if bad_pos.size:
        pos = int(bad_pos[0])
        row = int(np.searchsorted(row_start, pos, side="right") - 1)
        off = pos - int(row_start[row])
        s = chunk[row]
        a, b = off, off
        while a > 0 and not s[a - 1: a].isspace():
            a -= 1
        while b < len(s) and not s[b: b + 1].isspace():
            b += 1
        token = s[a:b].decode("utf-8", "replace")
        if len(token) > 20:
            token = token[:20] + "..."
        problems.append((row, f"pixel {token!r} is not an integer in 0..255"))

    prev = np.empty_like(digit)
    prev[0] = False
    prev[1:] = digit[:-1]
    nxt = np.empty_like(digit)
    nxt[-1] = False
    nxt[:-1] = digit[1:]
    starts = np.flatnonzero(digit & ~prev)
    ends = np.flatnonzero(digit & ~nxt)
    token_row = np.searchsorted(row_start, starts, side="right") - 1
    counts = np.bincount(token_row, minlength=n)
    wrong = np.flatnonzero(counts != FER_PIXELS)
    if wrong.size:
        row = int(wrong[0])
        problems.append((row, f"pixels has {int(counts[row])} values, expected {FER_PIXELS} (48x48)"))

    if len(ends):
        length = ends - starts + 1
        d = blob.astype(np.int32) - 48
        values = d[ends].copy()
        values += np.where(length >= 2, 10 * d[ends - 1], 0)
        values += np.where(length >= 3, 100 * d[ends - 2], 0)
        too_big = values > 255
        # leading zeros are fine ("007"); a longer token is too big unless its extra digits are 0
        for t in np.flatnonzero(length > 3):
            if np.any(d[starts[t]: ends[t] - 2] != 0):
                too_big[t] = True
        big = np.flatnonzero(too_big)
        if big.size:
            t = int(big[0])
            token = bytes(blob[starts[t]: ends[t] + 1]).decode("ascii")
            if len(token) > 20:
                token = token[:20] + "..."
            problems.append((int(token_row[t]), f"pixel value {token} out of range 0..255"))

    if problems:
        return None, min(problems, key=lambda p: p[0])
    # well-formed after all (e.g. tabs or double spaces): gather the values row by row
    length = ends - starts + 1
    d = blob.astype(np.int32) - 48
    values = d[ends].copy()
    values += np.where(length >= 2, 10 * d[ends - 1], 0)
    values += np.where(length >= 3, 100 * d[ends - 2], 0)
    return values.astype(np.uint8).reshape(n, FER_SIDE, FER_SIDE), None


def _needs_csv_module(p: Path) -> bool:
    """True when the file has quotes or bare CR line endings (the fast byte path can't split it)."""
    with open(p, "rb") as f:
        tail = b""
        while True:
            block = f.read(1 << 24)
            if not block:
                return tail.endswith(b"\r")
            block = tail + block
            if b'"' in block:
                return True
            if b"\r" in block:
                body = block[:-1]  # a CR at the very end may pair with the next block's LF
                if body.count(b"\r") != body.count(b"\r\n"):
                    return True
            tail = block[-1:]


def _records(p: Path) -> Iterator[tuple[int, list]]:
    """``(line, fields)`` for non-blank records; fields are bytes on the fast path, str otherwise."""
    if _needs_csv_module(p):
        yield from csv_rows(p)
        return
    with open(p, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if line.endswith(b"\n"):
                line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line.strip(b", \t"):  # blank, or only empty fields (",,"), as csv_rows
                continue
            yield line_no, line.split(b",")


def _text(v: bytes | str, where: str) -> str:
    """A field as text: fields of the byte path are decoded strictly (DataError naming the line)."""
    if isinstance(v, str):
        return v
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(utf8_error_message(where, v[exc.start:exc.end])) from None


def _raw(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode("ascii", "replace")


_COLUMNS = {
    "emotion": ("emotion", "label", "expression"),
    "pixels": ("pixels", "pixel"),
    "usage": ("usage", "split"),
}
_cache: dict[str, Any] = {}


def parse_fer2013_csv(path: str | os.PathLike) -> Fer2013Table:
    """Parse a FER2013 CSV strictly (see the module doc); DataError ``"file:line: reason"``."""
    p = require_file(path, "FER2013 CSV")
    check_text_encoding(p)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if _cache.get("key") == key:
        return _cache["table"]

    rows = _records(p)
    try:
        header_line, header = next(rows)
        header = [_text(h, f"{p}:{header_line}") for h in header]
    except StopIteration:
        raise DataError(f"{p}: empty file, expected a header 'emotion,pixels,Usage'") from None
    where = f"{p}:{header_line}"
    cols = header_index(header, _COLUMNS, where, required=("pixels",))
    i_pix = cols["pixels"]
    i_emo = cols.get("emotion")
    i_use = cols.get("usage")
    need = max(cols.values()) + 1

    images: list[np.ndarray] = []
    labels: list[int] = []
    usage: list[int] = []
    lines: list[int] = []
    chunk: list[bytes] = []
    chunk_lines: list[int] = []

    def flush() -> None:
        values, problem = _parse_pixel_block(chunk)
        if problem is not None:
            row, reason = problem
            raise DataError(f"{p}:{chunk_lines[row]}: {reason}")
        images.append(values)
        chunk.clear()
        chunk_lines.clear()

    for line, row in rows:
        where = f"{p}:{line}"
        try:
            if len(row) < need:
                raise DataError(f"{where}: row has {len(row)} fields, expected at least {need} "
                                f"({header_text(header)})")
            label = -1
            if i_emo is not None:
                label = parse_int(_text(row[i_emo], where), "emotion", where)
                if not 0 <= label < len(FER2013_CLASSES):
                    raise DataError(f"{where}: emotion {label} out of range 0..{len(FER2013_CLASSES) - 1}")
            code = -1
            if i_use is not None:
                usage_name = _text(row[i_use], where).strip()
                code = USAGE_CODES.get(usage_name.lower(), -2)
                if code == -2:
                    raise DataError(f"{where}: unknown Usage {usage_name!r} "
                                    "(expected Training, PublicTest or PrivateTest)")
        except DataError:
            if chunk:  # an earlier row's pixel error comes first
                flush()
            raise
        labels.append(label)
        usage.append(code)
        lines.append(line)
        chunk.append(_raw(row[i_pix]).strip())
        chunk_lines.append(line)
        if len(chunk) >= _CHUNK_ROWS:
            flush()
    if chunk:
        flush()

    table = Fer2013Table(
        path=p,
        images=np.concatenate(images) if images else np.zeros((0, FER_SIDE, FER_SIDE), np.uint8),
        labels=np.asarray(labels, np.int64),
        usage=np.asarray(usage, np.int8),
        lines=np.asarray(lines, np.int64),
        has_usage=i_use is not None,
        has_labels=i_emo is not None,
    )
    _cache.clear()
    _cache.update(key=key, table=table)
    return table


def find_fer2013_csv(root: Path, csv: str | os.PathLike | None) -> Path:
    """The FER2013 CSV for ``root`` (a file, or a directory) and the ``csv`` option."""
    if csv is not None:
        c = Path(csv)
        return c if c.is_absolute() or not root.is_dir() else root / c
    if root.is_file():
        return root
    if not root.exists():
        raise DataError(f"FER2013 root not found: {root}")
    for name in ("fer2013.csv", "fer2013/fer2013.csv", "icml_face_data.csv"):
        if (root / name).is_file():
            return root / name
    return root / "fer2013.csv"


def upsample_gray(face: np.ndarray, size: int = 64) -> np.ndarray:
    """48x48 gray -> ``size`` x ``size`` x 3 uint8 (INTER_LINEAR enlarging, INTER_AREA shrinking)."""
    if face.shape[0] != size:
        interp = cv2.INTER_LINEAR if size > face.shape[0] else cv2.INTER_AREA
        face = cv2.resize(np.ascontiguousarray(face), (size, size), interpolation=interp)
    return np.repeat(face[:, :, None], 3, axis=2)


class FER2013Reader(FaceReader):
    """FER2013 ``emotion,pixels,Usage`` CSV (see the module doc). Options: ``csv``."""

    name = "fer2013"
    splits = ("train", "val", "test", "all")
    split_aliases = SPLIT_ALIASES
    default_classes = FER2013_CLASSES
    OPTIONS = {"csv": None}
    crop_rule = "fer2013-like"  # the images are the data set's own face crops

    def __init__(self, root: str | os.PathLike, split: str, **options: Any) -> None:
        super().__init__(root, split, **options)
        split = self.split
        self.csv_path = find_fer2013_csv(self.root, self.opts["csv"])
        self.annotation_file = self.csv_path
        table = parse_fer2013_csv(self.csv_path)
        if split == "all":
            idx = np.arange(len(table.labels))
        else:
            if not table.has_usage:
                raise DataError(f"{self.csv_path}: no Usage column, so no {split!r} split; use split 'all'")
            idx = np.flatnonzero(table.usage == SPLIT_CODES[split])
        self._table = table
        self._index = idx
        self._labels = table.labels[idx]
        self._lines = table.lines[idx]

    @classmethod
    def available_splits(cls, root: str | os.PathLike, **options: Any) -> list[str]:
        """The official splits present: train/val/test, or ``all`` for a file without Usage."""
        path = find_fer2013_csv(Path(root), options.get("csv"))
        first = next(_records(require_file(path, "FER2013 CSV")), None)
        has_usage = first is not None and any(
            _text(h, f"{path}:{first[0]}").strip().lower() in _COLUMNS["usage"] for h in first[1])
        return ["train", "val", "test"] if has_usage else ["all"]

    def load(self, index: int) -> Sample:
        j = self._index[index]
        return Sample(upsample_gray(self._table.images[j], self.image_size), int(self._labels[index]))

    def faces48(self) -> np.ndarray:
        """The split's raw 48x48 grayscale faces (N, 48, 48) uint8, without decoding per item."""
        return self._table.images[self._index]
