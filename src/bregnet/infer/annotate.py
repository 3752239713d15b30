"""Annotated images and videos, and a per-face timeline plot for videos.

Each face gets its box, ``#id label probability`` above it, and a small valence/arousal square
beside it: the horizontal axis is valence (-1 left, +1 right), the vertical axis arousal (+1 up),
with a dot at the face's (valence, arousal). Colours are fixed per face ID.

:class:`StagedFiles` keeps a run's annotation files under temporary names beside their targets
until the run has succeeded (:meth:`StagedFiles.commit` renames them all into place), so a failed
or interrupted run never replaces a previous annotation.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import OutputError
from ..fileio import atomic_write_bytes
from .results import FaceResult, FrameResult

__all__ = ["AnnotatedVideoWriter", "StagedFiles", "Timeline", "annotated_image_suffix",
           "draw_faces", "save_image"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def annotated_image_suffix(path: str | os.PathLike) -> str:
    """The suffix an annotated copy of ``path`` is written with (unusual ones become ``.png``)."""
    suffix = Path(path).suffix
    return suffix if suffix.lower() in _IMAGE_SUFFIXES else ".png"


class StagedFiles:
    """Files written under temporary names (``.<name>.<random>.tmp<suffix>`` beside the target,
    so that writers that choose the format by suffix still work), moved into place together by
    :meth:`commit`; :meth:`abort` removes them. Staging a target twice reuses its name."""

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}

    def stage(self, target: str | os.PathLike) -> Path:
        """The temporary path to write ``target``'s content to (its folder is created)."""
        target = Path(target)
        if target not in self._staged:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._staged[target] = target.with_name(
                f".{target.name}.{secrets.token_hex(4)}.tmp{target.suffix}")
        return self._staged[target]

    def commit(self) -> list[Path]:
        """Move every written file into place; returns the targets (those never written are
        skipped)."""
        done = []
        for target, tmp in list(self._staged.items()):
            if tmp.exists():
                os.replace(tmp, target)
                done.append(target)
            del self._staged[target]
        return done

    def abort(self) -> None:
        for tmp in self._staged.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._staged.clear()

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def _color(face_id: int) -> tuple[int, int, int]:
    return _PALETTE[int(face_id) % len(_PALETTE)]


