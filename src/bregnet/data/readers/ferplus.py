"""FERPlus: the re-annotation of FER2013 by 10 voters per image (``fer2013new.csv``).

``fer2013new.csv`` has columns ``Usage, Image name, neutral, happiness, surprise, sadness, anger,
disgust, fear, contempt, unknown, NF`` and is row-aligned with ``fer2013.csv``, which supplies the
pixels (row k of one is row k of the other; a differing row count or Usage is a DataError).

Classes, in FERPlus order: Neutral, Happiness, Surprise, Sadness, Anger, Disgust, Fear, Contempt.
Splits as FER2013: ``train`` / ``val`` / ``test`` = ``Training`` / ``PublicTest`` / ``PrivateTest``.

Labels (option ``protocol``):

* ``"plurality"`` (default): rows with no votes, and rows where ``unknown`` or ``NF`` has at least
  as many votes as the best emotion (a tie counts as unknown/NF-dominated), are dropped; the label
  is the emotion with the most votes, a tie between emotions going to the one earlier in FERPlus
  order (the soft labels keep the tie).
* ``"majority"``: the FERPlus authors' "majority" mode: single votes are first removed as outliers,
  then an image is kept only if one category has more than half of the remaining votes and that
  category is an emotion (not unknown / NF).

Rows with an empty ``Image name`` (images the FERPlus authors removed) are dropped in both.
Soft labels (:meth:`FERPlusReader.soft_labels`) are the raw vote distribution over the 8 emotions.
What was dropped and why is counted in ``reader.dropped``. The images are FER2013's face crops
(crop rule ``fer2013-like``, as for FER2013).

Root: a directory holding ``fer2013.csv`` and ``fer2013new.csv`` (options ``fer2013_csv`` and
``ferplus_csv`` name them otherwise; relative paths are taken from the root).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ..base import Sample
from ._util import csv_rows, header_index, parse_int, require_file
from .base import FaceReader
from .fer2013 import SPLIT_ALIASES, SPLIT_CODES, USAGE_CODES, find_fer2013_csv, parse_fer2013_csv, upsample_gray

__all__ = ["FERPLUS_CLASSES", "FERPlusReader", "ferplus_labels", "parse_ferplus_csv"]

FERPLUS_CLASSES = ["Neutral", "Happiness", "Surprise", "Sadness", "Anger", "Disgust", "Fear", "Contempt"]
_VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                 "contempt", "unknown", "nf")
_COLUMNS = {"usage": ("usage",), "image_name": ("image_name", "image", "name")}
_COLUMNS.update({c: (c,) for c in _VOTE_COLUMNS})
_COLUMNS["nf"] = ("nf", "no_face", "not_face")
_MAX_VOTES = 10 ** 6  # ten annotators voted; anything near int64's range is a broken file


def parse_ferplus_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse ``fer2013new.csv``: ``votes`` (N, 10) int64, ``usage`` (N,) int8 (-1 without the
    column), ``has_name`` (N,) bool, ``lines`` (N,) int64. DataError ``"file:line: reason"``."""
    p = require_file(path, "FERPlus votes file")
    rows = csv_rows(p)
    try:
        header_line, header = next(rows)
    except StopIteration:
        raise DataError(f"{p}: empty file, expected the FERPlus header 'Usage,Image name,neutral,...'") from None
    cols = header_index(header, _COLUMNS, f"{p}:{header_line}", required=_VOTE_COLUMNS)
    need = max(cols.values()) + 1
    vote_idx = [cols[c] for c in _VOTE_COLUMNS]
    i_use, i_name = cols.get("usage"), cols.get("image_name")
    votes, usage, has_name, lines = [], [], [], []
    for line, row in rows:
        where = f"{p}:{line}"
        if len(row) < need:
            raise DataError(f"{where}: row has {len(row)} fields, expected at least {need}")
        v = []
        for name, i in zip(_VOTE_COLUMNS, vote_idx):
            v.append(parse_int(row[i], f"{name} votes", where, lo=0, hi=_MAX_VOTES))
        code = -1
        if i_use is not None:
            code = USAGE_CODES.get(row[i_use].strip().lower(), -2)
            if code == -2:
                raise DataError(f"{where}: unknown Usage {row[i_use].strip()!r} "
                                "(expected Training, PublicTest or PrivateTest)")
        votes.append(v)
        usage.append(code)
        has_name.append(True if i_name is None else bool(row[i_name].strip()))
        lines.append(line)
    return {
        "votes": np.asarray(votes, np.int64).reshape(-1, len(_VOTE_COLUMNS)),
        "usage": np.asarray(usage, np.int8),
        "has_name": np.asarray(has_name, bool),
        "lines": np.asarray(lines, np.int64),
    }


