"""Helpers shared by the readers: paths, options, text and CSV rows with line numbers, fields.

Text files are read as strict UTF-8 (a BOM is fine): a UTF-16 or UTF-32 file is named as such,
and bytes that are not UTF-8 (a Latin-1 label, say) are a DataError naming the file and line,
never silently replaced. A CSV record whose quoted field runs over several lines (an unclosed
quote) is blamed on the line where the quote opens.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from ...errors import DataError
from ...fileio import sniff_text_encoding, utf8_error_message


def take_options(reader: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``options``; an unknown option is a DataError listing the known ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise DataError(f"{reader}: unknown option {unknown[0]!r} (known options: {known})")
    out = dict(defaults)
    out.update(options)
    return out


def require_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found: {p}")
    if not p.is_dir():
        raise DataError(f"{what} is not a directory: {p}")
    return p


def require_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found: {p}")
    if not p.is_file():
        raise DataError(f"{what} is not a file: {p}")
    return p


def check_text_encoding(path: Path) -> None:
    """DataError when the file's first bytes show UTF-16 / UTF-32 (a byte-order mark, NUL bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    other = sniff_text_encoding(head)
    if other is not None:
        raise DataError(f"{path}: the file is {other}, expected UTF-8; re-save it as UTF-8")


def utf8_error(path: Path) -> DataError:
    """The DataError for a file that is not valid UTF-8: the first bad line and byte."""
    try:
        with open(path, "rb") as f:
            for line_no, line in enumerate(f, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return DataError(utf8_error_message(f"{path}:{line_no}", line[exc.start:exc.end]))
    except OSError as exc:
        return DataError(f"cannot read {path}: {exc.strerror or exc}")
    return DataError(f"{path}: not UTF-8 text; re-save the file as UTF-8")


class TextLines:
    """The lines of a text file, decoded strictly as UTF-8 (BOM dropped, line endings kept, any
    of LF, CRLF, CR): iterate, or use as a context manager. A decoding error is a DataError
    naming the file and line (:func:`utf8_error`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        check_text_encoding(self.path)
        try:
            self._f: IO[str] = open(self.path, "r", encoding="utf-8-sig", errors="strict", newline="")
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None

    def __iter__(self) -> "TextLines":
        return self

    def __next__(self) -> str:
        try:
            return next(self._f)
        except UnicodeDecodeError:
            raise utf8_error(self.path) from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "TextLines":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_text(path: Path) -> TextLines:
    """Open a text file for reading: strict UTF-8 with or without BOM, any line ending."""
    return TextLines(path)


def csv_rows(path: Path, handle: Any = None) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for every non-blank CSV record, with the 1-based line where
    the record *starts*. Quoted fields, CRLF and a BOM are handled; a csv syntax error names the
    line, and a quoted field that runs over a line break (an unclosed quote: no field of these
    data sets holds a line break) is blamed on the line where the quote opens."""
    own = handle is None
    f = open_text(path) if own else handle
    try:
        reader = csv.reader(f)
        end = 0
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if reader.line_num > start:
                    raise DataError(f"{path}:{start}: malformed CSV: the quoted field opened on this "
                                    f"line is not closed ({exc})") from None
                raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
            end = reader.line_num
            if any("\n" in field or "\r" in field for field in row):
                runs = f"runs on to line {end}" if end > start else "runs to the end of the file"
                raise DataError(f"{path}:{start}: unclosed quote: the quoted field opened on this "
                                f"line {runs}")
            if not row or all(not field.strip() for field in row):
                continue
            yield start, row
    finally:
        if own:
            f.close()


def norm_name(name: str) -> str:
    """Header cell -> comparison key: stripped, lower case, spaces/dashes as underscores."""
    return name.strip().strip("\ufeff").strip().lower().replace(" ", "_").replace("-", "_")


def header_index(header: list[str], aliases: Mapping[str, tuple[str, ...]], where: str,
                 required: tuple[str, ...] = ()) -> dict[str, int]:
    """Map canonical column names to their index in ``header`` using ``aliases``."""
    keys = [norm_name(h) for h in header]
    found: dict[str, int] = {}
    for canon, names in aliases.items():
        for n in names:
            if n in keys:
                found[canon] = keys.index(n)
                break
    missing = [c for c in required if c not in found]
    if missing:
        raise DataError(f"{where}: header has no {missing[0]!r} column (found: {header_text(header)})")
    return found


def one_line(text: str, limit: int = 60) -> str:
    """``text`` shortened and with line breaks escaped, for a one-line error message."""
    t = text.strip().replace("\r", "\\r").replace("\n", "\\n")
    return t if len(t) <= limit else t[:limit] + "..."


def header_text(header: list[str]) -> str:
    return one_line(", ".join(h.strip() for h in header), 120)


_INT_TEXT = re.compile(r"[+-]?\d+")
_INT_LIMIT = 2 ** 62  # any count or index in these files is far smaller; keeps int64 safe


def parse_int(text: str, what: str, where: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer field (``"3.0"`` is accepted as 3, ``"3.5"`` is not) within ``lo..hi`` (both
    optional; always within +-2**62, so it fits an int64): DataError ``"where: reason"``."""
    t = text.strip()
    low = -_INT_LIMIT if lo is None else lo
    high = _INT_LIMIT if hi is None else hi
    if lo is not None and hi is not None:
        rng = f"{lo}..{hi}"
    else:
        rng = f">= {lo}" if lo is not None else f"<= {hi}" if hi is not None else "of an int64"
    out_of_range = DataError(f"{where}: {what} {one_line(t, 30)} is out of range ({rng})")
    if _INT_TEXT.fullmatch(t):
        if len(t.lstrip("+-").lstrip("0")) > 19:  # never convert thousands of digits
            raise out_of_range
        value = int(t)
    else:
        try:
            f = float(t)
        except ValueError:
            raise DataError(f"{where}: {what} {one_line(t)!r} is not an integer") from None
        if not math.isfinite(f) or f != int(f):
            raise DataError(f"{where}: {what} {one_line(t)!r} is not an integer")
        if not low <= f <= high:
            raise out_of_range
        value = int(f)
    if not low <= value <= high:
        raise out_of_range
    return value


def parse_float(text: str, what: str, where: str, allow_empty: bool = False) -> float:
    t = text.strip()
    if not t and allow_empty:
        return math.nan
    try:
        v = float(t)
    except ValueError:
        raise DataError(f"{where}: {what} {text.strip()!r} is not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: {what} {text.strip()!r} is not a finite number")
    return v
