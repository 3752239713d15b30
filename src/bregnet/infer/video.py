"""Streaming video and webcam decoding with frame sampling, in constant memory.

:class:`VideoReader` yields ``VideoFrame(index, time_s, rgb)`` one at a time; nothing is kept after
a frame is handed out. Sampling: ``every=N`` keeps every N-th decoded frame; ``fps=F`` keeps frames
so that about F per second of video remain (whichever is given; not both). Skipped frames are only
grabbed, not decoded to RGB. Timestamps are ``index / fps`` for files (the container's frame rate)
and the wall-clock time since opening for a webcam.

A video whose frames stop before its announced frame count, or with frames that fail to decode,
yields what it could; :attr:`VideoReader.problems` then holds one-line descriptions and
:attr:`VideoReader.ended_early` is set.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError, LimitError, UsageError
from ..fileio import check_input_file
from ..limits import MAX_IMAGE_PIXELS

__all__ = ["VIDEO_EXTENSIONS", "VideoFrame", "VideoReader", "is_video_path"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ts", ".mts", ".ogv")

# Consecutive failed reads tolerated (frames skipped) before a file is taken to have ended.
_MAX_CONSECUTIVE_FAILURES = 8


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoFrame:
    index: int          # frame number in the stream (0-based, counts skipped frames)
    time_s: float       # seconds from the start
    rgb: np.ndarray     # (H, W, 3) uint8


class VideoReader:
    """Iterate over the frames of a video file or webcam (``source`` an int or ``"webcam:N"``)."""

    def __init__(self, source: str | os.PathLike | int, every: int = 1, fps: float | None = None,
                 max_frames: int | None = None) -> None:
        import cv2

        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UsageError(f"--every must be a positive integer, got {every!r}")
        if fps is not None and not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
            raise UsageError(f"--fps must be a positive number, got {fps!r}")
        if fps is not None and every != 1:
            raise UsageError("give either --every or --fps, not both")
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                       or max_frames < 1):
            raise UsageError(f"--max-frames must be a positive integer, got {max_frames!r}")
        self.every = int(every)
        self.target_fps = fps
        self.max_frames = max_frames
        self.problems: list[str] = []
        self.ended_early = False
        self.frames_decoded = 0     # frames read from the stream (grabbed)
        self.frames_yielded = 0
        self.decode_seconds = 0.0   # time spent grabbing and decoding
        self.decode_cpu_seconds = 0.0   # CPU time of the reading thread for it

        webcam = isinstance(source, int) or (isinstance(source, str) and
                                             source.lower().startswith("webcam:"))
        self.is_webcam = webcam
        if webcam:
            index = source if isinstance(source, int) else source.split(":", 1)[1].strip()
            if isinstance(index, str):
                if not index.isdigit() or len(index) > 6:
                    raise UsageError(f"bad webcam index {index!r}: expected a number 0, 1, 2...")
                index = int(index)
            # checked before OpenCV sees it: a negative index makes cv2.VideoCapture crash
            if isinstance(index, bool) or not 0 <= index < 10_000:
                raise UsageError(f"bad webcam index {index!r}: expected a number 0, 1, 2...")
            self.camera_index = int(index)
            self.name = f"webcam:{self.camera_index}"
            self._cap = cv2.VideoCapture(self.camera_index)
            if not self._cap.isOpened():
                self._cap.release()
                raise DataError(f"cannot open webcam {self.camera_index} (no such device?)")
        else:
            # a regular file only: OpenCV would wait for ever on a FIFO and read a device for ever
            path = check_input_file(source, "video")
            self.name = str(source)
            self._cap = cv2.VideoCapture(str(path))
            if not self._cap.isOpened():
                self._cap.release()
                raise DataError(f"cannot open video {path} (corrupt or unsupported format)")
        fps_prop = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps_prop if 0.0 < fps_prop < 1000.0 else (30.0 if not webcam else 0.0)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not webcam else None
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        try:  # every frame is decoded to this size: bounded like an image's pixel count
            MAX_IMAGE_PIXELS.check(self.width * self.height,
                                   f"{self.name}: frames of {self.width} x {self.height}")
        except LimitError:
            self._cap.release()
            raise

    # -- sampling ---------------------------------------------------------------------------
    @property
    def expected_frames(self) -> int | None:
        """Frames this reader should yield for a complete file (None for a webcam / unknown)."""
        if self.frame_count is None:
            return self.max_frames
        if self.target_fps:
            n = int(np.ceil(self.frame_count / self.fps * self.target_fps - 1e-9))
            n = min(n, self.frame_count)
        else:
            n = (self.frame_count + self.every - 1) // self.every
        return min(n, self.max_frames) if self.max_frames else n

    @property
    def output_fps(self) -> float:
        """Frame rate of the sampled stream (for writing an annotated video)."""
        base = self.fps or 30.0
        if self.target_fps:
            return min(self.target_fps, base)
        return base / self.every

    def __iter__(self) -> Iterator[VideoFrame]:
        import cv2

        cap = self._cap
        index = -1
        last_slot = -1
        failures = 0
        start = time.perf_counter()
        try:
            while True:
                if self.max_frames is not None and self.frames_yielded >= self.max_frames:
                    break
                t0, c0 = time.perf_counter(), time.thread_time()
                ok = cap.grab()
                if not ok:
                    self._spent(t0, c0)
                    if self.frame_count is None or self.frames_decoded + failures >= self.frame_count:
                        break
                    failures += 1
                    if failures > _MAX_CONSECUTIVE_FAILURES:
                        break
                    continue
                index += 1 + failures
                if failures:
                    self.problems.append(f"{self.name}: {failures} frame(s) before frame {index} "
                                         "could not be decoded and were skipped")
                failures = 0
                self.frames_decoded += 1
                if self.is_webcam:
                    t = time.perf_counter() - start
                else:
                    t = index / self.fps
                if self.target_fps:
                    # keep the first frame of every 1/fps slot of time
                    slot = int(np.floor(t * self.target_fps + 1e-6))
                    keep = slot > last_slot
                else:
                    keep = index % self.every == 0
                if not keep:
                    self._spent(t0, c0)
                    continue
                ok, bgr = cap.retrieve()
                if not ok or bgr is None or bgr.size == 0:
                    self._spent(t0, c0)
                    self.problems.append(f"{self.name}: frame {index} could not be decoded; skipped")
                    continue
                if bgr.ndim == 2:
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
                else:
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                self._spent(t0, c0)
                if self.target_fps:
                    last_slot = slot
                self.frames_yielded += 1
                yield VideoFrame(index, float(t), rgb)
        finally:
            self.close()
        if self.frame_count is not None and self.max_frames is None:
            seen = max(index + 1, 0)
            if seen < self.frame_count:
                self.ended_early = True
                self.problems.append(f"{self.name}: decoded {seen} of {self.frame_count} announced "
                                     "frames (the video ends early or has undecodable frames)")

    def _spent(self, t0: float, c0: float) -> None:
        self.decode_seconds += time.perf_counter() - t0
        self.decode_cpu_seconds += time.thread_time() - c0

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
