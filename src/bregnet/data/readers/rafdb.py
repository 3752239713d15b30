"""RAF-DB basic: ``basic/EmoLabel/list_patition_label.txt`` plus the aligned face crops.

Label file lines are ``train_00001.jpg 5`` (the file name's prefix gives the split: ``train`` or
``test``); labels 1..7 become 0..6. Classes, in RAF-DB order: Surprise, Fear, Disgust, Happiness,
Sadness, Anger, Neutral. Images: ``basic/Image/aligned/train_00001_aligned.jpg`` (100x100 aligned
crops, resized to 64x64); ``aligned=False`` reads ``basic/Image/original/train_00001.jpg`` whole
instead (not face-cropped: only for experiments).

Crop: the aligned images are face crops, so a model trained on them is run on a detector's box by
the named rule ``rafdb-aligned`` (squared box plus margin, eyes levelled: an approximation of the
data set's five-landmark alignment); the whole original images get the generic ``face-crop`` rule
(no rule reproduces a whole photo from a face box).

Root: the RAF-DB directory holding ``basic/``, or ``basic/`` itself. Options: ``label_file`` and
``images_dir`` (relative paths are taken from ``basic/``), ``aligned`` (True).

Bad input: a line that is not ``name label``, a label outside 1..7, a name without the
``train_`` / ``test_`` prefix raise DataError ``"file:line: reason"``; a missing or unreadable image
raises DataError at load time (the cache skips and reports it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ...preprocess import CropPolicy
from ._util import open_text, parse_int, require_file
from .base import FaceReader

__all__ = ["RAFDB_CLASSES", "RAFDBReader"]

RAFDB_CLASSES = ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"]


class RAFDBReader(FaceReader):
    """RAF-DB basic emotion list + aligned images (see the module doc).

    Options: ``label_file``, ``images_dir``, ``aligned`` (True).
    """

    name = "rafdb"
    splits = ("train", "test")
    split_aliases = {"training": "train", "testing": "test"}
    default_classes = RAFDB_CLASSES
    OPTIONS = {"label_file": None, "images_dir": None, "aligned": True}

    def __init__(self, root: str | os.PathLike, split: str, **options: Any) -> None:
        super().__init__(root, split, **options)
        opts = self.opts
        if not self.root.is_dir():
            raise DataError(f"RAF-DB root not found: {self.root}" if not self.root.exists()
                            else f"RAF-DB root is not a directory: {self.root}")
        basic = self.root / "basic"
        if not basic.is_dir() and (self.root / "EmoLabel").is_dir():
            basic = self.root
        self.basic = basic
        self.aligned = bool(opts["aligned"])
        self.crop_policy = CropPolicy.named("rafdb-aligned" if self.aligned else "face-crop")
        lf = Path(opts["label_file"]) if opts["label_file"] else Path("EmoLabel/list_patition_label.txt")
        self.label_file = require_file(lf if lf.is_absolute() else basic / lf, "RAF-DB label file")
        default_images = "Image/aligned" if self.aligned else "Image/original"
        im = Path(opts["images_dir"]) if opts["images_dir"] else Path(default_images)
        self.images_dir = im if im.is_absolute() else basic / im
        self.annotation_file = self.label_file
        self._parse()

    @classmethod
    def available_splits(cls, root: str | os.PathLike, **options: Any) -> list[str]:
        return ["train", "test"]

    def _parse(self) -> None:
        names: list[str] = []
        labels: list[int] = []
        lines: list[int] = []
        prefix = self.split + "_"
        with open_text(self.label_file) as f:
            for line_no, text in enumerate(f, start=1):
                parts = text.split()
                if not parts:
                    continue
                where = f"{self.label_file}:{line_no}"
                if len(parts) != 2:
                    raise DataError(f"{where}: expected 'image_name label', got {text.strip()[:60]!r}")
                name, label_text = parts
                label = parse_int(label_text, "label", where)
                if not 1 <= label <= len(RAFDB_CLASSES):
                    raise DataError(f"{where}: label {label} out of range 1..{len(RAFDB_CLASSES)}")
                if not (name.startswith("train_") or name.startswith("test_")):
                    raise DataError(f"{where}: image name {name!r} does not start with train_ or test_")
                if not name.startswith(prefix):
                    continue
                names.append(name)
                labels.append(label - 1)
                lines.append(line_no)
        self._names = names
        self._labels = np.asarray(labels, np.int64)
        self._lines = np.asarray(lines, np.int64)

    def image_path(self, index: int) -> Path:
        name = self._names[index]
        if self.aligned:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}_aligned.{ext}" if dot else f"{name}_aligned"
        return self.images_dir / name