def draw_faces(rgb: np.ndarray, faces: Sequence[FaceResult]) -> np.ndarray:
    """A copy of ``rgb`` with boxes, labels and valence/arousal markers drawn."""
    import cv2

    img = np.ascontiguousarray(rgb).copy()
    H, W = img.shape[:2]
    scale = max(0.4, min(H, W) / 900.0)
    thick = max(1, int(round(2 * scale)))
    for f in faces:
        x, y, w, h = (int(round(v)) for v in f.box)
        col = _color(f.face_id)
        cv2.rectangle(img, (x, y), (x + w, y + h), col, thick)
        parts = [f"#{f.face_id}"]
        if f.label is not None:
            parts.append(f"{f.label} {f.confidence:.2f}")
        text = " ".join(parts)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale * 1.4, thick)
        ty = y - 4 if y - th - 6 >= 0 else min(H - 2, y + h + th + 4)
        cv2.rectangle(img, (x, ty - th - 3), (x + tw + 4, ty + base - 1), col, -1)
        cv2.putText(img, text, (x + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale * 1.4,
                    (255, 255, 255), thick, cv2.LINE_AA)
        if f.va is not None:
            side = max(24, int(0.35 * h))
            mx = x + w + 4 if x + w + 4 + side < W else max(0, x - side - 4)
            my = min(max(0, y), max(0, H - side - 1))
            cv2.rectangle(img, (mx, my), (mx + side, my + side), (255, 255, 255), -1)
            cv2.rectangle(img, (mx, my), (mx + side, my + side), col, 1)
            c = side // 2
            cv2.line(img, (mx + c, my), (mx + c, my + side), (160, 160, 160), 1)
            cv2.line(img, (mx, my + c), (mx + side, my + c), (160, 160, 160), 1)
            v, a = float(np.clip(f.va[0], -1, 1)), float(np.clip(f.va[1], -1, 1))
            px = int(round(mx + c + v * c))
            py = int(round(my + c - a * c))
            cv2.circle(img, (px, py), max(2, side // 10), col, -1)
    return img


def save_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB image (format from the suffix; unusual suffixes become ``.png``)."""
    import cv2

    p = Path(path)
    if p.suffix.lower() not in _IMAGE_SUFFIXES:
        p = p.with_suffix(".png")
    ok, encoded = cv2.imencode(p.suffix.lower(), np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OutputError(f"cannot encode image {p}")
    atomic_write_bytes(p, encoded.tobytes(), fsync=False)
    return p


class AnnotatedVideoWriter:
    """Writes annotated frames to a video (``.mp4``: mp4v, ``.avi``: MJPG), streaming."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self._writer = None
        self.frames = 0

    def write(self, result: FrameResult) -> None:
        import cv2

        if result.image is None:
            return
        img = draw_faces(result.image, result.faces)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
            h, w = img.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc),
                                           self.fps, (w, h))
            if not self._writer.isOpened():
                raise OutputError(f"cannot write video {self.path}")
        self._writer.write(np.ascontiguousarray(img[:, :, ::-1]))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class Timeline:
    """Collects per-face time series of a video (a few floats per face and frame) and plots them:
    one row per face with the class probabilities (top) and valence/arousal (bottom)."""

    def __init__(self, labels: list[str], has_va: bool, max_faces: int = 6) -> None:
        self.labels = list(labels)
        self.has_va = has_va
        self.max_faces = max_faces
        self._t: dict[int, list[float]] = {}
        self._p: dict[int, list[np.ndarray]] = {}
        self._va: dict[int, list[np.ndarray]] = {}

    def add(self, result: FrameResult) -> None:
        for f in result.faces:
            self._t.setdefault(f.face_id, []).append(float(f.time_s))
            if f.probs is not None:
                self._p.setdefault(f.face_id, []).append(np.asarray(f.probs, np.float32))
            if f.va is not None:
                self._va.setdefault(f.face_id, []).append(np.asarray(f.va, np.float32))

    @property
    def face_ids(self) -> list[int]:
        return sorted(self._t, key=lambda i: -len(self._t[i]))[: self.max_faces]

    def save(self, path: str | os.PathLike, title: str = "") -> Path | None:
        """Write the plot (PNG/PDF/SVG by suffix). Returns None when no face was seen."""
        # The object-oriented API with the Agg canvas: no global backend state, no display needed.
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        ids = sorted(self.face_ids)
        if not ids:
            return None
        rows = 1 + int(bool(self.labels) and self.has_va)
        fig = Figure(figsize=(10, 2.2 * rows * len(ids)))
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(ids) * rows, 1, squeeze=False, sharex=True)
        ax_iter = iter(axes[:, 0])
        cmap = colormaps["tab10" if len(self.labels) <= 10 else "tab20"]
        for fid in ids:
            t = np.asarray(self._t[fid])
            if self.labels and fid in self._p:
                ax = next(ax_iter)
                p = np.stack(self._p[fid])
                for k, lab in enumerate(self.labels):
                    ax.plot(t, p[:, k], lw=1.2, color=cmap(k % cmap.N), label=lab)
                ax.set_ylim(0, 1)
                ax.set_ylabel(f"face #{fid}\nprobability")
                ax.legend(loc="upper right", fontsize=7, ncol=min(4, len(self.labels)))
            if self.has_va and fid in self._va:
                ax = next(ax_iter)
                va = np.stack(self._va[fid])
                ax.plot(t, va[:, 0], lw=1.2, label="valence", color="tab:blue")
                ax.plot(t, va[:, 1], lw=1.2, label="arousal", color="tab:red")
                ax.axhline(0, color="grey", lw=0.5)
                ax.set_ylim(-1, 1)
                ax.set_ylabel(f"face #{fid}\nV / A")
                ax.legend(loc="upper right", fontsize=7)
        axes[-1, 0].set_xlabel("time (s)")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        import io

        p = Path(path)
        buf = io.BytesIO()
        fig.savefig(buf, dpi=100, format="png")
        atomic_write_bytes(p, buf.getvalue(), fsync=False)
        return p
