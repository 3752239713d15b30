"""Less detection work on video: detect every k-th frame, refine the tracked boxes in between.

Full-frame detection is the most expensive step of the video pipeline after the model (YuNet on
one core here, in ONNX Runtime: about 8 ms for a 640x360 frame, 2.5 ms for a 320-pixel copy; with
the library's own C code 60 and 10 ms). Faces move
little from one frame to the next, so :class:`DetectionSchedule` runs the detector on the whole
frame (a copy whose longest side is ``det_side``) only every ``every``-th frame, and in between
*refines* each face of the previous frame: the detector runs on a small window around where the
face is expected (its box moved by its last velocity, enlarged ``window`` times, resized so that
its side is at most ``window_side`` pixels), which gives a fresh box, score and landmarks for a
fraction of the cost. The whole frame is detected again at once

* when a face is lost (no detection in its window, or one that overlaps the expected box by an
  IoU under ``min_iou``), so a face that moved fast or left is handled by a full detection on the
  same frame, and
* when the scene cuts: the mean absolute difference between small grey thumbnails of this frame
  and the previous one exceeds ``cut_threshold`` (grey levels, 0-255).

After a full detection on a reduced copy, each face found is refined in its window too, so that
every frame's boxes and landmarks come from the same resolution. A face that enters the picture
between two full detections is found by the next one (at most ``every - 1`` frames late).
``every=1`` is plain detection on every frame. The detections are in
pixels of the full frame, like :meth:`FaceDetector.detect`'s, and sorted the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .detect import Detection, FaceDetector
from .tracking import iou_matrix

__all__ = ["DetectionSchedule", "ScheduleStats"]


@dataclass
class ScheduleStats:
    frames: int = 0
    full: int = 0           # full-frame detections
    refined: int = 0        # faces refined in a window
    lost: int = 0           # full detections forced by a lost face
    cuts: int = 0           # full detections forced by a scene cut


class DetectionSchedule:
    """Per-stream detection state: ``detect(rgb) -> list[Detection]`` for consecutive frames.

    ``detector`` is any :class:`FaceDetector` (its score threshold and minimum size apply to both
    kinds of detection). ``det_side``: longest side of the copy used for full-frame detection
    (None: the detector's own ``max_side``).
    """

    def __init__(self, detector: FaceDetector, every: int = 1, det_side: int | None = None,
                 window: float = 2.0, window_side: int = 112, min_iou: float = 0.3,
                 cut_threshold: float = 40.0) -> None:
        for name, value in (("every", every), ("window_side", window_side)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"detection {name} must be a positive integer, got {value!r}")
        if det_side is not None and (isinstance(det_side, bool) or not isinstance(det_side, int)
                                     or det_side < 16):
            raise UsageError(f"detection size must be an integer >= 16, got {det_side!r}")
        if not (isinstance(window, (int, float)) and 1.0 <= float(window) <= 8.0):
            raise UsageError(f"detection window must be a number in [1, 8], got {window!r}")
        self.detector = detector
        self.every = int(every)
        self.det_side = det_side
        self.window = float(window)
        self.window_side = int(window_side)
        self.min_iou = float(min_iou)
        self.cut_threshold = float(cut_threshold)
        self.stats = ScheduleStats()
        self._since_full = self.every   # frames since the last full detection: the first frame gets one
        self._prev: list[Detection] = []
        self._velocity: list[tuple[float, float]] = []
        self._thumb: np.ndarray | None = None

    # -- helpers ------------------------------------------------------------------------------
    def _run(self, rgb: np.ndarray, max_side: int | None) -> list[Detection]:
        if max_side is None:
            return self.detector.detect(rgb)
        # the detector downscales to max_side, maps the boxes back and applies its minimum face
        # size in pixels of the image given
        return self.detector.detect(rgb, max_side=max_side)

    def _full(self, rgb: np.ndarray) -> list[Detection]:
        self.stats.full += 1
        return self._run(rgb, self.det_side)

    def _scene_cut(self, rgb: np.ndarray) -> bool:
        import cv2

        grey = cv2.cvtColor(cv2.resize(rgb, (32, 18), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_RGB2GRAY).astype(np.int16)
        prev, self._thumb = self._thumb, grey
        return prev is not None and float(np.abs(grey - prev).mean()) > self.cut_threshold

    def _refine(self, rgb: np.ndarray, det: Detection, velocity: tuple[float, float]
                ) -> Detection | None:
        """The face of ``det`` in this frame, found in a window around its expected place."""
        H, W = rgb.shape[:2]
        x, y, w, h = det.box
        expected = (x + velocity[0], y + velocity[1], w, h)
        cx, cy = expected[0] + w / 2, expected[1] + h / 2
        half = self.window * max(w, h) / 2
        x0, y0 = int(max(0, np.floor(cx - half))), int(max(0, np.floor(cy - half)))
        x1, y1 = int(min(W, np.ceil(cx + half))), int(min(H, np.ceil(cy + half)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        found = self._run(np.ascontiguousarray(rgb[y0:y1, x0:x1]), self.window_side)
        if not found:
            return None
        shift = np.array([x0, y0], np.float32)
        cands = [Detection((d.box[0] + x0, d.box[1] + y0, d.box[2], d.box[3]), d.score,
                           None if d.landmarks is None else d.landmarks + shift) for d in found]
        ious = iou_matrix([expected], [c.box for c in cands])[0]
        best = int(np.argmax(ious))
        return cands[best] if ious[best] >= self.min_iou else None

    def _velocities(self, dets: list[Detection]) -> list[tuple[float, float]]:
        """Per detection, its shift from the best-overlapping face of the previous frame."""
        if not dets or not self._prev:
            return [(0.0, 0.0)] * len(dets)
        iou = iou_matrix([d.box for d in dets], [p.box for p in self._prev])
        out = []
        for i, d in enumerate(dets):
            j = int(np.argmax(iou[i]))
            p = self._prev[j].box
            out.append((d.box[0] - p[0], d.box[1] - p[1]) if iou[i, j] >= self.min_iou
                       else (0.0, 0.0))
        return out

    # -- the schedule ---------------------------------------------------------------------------
    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """The faces of the next frame of the stream (see the module docstring)."""
        self.stats.frames += 1
        if self.every == 1:
            return self._full(rgb)
        cut = self._scene_cut(rgb)
        dets: list[Detection] | None = None
        if cut:
            self.stats.cuts += 1
        elif self._since_full + 1 < self.every:
            # no face seen at the last frames: nothing to refine until the next full detection
            refined = [self._refine(rgb, d, v) for d, v in zip(self._prev, self._velocity)]
            if all(r is not None for r in refined):
                dets = refined  # type: ignore[assignment]
                self.stats.refined += len(refined)
                self._since_full += 1
            else:
                self.stats.lost += 1
        if dets is None:
            dets = self._full(rgb)
            self._since_full = 0
            if self.det_side is not None and max(rgb.shape[:2]) > self.det_side:
                # the small copy found the faces; their boxes and landmarks come from windows at
                # the refinement resolution, as on the frames in between (steadier boxes)
                dets = [self._refine(rgb, d, (0.0, 0.0)) or d for d in dets]
        dets.sort(key=lambda d: (d.box[0], d.box[1]))
        self._velocity = self._velocities(dets)
        self._prev = dets
        return list(dets)

    def reset(self) -> None:
        """Forget the stream (the next frame gets a full detection)."""
        self._since_full = self.every
        self._prev, self._velocity, self._thumb = [], [], None

    def __repr__(self) -> str:
        return (f"DetectionSchedule(every={self.every}, det_side={self.det_side}, "
                f"window={self.window}, window_side={self.window_side})")
