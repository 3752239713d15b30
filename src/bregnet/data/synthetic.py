"""The synthetic default data set: drawn cartoon faces with the 8 AffectNet expression categories.

SYNTHETIC DATA: these are not photographs of people. Every image is drawn in code (OpenCV,
anti-aliased, rendered at twice the size and area-downsampled) from a random seed, so the data set
ships with the package and needs no download. It exists so that training, evaluation and the
whole tool chain run out of the box; accuracy on it says nothing about accuracy on real faces.

Each image ``i`` of a split is drawn from its own random stream ``SeedSequence([seed, split, 1, i])``,
so item ``i`` can be produced alone (:class:`SyntheticReader`'s lazy ``load``) and equals the
``i``-th image of :func:`make_synthetic`. Labels are drawn first, for the whole split, from
``SeedSequence([seed, split, 0])`` with exact class proportions (largest remainder). The output is
deterministic for a given numpy and OpenCV version.

What is drawn:

- **expression** (the label): brow height, tilt and knitting, eye openness, lower-lid raise,
  mouth curvature, opening, width and teeth, one-sided mouth corner (contempt), nose wrinkle and
  raised upper lip (disgust), forehead, glabella and nasolabial lines, following the facial
  action units of each AffectNet category. An expression **intensity** ``t`` scales the template;
  weak expressions drift towards neutral, which creates realistic class overlap;
- **valence / arousal**: ``t`` times the category's centre on the circumplex plus noise (Neutral near
  (0, 0); Happy +v; Sad -v -a; Surprise +a; Fear -v +a; Disgust -v; Anger -v +a; Contempt slightly -v);
- **nuisance**: identity (face shape, jaw, skin tone, hair style and colour, eye colour, feature
  sizes and positions, resting expression, glasses), pose (roll, small yaw by foreshortening and
  parallax of the features), scale, position, directional lighting, colour cast, background
  clutter, sensor noise, blur and partial occlusion (a bar or a hand).

``difficulty`` in [0, 1] widens within-class variation, lowers the minimum expression intensity
and strengthens the nuisances. The default 0.5 is learnable well above chance by a small CNN but
not trivially. The default class imbalance follows AffectNet's manually annotated training set,
so minority classes (Contempt, Disgust, Fear) suffer without class weighting.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import cv2
import numpy as np

from ..errors import DataError
from ..limits import MAX_CROP_SIDE
from ..preprocess import CropPolicy
from .base import ArrayDataset, Sample
from .readers._util import parse_int
from .readers.base import FaceReader

__all__ = [
    "AFFECTNET_CLASSES",
    "AFFECTNET_COUNTS",
    "SYNTHETIC_VA_CENTRES",
    "SyntheticReader",
    "class_proportions",
    "make_synthetic",
    "preview_grid",
    "synthetic_labels",
    "synthetic_sample",
    "synthetic_va",
]

AFFECTNET_CLASSES: list[str] = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
#: Approximate sizes (thousands) of AffectNet's manually annotated training set, in class order.
AFFECTNET_COUNTS: tuple[int, ...] = (75, 134, 25, 14, 6, 4, 25, 4)
#: Centre of each category on the valence/arousal circumplex at full intensity.
SYNTHETIC_VA_CENTRES: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),     # Neutral
    (0.75, 0.35),   # Happy
    (-0.65, -0.4),  # Sad
    (0.2, 0.75),    # Surprise
    (-0.55, 0.75),  # Fear
    (-0.7, 0.25),   # Disgust
    (-0.6, 0.65),   # Anger
    (-0.3, 0.1),    # Contempt
)

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_DEFAULT_SIZES = {"train": 20000, "val": 4000, "test": 4000}
_SS = 2  # supersampling factor of the drawing

# Expression parameters (indices into the parameter vector).
(BROW_RAISE, BROW_TILT, BROW_KNIT, EYE_OPEN, LID_LOWER, MOUTH_CURVE, MOUTH_OPEN, MOUTH_WIDTH,
 ASYM, NOSE_WRINKLE, LIP_RAISE, LIP_PRESS, CHEEK) = range(13)
_NP = 13


# ----------------------------------------------------------------------------------------- labels
def class_proportions(imbalance: str | Sequence[float] = "affectnet") -> np.ndarray:
    """Class proportions (sum 1) for ``"affectnet"``, ``"none"`` (or None) or 8 explicit weights."""
    if imbalance is None:
        imbalance = "none"
    if isinstance(imbalance, str):
        key = imbalance.strip().lower()
        if key == "affectnet":
            w = np.asarray(AFFECTNET_COUNTS, np.float64)
        elif key in ("none", "balanced", "uniform"):
            w = np.ones(len(AFFECTNET_CLASSES))
        else:
            raise DataError(f"synthetic: unknown imbalance {imbalance!r}; use 'affectnet' or 'none'")
    else:
        w = np.asarray(list(imbalance), np.float64)
        if w.shape != (len(AFFECTNET_CLASSES),) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise DataError("synthetic: imbalance weights must be 8 non-negative numbers, not all zero")
    return w / w.sum()


def _class_counts(n: int, p: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of ``n * p``; every class with p > 0 gets one item if n allows."""
    raw = n * p
    counts = np.floor(raw).astype(np.int64)
    short = n - counts.sum()
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:short]] += 1
    present = p > 0
    if n >= present.sum():
        for c in np.flatnonzero(present & (counts == 0)):
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[c] += 1
    return counts


