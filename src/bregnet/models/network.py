"""Bounded residual gradient networks: the pre-activation unit, the network, its stages.

Follows torchvision's ``resnet.py``: a unit class, a network class with ``_make_stage``, explicit
weight init. The only difference from a pre-activation ResNet is the shortcut ``g(x)`` applied to
the raw unit input (the BReG-Net paper's section on the residual unit).

The constructor's arguments may come from a recipe or a checkpoint's metadata, so they are
checked before anything is allocated: types and ranges (:class:`~bregnet.errors.UsageError`),
and the parameter count and number of units, estimated from the arguments, against
``BREGNET_MAX_MODEL_PARAMS`` / ``BREGNET_MAX_MODEL_UNITS`` (:class:`~bregnet.errors.LimitError`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..limits import MAX_CLASSES, MAX_MODEL_PARAMS, MAX_MODEL_UNITS
from .shortcuts import SHORTCUTS, make_shortcut

__all__ = ["BregNet", "BregUnit", "estimate_parameters", "split_outputs"]


def split_outputs(out: Any, logits: bool, va: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A network's output -> ``(logits or None, va or None)`` by the output contract: a
    categorical model returns logits, a dimensional one valence/arousal, a multi-task one the
    tuple ``(logits, va)``. ``logits`` / ``va`` say which heads the model has."""
    if logits and va:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise UsageError(f"a multi-task model returns (logits, va), got {type(out).__name__}")
        return out[0], out[1]
    if isinstance(out, (tuple, list)):
        raise UsageError(f"a single-head model returns one tensor, got {len(out)} outputs")
    if not logits and not va:
        raise UsageError("a model needs class logits, valence/arousal, or both")
    return (out, None) if logits else (None, out)


