"""CSV and JSON Lines writers for the per-face record of DESIGN.md.

Columns, in this order: ``source, frame, time_s, face_id, x, y, w, h, det_score, label,
p_<class>..., valence, arousal``; ``label`` and ``p_<class>`` only for a model with a categorical
head, ``valence``/``arousal`` only for one with the dimensional head. One row per face per frame;
with ``keep_empty`` a frame without faces is written once with empty face fields (empty cells in
CSV, ``null`` in JSONL). Both writers stream: rows go to disk as they come, into a temporary file
beside the target (:func:`bregnet.fileio.atomic_output`) that replaces it only when the writer is
closed after a successful run (:meth:`RecordWriter.close`); :meth:`RecordWriter.abort` (or leaving
the ``with`` block with an exception) removes it, so a failed run leaves an existing output as it
was. A target that exists and is not a regular file (``/dev/stdout``, a pipe) is written directly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..csvsafe import spreadsheet_safe_row
from ..errors import OutputError, UsageError
from ..fileio import atomic_output
from .results import FrameResult, record_columns

__all__ = ["CsvWriter", "JsonlWriter", "MultiWriter", "RecordWriter", "open_writer", "output_format"]


class _Aborted(Exception):
    """Thrown into :func:`atomic_output` to make it discard its temporary file."""


class _ClosesOrAborts:
    """Context manager: ``close()`` when the block ends normally, ``abort()`` on an exception."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class RecordWriter(_ClosesOrAborts):
    """Base: ``write(frame_result)`` writes its records; ``close()`` puts the file in place,
    ``abort()`` discards it; usable as a context manager (an exception aborts). ``seconds``
    accumulates the time spent formatting and writing. ``overwrite=False`` refuses to replace an
    existing file (OutputError, before anything is written and again at the end)."""

    def __init__(self, target: str | os.PathLike | TextIO, labels: list[str], has_va: bool,
                 keep_empty: bool = False, overwrite: bool = True) -> None:
        self.labels = list(labels)
        self.has_va = bool(has_va)
        self.keep_empty = keep_empty
        self.columns = record_columns(self.labels, self.has_va)
        self.rows = 0
        self.seconds = 0.0
        self._atomic: Any = None
        if isinstance(target, (str, os.PathLike)) and str(target) != "-":
            path = Path(target)
            try:
                if path.exists() and not path.is_file():  # a device or a pipe: never replaced
                    self._fh: TextIO = open(path, "w", newline="", encoding="utf-8")
                else:
                    self._atomic = atomic_output(path, "w", overwrite=overwrite, newline="")
                    self._fh = self._atomic.__enter__()
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
            self._own = True
            self.path: Path | None = path
        else:
            self._fh = sys.stdout if str(target) == "-" else target  # type: ignore[assignment]
            self._own = False
            self.path = None
        self._start()

    def _start(self) -> None:
        pass

    def _row(self, rec: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def write(self, result: FrameResult) -> int:
        t0 = time.perf_counter()
        recs = result.records(self.labels, self.has_va, self.keep_empty)
        for rec in recs:
            self._row(rec)
        self.rows += len(recs)
        self.seconds += time.perf_counter() - t0
        return len(recs)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        """Finish: the file replaces the target (a file target), or the stream is flushed."""
        if self._atomic is not None:
            ctx, self._atomic = self._atomic, None
            ctx.__exit__(None, None, None)
        elif self._own and not self._fh.closed:
            self._fh.close()
        elif not self._own:
            self._fh.flush()

    def abort(self) -> None:
        """Discard what was written to a file target (an existing file stays as it was)."""
        if self._atomic is not None:
            ctx, self._atomic = self._atomic, None
            exc = _Aborted()
            ctx.__exit__(_Aborted, exc, None)
        else:
            self.close()



class CsvWriter(RecordWriter):
    """CSV with a header row; missing values are empty cells. Text cells that a spreadsheet would
    run as a formula (a label or source starting with ``=``, ``+``, ``-``, ``@``...) get a leading
    ``'`` (:mod:`bregnet.csvsafe`); numbers are written as numbers."""

    def _start(self) -> None:
        self._csv = csv.writer(self._fh, lineterminator="\n")
        self._csv.writerow(spreadsheet_safe_row(self.columns))

    def _row(self, rec: dict[str, Any]) -> None:
        self._csv.writerow(spreadsheet_safe_row("" if rec[c] is None else rec[c] for c in self.columns))


class JsonlWriter(RecordWriter):
    """One JSON object per line with exactly the record's keys; missing values are ``null``."""

    def _row(self, rec: dict[str, Any]) -> None:
        self._fh.write(json.dumps({c: rec[c] for c in self.columns}, ensure_ascii=False) + "\n")


class MultiWriter(_ClosesOrAborts):
    """Fan out to several writers."""

    def __init__(self, writers: list[RecordWriter]) -> None:
        self.writers = writers

    @property
    def seconds(self) -> float:
        return sum(w.seconds for w in self.writers)

    @property
    def rows(self) -> int:
        return max((w.rows for w in self.writers), default=0)

    def write(self, result: FrameResult) -> int:
        n = 0
        for w in self.writers:
            n = w.write(result)
        return n

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def abort(self) -> None:
        for w in self.writers:
            w.abort()



def output_format(target: str | os.PathLike | TextIO) -> str:
    """``"csv"`` or ``"jsonl"`` from the file suffix (``.csv``, ``.jsonl``/``.ndjson``/``.json``);
    ``"-"`` and an open text stream are CSV. UsageError for any other suffix."""
    suffix = Path(str(target)).suffix.lower() if isinstance(target, (str, os.PathLike)) else ""
    if str(target) == "-" or suffix == ".csv" or isinstance(target, io.TextIOBase) and not suffix:
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise UsageError(f"cannot tell the output format of {target}: use .csv or .jsonl")


def open_writer(target: str | os.PathLike | TextIO, labels: list[str], has_va: bool,
                keep_empty: bool = False, fmt: str | None = None, overwrite: bool = True
                ) -> RecordWriter:
    """A CSV or JSONL writer chosen by ``fmt`` or the file suffix (:func:`output_format`)."""
    fmt = output_format(target) if fmt is None else fmt
    if fmt == "csv":
        return CsvWriter(target, labels, has_va, keep_empty, overwrite)
    if fmt == "jsonl":
        return JsonlWriter(target, labels, has_va, keep_empty, overwrite)
    raise UsageError(f"unknown output format {fmt!r}; choose csv or jsonl")
