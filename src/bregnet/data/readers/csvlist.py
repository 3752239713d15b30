"""A generic CSV list of face images: ``path,label[,valence,arousal]`` with a header row.

Columns (by header name, any order, extra columns ignored, names matched case-insensitively):

* ``path`` (also ``file``, ``filename``, ``image``, ``image_path``): required; relative paths are
  taken from ``images_dir`` (default: the CSV's directory);
* ``label`` (also ``class``, ``emotion``, ``expression``): a class name or a 0-based index; empty or
  ``-1`` means no label. Optional (a valence/arousal-only list);
* ``valence``, ``arousal``: optional, in [-1, 1], empty = missing (NaN);
* ``split``: optional, ``train`` / ``val`` / ``test`` (also ``Training``, ``validation``, ...);
* a face box ``x, y, w, h`` (or ``face_x, face_y, face_width, face_height``): optional; when
  present the face is cropped like AffectNet (options ``margin``, ``square``, ``border``), else
  the whole image is taken as the face.

Crop: a list with a box column states the exact box policy of its options (rows with an empty box
are taken whole); a list without one is a list of face crops, and option ``crop_rule`` names how
they were made (:data:`bregnet.preprocess.CROP_RULES`, default ``face-crop``). Giving
``crop_rule`` for a list with boxes is an error.

Root: the CSV file, or a directory holding ``<split>.csv`` (``train.csv``, ``val.csv``,
``test.csv``) or one ``labels.csv`` / ``all.csv`` with a ``split`` column (option ``csv`` names a
file). Splits ``train`` / ``val`` / ``test`` need a per-split file or a ``split`` column; ``all``
takes every row.

Classes: option ``classes`` (a list or a comma-separated string) fixes the names and their order;
labels may then be names from it or indices into it. Without it: when every label is an integer,
the classes are ``"0"``..``"K-1"``; otherwise they are the label names sorted alphabetically, taken
over all the split files of a directory so that indices agree between splits.

Bad input: a missing column, an unknown class name, an index out of range, a value that is not a
number, a valence/arousal outside [-1, 1], an unknown split raise DataError ``"file:line: reason"``
when the reader is opened; an unreadable image or a box outside the image fails at load time
with the line (the cache skips and reports it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ...limits import MAX_CLASSES
from ._util import csv_rows, header_index, one_line, parse_float
from .base import CROP_OPTIONS, FaceReader
from .folder import parse_class_list

__all__ = ["CSVListReader"]

_COLUMNS = {
    "path": ("path", "file", "filename", "file_name", "image", "image_path", "img", "filepath", "file_path"),
    "label": ("label", "class", "class_name", "emotion", "expression", "category"),
    "valence": ("valence",),
    "arousal": ("arousal",),
    "split": ("split", "usage", "subset"),
    "x": ("x", "face_x", "box_x"),
    "y": ("y", "face_y", "box_y"),
    "w": ("w", "width", "face_width", "face_w", "box_w"),
    "h": ("h", "height", "face_height", "face_h", "box_h"),
}
_SPLIT_VALUES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "publictest": "val", "dev": "val",
    "test": "test", "testing": "test", "privatetest": "test",
}


def _read_table(path: Path) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    rows = csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: empty file, expected a header such as 'path,label,valence,arousal'")
    line, header = first
    cols = header_index(header, _COLUMNS, f"{path}:{line}", required=("path",))
    box = [k for k in ("x", "y", "w", "h") if k in cols]
    if box and len(box) != 4:
        raise DataError(f"{path}:{line}: a face box needs all of x, y, w, h (found {', '.join(box)})")
    return cols, list(rows)


def _is_int(text: str) -> bool:
    t = text.strip()
    if t[:1] in "+-":
        t = t[1:]
    return t.isascii() and t.isdigit()


def _small_int(text: str) -> int | None:
    """The integer ``text`` holds, or None when it has more digits than any class index could
    (never converted: Python refuses, or takes very long, on thousands of digits)."""
    t = text.strip()
    digits = t.lstrip("+-").lstrip("0")
    return int(t) if len(digits) <= 18 else None


class CSVListReader(FaceReader):
    """Generic ``path,label[,valence,arousal]`` CSV (see the module doc).

    Options: ``csv``, ``classes``, ``images_dir``, ``margin`` (0.0), ``square`` (False),
    ``border`` ("clamp"), ``crop_rule`` (lists without boxes; "face-crop").
    """

    name = "csv"
    splits = ("train", "val", "test", "all")
    split_aliases = _SPLIT_VALUES
    OPTIONS = {"csv": None, "classes": None, "images_dir": None, **CROP_OPTIONS, "crop_rule": None}

    def __init__(self, root: str | os.PathLike, split: str, **options: Any) -> None:
        super().__init__(root, split, **options)
        opts = self.opts
        self.crop_policy = self._crop_policy_from_options()
        self.csv_path, filter_split, siblings = self._locate(opts["csv"])
        self.annotation_file = self.csv_path
        tables = {p: _read_table(p) for p in dict.fromkeys([self.csv_path, *siblings])}
        cols, records = tables[self.csv_path]
        if filter_split and "split" not in cols:
            raise DataError(f"{self.csv_path}: no split column, so no {self.split!r} split; use split "
                            f"'all' or one file per split ({self.split}.csv)")
        if opts["images_dir"] is not None:
            d = Path(str(opts["images_dir"]))
            self.images_dir = d if d.is_absolute() else self.csv_path.parent / d
        else:
            self.images_dir = self.csv_path.parent

        given = parse_class_list(opts["classes"])
        self._classes = given if given is not None else self._infer_classes(tables)
        self._class_index = {c: i for i, c in enumerate(self._classes)}
        self._parse(cols, records, filter_split)
        if self._boxes is None:
            self.crop_policy = self._crop_rule_option("face-crop")
        elif opts["crop_rule"] is not None:
            raise DataError(f"{self.csv_path}: option crop_rule is for lists of face crops; this list "
                            "has face boxes (their crop is set by margin, square, border)")

    @classmethod
    def available_splits(cls, root: str | os.PathLike, **options: Any) -> list[str]:
        """Per-split files present, else the values of the split column, else ``["all"]``."""
        r = Path(root)
        if r.is_dir() and options.get("csv") is None:
            per_split = [s for s in ("train", "val", "test") if (r / f"{s}.csv").is_file()]
            if per_split:
                return per_split
            path = next((r / n for n in ("labels.csv", "all.csv") if (r / n).is_file()), r / "labels.csv")
        elif options.get("csv") is not None:
            g = Path(options["csv"])
            path = g if g.is_absolute() or not r.is_dir() else r / g
        else:
            path = r
        if not path.is_file():
            raise DataError(f"CSV list not found: {path}")
        cols, records = _read_table(path)
        i = cols.get("split")
        if i is None:
            return ["all"]
        seen = {_SPLIT_VALUES.get(row[i].strip().lower()) for _, row in records if i < len(row)}
        return [s for s in ("train", "val", "test") if s in seen] or ["all"]

    # -- files ---------------------------------------------------------------------------------
    def _locate(self, given: str | os.PathLike | None) -> tuple[Path, bool, list[Path]]:
        """(the CSV to read, whether rows are filtered by a split column, sibling split files)."""
        root = self.root
        if given is not None:
            g = Path(given)
            p = g if g.is_absolute() or not root.is_dir() else root / g
            if not p.is_file():
                raise DataError(f"CSV list not found: {p}")
            return p, self.split != "all", []
        if root.is_file():
            return root, self.split != "all", []
        if not root.exists():
            raise DataError(f"CSV list not found: {root}")
        per_split = [root / f"{s}.csv" for s in ("train", "val", "test") if (root / f"{s}.csv").is_file()]
        combined = next((root / n for n in ("labels.csv", "all.csv") if (root / n).is_file()), None)
        if self.split != "all" and (root / f"{self.split}.csv").is_file():
            return root / f"{self.split}.csv", False, per_split
        if combined is not None:
            return combined, self.split != "all", []
        if self.split == "all" and per_split:
            raise DataError(f"{root} has per-split files ({', '.join(p.name for p in per_split)}) but no "
                            "labels.csv / all.csv: open each split")
        raise DataError(f"CSV list not found: {root / (self.split + '.csv')} (nor labels.csv)")

    def _infer_classes(self, tables: dict[Path, tuple[dict[str, int], list]]) -> list[str]:
        texts: dict[str, str] = {}  # label text -> where it first appears
        for path, (cols, records) in tables.items():
            i = cols.get("label")
            if i is None:
                continue
            for line, row in records:
                if i < len(row) and row[i].strip():
                    texts.setdefault(row[i].strip(), f"{path}:{line}")
        texts.pop("-1", None)
        if not texts:
            return []
        if all(_is_int(t) for t in texts):
            # checked before the names "0".."K-1" are built: a label 10**8 must not build them,
            # and one of thousands of digits must not even be converted
            def size(t: str) -> int:
                digits = len(t.strip().lstrip("+-").lstrip("0"))
                return int(t) if digits <= 40 else 10 ** 40

            top_text = max(texts, key=size)
            top = size(top_text)
            if top < 0:
                return []
            shown = one_line(top_text, 30)
            MAX_CLASSES.check(top + 1, f"{texts[top_text]}: integer labels up to {shown} mean 0..{shown}")
            return [str(k) for k in range(top + 1)]
        MAX_CLASSES.check(len(texts), f"{self.csv_path}: the label column names")
        return sorted(texts)

    # -- rows ----------------------------------------------------------------------------------
    def _label(self, text: str, where: str) -> int:
        t = text.strip()
        if not t or t == "-1":
            return -1
        if t in self._class_index:
            return self._class_index[t]
        if _is_int(t):
            k = _small_int(t)
            if k is None or not 0 <= k < len(self._classes):
                raise DataError(f"{where}: label {one_line(t, 30)} out of range 0..{len(self._classes) - 1}")
            return k
        raise DataError(f"{where}: unknown class {t!r} (classes: {one_line(', '.join(self._classes), 120) or 'none'})")

    def _parse(self, cols: dict[str, int], records: list[tuple[int, list[str]]], filter_split: bool) -> None:
        p = self.csv_path
        paths: list[str] = []
        labels: list[int] = []
        va: list[tuple[float, float]] = []
        boxes: list[tuple[float, float, float, float]] = []
        lines: list[int] = []
        has_box = "x" in cols
        for line, row in records:
            where = f"{p}:{line}"

            def get(key: str, required: bool = False) -> str:
                i = cols.get(key)
                if i is None:
                    return ""
                if i >= len(row):
                    raise DataError(f"{where}: row has {len(row)} fields, no {key} column")
                return row[i]

            if filter_split:
                value = get("split").strip()
                s = _SPLIT_VALUES.get(value.lower())
                if s is None:
                    raise DataError(f"{where}: unknown split {value!r} (expected train, val or test)")
                if s != self.split:
                    continue
            path = get("path").strip()
            if not path:
                raise DataError(f"{where}: empty path")
            label = self._label(get("label"), where)
            vals = []
            for key in ("valence", "arousal"):
                v = parse_float(get(key), key, where, allow_empty=True)
                if not math.isnan(v) and not -1.0 - 1e-6 <= v <= 1.0 + 1e-6:
                    raise DataError(f"{where}: {key} {v:g} out of range [-1, 1]")
                vals.append(min(1.0, max(-1.0, v)) if not math.isnan(v) else v)
            box = (math.nan,) * 4
            if has_box:
                texts = [get(k) for k in ("x", "y", "w", "h")]
                if any(t.strip() for t in texts):
                    box = tuple(parse_float(t, k, where) for t, k in zip(texts, "xywh"))
            paths.append(path)
            labels.append(label)
            va.append((vals[0], vals[1]))
            boxes.append(box)  # type: ignore[arg-type]
            lines.append(line)
        self._paths = paths
        self._labels = np.asarray(labels, np.int64)
        self._va = np.asarray(va, np.float32).reshape(-1, 2)
        self._boxes = np.asarray(boxes, np.float64).reshape(-1, 4) if has_box else None
        self._lines = np.asarray(lines, np.int64)

    # -- FaceReader ----------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def image_path(self, index: int) -> Path:
        p = Path(self._paths[index])
        return p if p.is_absolute() else self.images_dir / p
