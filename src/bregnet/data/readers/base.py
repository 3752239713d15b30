"""The reader interface every data set format implements.

A reader parses its annotations eagerly (cheap, errors name file and line) and decodes images
lazily, one index at a time, so the prepared cache can show progress, skip unreadable images and
resume. ``load(i)`` returns a :class:`~bregnet.data.base.Sample` with a 64x64 RGB uint8 crop or raises
:class:`~bregnet.errors.DataError` naming the file when that one image cannot be used.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import DataError
from ..base import ArrayDataset, Sample

__all__ = ["FaceReader", "SkippedItem"]


class SkippedItem(tuple):
    """(index, reason) for an item that could not be loaded."""


class FaceReader(abc.ABC):
    """Base class: subclasses set ``name``, ``splits``, ``default_classes`` and implement the rest."""

    name: ClassVar[str] = "base"
    splits: ClassVar[tuple[str, ...]] = ("train",)
    default_classes: ClassVar[list[str]] = []
    image_size: int = 64

    def __init__(self, root: str | os.PathLike, split: str, **options: Any) -> None:
        self.root = Path(root)
        if split not in self.splits:
            raise DataError(f"{self.name} has no split {split!r}; choose one of {', '.join(self.splits)}")
        self.split = split
        self.options = options

    @property
    def classes(self) -> list[str]:
        """Label names in the data set's own order."""
        return list(self.default_classes)

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of annotated items in this split (before any image fails to decode)."""

    @abc.abstractmethod
    def labels(self) -> np.ndarray:
        """(N,) int64 class indices from the annotations (-1 where absent), without decoding images."""

    def va(self) -> np.ndarray:
        """(N, 2) float32 valence/arousal from the annotations (NaN where absent)."""
        return np.full((len(self), 2), np.nan, dtype=np.float32)

    def soft_labels(self) -> np.ndarray | None:
        """(N, K) float32 label distributions where the data set has them (FERPlus votes)."""
        return None

    @abc.abstractmethod
    def load(self, index: int) -> Sample:
        """Decode and crop item ``index``; raise DataError naming the file if it is unusable."""

    def source(self, index: int) -> str:
        """Human-readable origin of item ``index`` (a path, or file:line) for reports."""
        return f"{self.name}[{index}]"

    def image_path(self, index: int) -> Path:
        """Where item ``index``'s image file is (readers backed by image files override this)."""
        raise NotImplementedError(f"{self.name} items are not image files")

    def read_item_image(self, index: int) -> np.ndarray:
        """Decode item ``index``'s image file as RGB uint8; a failure is a DataError that names
        both the annotation (``source``) and the image file."""
        from ..image_io import read_image

        try:
            return read_image(self.image_path(index))
        except DataError as exc:
            raise DataError(f"{self.source(index)}: {exc}") from None

    @property
    def class_counts(self) -> np.ndarray:
        labels = self.labels()
        return np.bincount(labels[labels >= 0], minlength=len(self.classes)).astype(np.int64)

    def to_arrays(self, progress: bool = False) -> tuple[ArrayDataset, list[SkippedItem]]:
        """Load every item into memory; unusable items are skipped and returned with their reason."""
        from tqdm.auto import tqdm

        n = len(self)
        images = np.zeros((n, self.image_size, self.image_size, 3), np.uint8)
        keep = np.zeros(n, bool)
        skipped: list[SkippedItem] = []
        for i in tqdm(range(n), desc=f"{self.name}/{self.split}", disable=not progress, unit="img"):
            try:
                images[i] = self.load(i).image
                keep[i] = True
            except DataError as exc:
                skipped.append(SkippedItem((i, str(exc))))
        soft = self.soft_labels()
        ds = ArrayDataset(
            images=images[keep], labels=self.labels()[keep], va=self.va()[keep],
            classes=self.classes, name=self.name, split=self.split,
            soft_labels=None if soft is None else soft[keep],
        )
        return ds, skipped