def _check_split(split: str) -> int:
    if split not in _SPLIT_CODES:
        raise DataError(f"synthetic has no split {split!r}; choose one of {', '.join(_SPLIT_CODES)}")
    return _SPLIT_CODES[split]


def _check_seed(seed: Any) -> int:
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise DataError(f"synthetic: seed must be an integer, got {seed!r}") from None
    if seed < 0:
        raise DataError(f"synthetic: seed must be non-negative, got {seed}")
    return seed


def synthetic_labels(n: int, seed: int = 0, imbalance: str | Sequence[float] = "affectnet",
                     split: str = "train") -> np.ndarray:
    """The (n,) int64 labels of a synthetic split: exact proportions, shuffled by seed."""
    code = _check_split(split)
    seed = _check_seed(seed)
    counts = _class_counts(int(n), class_proportions(imbalance))
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, 0]))
    return rng.permutation(np.repeat(np.arange(len(counts), dtype=np.int64), counts))


# ----------------------------------------------------------------------------------- expression
def _expression(label: int, t: float, d: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Expression parameters at intensity ``t`` and the discrete choices (teeth, side, variant)."""
    tpl = np.zeros(_NP)
    extra: dict[str, Any] = {"side": 1.0 if rng.random() < 0.5 else -1.0, "teeth": False, "arousal": 0.0}
    if label == 1:  # Happy: AU6 + AU12 (+ AU25/26)
        opening = rng.uniform(0.0, 0.75)
        tpl[[MOUTH_CURVE, MOUTH_WIDTH, MOUTH_OPEN, EYE_OPEN, LID_LOWER, CHEEK, BROW_RAISE]] = (
            1.0, 0.3, opening, -0.35, 0.7, 1.0, 0.1)
        extra["teeth"] = opening > 0.15
        extra["arousal"] = 0.35 * (opening - 0.35)
    elif label == 2:  # Sad: AU1 + AU4 + AU15 (+ AU17)
        tpl[[MOUTH_CURVE, BROW_TILT, BROW_RAISE, BROW_KNIT, EYE_OPEN, MOUTH_WIDTH, LIP_PRESS]] = (
            -0.9, 1.0, 0.15, 0.3, -0.35, -0.05, 0.3)
    elif label == 3:  # Surprise: AU1 + AU2 + AU5 + AU26
        opening = rng.uniform(0.55, 1.0)
        tpl[[BROW_RAISE, EYE_OPEN, MOUTH_OPEN, MOUTH_WIDTH]] = (1.0, 0.75, opening, -0.4)
        extra["teeth"] = rng.random() < 0.3
        extra["arousal"] = 0.3 * (opening - 0.75)
    elif label == 4:  # Fear: AU1 + AU2 + AU4 + AU5 + AU20 + AU25
        opening = rng.uniform(0.2, 0.7)
        tpl[[BROW_RAISE, BROW_TILT, BROW_KNIT, EYE_OPEN, MOUTH_OPEN, MOUTH_WIDTH, MOUTH_CURVE]] = (
            0.75, 0.6, 0.4, 0.7, opening, 0.3, -0.3)
        extra["teeth"] = rng.random() < 0.4
    elif label == 5:  # Disgust: AU9 + AU10 (+ AU4, AU15)
        tpl[[NOSE_WRINKLE, LIP_RAISE, BROW_RAISE, BROW_KNIT, EYE_OPEN, LID_LOWER, MOUTH_CURVE,
             MOUTH_OPEN, ASYM, CHEEK]] = (1.0, 0.8, -0.6, 0.6, -0.4, 0.5, -0.45, 0.05,
                                         rng.uniform(0.0, 0.35), 0.4)
        extra["teeth"] = rng.random() < 0.6
    elif label == 6:  # Anger: AU4 + AU5 + AU7 + AU23 (pressed) or AU25/26 (shouting)
        if rng.random() < 0.7:
            tpl[[BROW_RAISE, BROW_TILT, BROW_KNIT, EYE_OPEN, LID_LOWER, LIP_PRESS, MOUTH_WIDTH, MOUTH_CURVE]] = (
                -0.9, -1.0, 1.0, 0.05, 0.45, 1.0, -0.2, -0.25)
        else:
            tpl[[BROW_RAISE, BROW_TILT, BROW_KNIT, EYE_OPEN, LID_LOWER, MOUTH_OPEN, MOUTH_WIDTH, MOUTH_CURVE]] = (
                -0.9, -1.0, 1.0, 0.15, 0.35, 0.55, 0.1, -0.35)
            extra["teeth"] = True
            extra["arousal"] = 0.15
    elif label == 7:  # Contempt: unilateral AU12 + AU14
        tpl[[ASYM, MOUTH_CURVE, EYE_OPEN, LIP_PRESS, BROW_RAISE]] = (1.0, 0.05, -0.1, 0.4, 0.05)
    # Neutral (0): the template is zero; intensity only drives the nuisance-free jitter below.
    rel = 0.1 + 0.3 * d
    params = t * tpl * (1.0 + rng.normal(0.0, rel, _NP))
    params += rng.normal(0.0, 0.03 + 0.2 * d, _NP)
    return params, extra


# -------------------------------------------------------------------------------------- drawing
_SKIN = np.array([(245, 214, 190), (232, 190, 160), (210, 160, 125), (175, 125, 90),
                  (130, 90, 62), (92, 62, 45)], np.float64)
_HAIR = np.array([(25, 20, 18), (60, 40, 28), (105, 70, 40), (170, 130, 80), (215, 185, 130),
                  (150, 70, 35), (150, 150, 150), (225, 225, 220)], np.float64)
_HAIR_CP = np.cumsum([0.28, 0.25, 0.15, 0.09, 0.08, 0.05, 0.06, 0.04])[:-1]
_STYLE_CP = np.cumsum([0.15, 0.4, 0.3, 0.15])[:-1]  # bald, short, long, fringe
_IRIS = np.array([(70, 45, 25), (110, 75, 40), (60, 100, 150), (80, 120, 80), (35, 25, 20)], np.float64)

_U = np.linspace(-1.0, 1.0, 17)
_TOP = np.linspace(np.pi, 2 * np.pi, 25)
_TOP_COS, _TOP_SIN = np.cos(_TOP), np.sin(_TOP)
_CAP = np.linspace(np.pi * 1.1, np.pi * 1.9, 17)
_CAP_COS, _CAP_SIN = np.cos(_CAP), np.sin(_CAP)
_HAIRLINE = np.linspace(1.0, -1.0, 15)
_OUTLINE = np.linspace(0, 2 * np.pi, 49)[:-1]
_OUT_COS, _OUT_SIN = np.cos(_OUTLINE), np.sin(_OUTLINE)


class _Canvas:
    """A face-coordinate drawing list: unit = half the face width, y down, z towards the viewer.

    Shapes are queued and transformed to pixels in one vectorised step by :meth:`draw` (roll,
    scale, translation and yaw: foreshortening plus parallax proportional to depth ``z``).
    """

    def __init__(self, img: np.ndarray, cx: float, cy: float, scale: float, roll: float, yaw: float):
        self.img = img
        self.cx, self.cy, self.s = cx, cy, scale
        self.roll, self.yaw = roll, yaw
        self.pts: list[np.ndarray] = []
        self.z: list[float] = []
        self.ops: list[tuple[int, tuple, int, bool]] = []  # (kind 0 fill / 1 line, colour, thickness, closed)

    def fill(self, pts: np.ndarray, color, z: float = 0.0) -> None:
        self.pts.append(pts)
        self.z.append(z)
        self.ops.append((0, _col(color), 0, False))

    def line(self, pts: np.ndarray, color, width: float, z: float = 0.0, closed: bool = False) -> None:
        self.pts.append(pts)
        self.z.append(z)
        self.ops.append((1, _col(color), max(1, int(round(width * self.s))), closed))

    def draw(self) -> None:
        counts = [len(p) for p in self.pts]
        pts = np.concatenate(self.pts)
        z = np.repeat(np.asarray(self.z), counts)
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        x = pts[:, 0] * math.cos(self.yaw) + z * math.sin(self.yaw)
        y = pts[:, 1]
        fixed = np.empty((len(pts), 2), np.float64)
        fixed[:, 0] = self.cx + self.s * (cr * x - sr * y)
        fixed[:, 1] = self.cy + self.s * (sr * x + cr * y)
        fixed = np.round(fixed * 16.0).astype(np.int32)
        o = 0
        img = self.img
        for (kind, color, th, closed), k in zip(self.ops, counts):
            poly = fixed[o:o + k]
            o += k
            if kind == 0:
                cv2.fillPoly(img, [poly], color, cv2.LINE_AA, 4)
            else:
                cv2.polylines(img, [poly], closed, color, th, cv2.LINE_AA, 4)
        self.pts, self.z, self.ops = [], [], []


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, float(v)))


def _col(c) -> tuple:
    r, g, b = c
    return (min(255.0, max(0.0, float(r))), min(255.0, max(0.0, float(g))), min(255.0, max(0.0, float(b))))


_CIRCLES = {k: np.stack([np.cos(np.linspace(0, 2 * np.pi, k + 1)[:-1]),
                         np.sin(np.linspace(0, 2 * np.pi, k + 1)[:-1])], 1) for k in (12, 16, 20, 32)}


def _ellipse(cx: float, cy: float, rx: float, ry: float, k: int = 32) -> np.ndarray:
    return _CIRCLES[k] * (rx, ry) + (cx, cy)


def _xy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.empty((len(x), 2))
    out[:, 0] = x
    out[:, 1] = y
    return out


def _band(xs: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Polygon between two curves over the same abscissae (top left->right, bottom back)."""
    k = len(xs)
    out = np.empty((2 * k, 2))
    out[:k, 0] = xs
    out[:k, 1] = top
    out[k:, 0] = xs[::-1]
    out[k:, 1] = bottom[::-1]
    return out


def _face_outline(rx: float, ry_top: float, ry_bot: float, jaw: float) -> np.ndarray:
    c, s = _OUT_COS, _OUT_SIN
    x = rx * np.sign(c) * np.abs(c) ** (2.0 / jaw)
    lower = s > 0
    # superellipse jaw below the eye line, round cranium above; narrow the chin
    x = np.where(lower, x * (1.0 - 0.18 * s ** 2), rx * c)
    y = np.where(lower, ry_bot * np.sign(s) * np.abs(s) ** (2.0 / (jaw + 0.4)), ry_top * s)
    return _xy(x, y)


def _affect(label: int, rng: np.random.Generator, d: float) -> tuple[list[float], dict, float, float]:
    """Expression intensity, parameters and valence/arousal: the first draws of an item's stream."""
    if label == 0:
        t = rng.uniform(0.0, 1.0)
    else:
        t_min = 0.5 - 0.4 * d
        t = t_min + (1.0 - t_min) * rng.beta(1.3, 1.0)
    params, extra = _expression(label, t, d, rng)
    cv_ = SYNTHETIC_VA_CENTRES[label]
    va_sd = 0.06 + 0.08 * d
    if label == 0:
        v, a = rng.normal(0.0, 0.08), rng.normal(-0.02, 0.08)
    else:
        v = t * cv_[0] + rng.normal(0.0, va_sd)
        a = t * cv_[1] + extra["arousal"] * t + rng.normal(0.0, va_sd)
    return params.tolist(), extra, _clamp(v, -1.0, 1.0), _clamp(a, -1.0, 1.0)


def _render(label: int, rng: np.random.Generator, d: float, size: int) -> tuple[np.ndarray, float, float]:
    """Draw one face; returns (image uint8 (size, size, 3) RGB, valence, arousal)."""
    S = size * _SS
    # ---- expression and affect
    e, extra, v, a = _affect(label, rng, d)

    # ---- identity
    skin = _SKIN[rng.integers(len(_SKIN) - 1)]
    skin = skin + (_SKIN[rng.integers(len(_SKIN))] - skin) * rng.uniform(0, 1) * 0.5
    skin = skin * rng.normal(1.0, 0.03, 3)
    hair = _HAIR[int(np.searchsorted(_HAIR_CP, rng.random(), side='right'))] * rng.uniform(0.85, 1.15)
    rx = rng.uniform(0.92, 1.06)
    ry_top = rng.uniform(1.15, 1.32)
    ry_bot = rng.uniform(1.2, 1.45)
    jaw = rng.uniform(1.8, 3.2)
    eye_y = rng.normal(-0.12, 0.03)
    eye_x = rng.normal(0.4, 0.025)
    eye_w = rng.normal(0.19, 0.015)
    eye_h = rng.normal(0.085, 0.01)
    brow_th = rng.uniform(0.045, 0.085)
    brow_gap = rng.normal(0.2, 0.02)
    mouth_y = rng.normal(0.68, 0.04)
    mouth_w = rng.normal(0.3, 0.025)
    lip_th = rng.uniform(0.03, 0.06)
    nose_y = rng.normal(0.34, 0.03)
    rest = rng.normal(0.0, 0.05 + 0.1 * d, 3)  # resting brow height, mouth curve, eye openness
    hair_style = int(np.searchsorted(_STYLE_CP, rng.random(), side='right'))
    hairline = rng.uniform(-0.95, -0.7) if hair_style != 3 else rng.uniform(-0.7, -0.55)
    glasses = rng.random() < 0.1

    # ---- pose, framing and lighting
    roll = _clamp(rng.normal(0.0, math.radians(5 + 8 * d)), -0.45, 0.45)
    yaw = _clamp(rng.normal(0.0, 0.12 + 0.18 * d), -0.55, 0.55)
    scale = S * 0.3 * rng.uniform(0.85, 1.12)
    cx = S * (0.5 + rng.normal(0.0, 0.03))
    cy = S * (0.53 + rng.normal(0.0, 0.03))

    # ---- background
    bg = rng.uniform(30, 225, 3)
    bg = bg.mean() + (bg - bg.mean()) * rng.uniform(0.15, 0.8)  # mostly muted colours
    img = np.empty((S, S, 3), np.uint8)
    img[:] = _col(bg)
    for _ in range(rng.integers(0, 5)):
        col = _col(bg + rng.normal(0, 45, 3))
        kind = rng.integers(3)
        p = rng.uniform(-0.1 * S, 1.1 * S, 2)
        q = rng.uniform(0.08 * S, 0.6 * S, 2)
        if kind == 0:
            cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[0] + q[0]), int(p[1] + q[1])), col, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(img, (int(p[0]) * 16, int(p[1]) * 16), int(q[0] * 8), col, -1, cv2.LINE_AA, 4)
        else:
            cv2.line(img, (int(p[0]), int(p[1])), (int(p[0] + q[0]), int(p[1] - q[1])), col,
                     int(rng.integers(2, 10)), cv2.LINE_AA)

    cvs = _Canvas(img, cx, cy, scale, roll, yaw)
    # shoulders and neck
    clothes = rng.uniform(20, 235, 3)
    cvs.fill(_ellipse(0.0, 2.55, 2.3, 0.95), clothes)
    cvs.fill(np.array([[-0.42, 0.6], [0.42, 0.6], [0.48, 1.9], [-0.48, 1.9]]), skin * 0.82)
    # long hair behind the head
    if hair_style == 2:
        back = _ellipse(0.0, 0.15, rx * 1.22, 1.55)
        back[:, 1] = np.minimum(back[:, 1], rng.uniform(0.9, 1.6))
        cvs.fill(back, hair * 0.85)
    # ears
    for sd in (-1.0, 1.0):
        cvs.fill(_ellipse(sd * rx * 0.98, eye_y + 0.2, 0.12, 0.22, 16), skin * 0.9, z=-0.3 * sd * abs(yaw))
    # face
    outline = _face_outline(rx, ry_top, ry_bot, jaw)
    cvs.fill(outline, skin)
    # hair on top
    if hair_style != 0:
        vol = rng.uniform(1.04, 1.14)
        side_y = rng.uniform(-0.35, 0.05) if hair_style != 3 else rng.uniform(-0.4, -0.2)
        top = _xy(rx * vol * _TOP_COS, ry_top * vol * _TOP_SIN - 0.05)
        top = np.vstack([[-rx * vol, side_y], top, [rx * vol, side_y]])
        xs = _HAIRLINE * (rx * 0.95)
        pw = rng.uniform(2.0, 5.0)
        inner = _xy(xs, hairline + (side_y - hairline) * np.abs(_HAIRLINE) ** pw)
        cvs.fill(np.vstack([top, inner]), hair)
    else:
        cvs.fill(_xy(rx * 0.99 * _CAP_COS, ry_top * 0.99 * _CAP_SIN), hair * 0.5 + skin * 0.5)

    skin_dark = skin * 0.72
    # ---- forehead and glabella lines
    raise_ = e[BROW_RAISE] + rest[0]
    if raise_ > 0.35:
        k = min(1.0, (raise_ - 0.35) * 2.0)
        for j in range(3):
            yy = eye_y - 0.42 - 0.09 * j
            cvs.line(_xy(_U * 0.28, yy + 0.03 * _U ** 2), skin + (skin_dark - skin) * k, 0.022, z=0.7)
    if e[BROW_KNIT] > 0.35:
        k = min(1.0, (e[BROW_KNIT] - 0.35) * 1.8)
        for sd in (-1.0, 1.0):
            cvs.line(np.array([[sd * 0.05, eye_y - 0.3], [sd * 0.035, eye_y - 0.15]]),
                     skin + (skin_dark - skin) * k, 0.022, z=0.75)

    # ---- eyes
    eopen = _clamp(1.0 + e[EYE_OPEN] + rest[2], 0.12, 2.0)
    lid_low = _clamp(e[LID_LOWER], -0.3, 1.2)
    gaze = rng.normal(0.0, 0.03, 2)
    iris_col = _IRIS[rng.integers(len(_IRIS))]
    for sd in (-1.0, 1.0):
        ex = sd * eye_x
        xu = ex + _U * eye_w
        up = eye_y - eye_h * eopen * (1 - _U ** 2) ** 0.7 - 0.01 * sd * _U
        lo = eye_y + eye_h * 0.75 * (1 - 0.6 * lid_low) * min(eopen, 1.25) * (1 - _U ** 2) ** 1.2
        lo = np.maximum(lo, up)
        white = _band(xu, up, lo)
        cvs.fill(white, (238, 236, 230), z=0.55)
        for r, col in ((eye_h * 0.95, iris_col), (eye_h * 0.42, (15, 12, 12))):
            c = _ellipse(ex + gaze[0], eye_y + 0.005 + gaze[1], r, r, 20)
            c[:, 0] = np.minimum(np.maximum(c[:, 0], ex - eye_w), ex + eye_w)
            u = (c[:, 0] - ex) / eye_w
            yu = np.interp(u, _U, up)
            yl = np.interp(u, _U, lo)
            c[:, 1] = np.minimum(np.maximum(c[:, 1], yu), np.maximum(yl, yu))
            cvs.fill(c, col, z=0.56)
        cvs.line(_xy(xu, up), (35, 25, 25), 0.028, z=0.57)
        if lid_low > 0.4:  # cheek raiser / lid tightener: a line under the eye
            cvs.line(_xy(xu[3:-3], lo[3:-3] + 0.05), skin * 0.85, 0.02, z=0.55)
    if glasses:
        frame = rng.uniform(10, 80, 3)
        for sd in (-1.0, 1.0):
            cvs.line(_ellipse(sd * eye_x, eye_y + 0.01, eye_w * 1.45, eye_h * 2.3, 20), frame, 0.03,
                     z=0.75, closed=True)
        cvs.line(np.array([[-eye_x + eye_w * 1.45, eye_y], [eye_x - eye_w * 1.45, eye_y]]), frame, 0.03, z=0.8)

    # ---- brows
    knit = e[BROW_KNIT]
    tilt = e[BROW_TILT]
    for sd in (-1.0, 1.0):
        asym_b = 0.04 * e[ASYM] * (sd == extra["side"])
        x_in = sd * (0.14 - 0.05 * max(knit, 0.0) * 1.0)
        x_out = sd * (eye_x + eye_w * 1.25)
        base = eye_y - eye_h - brow_gap - 0.11 * raise_ - asym_b
        y_in = base + 0.02 - 0.085 * tilt + 0.03 * max(knit, 0.0)
        y_out = base + 0.03 + 0.035 * tilt
        u = (_U + 1) / 2
        xs = x_in + (x_out - x_in) * u
        arch = 0.05 * (1 + 0.5 * max(raise_, 0.0))
        ys = y_in + (y_out - y_in) * u - arch * 4 * u * (1 - u)
        th = brow_th * (1.15 - 0.5 * u)
        poly = _band(xs, ys - th / 2, ys + th / 2)
        cvs.fill(poly, hair * 0.7 + 10, z=0.62)

    # ---- nose
    wr = e[NOSE_WRINKLE]
    cvs.line(np.array([[0.05, eye_y + 0.05], [0.09, nose_y - 0.02], [0.14, nose_y + 0.03]]), skin * 0.8, 0.022,
             z=0.9)
    for sd in (-1.0, 1.0):
        nos = _ellipse(sd * 0.07, nose_y + 0.06 - 0.03 * max(e[LIP_RAISE], 0), 0.04, 0.022, 12)
        cvs.fill(nos, skin * 0.55, z=0.9)
    if wr > 0.3:
        k = min(1.0, (wr - 0.3) * 1.6)
        for j in range(3):
            yy = eye_y + 0.02 + 0.05 * j
            cvs.line(np.array([[-0.09, yy + 0.015], [0.0, yy], [0.09, yy + 0.015]]),
                     skin + (skin * 0.6 - skin) * k, 0.02, z=0.85)

    # ---- mouth
    curve = e[MOUTH_CURVE] + rest[1]
    opening = _clamp(e[MOUTH_OPEN], 0.0, 1.1)
    width = mouth_w * _clamp(1.0 + e[MOUTH_WIDTH] * 0.6, 0.55, 1.5)
    press = _clamp(e[LIP_PRESS], 0.0, 1.0)
    lraise = _clamp(e[LIP_RAISE], 0.0, 1.2)
    asym = _clamp(e[ASYM], -0.3, 1.3)
    side = extra["side"]
    xs = _U * width
    xs = np.where(_U * side > 0, xs * (1 + 0.15 * max(asym, 0.0)), xs)
    mid = mouth_y - curve * 0.12 * _U ** 2 - asym * 0.13 * np.maximum(side * _U, 0.0) ** 2
    mid = mid + curve * 0.02
    env = 1 - _U ** 2
    h_lo = opening * 0.2 * np.sqrt(env)
    h_up = (opening * 0.045 + lraise * 0.05) * np.sqrt(env)
    in_up = mid - h_up
    in_lo = mid + h_lo
    th = lip_th * (1.0 - 0.65 * press)
    out_up = in_up - th * env ** 0.5 * (1 - 0.25 * np.exp(-((_U * 6) ** 2)))  # Cupid's bow dip
    out_lo = in_lo + th * 1.25 * env ** 0.6
    lip_col = skin * np.array([0.85, 0.6, 0.6]) + np.array([20, 0, 0])
    if curve > 0.4 or e[CHEEK] > 0.4:  # nasolabial folds
        k = min(1.0, max(curve - 0.4, e[CHEEK] - 0.4) * 1.5)
        for sd in (-1.0, 1.0):
            p0 = np.array([sd * 0.2, nose_y + 0.03])
            p1 = np.array([sd * (width * 1.12 + 0.02), mid[0 if sd < 0 else -1] + 0.06])
            pm = (p0 + p1) / 2 + np.array([sd * 0.06, 0.0])
            cvs.line(np.array([p0, pm, p1]), skin + (skin_dark - skin) * k, 0.022, z=0.75)
    cvs.fill(_band(xs, out_up, out_lo), lip_col, z=0.72)
    cvs.line(_xy(xs, mid), lip_col * 0.45, 0.022, z=0.72)
    if opening > 0.04 or lraise > 0.15:
        hole = _band(xs, in_up, in_lo)
        cvs.fill(hole, (55, 20, 25), z=0.71)
        if extra["teeth"] or lraise > 0.5:
            teeth_lo = np.minimum(in_lo, in_up + 0.045 + 0.02 * lraise)
            tx = xs * 0.85
            cvs.fill(_band(tx, in_up, teeth_lo), (238, 235, 225), z=0.71)

    # ---- occlusion
    if rng.random() < 0.06 + 0.22 * d:
        if rng.random() < 0.5:  # a bar (scarf, sunglasses, a microphone, a watermark)
            yy = rng.uniform(-0.3, 1.0)
            ang = rng.normal(0.0, 0.3)
            h = rng.uniform(0.12, 0.3)
            c, s = math.cos(ang), math.sin(ang)
            rect = np.array([[-1.6, -h], [1.6, -h], [1.6, h], [-1.6, h]])
            rect = _xy(rect[:, 0] * c - rect[:, 1] * s, rect[:, 0] * s + rect[:, 1] * c + yy)
            rect[:, 0] += rng.uniform(-0.6, 0.6)
            cvs.fill(rect, rng.uniform(0, 255, 3), z=1.0)
        else:  # a hand: palm and fingers in a (possibly different) skin tone
            hand = skin * rng.uniform(0.85, 1.1)
            hx, hy = rng.uniform(-0.7, 0.7), rng.uniform(0.2, 1.1)
            cvs.fill(_ellipse(hx, hy + 0.25, 0.32, 0.3, 20), hand, z=1.0)
            for j in range(4):
                fx = hx - 0.22 + 0.15 * j
                cvs.fill(_ellipse(fx, hy - 0.12, 0.065, 0.25, 12), hand * 0.97, z=1.0)
                cvs.line(np.array([[fx + 0.075, hy - 0.25], [fx + 0.075, hy + 0.05]]), hand * 0.75, 0.015, z=1.0)

    cvs.draw()
    # ---- camera: downsample, lighting, colour cast, blur, noise
    small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    gain = (rng.uniform(0.7, 1.2) * rng.normal(1.0, 0.04, 3)).astype(np.float32)
    grad = rng.uniform(0.0, 0.15 + 0.35 * d)
    phi = rng.uniform(0, 2 * np.pi)
    gx, gy = _grid(size)
    light = (gx * np.float32(grad * math.cos(phi)) + gy * np.float32(grad * math.sin(phi)) + np.float32(1.0))
    x = small * (light[:, :, None] * gain)
    if rng.random() < 0.25 + 0.35 * d:
        sigma = rng.uniform(0.3, 0.6 + 0.9 * d)
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    sigma_n = rng.uniform(0.0, 3.0 + 9.0 * d)
    oy, ox = rng.integers(0, _NOISE_SPAN, 2)
    x += _noise_bank(size)[oy:oy + size, ox:ox + size] * np.float32(sigma_n if rng.random() < 0.5 else -sigma_n)
    x += np.float32(0.5)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8), v, a


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_NOISE: dict[int, np.ndarray] = {}
_NOISE_SPAN = 192


