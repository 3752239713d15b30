"""The sample contract shared by every reader, the cache and the trainer.

A sample is a 64x64 RGB uint8 face crop (H, W, 3), a class index (-1 where absent) and
valence / arousal (NaN where absent). Readers produce an :class:`ArrayDataset`: three aligned
arrays (possibly memory-mapped) plus the class names in the data set's own order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["ArrayDataset", "Sample"]


@dataclass
class Sample:
    """One face: ``image`` (H, W, 3) uint8 RGB, ``label`` (-1 if none), ``valence``/``arousal``."""

    image: np.ndarray
    label: int = -1
    valence: float = float("nan")
    arousal: float = float("nan")


@dataclass
class ArrayDataset(torch.utils.data.Dataset):
    """Aligned arrays: ``images`` (N, H, W, 3) uint8, ``labels`` (N,) int64, ``va`` (N, 2) float32.

    ``classes`` are the label names in the data set's own order (empty for VA-only data sets);
    ``soft_labels`` (N, K) float32 optionally holds vote distributions (FERPlus).
    ``__getitem__`` returns ``(image CHW uint8 tensor, label, va)``; :meth:`batch` gathers many
    indices at once, which is what the trainer uses (much faster than per-item collation), and
    :meth:`soft_batch` the matching label distributions when it trains on them.
    """

    images: np.ndarray
    labels: np.ndarray
    va: np.ndarray
    classes: list[str]
    name: str = "dataset"
    split: str = ""
    soft_labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {self.images.shape} {self.images.dtype}")
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.va = np.asarray(self.va, dtype=np.float32).reshape(n, 2)
        if self.soft_labels is not None and len(self.soft_labels) != n:
            raise ValueError("soft_labels must align with images")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        img = torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1)
        return img, int(self.labels[index]), torch.from_numpy(self.va[index].copy())

    def sample(self, index: int) -> Sample:
        v, a = self.va[index]
        return Sample(np.asarray(self.images[index]), int(self.labels[index]), float(v), float(a))

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gather ``indices`` -> (images (B, 3, H, W) uint8, labels (B,) int64, va (B, 2) float32)."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # sorted reads are much faster on a memmap
        gathered = np.empty((len(idx),) + self.images.shape[1:], dtype=np.uint8)
        gathered[order] = self.images[idx[order]]
        images = torch.from_numpy(gathered).permute(0, 3, 1, 2)
        return images, torch.from_numpy(self.labels[idx]), torch.from_numpy(self.va[idx])

    def soft_batch(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Gather the label distributions of ``indices`` -> (B, K) float32 (the trainer's soft
        targets). Raises ``ValueError`` when the data set has none (see :attr:`has_soft_labels`)."""
        if self.soft_labels is None:
            raise ValueError(f"{self.name}/{self.split} has no soft labels")
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(np.asarray(self.soft_labels[idx], dtype=np.float32))

    @property
    def has_soft_labels(self) -> bool:
        """True when the data set carries (N, K) label distributions, K = number of classes."""
        return self.soft_labels is not None and self.soft_labels.ndim == 2 and \
            self.soft_labels.shape[1] == len(self.classes) and len(self.classes) > 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_labels(self) -> bool:
        return bool(self.classes) and bool((self.labels >= 0).any())

    @property
    def has_va(self) -> bool:
        return bool(np.isfinite(self.va).any())

    @property
    def class_counts(self) -> np.ndarray:
        """Samples per class (length ``len(classes)``), ignoring absent labels."""
        valid = self.labels[self.labels >= 0]
        return np.bincount(valid, minlength=len(self.classes)).astype(np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray, split: str | None = None) -> "ArrayDataset":
        """A new data set holding only ``indices`` (materialised in memory)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(
            images=np.asarray(self.images[idx]),
            labels=self.labels[idx],
            va=self.va[idx],
            classes=list(self.classes),
            name=self.name,
            split=self.split if split is None else split,
            soft_labels=None if self.soft_labels is None else np.asarray(self.soft_labels[idx]),
            meta=dict(self.meta),
        )
