"""The input contract: how a face crop becomes a network input, stored with every checkpoint.

Official BReG-NeXt preprocessing: 64x64 RGB, ``x / 255`` then the per-channel means subtracted
(no division by a standard deviation). A checkpoint may carry other values; readers of the
checkpoint always use :class:`Preprocess` from its metadata rather than these defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UsageError

if TYPE_CHECKING:  # torch is imported where it is used: the ONNX Runtime path never loads it
    import torch

__all__ = ["BORDERS", "COLORS", "CROP_KINDS", "CROP_RULES", "MARGIN_RANGE", "PAPER_MEAN", "CropPolicy", "Preprocess"]

PAPER_MEAN: tuple[float, float, float] = (0.5727663, 0.44812188, 0.39362228)
#: How pixels outside the image are handled (see :func:`bregnet.crop.crop_face`).
BORDERS = ("clamp", "constant", "replicate")
#: Accepted margins: below -0.45 the box all but vanishes, above 5 it is 11 times the face.
MARGIN_RANGE = (-0.45, 5.0)


#: What a crop policy describes: ``"box"``, the training images were cut out of larger images by
#: face boxes with exactly this policy (the predictor repeats it on the detector's box); or
#: ``"pre-cropped"``, the data set's images already were face crops, made by a process bregnet does
#: not know, and the policy's values are the named box-to-crop rule (``rule``) that approximates it.
CROP_KINDS = ("box", "pre-cropped")


@dataclass(frozen=True)
class CropPolicy:
    """How a face box becomes the square crop the model saw in training
    (applied by :func:`bregnet.crop.crop_face`).

    ``margin`` enlarges the box by this fraction of its side on every side; ``square`` makes the
    box square around its centre (longest side); ``align`` rotates so that the eyes are level when
    eye landmarks are known; ``border`` says what fills the part of the box outside the image:
    ``"constant"`` (black), ``"replicate"`` (edge pixels) or ``"clamp"`` (nothing: the box is cut
    to the image). ``kind`` is ``"box"`` (the training crops were made from face boxes with exactly
    these values) or ``"pre-cropped"`` (the training images already were face crops; the values
    are those of the named rule ``rule`` in :data:`CROP_RULES`, an approximation). Out-of-range
    values are a :class:`~bregnet.errors.UsageError`.
    """

    margin: float = 0.1
    square: bool = True
    align: bool = True
    border: str = "constant"
    kind: str = "box"
    rule: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) \
                or not math.isfinite(self.margin):
            raise UsageError(f"crop margin must be a finite number, got {self.margin!r}")
        lo, hi = MARGIN_RANGE
        if not lo <= self.margin <= hi:
            raise UsageError(f"crop margin {self.margin:g} is out of range [{lo:g}, {hi:g}]")
        for key in ("square", "align"):
            if not isinstance(getattr(self, key), (bool, np.bool_)):
                raise UsageError(f"crop {key} must be true or false, got {getattr(self, key)!r}")
        if self.border not in BORDERS:
            raise UsageError(f"crop border must be one of {', '.join(BORDERS)}, got {self.border!r}")
        if self.kind not in CROP_KINDS:
            raise UsageError(f"crop kind must be one of {', '.join(CROP_KINDS)}, got {self.kind!r}")
        if not isinstance(self.rule, str) or len(self.rule) > 64 or (self.kind == "box") != (self.rule == ""):
            raise UsageError(f"crop rule must name the rule of a pre-cropped policy (and be empty for a "
                             f"box policy), got kind {self.kind!r} with rule {self.rule!r}")
        object.__setattr__(self, "margin", float(self.margin))
        object.__setattr__(self, "square", bool(self.square))
        object.__setattr__(self, "align", bool(self.align))

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "CropPolicy":
        """The policy of a checkpoint's or cache's ``crop`` object. A missing ``kind`` is a box
        policy (what every checkpoint meant before pre-cropped rules existed); a pre-cropped one
        takes the values of its named rule for the ones it does not state (all four are needed
        for a rule this version does not know)."""
        d = dict(d or {})
        base: dict[str, Any] = {}
        if d.get("kind") == "pre-cropped":
            rule = d.get("rule")
            if isinstance(rule, str) and rule in CROP_RULES:
                base = CROP_RULES[rule].to_dict()
            elif not all(k in d for k in _VALUES):
                raise UsageError(f"crop rule {rule!r} is unknown to this bregnet (known: "
                                 f"{', '.join(CROP_RULES)}) and its margin, square, align, border "
                                 "are not all given")
        base.update({k: d[k] for k in (*_VALUES, "kind", "rule") if k in d})
        return cls(**base)

    @classmethod
    def named(cls, rule: str) -> "CropPolicy":
        """The pre-cropped policy of rule ``rule`` (:data:`CROP_RULES`); UsageError listing the
        names otherwise."""
        if rule not in CROP_RULES:
            raise UsageError(f"unknown crop rule {rule!r}; choose one of {', '.join(CROP_RULES)}")
        return CROP_RULES[rule]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, rule: str | None = None, margin: float | None = None,
                       square: bool | None = None, align: bool | None = None,
                       border: str | None = None) -> "CropPolicy":
        """This policy with the user's overrides (``bregnet predict --crop-rule/--crop-margin/
        --crop-square``): ``rule`` first replaces it by that named rule, then each value given
        replaces that value. ``kind`` and ``rule`` keep saying where the values started from."""
        policy = CropPolicy.named(rule) if rule is not None else self
        values = {k: v for k, v in (("margin", margin), ("square", square), ("align", align),
                                    ("border", border)) if v is not None}
        return replace(policy, **values) if values else policy

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``box crop: margin 0, not square, no alignment, clamp``."""
        what = "box crop" if self.kind == "box" else f"pre-cropped, rule {self.rule}"
        return (f"{what}: margin {self.margin:g}, {'square' if self.square else 'not square'}, "
                f"{'eyes levelled' if self.align else 'no alignment'}, border {self.border}")