def _noise_bank(size: int) -> np.ndarray:
    """A fixed field of standard normal noise; each image adds a randomly offset window of it
    (drawing 12k fresh normals per image would cost more than drawing the face)."""
    if size not in _NOISE:
        rng = np.random.default_rng(np.random.SeedSequence([0x5EED, size]))
        _NOISE[size] = rng.standard_normal((_NOISE_SPAN + size, _NOISE_SPAN + size, 3), dtype=np.float32)
    return _NOISE[size]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _GRIDS:
        g = np.linspace(-1.0, 1.0, size, dtype=np.float32)
        _GRIDS[size] = (np.broadcast_to(g[None, :], (size, size)), np.broadcast_to(g[:, None], (size, size)))
    return _GRIDS[size]


def _check_difficulty(difficulty: Any) -> float:
    try:
        d = float(difficulty)
    except (TypeError, ValueError):
        raise DataError(f"synthetic: difficulty must be a number in [0, 1], got {difficulty!r}") from None
    if not 0.0 <= d <= 1.0:
        raise DataError(f"synthetic: difficulty must be in [0, 1], got {d}")
    return d


def _item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_check_seed(seed), _check_split(split), 1, int(index)]))


def synthetic_sample(index: int, label: int, seed: int = 0, difficulty: float = 0.5, size: int = 64,
                     split: str = "train") -> Sample:
    """Draw item ``index`` of a split given its label (what the reader and make_synthetic call)."""
    image, v, a = _render(int(label), _item_rng(seed, split, index), _check_difficulty(difficulty), int(size))
    return Sample(image=image, label=int(label), valence=v, arousal=a)


