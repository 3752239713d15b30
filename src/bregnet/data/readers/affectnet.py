"""AffectNet (Mollahosseini et al. 2017): annotation CSVs plus the manually annotated images.

Files: ``training.csv`` (split ``train``) and ``validation.csv`` (split ``val``; the official
validation set is the papers' test set, so ``test`` is accepted as an alias), looked for in the
root and in ``root/Manually_Annotated_file_lists``; option ``csv`` names the file instead. Columns
``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks, expression,
valence, arousal`` (by header name, any order, extra columns ignored; a file without the header
row is read in this standard column order). Images are looked for under ``images_dir`` (default:
``root/Manually_Annotated_Images`` when it exists, else the root).

Classes, in AffectNet order: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger,
7 Contempt. Categories 8-10 (None, Uncertain, No-Face) are dropped (``include_other=True`` keeps
them with label -1, for valence/arousal training); ``num_classes=7`` also drops Contempt.
Valence / arousal of -2 ("not applicable") become NaN. Counts of dropped rows: ``reader.dropped``.

Each face is cropped by its box ``(face_x, face_y, face_width, face_height)`` enlarged by
``margin`` (fraction of the side, default 0), optionally made square (``square=True``), clamped to
the image (``border="clamp"``; or padded: ``"constant"`` / ``"replicate"``), then resized to 64x64
(:func:`bregnet.crop.crop_face`). That exact box policy is the reader's ``crop_policy``: the
prepared cache records it, a checkpoint trained on the data stores it and the predictor applies
it to the detector's box.

Bad input: a malformed row (wrong field count, a non-numeric box, an expression outside 0..10, a
valence/arousal outside [-1, 1] other than -2) raises DataError ``"file:line: reason"`` when the
reader is opened. At load time, an unreadable image, an empty box, or a box entirely outside the
image raises DataError naming the line and the image, so the cache skips and reports that item.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ._util import csv_rows, header_index, norm_name, parse_float, parse_int
from .base import CROP_OPTIONS, FaceReader

__all__ = ["AFFECTNET_CLASSES", "AffectNetReader", "parse_va"]

AFFECTNET_CLASSES = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
AFFECTNET_OTHER = {8: "None", 9: "Uncertain", 10: "No-Face"}
STANDARD_COLUMNS = ("subdirectory_filepath", "face_x", "face_y", "face_width", "face_height",
                    "facial_landmarks", "expression", "valence", "arousal")
_COLUMNS = {
    "path": ("subdirectory_filepath", "subdirectory_file_path", "filepath", "file_path", "path"),
    "face_x": ("face_x",),
    "face_y": ("face_y",),
    "face_width": ("face_width", "face_w"),
    "face_height": ("face_height", "face_h"),
    "expression": ("expression", "label"),
    "valence": ("valence",),
    "arousal": ("arousal",),
}
_REQUIRED = tuple(_COLUMNS)
_FILES = {"train": "training.csv", "val": "validation.csv"}
_SPLIT_ALIASES = {"test": "val", "validation": "val", "valid": "val", "training": "train"}


def parse_va(text: str, what: str, where: str, missing: float = -2.0) -> float:
    """A valence/arousal field: a number in [-1, 1], or ``missing`` (or empty) -> NaN."""
    v = parse_float(text, what, where, allow_empty=True)
    if math.isnan(v) or abs(v - missing) < 1e-6:
        return math.nan
    if not -1.0 - 1e-6 <= v <= 1.0 + 1e-6:
        raise DataError(f"{where}: {what} {text.strip()} out of range [-1, 1] (or {missing:g} for none)")
    return min(1.0, max(-1.0, v))


class AffectNetReader(FaceReader):
    """AffectNet annotation CSV + images (see the module doc).

    Options: ``csv``, ``images_dir``, ``margin`` (0.0), ``square`` (False), ``border`` ("clamp"),
    ``num_classes`` (8 or 7), ``include_other`` (False).
    """

    name = "affectnet"
    splits = ("train", "val")
    split_aliases = _SPLIT_ALIASES
    default_classes = AFFECTNET_CLASSES
    OPTIONS = {"csv": None, "images_dir": None, **CROP_OPTIONS, "num_classes": 8, "include_other": False}

    def __init__(self, root: str | os.PathLike, split: str, **options: Any) -> None:
        super().__init__(root, split, **options)
        opts = self.opts
        if opts["num_classes"] not in (7, 8) or isinstance(opts["num_classes"], bool):
            raise DataError(f"affectnet: num_classes must be 7 or 8, not {opts['num_classes']!r}")
        if not self.root.is_dir():
            raise DataError(f"AffectNet root not found: {self.root}" if not self.root.exists()
                            else f"AffectNet root is not a directory: {self.root}")
        self.num_classes = int(opts["num_classes"])
        self.crop_policy = self._crop_policy_from_options()
        self.include_other = bool(opts["include_other"])
        self.csv_path = self._find_csv(opts["csv"])
        self.annotation_file = self.csv_path
        self.images_dir = self._find_images(opts["images_dir"])
        self._parse()

    @classmethod
    def available_splits(cls, root: str | os.PathLike, **options: Any) -> list[str]:
        """``train`` / ``val`` for which an annotation file exists (both when ``csv`` is given)."""
        r = Path(root)
        if options.get("csv") is not None:
            return ["train", "val"]
        return [s for s, name in _FILES.items()
                if (r / name).is_file() or (r / "Manually_Annotated_file_lists" / name).is_file()]

    # -- files ---------------------------------------------------------------------------------
    def _find_csv(self, given: str | os.PathLike | None) -> Path:
        if given is not None:
            g = Path(given)
            p = g if g.is_absolute() else self.root / g
        else:
            name = _FILES[self.split]
            p = self.root / name
            alt = self.root / "Manually_Annotated_file_lists" / name
            if not p.is_file() and alt.is_file():
                p = alt
        if not p.is_file():
            raise DataError(f"AffectNet annotation file not found: {p}")
        return p

    def _find_images(self, given: str | os.PathLike | None) -> Path:
        if given is not None:
            g = Path(given)
            p = g if g.is_absolute() else self.root / g
            if not p.is_dir():
                raise DataError(f"AffectNet images directory not found: {p}")
            return p
        p = self.root / "Manually_Annotated_Images"
        return p if p.is_dir() else self.root

    # -- annotations ---------------------------------------------------------------------------
    def _parse(self) -> None:
        p = self.csv_path
        rows = csv_rows(p)
        first = next(rows, None)
        if first is None:
            raise DataError(f"{p}: empty annotation file")
        line0, row0 = first
        if norm_name(row0[0]) in _COLUMNS["path"] or any(norm_name(c) == "expression" for c in row0):
            cols = header_index(row0, _COLUMNS, f"{p}:{line0}", required=_REQUIRED)
            pending: list[tuple[int, list[str]]] = []
        else:  # no header row: the standard column order
            cols = {k: STANDARD_COLUMNS.index(v[0]) for k, v in _COLUMNS.items()}
            pending = [first]
        need = max(cols.values()) + 1
        paths: list[str] = []
        boxes: list[tuple[float, float, float, float]] = []
        labels: list[int] = []
        va: list[tuple[float, float]] = []
        lines: list[int] = []
        dropped: dict[str, int] = {}

        def records():
            yield from pending
            yield from rows

        for line, row in records():
            where = f"{p}:{line}"
            if len(row) < need:
                raise DataError(f"{where}: row has {len(row)} fields, expected at least {need}")
            path = row[cols["path"]].strip().replace("\\", "/")
            if not path:
                raise DataError(f"{where}: empty subDirectory_filePath")
            box = tuple(parse_float(row[cols[k]], k, where) for k in ("face_x", "face_y", "face_width", "face_height"))
            expr = parse_int(row[cols["expression"]], "expression", where)
            if not 0 <= expr <= 10:
                raise DataError(f"{where}: expression {expr} out of range 0..10")
            v = parse_va(row[cols["valence"]], "valence", where)
            a = parse_va(row[cols["arousal"]], "arousal", where)
            if expr >= 8:
                if not self.include_other:
                    key = f"expression {expr} ({AFFECTNET_OTHER[expr]})"
                    dropped[key] = dropped.get(key, 0) + 1
                    continue
                expr = -1
            elif expr == 7 and self.num_classes == 7:
                dropped["expression 7 (Contempt, num_classes=7)"] = dropped.get("expression 7 (Contempt, num_classes=7)", 0) + 1
                continue
            paths.append(path)
            boxes.append(box)  # type: ignore[arg-type]
            labels.append(expr)
            va.append((v, a))
            lines.append(line)
        self.dropped.update(dropped)
        self._paths = paths
        self._boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self._labels = np.asarray(labels, np.int64)
        self._va = np.asarray(va, np.float32).reshape(-1, 2)
        self._lines = np.asarray(lines, np.int64)

    # -- FaceReader ----------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return AFFECTNET_CLASSES[: self.num_classes]

    def boxes(self) -> np.ndarray:
        """(N, 4) float64 face boxes ``(x, y, w, h)`` from the annotations."""
        return self._boxes.copy()

    def image_path(self, index: int) -> Path:
        return self.images_dir / self._paths[index]
