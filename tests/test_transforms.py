"""Batch transforms (the paper's augmentation, normalisation) and the class-balanced sampler
(issue: data, items 4 and 5)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from bregnet.data.sampler import ClassBalancedSampler
from bregnet.data.transforms import (
    PaperAugment,
    crop_and_resize,
    hsv_to_rgb,
    normalize,
    rgb_to_hsv,
)
from bregnet.preprocess import Preprocess

OFF = dict(flip=False, hue=None, saturation=None, brightness=None, contrast=None, crop=None)


def gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def rand_images(n: int, lo: int = 0, hi: int = 256, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(lo, hi, (n, 3, size, size), generator=gen(seed), dtype=torch.uint8)


def changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a != b).flatten(1).any(1)


# ----------------------------------------------------------------------------- colour spaces
def test_hsv_matches_colorsys_and_round_trips():
    rgb = torch.rand(1, 3, 20, 20, generator=gen(1), dtype=torch.float64)
    hsv = rgb_to_hsv(rgb)
    for y, x in [(0, 0), (3, 7), (19, 19), (10, 2)]:
        ref = colorsys.rgb_to_hsv(*rgb[0, :, y, x].tolist())
        assert hsv[0, :, y, x].tolist() == pytest.approx(ref, abs=1e-9)
    assert torch.allclose(hsv_to_rgb(hsv), rgb, atol=1e-9)


def test_hue_shift_keeps_grays_exactly():
    levels = torch.arange(0, 256, 5, dtype=torch.uint8)
    gray = levels.view(1, 1, 1, -1).expand(64, 3, 4, len(levels)).contiguous()
    aug = PaperAugment(p=1.0, **{**OFF, "hue": 0.08})
    assert torch.equal(aug(gray, gen(0)), gray)
    aug = PaperAugment(p=1.0, **{**OFF, "hue": 0.08, "saturation": (0.6, 1.6)})
    assert torch.equal(aug(gray, gen(0)), gray)


def test_hue_rotation_bounded_and_preserves_s_and_v():
    x = torch.rand(200, 3, 8, 8, generator=gen(2)) * 255
    y = PaperAugment(p=1.0, **{**OFF, "hue": 0.08})(x, gen(3))
    h0, s0, v0 = rgb_to_hsv(x / 255).unbind(1)
    h1, s1, v1 = rgb_to_hsv(y / 255).unbind(1)
    assert torch.allclose(v0, v1, atol=1e-5)
    mask = s0 > 0.2
    assert torch.allclose(s0[mask], s1[mask], atol=1e-4)
    d = torch.remainder(h1 - h0 + 0.5, 1.0) - 0.5  # signed circular difference
    d = d.view(200, -1)
    m = mask.view(200, -1)
    per_image = torch.stack([d[i][m[i]].median() for i in range(200)])
    assert per_image.abs().max() <= 0.08 + 1e-4
    assert per_image.abs().max() > 0.05 and per_image.min() < 0 < per_image.max()  # both directions


def test_saturation_scales_s_within_range():
    x = (torch.rand(100, 3, 8, 8, generator=gen(4)) * 0.4 + 0.3) * 255  # mid colours, no clipping at 1.6
    y = PaperAugment(p=1.0, **{**OFF, "saturation": (0.6, 1.6)})(x, gen(5))
    h0, s0, v0 = rgb_to_hsv(x / 255).unbind(1)
    h1, s1, v1 = rgb_to_hsv(y / 255).unbind(1)
    assert torch.allclose(v0, v1, atol=1e-5)
    ratio = (s1.flatten(1).sum(1) / s0.flatten(1).sum(1))
    assert ratio.min() >= 0.6 - 1e-4 and ratio.max() <= 1.6 + 1e-4
    assert ratio.max() - ratio.min() > 0.5


def test_brightness_shift_is_uniform_and_bounded():
    x = torch.full((300, 3, 8, 8), 128.0)
    x += torch.rand(x.shape, generator=gen(6)) * 40 - 20
    y = PaperAugment(p=1.0, **{**OFF, "brightness": 0.05})(x, gen(7))
    delta = (y - x).flatten(1)
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-3)  # one shift per image
    assert delta.abs().max() <= 0.05 * 255 + 1e-3
    assert delta[:, 0].max() > 0.03 * 255 and delta[:, 0].min() < -0.03 * 255


def test_contrast_preserves_channel_means():
    x = 100 + torch.rand(200, 3, 8, 8, generator=gen(8)) * 50
    y = PaperAugment(p=1.0, **{**OFF, "contrast": (0.7, 1.3)})(x, gen(9))
    assert torch.allclose(x.mean((2, 3)), y.mean((2, 3)), atol=1e-3)
    f = (y.std((2, 3)) / x.std((2, 3)))
    assert torch.allclose(f, f[:, :1].expand_as(f), atol=1e-4)  # same factor for the 3 channels
    assert f.min() >= 0.7 - 1e-4 and f.max() <= 1.3 + 1e-4 and f.max() - f.min() > 0.3


def test_flip_is_exact():
    x = rand_images(400)
    y = PaperAugment(p=1.0, **{**OFF, "flip": True})(x, gen(10))
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all()
    assert 150 < int(flipped.sum()) < 250


def test_clip_keeps_range():
    x = rand_images(200, size=16)
    y = PaperAugment(p=1.0)(x.float(), gen(11))
    assert y.min() >= 0 and y.max() <= 255


def tf_crop_and_resize(image: np.ndarray, box: tuple[float, float, float, float],
                       crop_size: tuple[int, int]) -> np.ndarray:
    """TensorFlow's ``crop_and_resize`` kernel for one (H, W, C) image and one normalised box
    ``(y1, x1, y2, x2)``, written out from its documented formula (float32, as the kernel)."""
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    ch, cw = crop_size
    y1, x1, y2, x2 = (np.float32(v) for v in box)
    out = np.zeros((ch, cw, img.shape[2]), np.float32)
    hs = np.float32((y2 - y1) * np.float32(h - 1) / np.float32(ch - 1))
    ws = np.float32((x2 - x1) * np.float32(w - 1) / np.float32(cw - 1))
    for i in range(ch):
        in_y = np.float32(y1 * np.float32(h - 1) + np.float32(i) * hs)
        top, bottom = int(np.floor(in_y)), int(np.ceil(in_y))
        y_lerp = np.float32(in_y - top)
        for j in range(cw):
            in_x = np.float32(x1 * np.float32(w - 1) + np.float32(j) * ws)
            left, right = int(np.floor(in_x)), int(np.ceil(in_x))
            x_lerp = np.float32(in_x - left)
            t = img[top, left] + (img[top, right] - img[top, left]) * x_lerp
            b = img[bottom, left] + (img[bottom, right] - img[bottom, left]) * x_lerp
            out[i, j] = t + (b - t) * y_lerp
    return out


@pytest.mark.parametrize("size", [(64, 64), (20, 30)])
def test_crop_and_resize_matches_tensorflow_formula(size):
    h, w = size
    x = torch.randint(0, 256, (6, 3, h, w), generator=gen(12), dtype=torch.uint8)
    scales = [0.8, 0.85, 0.9, 0.97, 0.99, 1.0]
    y = crop_and_resize(x, torch.tensor(scales, dtype=torch.float64))
    assert y.shape == (6, 3, h, w) and y.dtype == torch.float32
    for i, s in enumerate(scales):
        box = (0.5 - 0.5 * s, 0.5 - 0.5 * s, 0.5 + 0.5 * s, 0.5 + 0.5 * s)  # the official boxes
        ref = tf_crop_and_resize(x[i].permute(1, 2, 0).numpy(), box, (h, w))
        np.testing.assert_allclose(y[i].permute(1, 2, 0).numpy(), ref, rtol=0, atol=2e-4)
    assert torch.equal(y[5], x[5].float())  # scale 1: the identity, exactly
    assert not torch.equal(y[4].floor(), x[4].float())  # scale 0.99 changes the image


def test_crop_and_resize_zooms_in_continuous_steps():
    # a horizontal ramp: the crop of side s maps column j to 63/2 * (1 - s) + j * s exactly
    ramp = torch.arange(64, dtype=torch.float32).view(1, 1, 1, 64).expand(4, 3, 64, 64).contiguous()
    scales = torch.tensor([0.8, 0.81, 0.98, 0.99], dtype=torch.float64)
    y = crop_and_resize(ramp, scales)
    j = torch.arange(64, dtype=torch.float64)
    for i, s in enumerate(scales.tolist()):
        expected = 31.5 * (1 - s) + j * s
        assert torch.allclose(y[i, 0, 0].double(), expected, atol=1e-4)
    # neighbouring scales give different images (no integer box that rounds them together)
    assert (y[0] - y[1]).abs().max() > 0.2 and (y[2] - y[3]).abs().max() > 0.2


def test_crops_use_the_official_scales_and_truncate_to_uint8():
    x = torch.randint(0, 256, (300, 3, 64, 64), generator=gen(13), dtype=torch.uint8)
    y = PaperAugment(p=1.0, **{**OFF, "crop": (0.8, 0.99)}, crop_p=1.0)(x, gen(13))
    official = [0.8 + 0.01 * k for k in range(20)]  # np.arange(0.8, 1.0, 0.01)
    candidates = torch.stack([crop_and_resize(x, torch.full((300,), s, dtype=torch.float64)).floor()
                              for s in official], 1)
    match = (candidates == y[:, None].float()).flatten(2).all(2)
    assert match.any(1).all()  # every output is exactly one official crop, cast to uint8
    used = match.float().argmax(1)
    assert set(used.tolist()) == set(range(20))  # all 20 scales occur, 0.99 included
    # crop_p: about half of the augmented images are cropped
    z = PaperAugment(p=1.0, **{**OFF, "crop": (0.8, 0.81)}, crop_p=0.5)(x, gen(14))
    assert 100 < int(changed(z, x).sum()) < 200


def test_colour_ops_saturate_like_uint8_after_each_op():
    """Brightness then contrast on a bright image: TensorFlow saturates to 255 after brightness,
    then the contrast op sees the clipped image (the official uint8 pipeline)."""
    x = torch.full((1, 3, 4, 4), 250, dtype=torch.uint8)
    x[..., :2] = 100
    aug = PaperAugment(p=1.0, **{**OFF, "brightness": 0.05, "contrast": (0.7, 1.3)})
    y = aug(x, gen(25))  # seed 25 draws brightness +0.041 (250 -> 260.5: saturates) and contrast 0.93
    # replay the draws: select() draws a permutation (and no coin for p=1), then 7 x k numbers
    g = gen(25)
    torch.randperm(1, generator=g)
    u = torch.rand((7, 1), generator=g)
    delta = -0.05 + 0.1 * float(u[3, 0])
    factor = 0.7 + 0.6 * float(u[4, 0])
    f = x[0].numpy().astype(np.float32) / np.float32(255)
    b = np.floor(np.clip((f + np.float32(delta)) * np.float32(255.5), 0, 255))  # saturate_cast
    fb = b / np.float32(255)
    mean = fb.mean(axis=(1, 2), keepdims=True)
    ref = np.floor(np.clip(((fb - mean) * np.float32(factor) + mean) * np.float32(255.5), 0, 255))
    assert np.abs(y[0].numpy().astype(np.float32) - ref).max() <= 1
    assert delta > 0.02
    # without the clip after brightness (the old behaviour) the result differs by several levels
    unclipped = (f + delta - (f + delta).mean(axis=(1, 2), keepdims=True)) * factor \
        + (f + delta).mean(axis=(1, 2), keepdims=True)
    assert np.abs(np.floor(np.clip(unclipped * 255.5, 0, 255)) - ref).max() >= 3


def test_uint8_levels_between_hue_and_saturation():
    x = rand_images(50, size=8, seed=22)
    y = PaperAugment(p=1.0, **{**OFF, "hue": 0.08, "saturation": (0.6, 1.6)})(x, gen(23))
    g = gen(23)
    torch.randperm(50, generator=g)
    u = torch.rand((7, 50), generator=g)
    f = x.float() / 255
    h, s_, v = rgb_to_hsv(f).unbind(1)
    h = h + (-0.08 + 0.16 * u[1]).view(50, 1, 1)
    h = h + (h < 0).float() - (h >= 1).float()
    step1 = torch.floor((hsv_to_rgb(torch.stack((h, s_, v), 1)) * 255.5).clamp(0, 255))
    h, s_, v = rgb_to_hsv(step1 / 255).unbind(1)
    s_ = (s_ * (0.6 + 1.0 * u[2]).view(50, 1, 1)).clamp(0, 1)
    step2 = torch.floor((hsv_to_rgb(torch.stack((h, s_, v), 1)) * 255.5).clamp(0, 255))
    assert torch.equal(y.float(), step2)


def test_half_of_the_batch_is_untouched():
    x = rand_images(1000, size=8)
    y = PaperAugment()(x, gen(15))
    untouched = ~changed(y, x)
    assert int(untouched.sum()) == 500  # a random half
    odd = PaperAugment()(rand_images(7, size=8), gen(16))
    assert int((~changed(odd, rand_images(7, size=8))).sum()) in (3, 4)
    # which half is random
    y2 = PaperAugment()(x, gen(17))
    assert not torch.equal(~changed(y2, x), untouched)


def test_deterministic_by_seed_and_dtype_preserved():
    x = rand_images(64)
    aug = PaperAugment()
    a, b, c = aug(x, gen(1)), aug(x, gen(1)), aug(x, gen(2))
    assert a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    xf = x.to(torch.float64)
    f = aug(xf, gen(1))
    assert f.dtype == torch.float64 and f.min() >= 0 and f.max() <= 255
    # same ops for float and uint8 input; uint8 truncates after each of the 5 ops, float does not
    assert (f - a.double()).abs().max() <= 6
    assert aug(x[:0], gen(1)).shape == (0, 3, 32, 32)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        PaperAugment()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError):
        PaperAugment(p=1.5)


def test_normalize_is_the_preprocess_contract():
    x = rand_images(16, size=64)
    a = normalize(x)
    assert torch.allclose(a, Preprocess().normalize(x))
    assert a.dtype == torch.float32 and a.shape == (16, 3, 64, 64)


# ----------------------------------------------------------------------------- sampler
LABELS = np.array([0] * 1000 + [1] * 10 + [2] * 100 + [-1] * 50 + [4] * 40)


def test_sampler_draws_classes_uniformly_and_skips_unlabelled():
    s = ClassBalancedSampler(LABELS, num_samples=40000, seed=0)
    idx = np.array(list(s))
    assert len(idx) == len(s) == 40000
    lab = LABELS[idx]
    assert (lab >= 0).all()
    freq = np.bincount(lab, minlength=5) / len(lab)
    assert freq[3] == 0
    for c in (0, 1, 2, 4):
        assert abs(freq[c] - 0.25) < 0.015
    # within a class, items are drawn uniformly: all ten items of the rare class appear
    assert set(idx[lab == 1].tolist()) == set(range(1000, 1010))


def test_sampler_default_length_epochs_and_generator():
    s = ClassBalancedSampler(LABELS)
    assert len(s) == int((LABELS >= 0).sum())
    first = list(s)
    assert first == list(s)
    s.set_epoch(1)
    assert list(s) != first
    g = ClassBalancedSampler(LABELS, num_samples=100, generator=gen(3))
    assert list(g) != list(g)  # an explicit generator advances
    assert list(ClassBalancedSampler(LABELS, 100, generator=gen(3))) == \
        list(ClassBalancedSampler(LABELS, 100, generator=gen(3)))


def test_sampler_shards_like_distributed_sampler():
    full = list(ClassBalancedSampler(LABELS, num_samples=1002, seed=4, world_size=1))
    shards = [ClassBalancedSampler(LABELS, num_samples=1001, seed=4, rank=r, world_size=3) for r in range(3)]
    parts = [list(s) for s in shards]
    assert all(len(p) == len(s) == 334 for p, s in zip(parts, shards))
    merged = [parts[i % 3][i // 3] for i in range(1002)]
    assert merged == full
    for s in shards:
        s.set_epoch(2)
    assert [list(s) for s in shards] != parts
    with pytest.raises(ValueError):
        ClassBalancedSampler(LABELS, rank=3, world_size=3)


def test_sampler_errors_and_dataloader():
    with pytest.raises(ValueError):
        ClassBalancedSampler([-1, -1])
    ds = torch.utils.data.TensorDataset(torch.arange(len(LABELS)))
    loader = torch.utils.data.DataLoader(ds, batch_size=50, sampler=ClassBalancedSampler(LABELS, 200))
    assert sum(len(b[0]) for b in loader) == 200