def synthetic_va(index: int, label: int, seed: int = 0, difficulty: float = 0.5, split: str = "train") -> tuple[float, float]:
    """Valence/arousal of item ``index`` without drawing its image (the same values as its Sample)."""
    _, _, v, a = _affect(int(label), _item_rng(seed, split, index), _check_difficulty(difficulty))
    return v, a


# ----------------------------------------------------------------------------------- public API
def _draw_range(args: tuple) -> tuple[int, np.ndarray, np.ndarray]:
    """Worker: draw items [start, stop) of a split (module level so that it pickles)."""
    start, labels, seed, d, size, split = args
    images = np.empty((len(labels), size, size, 3), np.uint8)
    va = np.empty((len(labels), 2), np.float32)
    for j, lab in enumerate(labels):
        image, v, a = _render(int(lab), _item_rng(seed, split, start + j), d, size)
        images[j] = image
        va[j] = (v, a)
    return start, images, va


def make_synthetic(n: int, seed: int = 0, imbalance: str | Sequence[float] | None = "affectnet",
                   difficulty: float = 0.5, size: int = 64, split: str = "train",
                   progress: bool = False, workers: int = 1) -> ArrayDataset:
    """Generate ``n`` synthetic faces in memory (an :class:`ArrayDataset` named ``"synthetic"``).

    Item ``i`` equals ``SyntheticReader(None, split, n=n, seed=seed, ...).load(i)``. About 1 ms
    of CPU per 64x64 image; ``workers > 1`` draws in that many processes (spawned: call it from
    under ``if __name__ == "__main__":`` in a script) with an identical result.
    """
    n = int(n)
    size = int(size)
    if n < 0:
        raise DataError(f"synthetic: n must be non-negative, got {n}")
    if size < 16:
        raise DataError(f"synthetic: size must be at least 16, got {size}")
    d = _check_difficulty(difficulty)
    seed = _check_seed(seed)
    labels = synthetic_labels(n, seed, imbalance, split)
    images = np.empty((n, size, size, 3), np.uint8)
    va = np.empty((n, 2), np.float32)
    step = 500
    tasks = [(s, labels[s:s + step], seed, d, size, split) for s in range(0, n, step)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"synthetic/{split}", unit="img")
    try:
        if workers > 1 and len(tasks) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(workers, len(tasks)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                results = pool.map(_draw_range, tasks)
                for start, imgs, v in results:
                    images[start:start + len(imgs)] = imgs
                    va[start:start + len(imgs)] = v
                    if bar is not None:
                        bar.update(len(imgs))
        else:
            for task in tasks:
                start, imgs, v = _draw_range(task)
                images[start:start + len(imgs)] = imgs
                va[start:start + len(imgs)] = v
                if bar is not None:
                    bar.update(len(imgs))
    finally:
        if bar is not None:
            bar.close()
    if imbalance is None:
        imbalance = "none"
    return ArrayDataset(
        images=images, labels=labels, va=va, classes=list(AFFECTNET_CLASSES), name="synthetic", split=split,
        meta={"synthetic": True, "crop": CropPolicy.named(SyntheticReader.crop_rule).to_dict(),
              "seed": seed, "difficulty": d, "size": size,
              "imbalance": imbalance if isinstance(imbalance, str) else [float(w) for w in imbalance]},
    )


class SyntheticReader(FaceReader):
    """Lazy reader of the synthetic data set (no files; ``root`` is ignored).

    Options: ``n`` (items in this split; default 20000 train, 4000 val, 4000 test), ``seed`` (0),
    ``imbalance`` ("affectnet" or "none"), ``difficulty`` (0.5), ``size`` (64). The splits use
    different derived seeds. The images are whole drawn scenes around one face: a model trained on
    them is run on a detector's box by the crop rule ``synthetic`` (measured on YuNet's boxes).
    """

    name = "synthetic"
    splits = ("train", "val", "test")
    default_classes = list(AFFECTNET_CLASSES)
    OPTIONS = {"n": None, "seed": 0, "imbalance": "affectnet", "difficulty": 0.5, "size": 64}
    needs_root = False
    synthetic = True
    size_option = "n"
    crop_rule = "synthetic"

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", **options: Any) -> None:
        super().__init__(root, split, **options)
        opts = self.opts
        for key in ("n", "size"):
            if isinstance(opts[key], bool):
                raise DataError(f"synthetic: {key} must be an integer, got {opts[key]!r}")
        n = _DEFAULT_SIZES[self.split] if opts["n"] is None else opts["n"]
        self.n = parse_int(str(n), "n", "synthetic")
        self.size = parse_int(str(opts["size"]), "size", "synthetic")
        if self.n < 0:
            raise DataError(f"synthetic: n must be non-negative, got {self.n}")
        if self.size < 16:
            raise DataError(f"synthetic: size must be at least 16, got {self.size}")
        MAX_CROP_SIDE.check(self.size, "synthetic: size")
        self.image_size = self.size
        self.seed = _check_seed(opts["seed"])
        self.imbalance = opts["imbalance"]
        if self.imbalance is None:
            self.imbalance = "none"
        self.difficulty = _check_difficulty(opts["difficulty"])
        self._labels = synthetic_labels(self.n, self.seed, self.imbalance, self.split)
        # the resolved options (what the cache records and compares when resuming)
        self.options = {"n": self.n, "seed": self.seed, "difficulty": self.difficulty, "size": self.size,
                        "imbalance": self.imbalance if isinstance(self.imbalance, str)
                        else [float(w) for w in self.imbalance]}
        self._va_cache: np.ndarray | None = None

    def va(self) -> np.ndarray:
        # VA comes first in each item's random stream, so it is computed without drawing images.
        if self._va_cache is None:
            self._va_cache = np.array([synthetic_va(i, int(lab), self.seed, self.difficulty, self.split)
                                       for i, lab in enumerate(self._labels)], np.float32).reshape(self.n, 2)
        return self._va_cache.copy()

    def load(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(f"synthetic/{self.split}: index {index} out of range 0..{self.n - 1}")
        return synthetic_sample(index, int(self._labels[index]), self.seed, self.difficulty, self.size, self.split)

    def source(self, index: int) -> str:
        return f"synthetic/{self.split}[{index}] (seed {self.seed})"

    def to_arrays(self, progress: bool = False) -> tuple[ArrayDataset, list]:
        """The whole split drawn at once (:func:`make_synthetic`: the same images as ``load``)."""
        ds = make_synthetic(self.n, self.seed, self.imbalance, self.difficulty, self.size, self.split,
                            progress=progress)
        return ds, []


def preview_grid(ds: ArrayDataset, path: str | os.PathLike, per_class: int = 8, scale: int = 2) -> str:
    """Write a PNG grid: one row per class (first ``per_class`` items), labelled, for a person to look at."""
    classes = list(ds.classes) or ["(unlabelled)"]
    cell = ds.images.shape[1] * scale
    label_w = 110
    title_h = 24
    h = title_h + len(classes) * (cell + 2)
    w = label_w + per_class * (cell + 2)
    canvas = np.full((h, w, 3), 255, np.uint8)
    title = f"{ds.name} ({'SYNTHETIC, drawn' if ds.name == 'synthetic' else ds.split}) - {ds.split}"
    cv2.putText(canvas, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    labels = ds.labels if ds.classes else np.zeros(len(ds), np.int64)
    for r, name in enumerate(classes):
        y0 = title_h + r * (cell + 2)
        idx = np.flatnonzero(labels == r)[:per_class]
        cv2.putText(canvas, f"{name} ({int((labels == r).sum())})", (4, y0 + cell // 2 + 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        for c, i in enumerate(idx):
            x0 = label_w + c * (cell + 2)
            img = np.asarray(ds.images[i])
            canvas[y0:y0 + cell, x0:x0 + cell] = cv2.resize(img, (cell, cell), interpolation=cv2.INTER_NEAREST)
    from ..fileio import atomic_write_bytes

    path = os.fspath(path)
    ok, png = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"cannot encode preview image {path}")
    atomic_write_bytes(path, png.tobytes(), fsync=False)
    return path
