"""Helpers shared by the readers: paths, options, CSV rows with line numbers, field parsing."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from ...errors import DataError


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


def open_text(path: Path):
    """Open a text file for reading: UTF-8 with or without BOM, any line ending, bad bytes replaced."""
    try:
        return open(path, "r", encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def csv_rows(path: Path, handle=None) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for every non-blank CSV record (1-based physical line of the
    record's end). Quoted fields, CRLF and a BOM are handled; a csv syntax error names the line."""
    own = handle is None
    f = open_text(path) if own else handle
    try:
        reader = csv.reader(f)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
            if not row or all(not field.strip() for field in row):
                continue
            yield reader.line_num, row
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


def parse_int(text: str, what: str, where: str) -> int:
    t = text.strip()
    try:
        return int(t)
    except ValueError:
        pass
    try:  # "3.0" is accepted as 3, "3.5" is not
        f = float(t)
    except ValueError:
        raise DataError(f"{where}: {what} {text.strip()!r} is not an integer") from None
    if not math.isfinite(f) or f != int(f):
        raise DataError(f"{where}: {what} {text.strip()!r} is not an integer")
    return int(f)


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
