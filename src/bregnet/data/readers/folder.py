"""A folder of class sub-folders: ``root/<class_name>/**/*.jpg`` (any common image format).

Layouts:

* **split folders**: ``root/train/<class>/...``, ``root/val/<class>/...``, ``root/test/<class>/...``
  (also recognised: ``training``, ``valid``, ``validation``, ``testing``; any case). Each present
  folder is a split, and ``all`` is their union. Asking for a split whose folder is absent is a
  DataError listing the ones found.
* **flat**: ``root/<class>/...`` with no split folders: the only split is ``all`` (split it
  yourself, e.g. with a seeded random subset).

Classes: option ``classes`` (a list, or a comma-separated string) fixes their names and order;
folders not named there are ignored (counted in ``reader.dropped``). Without it, the class names
are the sub-folder names sorted alphabetically (Python's ``sorted``), taken over **all** split
folders so that indices agree between splits. Hidden files and folders (``.name``) are ignored;
images are searched recursively inside each class folder (``recursive=False`` for the top level
only) and listed in sorted path order. Images are taken as face crops and resized to 64x64.
Option ``crop_rule`` names how they were cropped, so that the predictor turns a detector's box
into a similar crop (:data:`bregnet.preprocess.CROP_RULES`; default ``face-crop``, e.g.
``crop_rule=rafdb-aligned`` for a folder of RAF-DB's aligned faces).
An unreadable image raises DataError at load time (the cache skips and reports it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ...limits import MAX_CLASSES
from ..image_io import IMAGE_EXTENSIONS
from ._util import require_dir
from .base import FaceReader

__all__ = ["FolderReader", "parse_class_list"]

SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}


def parse_class_list(classes: Any) -> list[str] | None:
    """``None``, a list of names, or ``"a,b,c"`` -> list of names (None when not given)."""
    if classes is None:
        return None
    if isinstance(classes, str):
        names = [c.strip() for c in classes.split(",") if c.strip()]
    else:
        names = [str(c).strip() for c in classes]
    if not names:
        return None
    MAX_CLASSES.check(len(names), "option classes")
    seen: set[str] = set()
    dup = {n for n in names if n in seen or seen.add(n)}
    if dup:
        raise DataError(f"classes lists {sorted(dup)[0]!r} twice")
    return names


def _visible_dirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list {path}: {exc.strerror or exc}") from None


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    out = []
    walker = folder.rglob("*") if recursive else folder.iterdir()
    for p in walker:
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            out.append(p)
    return sorted(out)


class FolderReader(FaceReader):
    """Class sub-folders of face images (see the module doc).

    Options: ``classes`` (names in order), ``recursive`` (True), ``crop_rule`` ("face-crop").
    """

    name = "folder"
    splits = ("train", "val", "test", "all")
    split_aliases = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}
    OPTIONS = {"classes": None, "recursive": True, "crop_rule": "face-crop"}

    def __init__(self, root: str | os.PathLike, split: str, **options: Any) -> None:
        super().__init__(root, split, **options)
        opts = self.opts
        split = self.split
        require_dir(self.root, "image folder")
        given = parse_class_list(opts["classes"])
        recursive = bool(opts["recursive"])
        self.crop_policy = self._crop_rule_option("face-crop")

        top = _visible_dirs(self.root)
        split_dirs: dict[str, Path] = {}
        for key, names in SPLIT_FOLDERS.items():
            for d in top:
                if d.name.lower() in names:
                    split_dirs[key] = d
                    break
        self.layout = "split" if split_dirs else "flat"
        if self.layout == "flat":
            if split != "all":
                raise DataError(f"{self.root} has no train/val/test sub-folders, so no {split!r} split; "
                                "use split 'all'")
            bases = [self.root]
        elif split == "all":
            bases = list(split_dirs.values())
        elif split in split_dirs:
            bases = [split_dirs[split]]
        else:
            raise DataError(f"{self.root} has no {split!r} folder (found: {', '.join(split_dirs)})")

        all_bases = list(split_dirs.values()) if split_dirs else [self.root]
        found = sorted({d.name for b in all_bases for d in _visible_dirs(b)})
        if given is None:
            MAX_CLASSES.check(len(found), f"{self.root}: class sub-folders")
        self._classes = given if given is not None else found
        index = {c: i for i, c in enumerate(self._classes)}

        paths: list[Path] = []
        labels: list[int] = []
        for base in bases:
            for d in _visible_dirs(base):
                images = _images_in(d, recursive)
                if d.name not in index:
                    if images:
                        key = f"folder {d.name!r} not in classes"
                        self.dropped[key] = self.dropped.get(key, 0) + len(images)
                    continue
                paths.extend(images)
                labels.extend([index[d.name]] * len(images))
        if not paths:
            where = ", ".join(str(b) for b in bases)
            raise DataError(f"no images found in class sub-folders of {where}")
        self._paths = paths
        self._labels = np.asarray(labels, np.int64)

    @classmethod
    def available_splits(cls, root: str | os.PathLike, **options: Any) -> list[str]:
        """The split folders present (train, val, test order), or ``["all"]`` for a flat folder."""
        top = {d.name.lower() for d in _visible_dirs(require_dir(root, "image folder"))}
        found = [key for key, names in SPLIT_FOLDERS.items() if top & set(names)]
        return found or ["all"]

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def image_path(self, index: int) -> Path:
        return self._paths[index]

    def source(self, index: int) -> str:
        return str(self._paths[index])