_VALUES = ("margin", "square", "align", "border")


def _rule(name: str, margin: float, square: bool, align: bool) -> CropPolicy:
    # Outside the image the edge pixels are repeated: the data sets' own crops have no black bands.
    return CropPolicy(margin=margin, square=square, align=align, border="replicate",
                      kind="pre-cropped", rule=name)


#: The named box-to-crop rules of pre-cropped data sets: what the predictor does with a detector's
#: box (YuNet's: brows to chin, about 0.83 as wide as high) for a model trained on images that
#: already were face crops. Each approximates how that data set's crops were made (see
#: docs/inference.md, "Crop policy"); ``bregnet predict --crop-rule/--crop-margin`` overrides it.
CROP_RULES: dict[str, CropPolicy] = {
    # FER2013 / FERPlus: faces "automatically registered so that the face is more or less centred
    # and occupies about the same amount of space in each image" (48x48, no rotation): about the
    # face box, squared, plus a small margin.
    "fer2013-like": _rule("fer2013-like", 0.1, True, False),
    # RAF-DB "aligned": 100x100 crops warped by five landmarks so that the eyes are level, at a
    # fixed scale with some forehead and background: the squared box, a wider margin, eyes levelled.
    "rafdb-aligned": _rule("rafdb-aligned", 0.15, True, True),
    # Aff-Wild2 "cropped_aligned": 112x112 frames aligned by five landmarks, tight around the face.
    "affwild2-aligned": _rule("affwild2-aligned", 0.1, True, True),
    # The synthetic data set: measured, the image side is a median 1.46 times YuNet's box side
    # (194 of 200 faces found), so margin (1.46 - 1) / 2, rounded to 0.25; faces are drawn rolled.
    "synthetic": _rule("synthetic", 0.25, True, False),
    # Folders and lists of face crops of unknown origin (and RAF-DB's whole "original" images):
    # the squared box plus 10%, the common default of face-crop tools.
    "face-crop": _rule("face-crop", 0.1, True, False),
}


#: The colour a model's input images have (``Preprocess.color``): ``RGB``; ``BGR`` (channels in
#: OpenCV's order); ``GRAY``: the model was trained on grayscale images stored as three equal
#: channels (FER2013, FERPlus), so a colour photo's face is made gray the same way before it runs.
COLORS = ("RGB", "BGR", "GRAY")

# ITU-R BT.601 luma, the weights PIL's convert("L") and OpenCV's RGB2GRAY use
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class Preprocess:
    """Input size, colour (:data:`COLORS`) and normalisation ``(x * scale - mean) / std`` per
    channel, and the crop policy: what a face crop goes through before the network sees it."""

    input_size: int = 64
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = PAPER_MEAN
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop: CropPolicy = field(default_factory=CropPolicy)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Preprocess":
        d = dict(d or {})
        kwargs: dict[str, Any] = {}
        for key in ("input_size", "color", "scale"):
            if key in d:
                kwargs[key] = d[key]
        for key in ("mean", "std"):
            if key in d:
                kwargs[key] = tuple(float(v) for v in d[key])
        kwargs["crop"] = CropPolicy.from_dict(d.get("crop"))
        return cls(**kwargs)

    def to_model_colors(self, crops_hwc: np.ndarray) -> np.ndarray:
        """uint8 RGB crops ``(..., 3)`` -> the colours the model was trained on: unchanged for
        ``RGB``, channels reversed for ``BGR``, BT.601 luma in all three channels for ``GRAY``
        (a gray image passes unchanged, so crops of FER2013-like data are exactly the same)."""
        color = self.color.upper()
        if color == "BGR":
            return crops_hwc[..., ::-1]
        if color == "GRAY":
            x = crops_hwc.astype(np.float32)
            luma = np.rint(x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2])
            return np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
        return crops_hwc

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float RGB batch (N, 3, H, W) in [0, 255] -> float32 network input (in the
        model's colours, :meth:`to_model_colors`)."""
        import torch

        x = images.to(torch.float32)
        color = self.color.upper()
        if color == "BGR":
            x = x.flip(1)
        elif color == "GRAY":
            w = [float(v) for v in _LUMA]   # the same float32 operations as to_model_colors
            luma = x[:, 0] * w[0] + x[:, 1] * w[1] + x[:, 2] * w[2]
            if not images.is_floating_point():
                luma = luma.round().clamp_(0, 255)
            x = luma.unsqueeze(1).expand(-1, 3, -1, -1)
        x = x * self.scale
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        if all(s == 1.0 for s in self.std):
            return x - mean
        return (x - mean) / std

    def normalize_numpy(self, images_hwc: np.ndarray) -> np.ndarray:
        """uint8 RGB batch (N, H, W, 3) -> float32 NCHW input (in the model's colours), for ONNX
        Runtime and other numpy paths."""
        x = self.to_model_colors(images_hwc).astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
