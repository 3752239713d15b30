"""The reader interface every data set format implements, and what the readers share.

A reader parses its annotations eagerly (cheap, errors name file and line) and decodes images
lazily, one index at a time, so the prepared cache can show progress, skip unreadable images and
resume. ``load(i)`` returns a :class:`~bregnet.data.base.Sample` with a 64x64 RGB uint8 crop or
raises :class:`~bregnet.errors.BregnetError` (a :class:`~bregnet.errors.DataError`, or a
:class:`~bregnet.errors.LimitError` for an image over a limit) naming the file when that one
image cannot be used.

What a subclass declares (class attributes): ``name``, ``splits`` and ``split_aliases``,
``default_classes``, ``OPTIONS`` (option name -> default; anything else is refused, listing the
known ones), and for data sets that are not files on disk ``needs_root = False``,
``synthetic = True`` and ``size_option`` (the option that sets a split's number of items, what
``data.sizes`` of a recipe sets). What it fills in while parsing: ``_labels`` (N,), optionally
``_va`` (N, 2), ``_lines`` (N,) with ``annotation_file`` (for ``source``), ``_boxes`` (N, 4) and
``crop_policy`` (face boxes cropped by :func:`bregnet.crop.crop_face`); image-file readers
implement ``image_path`` and get ``load`` from here.

**The crop a reader states** (``crop_policy``, recorded by the prepared cache and stored in every
checkpoint trained on the data, then applied by the predictor to the detector's box): a reader
with face boxes sets the exact box policy it crops with (:meth:`_crop_policy_from_options`); a
data set whose images already are face crops keeps the pre-cropped policy of its named rule
``crop_rule`` (:data:`bregnet.preprocess.CROP_RULES`), the class attribute or, for folders and
lists of crops, the ``crop_rule`` option. ``version`` is the reader's output version: raise it
whenever the same files and options would give other images or labels, so that caches made by
the old reader are refused rather than mixed with new ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import BregnetError, DataError, UsageError
from ...preprocess import CropPolicy
from ..base import ArrayDataset, Sample
from ._util import parse_float, take_options

__all__ = ["CROP_OPTIONS", "FaceReader", "SkippedItem"]

#: Reader options of the data sets that crop faces by annotated boxes (AffectNet, CSV lists).
CROP_OPTIONS: dict[str, Any] = {"margin": 0.0, "square": False, "border": "clamp"}


class SkippedItem(tuple):
    """(index, reason) for an item that could not be loaded."""


class FaceReader:
    """Base class of the readers (see the module doc for what a subclass declares)."""

    name: ClassVar[str] = "base"
    splits: ClassVar[tuple[str, ...]] = ("train",)
    split_aliases: ClassVar[dict[str, str]] = {}
    default_classes: ClassVar[list[str]] = []
    OPTIONS: ClassVar[dict[str, Any] | None] = None  # None: the subclass checks its options itself
    needs_root: ClassVar[bool] = True
    synthetic: ClassVar[bool] = False
    size_option: ClassVar[str | None] = None
    #: the output version of this reader (recorded by the prepared cache; see the module doc)
    version: ClassVar[int] = 1
    #: the named pre-cropped rule of a data set of face crops (a reader with boxes replaces the policy)
    crop_rule: ClassVar[str] = "face-crop"
    image_size: int = 64

    def __init__(self, root: str | os.PathLike | None, split: str, **options: Any) -> None:
        self.root = Path(root) if root not in (None, "") else Path(".")
        split = self.split_aliases.get(str(split).strip().lower(), split)
        if split not in self.splits:
            raise DataError(f"{self.name} has no split {split!r}; choose one of {', '.join(self.splits)}")
        self.split = split
        self.options = options
        self.opts: dict[str, Any] = (take_options(self.name, options, self.OPTIONS)
                                     if self.OPTIONS is not None else dict(options))
        self.skipped: list[tuple[str, str]] = []
        self.dropped: dict[str, int] = {}
        self.crop_policy = CropPolicy.named(self.crop_rule)
        self.annotation_file: Path | None = None
        self._labels = np.zeros(0, np.int64)
        self._va: np.ndarray | None = None
        self._lines: np.ndarray | None = None
        self._boxes: np.ndarray | None = None

    # -- options shared by several readers ----------------------------------------------------
    def _crop_policy_from_options(self) -> CropPolicy:
        """The crop policy of the ``margin`` / ``square`` / ``border`` options (no alignment)."""
        margin = parse_float(str(self.opts["margin"]), "option margin", self.name)
        square = self.opts["square"]
        if not isinstance(square, (bool, np.bool_)):
            raise DataError(f"{self.name}: option square must be true or false, not {square!r}")
        try:
            return CropPolicy(margin=margin, square=bool(square), align=False,
                              border=str(self.opts["border"]))
        except UsageError as exc:
            raise DataError(f"{self.name}: {exc}") from None

    def _crop_rule_option(self, default: str) -> CropPolicy:
        """The pre-cropped policy named by the ``crop_rule`` option (``default`` when unset)."""
        rule = self.opts.get("crop_rule")
        try:
            return CropPolicy.named(default if rule is None else str(rule))
        except UsageError as exc:
            raise DataError(f"{self.name}: option crop_rule: {exc}") from None

    @classmethod
    def identity_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the reader's defaults filled in: what identifies the data a prepared
        cache was made from (so an option left out and the same option given at its default
        are the same request)."""
        return {**(cls.OPTIONS or {}), **options}

    def dataset_meta(self) -> dict[str, Any]:
        """What an :class:`ArrayDataset` of this reader carries beside its arrays: whether it is
        synthetic, and the crop policy (``crop``) the trainer stores in the checkpoint."""
        return {"synthetic": self.synthetic, "crop": self.crop_policy.to_dict()}

    def _dir_option(self, key: str) -> Path | None:
        """A path option, relative paths taken from the root folder."""
        value = self.opts.get(key)
        if value is None:
            return None
        p = Path(str(value))
        return p if p.is_absolute() else self.root / p

    # -- what every reader answers ------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Label names in the data set's own order."""
        return list(self.default_classes)

    def __len__(self) -> int:
        """Number of annotated items in this split (before any image fails to decode)."""
        return len(self._labels)

    def labels(self) -> np.ndarray:
        """(N,) int64 class indices from the annotations (-1 where absent), without decoding images."""
        return self._labels.copy()

    def va(self) -> np.ndarray:
        """(N, 2) float32 valence/arousal from the annotations (NaN where absent)."""
        if self._va is None:
            return np.full((len(self), 2), np.nan, dtype=np.float32)
        return self._va.copy()

    def soft_labels(self) -> np.ndarray | None:
        """(N, K) float32 label distributions where the data set has them (FERPlus votes)."""
        return None

    def source(self, index: int) -> str:
        """Human-readable origin of item ``index`` (a path, or file:line) for reports."""
        if self._lines is not None and self.annotation_file is not None:
            return f"{self.annotation_file}:{int(self._lines[index])}"
        return f"{self.name}[{index}]"

    def location(self) -> str:
        """Where the data set lives (an absolute path; empty for a generated data set): part of
        what identifies a prepared cache's source."""
        return os.path.abspath(os.fspath(self.root)) if self.needs_root else ""

    def image_path(self, index: int) -> Path:
        """Where item ``index``'s image file is (readers backed by image files override this)."""
        raise NotImplementedError(f"{self.name} items are not image files")

    def read_item_image(self, index: int) -> np.ndarray:
        """Decode item ``index``'s image file as RGB uint8; a failure (DataError, LimitError)
        names both the annotation (``source``) and the image file."""
        from ..image_io import read_image

        try:
            return read_image(self.image_path(index))
        except BregnetError as exc:
            where, msg = self.source(index), str(exc)
            raise type(exc)(msg if msg.startswith(where) else f"{where}: {msg}") from None

    def load(self, index: int) -> Sample:
        """Decode item ``index``'s image and crop it by its face box (when the data set has boxes)
        or take it whole, resized to ``image_size``; DataError naming the file if unusable."""
        from ...crop import crop_face

        image = self.read_item_image(index)
        box = None if self._boxes is None else self._boxes[index]
        if box is not None and np.isnan(box).all():
            box = None
        try:
            crop = crop_face(image, box, self.crop_policy, self.image_size)
        except DataError as exc:
            where, path = self.source(index), str(self.image_path(index))
            raise DataError(f"{where}: {exc}" + ("" if where == path else f" ({path})")) from None
        v, a = (float("nan"), float("nan")) if self._va is None else (float(x) for x in self._va[index])
        return Sample(crop, int(self._labels[index]), v, a)

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
            except BregnetError as exc:
                skipped.append(SkippedItem((i, str(exc))))
        soft = self.soft_labels()
        ds = ArrayDataset(
            images=images[keep], labels=self.labels()[keep], va=self.va()[keep],
            classes=self.classes, name=self.name, split=self.split,
            soft_labels=None if soft is None else soft[keep], meta=self.dataset_meta(),
        )
        return ds, skipped
