"""Batch transforms on tensors: the paper's training augmentation and the input normalisation.

Everything works on whole batches ``(N, 3, H, W)`` (uint8, or float in [0, 255]) with torch
operations only, so it runs where the batch lives (CPU or GPU) and never limits loading. Randomness
comes from an explicit :class:`torch.Generator` (a CPU generator is fine for a GPU batch: the few
random numbers are drawn on the generator's device and moved), so a seed reproduces a batch exactly.

:class:`PaperAugment` is the augmentation of the BReG-NeXt paper, applied the way the official
TensorFlow script does it (``tf.image`` semantics on uint8 images):

- a random half of the images of the batch is augmented, the other half is returned untouched;
- on that half, in this order: random horizontal flip (probability 0.5); hue shift by
  ``U(-0.08, 0.08)`` of the hue circle (``tf.image.random_hue``); saturation times ``U(0.6, 1.6)``
  (clipped to [0, 1], ``tf.image.random_saturation``); brightness ``+ U(-0.05, 0.05)`` on the
  [0, 1] scale (``tf.image.random_brightness``); contrast ``(x - mean) * U(0.7, 1.3) + mean`` with
  the per-image, per-channel mean (``tf.image.random_contrast``);
- **uint8 between the colour operations**: each ``tf.image.adjust_*`` converts its uint8 input
  to float (``x / 255``) and its result back to uint8 (``convert_image_dtype``: ``x * 255.5``
  truncated, saturating to 0..255 for brightness and contrast; hue and saturation stay in range).
  So every op here ends with ``floor(clip(x * 255.5, 0, 255))``: a brightened image saturates
  before the contrast op sees it, exactly as in the official pipeline;
- then, with probability 0.5, a centred crop resized back to the input size with
  ``tf.image.crop_and_resize`` (see :func:`crop_and_resize`): a continuous box of side ``s``
  (normalised ``[0.5 - s/2, 0.5 + s/2]``), ``s`` drawn from 0.80, 0.81, ..., 0.99 as the official
  script does, bilinear with corner-aligned sampling, the result cast to uint8 (truncated).

Remaining differences from the official script, by design: the official pipeline augments each
image with an independent coin (probability 0.5) where we augment exactly a random half of each
batch (same rate, less variance); its random numbers come from TensorFlow's generator, ours from a
seeded :class:`torch.Generator`; and our float32 colour-space arithmetic (hexcone HSV) may round
a pixel to the neighbouring uint8 level where TensorFlow's kernels round the other way. Float
input (values in [0, 255]) runs the same ops with the same clipping after each one, without the
uint8 rounding.

Validation uses no augmentation at all: the input is only normalised (:func:`normalize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..preprocess import Preprocess

__all__ = [
    "PaperAugment",
    "crop_and_resize",
    "hsv_to_rgb",
    "normalize",
    "rgb_to_hsv",
]


# ------------------------------------------------------------------------------- colour spaces
# Written with arithmetic on masks instead of torch.where / remainder / max-with-indices, which
# are several times slower on CPU.
def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of the circle; 0 for grays).

    The standard hexcone model (``colorsys``, ``tf.image.rgb_to_hsv``).
    """
    r, g, b = rgb.unbind(1)
    maxc = rgb.amax(1)
    minc = rgb.amin(1)
    delta = maxc - minc
    s = delta / maxc.clamp_min(1e-20)
    inv = 1.0 / delta.clamp_min(1e-20)
    rc = (maxc - r) * inv
    gc = (maxc - g) * inv
    bc = (maxc - b) * inv
    is_r = (r == maxc).to(rgb.dtype)
    is_g = (g == maxc).to(rgb.dtype) * (1.0 - is_r)
    is_b = 1.0 - is_r - is_g
    h = (is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)) / 6.0
    h = h + (h < 0).to(rgb.dtype)
    return torch.stack((h, s, maxc), 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` (hue in [0, 1)); zero saturation gives exactly gray (= v)."""
    h, s, v = hsv.unbind(1)
    h6 = h * 6.0
    vs = v * s

    def channel(n: float) -> torch.Tensor:
        k = h6 + n
        k = k - 6.0 * (k >= 6.0).to(k.dtype)
        return v - vs * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)

    return torch.stack((channel(5.0), channel(3.0), channel(1.0)), 1)


def _wrap_hue(h: torch.Tensor) -> torch.Tensor:
    """Bring h in (-1, 2) back to [0, 1)."""
    return h + (h < 0).to(h.dtype) - (h >= 1.0).to(h.dtype)


# ------------------------------------------------------------------------------- augmentation
def _uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


@dataclass
class PaperAugment:
    """The paper's training augmentation on a batch; see the module docstring for the exact ops.

    ``p`` is the fraction of each batch that is augmented (the paper: half); each op can be turned
    off by setting it to ``None`` (``flip=False``). ``crop`` is the range of crop sides and
    ``crop_step`` their spacing (0.01: the official 0.80, 0.81, ..., 0.99; None: continuous).
    Call ``aug(images, generator)``; the result has the dtype, device and range of ``images`` and
    the untouched images are bit-identical.
    """

    p: float = 0.5
    flip: bool = True
    hue: float | None = 0.08
    saturation: tuple[float, float] | None = (0.6, 1.6)
    brightness: float | None = 0.05
    contrast: tuple[float, float] | None = (0.7, 1.3)
    crop_p: float = 0.5
    crop: tuple[float, float] | None = (0.8, 0.99)
    crop_step: float | None = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0 or not 0.0 <= self.crop_p <= 1.0:
            raise ValueError("PaperAugment: p and crop_p must be probabilities in [0, 1]")
        if self.crop is not None and not 0.0 < self.crop[0] <= self.crop[1] <= 1.0:
            raise ValueError("PaperAugment: crop must be fractions 0 < lo <= hi <= 1")
        if self.crop_step is not None and not self.crop_step > 0:
            raise ValueError("PaperAugment: crop_step must be positive (or None for continuous)")

    def select(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sorted indices of the images of a batch of ``n`` that get augmented (``round(n * p)``
        on average: the fractional part is decided by a coin)."""
        gdev = generator.device if generator is not None else torch.device("cpu")
        perm = torch.randperm(n, generator=generator, device=gdev)
        exact = n * self.p
        k = int(math.floor(exact))
        if exact - k > 0 and float(torch.rand((), generator=generator, device=gdev)) < exact - k:
            k += 1
        return perm[:k].sort().values

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"PaperAugment expects (N, 3, H, W) images, got {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"PaperAugment expects uint8 or float images, got {images.dtype}")
        n = images.shape[0]
        out = images.clone()
        if n == 0:
            return out
        sel = self.select(n, generator)
        k = len(sel)
        if k == 0:
            return out
        gdev = generator.device if generator is not None else torch.device("cpu")
        dev = images.device
        # All random numbers for the augmented images, in a fixed order (reproducible by seed).
        u = torch.rand((7, k), generator=generator, device=gdev).to(dev)
        sel = sel.to(dev)
        quantise = images.dtype == torch.uint8

        def settle(unit: torch.Tensor) -> torch.Tensor:
            """Back to 0..255 after an op: uint8 semantics (saturate, truncate) or, for float
            input, saturation only."""
            if quantise:
                return torch.floor((unit * 255.5).clamp_(0.0, 255.0))
            return (unit * 255.0).clamp_(0.0, 255.0)

        levels = images.index_select(0, sel).to(torch.float32)  # 0..255
        if self.flip:
            fidx = (u[0] < 0.5).nonzero().flatten()
            if len(fidx):
                levels[fidx] = levels[fidx].flip(-1)
        if self.hue is not None:
            hh, ss, vv = rgb_to_hsv(levels / 255.0).unbind(1)
            hh = _wrap_hue(hh + _uniform(u[1], -self.hue, self.hue).view(k, 1, 1))
            levels = settle(hsv_to_rgb(torch.stack((hh, ss, vv), 1)))
        if self.saturation is not None:
            hh, ss, vv = rgb_to_hsv(levels / 255.0).unbind(1)
            ss = torch.clamp(ss * _uniform(u[2], *self.saturation).view(k, 1, 1), 0.0, 1.0)
            levels = settle(hsv_to_rgb(torch.stack((hh, ss, vv), 1)))
        if self.brightness is not None:
            shift = _uniform(u[3], -self.brightness, self.brightness).view(k, 1, 1, 1)
            levels = settle(levels / 255.0 + shift)
        if self.contrast is not None:
            x = levels / 255.0
            mean = x.mean(dim=(2, 3), keepdim=True)
            levels = settle((x - mean) * _uniform(u[4], *self.contrast).view(k, 1, 1, 1) + mean)
        if self.crop is not None and self.crop_p > 0:
            do_crop = u[5] < self.crop_p
            if bool(do_crop.any()):
                idx = do_crop.nonzero().flatten()
                scale = self._crop_scales(u[6][idx])
                cropped = crop_and_resize(levels[idx], scale)
                levels[idx] = torch.floor(cropped) if quantise else cropped  # tf.cast(.., uint8)
        out[sel] = levels.to(images.dtype)
        return out

    def _crop_scales(self, u: torch.Tensor) -> torch.Tensor:
        """Crop sides from uniform numbers: one of ``lo, lo + step, ..., hi`` (the official
        0.80, 0.81, ..., 0.99), or continuous in [lo, hi] when ``crop_step`` is None."""
        assert self.crop is not None
        lo, hi = self.crop
        if self.crop_step is None:
            return _uniform(u.to(torch.float64), lo, hi)
        count = int(math.floor((hi - lo) / self.crop_step + 1e-9)) + 1
        index = torch.clamp(torch.floor(u.to(torch.float64) * count), max=count - 1)
        return lo + self.crop_step * index


def crop_and_resize(images: torch.Tensor, scale: torch.Tensor, size: tuple[int, int] | None = None
                    ) -> torch.Tensor:
    """``tf.image.crop_and_resize`` of a centred box of side ``scale`` (N,) per image.

    The box is ``[0.5 - s/2, 0.5 + s/2]`` in normalised coordinates on both axes (the official
    script's boxes). Output pixel ``i`` of ``crop_h`` samples the source row
    ``y = y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (crop_h - 1)`` (corner-aligned), bilinearly
    between rows ``floor(y)`` and ``ceil(y)``; columns likewise. The box coordinates are float32
    and the sampling arithmetic follows TensorFlow's kernel in float32, so a scale of 1 is the
    identity and any scale below 1 zooms. Works batch-wise on the images' device; returns float
    (N, C, crop_h, crop_w), the input size by default.
    """
    n, c, h, w = images.shape
    out_h, out_w = size if size is not None else (h, w)
    x = images if images.is_floating_point() else images.to(torch.float32)
    s = scale.to(device=x.device, dtype=torch.float64).reshape(n)
    lo = (0.5 - 0.5 * s).to(torch.float32)  # boxes are float32 in TensorFlow
    hi = (0.5 + 0.5 * s).to(torch.float32)

    def axis(length: int, out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if out > 1:
            step = (hi - lo) * float(length - 1) / float(out - 1)
            pos = lo[:, None] * float(length - 1) + torch.arange(out, device=x.device,
                                                                 dtype=torch.float32)[None, :] * step[:, None]
        else:
            pos = (0.5 * (lo + hi) * float(length - 1))[:, None]
        first = torch.floor(pos)
        frac = (pos - first).to(x.dtype)
        first_i = first.long().clamp_(0, length - 1)
        second_i = torch.ceil(pos).long().clamp_(0, length - 1)
        return first_i, second_i, frac

    top, bottom, y_frac = axis(h, out_h)      # (N, out_h)
    left, right, x_frac = axis(w, out_w)      # (N, out_w)

    def rows(index: torch.Tensor) -> torch.Tensor:  # (N, C, out_h, W)
        return x.gather(2, index[:, None, :, None].expand(n, c, out_h, w))

    def cols(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # (N, C, out_h, out_w)
        return t.gather(3, index[:, None, None, :].expand(n, c, out_h, out_w))

    upper, lower = rows(top), rows(bottom)
    xf = x_frac[:, None, None, :]
    # TensorFlow's order: along x within the two rows, then along y
    top_row = cols(upper, left) + (cols(upper, right) - cols(upper, left)) * xf
    bottom_row = cols(lower, left) + (cols(lower, right) - cols(lower, left)) * xf
    return top_row + (bottom_row - top_row) * y_frac[:, None, :, None]


# ------------------------------------------------------------------------------- normalisation
def normalize(images: torch.Tensor, preprocess: Preprocess | None = None) -> torch.Tensor:
    """uint8 / [0, 255] batch (N, 3, H, W) -> float32 network input (``Preprocess.normalize``)."""
    return (preprocess or Preprocess()).normalize(images)
