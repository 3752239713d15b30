"""Aff-Wild2 valence/arousal: one annotation file per video plus per-video frame images.

Annotations: ``<annotations_dir>/<split dir>/<video>.txt``, a header ``valence,arousal`` then one
line per frame (line k+1 is frame k, 1-based); a value of -5 marks an invalid frame, which is
dropped. The split directories are ``Train_Set`` (``train``) and ``Validation_Set`` (``val``), as in
the ABAW ``VA_Estimation_Challenge`` release (option ``split_dirs={"train": ..., "val": ...}``).
``annotations_dir`` defaults to the first of ``root``, ``root/annotations``, ``root/Annotations``,
``root/VA_Estimation_Challenge``, ``root/annotations/VA_Estimation_Challenge`` and
``root/Annotations/VA_Estimation_Challenge`` that holds the split directory.

Frames: ``<frames_dir>/<video>/<frame_pattern>``, ``frame_pattern`` a ``str.format`` pattern of the
1-based frame index (default ``"{:05d}.jpg"``, the ``cropped_aligned`` release). ``frames_dir``
defaults to ``root/cropped_aligned`` (else ``root/frames``, else the root). Frames whose image is
missing (the release has none where no face was found) are dropped while parsing, listed in
``reader.skipped`` as ``(source, reason)`` (one entry per video whose frame directory is missing);
``check_frames=False`` skips that check (a missing image then fails at load time instead).
``frame_step=k`` keeps every k-th frame (consecutive frames are nearly identical).

No classes (valence/arousal only): labels are -1. Frames are resized to 64x64. They are face
crops (the ``cropped_aligned`` release): a model trained on them is run on a detector's box by the
named rule ``affwild2-aligned`` (:data:`bregnet.preprocess.CROP_RULES`).

Bad input: a line that is not two numbers, a value outside [-1, 1] other than -5 raise DataError
``"file:line: reason"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ._util import open_text, parse_float, parse_int, require_dir
from .base import FaceReader

__all__ = ["AffWild2Reader"]

DEFAULT_SPLIT_DIRS = {"train": "Train_Set", "val": "Validation_Set"}
INVALID = -5.0
_ANNOTATION_SUBDIRS = ("", "annotations", "Annotations", "VA_Estimation_Challenge",
                       "annotations/VA_Estimation_Challenge", "Annotations/VA_Estimation_Challenge")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_number_pair(parts: list[str]) -> bool:
    return len(parts) >= 2 and _is_number(parts[0]) and _is_number(parts[1])


class AffWild2Reader(FaceReader):
    """Aff-Wild2 per-video VA files + frame images (see the module doc).

    Options: ``annotations_dir``, ``frames_dir``, ``frame_pattern`` ("{:05d}.jpg"), ``split_dirs``,
    ``check_frames`` (True), ``frame_step`` (1).
    """

    name = "affwild2"
    splits = ("train", "val")
    split_aliases = {"validation": "val", "valid": "val", "training": "train"}
    default_classes: list[str] = []
    OPTIONS = {"annotations_dir": None, "frames_dir": None, "frame_pattern": "{:05d}.jpg",
               "split_dirs": None, "check_frames": True, "frame_step": 1}
    crop_rule = "affwild2-aligned"

    def __init__(self, root: str | os.PathLike, split: str, **options: Any) -> None:
        super().__init__(root, split, **options)
        opts = self.opts
        require_dir(self.root, "Aff-Wild2 root")
        split_dirs = dict(DEFAULT_SPLIT_DIRS)
        split_dirs.update(opts["split_dirs"] or {})
        self.split_dir_name = split_dirs[split]
        self.annotation_dir = self._find_annotations(opts["annotations_dir"])
        self.frames_dir = self._find_frames(opts["frames_dir"])
        self.frame_pattern = str(opts["frame_pattern"])
        try:
            self.frame_pattern.format(1)
        except (IndexError, KeyError, ValueError) as exc:  # str.format's errors for a bad pattern
            raise DataError(f"affwild2: bad frame_pattern {self.frame_pattern!r} ({exc})") from None
        self.frame_step = parse_int(str(opts["frame_step"]), "option frame_step", "affwild2", lo=1)
        self.check_frames = bool(opts["check_frames"])
        self._parse()

    @classmethod
    def available_splits(cls, root: str | os.PathLike, **options: Any) -> list[str]:
        """The splits whose annotation directory exists (no annotation file is parsed)."""
        r = require_dir(root, "Aff-Wild2 root")
        split_dirs = {**DEFAULT_SPLIT_DIRS, **(options.get("split_dirs") or {})}
        given = options.get("annotations_dir")
        if given is not None:
            g = Path(given)
            bases = [g if g.is_absolute() else r / g]
        else:
            bases = [r / sub for sub in _ANNOTATION_SUBDIRS]
        return [s for s in cls.splits if any((b / split_dirs[s]).is_dir() for b in bases)]

    def _resolve(self, given: str | os.PathLike) -> Path:
        g = Path(given)
        return g if g.is_absolute() else self.root / g

    def _find_annotations(self, given: str | os.PathLike | None) -> Path:
        if given is not None:
            d = require_dir(self._resolve(given), "Aff-Wild2 annotation directory")
            return require_dir(d / self.split_dir_name, f"Aff-Wild2 {self.split} annotation directory")
        for sub in _ANNOTATION_SUBDIRS:
            d = self.root / sub / self.split_dir_name
            if d.is_dir():
                return d
        raise DataError(f"Aff-Wild2 {self.split} annotation directory not found: "
                        f"{self.root / self.split_dir_name} (set annotations_dir=)")

    def _find_frames(self, given: str | os.PathLike | None) -> Path:
        if given is not None:
            return require_dir(self._resolve(given), "Aff-Wild2 frames directory")
        for sub in ("cropped_aligned", "frames"):
            if (self.root / sub).is_dir():
                return self.root / sub
        return self.root

    def _parse(self) -> None:
        files = sorted(p for p in self.annotation_dir.iterdir() if p.suffix.lower() == ".txt" and p.is_file())
        videos: list[str] = []
        ann_files: list[Path] = []
        vid_idx: list[np.ndarray] = []
        frames: list[np.ndarray] = []
        lines_all: list[np.ndarray] = []
        va_all: list[np.ndarray] = []
        invalid = 0
        missing = 0
        for path in files:
            video = path.stem
            frame_ids, line_ids, values = [], [], []
            with open_text(path) as f:
                frame = 0
                for line_no, text in enumerate(f, start=1):
                    t = text.strip()
                    if not t:
                        continue
                    parts = [s for s in t.replace(";", ",").split(",")]
                    if frame == 0 and line_no == 1 and not _is_number_pair(parts):
                        names = [s.strip().lower() for s in parts]
                        if names[:2] != ["valence", "arousal"]:
                            raise DataError(f"{path}:{line_no}: expected the header 'valence,arousal', got {t[:60]!r}")
                        continue
                    where = f"{path}:{line_no}"
                    frame += 1
                    if len(parts) < 2:
                        raise DataError(f"{where}: expected 'valence,arousal', got {t[:60]!r}")
                    v = parse_float(parts[0], "valence", where)
                    a = parse_float(parts[1], "arousal", where)
                    if abs(v - INVALID) < 1e-6 or abs(a - INVALID) < 1e-6:
                        invalid += 1
                        continue
                    for name, x in (("valence", v), ("arousal", a)):
                        if not -1.0 - 1e-6 <= x <= 1.0 + 1e-6:
                            raise DataError(f"{where}: {name} {x:g} out of range [-1, 1] (or -5 for invalid)")
                    if (frame - 1) % self.frame_step:
                        continue
                    frame_ids.append(frame)
                    line_ids.append(line_no)
                    values.append((min(1.0, max(-1.0, v)), min(1.0, max(-1.0, a))))
            if not frame_ids:
                continue
            fr = np.asarray(frame_ids, np.int64)
            ln = np.asarray(line_ids, np.int64)
            vv = np.asarray(values, np.float32)
            if self.check_frames:
                frame_dir = self.frames_dir / video
                if not frame_dir.is_dir():
                    self.skipped.append((str(path), f"frame directory {frame_dir} not found: "
                                                    f"{len(fr)} frames skipped"))
                    missing += len(fr)
                    continue
                present = set(os.listdir(frame_dir))
                ok = np.fromiter((self.frame_pattern.format(int(k)) in present for k in fr), bool, len(fr))
                for k, l in zip(fr[~ok], ln[~ok]):
                    self.skipped.append((f"{path}:{int(l)}", f"frame image {frame_dir / self.frame_pattern.format(int(k))} not found"))
                missing += int((~ok).sum())
                fr, ln, vv = fr[ok], ln[ok], vv[ok]
                if not len(fr):
                    continue
            videos.append(video)
            ann_files.append(path)
            vid_idx.append(np.full(len(fr), len(videos) - 1, np.int32))
            frames.append(fr)
            lines_all.append(ln)
            va_all.append(vv)
        if invalid:
            self.dropped["invalid frame (-5)"] = invalid
        if missing:
            self.dropped["frame image missing"] = missing
        self.videos = videos
        self._ann_files = ann_files
        self._video = np.concatenate(vid_idx) if vid_idx else np.zeros(0, np.int32)
        self._frame = np.concatenate(frames) if frames else np.zeros(0, np.int64)
        self._labels = np.full(len(self._frame), -1, np.int64)
        self._lines = np.concatenate(lines_all) if lines_all else np.zeros(0, np.int64)
        self._va = np.concatenate(va_all) if va_all else np.zeros((0, 2), np.float32)

    @property
    def classes(self) -> list[str]:
        return []

    def labels(self) -> np.ndarray:
        return np.full(len(self), -1, np.int64)

    def frame_info(self, index: int) -> tuple[str, int]:
        """(video name, 1-based frame index) of item ``index``."""
        return self.videos[int(self._video[index])], int(self._frame[index])

    def image_path(self, index: int) -> Path:
        video, frame = self.frame_info(index)
        return self.frames_dir / video / self.frame_pattern.format(frame)

    def source(self, index: int) -> str:
        return f"{self._ann_files[int(self._video[index])]}:{int(self._lines[index])}"