def ferplus_labels(votes: np.ndarray, protocol: str = "plurality") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Votes (N, 10) -> labels (N,) int64 over the 8 emotions, -1 where the protocol drops the image,
    and the boolean masks of each drop reason (see the module doc for the two protocols)."""
    votes = np.asarray(votes, np.int64)
    total = votes.sum(1)
    no_votes = total == 0
    if protocol == "plurality":
        emo = votes[:, :8]
        top = emo.max(1)
        labels = emo.argmax(1)
        other = votes[:, 8:].max(1)
        unknown = ~no_votes & (other >= top)
        reasons = {"no votes": no_votes, "unknown/NF most voted": unknown}
    elif protocol == "majority":
        v = np.where(votes <= 1, 0, votes)  # single votes are outliers
        s = v.sum(1)
        top = v.max(1)
        labels = v.argmax(1)
        no_votes = s == 0
        no_majority = ~no_votes & ~(2 * top > s)
        unknown = ~no_votes & ~no_majority & (labels >= 8)
        reasons = {"no votes": no_votes, "no majority": no_majority, "unknown/NF majority": unknown}
    else:
        raise DataError(f"ferplus: protocol must be 'plurality' or 'majority', not {protocol!r}")
    drop = np.zeros(len(votes), bool)
    for mask in reasons.values():
        drop |= mask
    labels = np.where(drop, -1, labels).astype(np.int64)
    return labels, reasons


class FERPlusReader(FaceReader):
    """FERPlus votes over FER2013 pixels (see the module doc).

    Options: ``fer2013_csv``, ``ferplus_csv``, ``protocol`` (``"plurality"`` | ``"majority"``).
    """

    name = "ferplus"
    splits = ("train", "val", "test", "all")
    split_aliases = SPLIT_ALIASES
    default_classes = FERPLUS_CLASSES
    OPTIONS = {"fer2013_csv": None, "ferplus_csv": None, "protocol": "plurality"}
    crop_rule = "fer2013-like"  # FER2013's face crops

    def __init__(self, root: str | os.PathLike, split: str, **options: Any) -> None:
        super().__init__(root, split, **options)
        opts, split = self.opts, self.split
        if not self.root.exists():
            raise DataError(f"FERPlus root not found: {self.root}")
        self.fer2013_path = find_fer2013_csv(self.root, opts["fer2013_csv"])
        self.ferplus_path = self._find_votes(opts["ferplus_csv"])
        self.annotation_file = self.ferplus_path
        plus = parse_ferplus_csv(self.ferplus_path)
        fer = parse_fer2013_csv(self.fer2013_path)
        n_plus, n_fer = len(plus["votes"]), len(fer.labels)
        if n_plus != n_fer:
            raise DataError(f"{self.ferplus_path} has {n_plus} rows but {self.fer2013_path} has {n_fer}: "
                            "the files must be row-aligned")
        usage = plus["usage"]
        if fer.has_usage and (usage >= 0).all():
            bad = np.flatnonzero(usage != fer.usage)
            if bad.size:
                k = int(bad[0])
                names = {0: "Training", 1: "PublicTest", 2: "PrivateTest"}
                raise DataError(f"{self.ferplus_path}:{int(plus['lines'][k])}: Usage {names[int(usage[k])]} "
                                f"differs from {self.fer2013_path}:{int(fer.lines[k])} "
                                f"({names[int(fer.usage[k])]}): the files are not row-aligned")
        elif not (usage >= 0).all():
            usage = fer.usage

        labels, reasons = ferplus_labels(plus["votes"], opts["protocol"])
        reasons = {"no image name": ~plus["has_name"], **reasons}
        keep = np.ones(n_plus, bool)
        for mask in reasons.values():
            keep &= ~mask
        if split == "all":
            in_split = np.ones(n_plus, bool)
        else:
            if (usage < 0).any():
                raise DataError(f"{self.ferplus_path}: no Usage column, so no {split!r} split; use split 'all'")
            in_split = usage == SPLIT_CODES[split]
        seen = np.zeros(n_plus, bool)
        for reason, mask in reasons.items():  # each dropped row counted once, under its first reason
            m = mask & in_split & ~seen
            seen |= m
            if m.any():
                self.dropped[reason] = int(m.sum())
        idx = np.flatnonzero(keep & in_split)
        self.protocol = opts["protocol"]
        self._fer = fer
        self._index = idx
        self._labels = labels[idx]
        self._lines = plus["lines"][idx]
        emo = plus["votes"][idx, :8].astype(np.float32)
        self._soft = emo / np.maximum(emo.sum(1, keepdims=True), 1.0)

    @classmethod
    def available_splits(cls, root: str | os.PathLike, **options: Any) -> list[str]:
        return ["train", "val", "test"]

    def _find_votes(self, given: str | os.PathLike | None) -> Path:
        base = self.root if self.root.is_dir() else self.root.parent
        if given is not None:
            g = Path(given)
            return g if g.is_absolute() else base / g
        for name in ("fer2013new.csv", "FERPlus/fer2013new.csv"):
            if (base / name).is_file():
                return base / name
        return base / "fer2013new.csv"

    def soft_labels(self) -> np.ndarray:
        return self._soft.copy()

    def load(self, index: int) -> Sample:
        j = self._index[index]
        return Sample(upsample_gray(self._fer.images[j], self.image_size), int(self._labels[index]))