def _check_int(value: Any, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UsageError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def _check_stages(stages: Any, stem_width: int) -> list[list[int]]:
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
        raise UsageError(f"stages must be a non-empty list of [units, width] pairs, got {stages!r}")
    out = []
    channels = stem_width
    for i, stage in enumerate(stages):
        if isinstance(stage, (str, bytes)) or not isinstance(stage, Sequence) or len(stage) != 2:
            raise UsageError(f"stage {i} must be a [units, width] pair, got {stage!r}")
        units = _check_int(stage[0], f"stage {i} units", 1)
        width = _check_int(stage[1], f"stage {i} width", 1)
        if width < channels or (width - channels) % 2:
            raise UsageError(f"stage {i}: the option-A shortcut needs an even channel growth, "
                             f"got {channels} -> {width}")
        channels = width
        out.append([units, width])
    return out


def estimate_parameters(stages: Sequence[Sequence[int]], num_classes: int = 8, va: bool = False,
                        stem_width: int = 32, in_chans: int = 3) -> int:
    """The trainable parameter count of a :class:`BregNet` with these arguments, computed from
    them (no tensor allocated); the adaptive shortcut's two parameters per unit are included."""
    total = in_chans * stem_width * 9 + stem_width  # stem conv
    c = stem_width
    for units, width in stages:
        for _ in range(int(units)):
            total += 2 * c + 9 * c * width + width + 2 * width + 9 * width * width + width + 2
            c = width
    total += 2 * c  # final batch norm
    if num_classes:
        total += c * num_classes + num_classes
    if va:
        total += 2 * c + 2
    return int(total)


class BregUnit(nn.Module):
    """Full pre-activation residual unit with a (possibly bounded) shortcut.

    r = conv3x3(ELU(BN(conv3x3_stride(ELU(BN(x))))));  s = g(x), 2x2 average-pooled when the unit
    strides and zero-padded on channels ("option A", half each side) when they grow; y = r + s.

    ``tf_same_padding`` reproduces TensorFlow's 'SAME' padding for the strided conv (0 before,
    1 after on an even input), which the converted official checkpoint needs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        shortcut: str = "adaptive",
        tf_same_padding: bool = False,
    ) -> None:
        super().__init__()
        if out_channels < in_channels or (out_channels - in_channels) % 2:
            raise UsageError(
                f"option-A shortcut needs an even channel growth, got {in_channels} -> {out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.tf_same_padding = tf_same_padding and stride > 1
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride, padding=0 if self.tf_same_padding else 1
        )
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1)
        self.shortcut = make_shortcut(shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.elu(self.bn1(x))
        if self.tf_same_padding:
            r = F.pad(r, (0, 1, 0, 1))
        r = self.conv1(r)
        r = self.conv2(F.elu(self.bn2(r)))
        grow = self.out_channels - self.in_channels
        if self.stride == 1 and not grow:
            return self.shortcut.residual(r, x)  # r + g(x), one fused pass where g allows it
        s = self.shortcut(x)
        if self.stride > 1:
            s = F.avg_pool2d(s, self.stride, self.stride)
        if grow:
            s = F.pad(s, (0, 0, 0, 0, grow // 2, grow // 2))
        return r + s


class BregNet(nn.Module):
    """Stem conv -> residual stages -> BN-ELU -> global average pool -> heads.

    ``stages`` lists ``(units, width)``; every stage after the first starts with a stride-2 unit.
    Outputs are tensors only (ONNX-friendly): logits ``(N, K)`` for a categorical model, valence /
    arousal ``(N, 2)`` in [-1, 1] (tanh) for a dimensional one, the tuple ``(logits, va)`` for both.
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]],
        num_classes: int = 8,
        shortcut: str = "adaptive",
        va: bool = False,
        stem_width: int = 32,
        in_chans: int = 3,
        tf_same_padding: bool = False,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2) or isinstance(stem_stride, bool):
            raise UsageError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        _check_int(num_classes, "num_classes", 0)
        for name, flag in (("va", va), ("tf_same_padding", tf_same_padding)):
            if not isinstance(flag, bool):
                raise UsageError(f"{name} must be true or false, got {flag!r}")
        if num_classes == 0 and not va:
            raise UsageError("a model needs num_classes > 0, va=True, or both")
        if not isinstance(shortcut, str) or shortcut not in SHORTCUTS:
            raise UsageError(f"unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
        _check_int(stem_width, "stem_width", 1)
        _check_int(in_chans, "in_chans", 1)
        stages = _check_stages(stages, stem_width)
        MAX_CLASSES.check(num_classes, "model output")
        MAX_MODEL_UNITS.check(sum(u for u, _ in stages), "network")
        MAX_MODEL_PARAMS.check(estimate_parameters(stages, num_classes, va, stem_width, in_chans),
                               "network (estimated before building)")
        self.config: dict[str, Any] = {
            "stages": [list(map(int, s)) for s in stages],
            "num_classes": int(num_classes),
            "shortcut": shortcut,
            "va": bool(va),
            "stem_width": int(stem_width),
            "in_chans": int(in_chans),
            "tf_same_padding": bool(tf_same_padding),
            "stem_stride": int(stem_stride),
        }
        self.num_classes = int(num_classes)
        self.has_va = bool(va)
        self.shortcut_name = shortcut
        # stem_stride=2 halves the resolution before the first stage: not the paper's layout, a
        # cheaper option for CPU-sized experiments (the demo uses it).
        self.stem = nn.Conv2d(in_chans, stem_width, 3, stem_stride, padding=1)
        self._channels = stem_width
        self.stages = nn.Sequential(
            *[
                self._make_stage(units, width, stride=1 if i == 0 else 2, shortcut=shortcut,
                                 tf_same_padding=tf_same_padding)
                for i, (units, width) in enumerate(stages)
            ]
        )
        self.num_features = self._channels
        self.final_bn = nn.BatchNorm2d(self._channels)
        self.fc = nn.Linear(self._channels, num_classes) if num_classes > 0 else None
        self.va_head = nn.Linear(self._channels, 2) if va else None
        self._init_weights()

    def _make_stage(
        self, units: int, width: int, stride: int, shortcut: str, tf_same_padding: bool
    ) -> nn.Sequential:
        layers = []
        for i in range(units):
            layers.append(
                BregUnit(self._channels, width, stride if i == 0 else 1, shortcut, tf_same_padding)
            )
            self._channels = width
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    @property
    def units(self) -> list[BregUnit]:
        """All residual units in forward order."""
        return [u for stage in self.stages for u in stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (N, 3, H, W) -> activated feature map (N, C, H/4, W/4) (H/8 with stem_stride=2)."""
        x = self.stages(self.stem(x))
        return F.elu(self.final_bn(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False):
        """Pool the feature map and apply the heads (or return pooled features if ``pre_logits``)."""
        pooled = features.mean(dim=(2, 3))
        if pre_logits:
            return pooled
        if self.fc is not None and self.va_head is not None:
            return self.fc(pooled), torch.tanh(self.va_head(pooled))
        if self.fc is not None:
            return self.fc(pooled)
        return torch.tanh(self.va_head(pooled))

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))
