"""Batch transforms on tensors: the paper's training augmentation and the input normalisation.

Everything works on whole batches ``(N, 3, H, W)`` (uint8, or float in [0, 255]) with torch
operations only, so it runs where the batch lives (CPU or GPU) and never limits loading. Randomness
comes from an explicit :class:`torch.Generator` (a CPU generator is fine for a GPU batch: the few
random numbers are drawn on the generator's device and moved), so a seed reproduces a batch exactly.

:class:`PaperAugment` is the augmentation of the BReG-NeXt paper, applied the way the official
TensorFlow script does it (``tf.image`` semantics):

- a random half of the images of the batch is augmented, the other half is returned untouched;
- on that half: random horizontal flip (probability 0.5); hue shift by ``U(-0.08, 0.08)`` of the hue
  circle (``tf.image.random_hue``); saturation times ``U(0.6, 1.6)`` (clipped to [0, 1],
  ``tf.image.random_saturation``); brightness ``+ U(-0.05, 0.05)`` on the [0, 1] scale
  (``tf.image.random_brightness``); contrast ``(x - mean) * U(0.7, 1.3) + mean`` with the per-image,
  per-channel mean (``tf.image.random_contrast``); then a clip to [0, 1];
- then, with probability 0.5, a centred crop of ``U(0.8, 0.99)`` of the side (integer box, as
  ``tf.image.central_crop``) resized back to the input size with bilinear interpolation
  (half-pixel centres, as ``tf.image.resize``).

Validation uses no augmentation at all: the input is only normalised (:func:`normalize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..preprocess import Preprocess

__all__ = [
    "PaperAugment",
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
    off by setting it to ``None`` (``flip=False``). Call ``aug(images, generator)``; the result has
    the dtype, device and range of ``images`` and the untouched images are bit-identical.
    """

    p: float = 0.5
    flip: bool = True
    hue: float | None = 0.08
    saturation: tuple[float, float] | None = (0.6, 1.6)
    brightness: float | None = 0.05
    contrast: tuple[float, float] | None = (0.7, 1.3)
    crop_p: float = 0.5
    crop: tuple[float, float] | None = (0.8, 0.99)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0 or not 0.0 <= self.crop_p <= 1.0:
            raise ValueError("PaperAugment: p and crop_p must be probabilities in [0, 1]")
        if self.crop is not None and not 0.0 < self.crop[0] <= self.crop[1] <= 1.0:
            raise ValueError("PaperAugment: crop must be fractions 0 < lo <= hi <= 1")

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
        n, _, h, w = images.shape
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
        x = images.index_select(0, sel).to(torch.float32) / 255.0
        if self.flip:
            fidx = (u[0] < 0.5).nonzero().flatten()
            if len(fidx):
                x[fidx] = x[fidx].flip(-1)
        if self.hue is not None or self.saturation is not None:
            hsv = rgb_to_hsv(x)
            hh, ss, vv = hsv.unbind(1)
            if self.hue is not None:
                hh = _wrap_hue(hh + _uniform(u[1], -self.hue, self.hue).view(k, 1, 1))
            if self.saturation is not None:
                ss = torch.clamp(ss * _uniform(u[2], *self.saturation).view(k, 1, 1), 0.0, 1.0)
            x = hsv_to_rgb(torch.stack((hh, ss, vv), 1))
        if self.brightness is not None:
            x = x + _uniform(u[3], -self.brightness, self.brightness).view(k, 1, 1, 1)
        if self.contrast is not None:
            mean = x.mean(dim=(2, 3), keepdim=True)
            x = (x - mean) * _uniform(u[4], *self.contrast).view(k, 1, 1, 1) + mean
        x = x.clamp(0.0, 1.0)
        if self.crop is not None and self.crop_p > 0:
            do_crop = u[5] < self.crop_p
            if bool(do_crop.any()):
                idx = do_crop.nonzero().flatten()
                frac = _uniform(u[6][idx], *self.crop)
                x[idx] = central_crop_resize(x[idx], frac)
        x = x * 255.0
        if images.dtype == torch.uint8:
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        else:
            x = x.to(images.dtype)
        out[sel] = x
        return out


def crop_box(size: int, fraction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tf.image.central_crop``'s integer box along one side: (start, length) per fraction."""
    start = torch.floor((size - size * fraction.to(torch.float64)) / 2.0)
    return start, size - 2.0 * start


def central_crop_resize(x: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """Centred crop of ``fraction`` of each side (integer box) resized back bilinearly (float batch).

    Same result as cropping the box and resizing it with half-pixel centres and edge clamping
    (``tf.image.resize``, ``cv2.resize`` INTER_LINEAR): samples never leave the box.
    """
    n, _, h, w = x.shape

    def axis(size: int) -> torch.Tensor:
        start, length = crop_box(size, fraction.to(x.device))
        pos = torch.arange(size, dtype=torch.float64, device=x.device) + 0.5
        src = start[:, None] + pos[None, :] * (length / size)[:, None] - 0.5
        src = torch.minimum(torch.maximum(src, start[:, None]), (start + length - 1)[:, None])
        return ((2.0 * src + 1.0) / size - 1.0).to(x.dtype)  # grid_sample's align_corners=False units

    gx, gy = axis(w), axis(h)
    grid = torch.stack((gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ------------------------------------------------------------------------------- normalisation
def normalize(images: torch.Tensor, preprocess: Preprocess | None = None) -> torch.Tensor:
    """uint8 / [0, 255] batch (N, 3, H, W) -> float32 network input (``Preprocess.normalize``)."""
    return (preprocess or Preprocess()).normalize(images)
