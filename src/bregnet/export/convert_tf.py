"""Convert the official BReG-NeXt-50 TensorFlow (tflearn) checkpoint into a bregnet checkpoint.

The authors' code (repository behzadhsni/BReG-NeXt, ``codes/BReG-NeXt.py``) builds the network with
tflearn, which names its variables by layer type and call order::

    Conv2D/{W,b}                                      stem conv (W in HWIO)
    ResidualBlock{,_1,...,_4}/Conv2D_{2i,2i+1}/{W,b}  the two convs of unit i of that block
    ResidualBlock*/BatchNormalization_{2i,2i+1}/{beta,gamma,moving_mean,moving_variance}
    ResidualBlock*/shortcut_mod_{i}/{a,c}             the adaptive shortcut's scalars
    BatchNormalization/*                              the final BN
    FullyConnected/{W,b}                              the classifier (W is (in, out))

(a ``_0`` suffix is written without the suffix). The five ``residual_block`` calls are 7@32,
1@64 stride 2, 8@64, 1@128 stride 2, 7@128, i.e. bregnext50's three stages with each strided unit
in its own block. Adam slots (``.../Adam``, ``.../Adam_1``) and bookkeeping (``beta1_power``,
``optimizer/Variable``, ``is_training``, ...) are skipped.

Numerics: TF's 'SAME' padding of the strided 3x3 convs pads 0 before / 1 after, reproduced by
``tf_same_padding=True``; tflearn's batch norm uses epsilon 1e-5 (PyTorch's default) and, at
inference, the stored moving statistics, which are copied unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..engine.checkpoint import CheckpointMeta, save_checkpoint
from ..fileio import check_output_file
from ..models import BregNet, create_model
from ..preprocess import Preprocess
from .tf_bundle import TensorBundle, TFBundleError

__all__ = [
    "AFFECTNET_LABELS",
    "OFFICIAL_SOURCE",
    "TFLEARN_BN_EPSILON",
    "ConversionReport",
    "convert_tf_checkpoint",
    "is_skipped_variable",
    "load_tf_bundle_into_model",
    "official_variable_map",
]

AFFECTNET_LABELS = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
TFLEARN_BN_EPSILON = 1e-5  # tflearn.batch_normalization's default, equal to PyTorch's
OFFICIAL_SOURCE = {
    "repository": "behzadhsni/BReG-NeXt",
    "path": "codes/Snapshots/categorical_attempt_1/checkpoints",
    "files": ["checkpoints.index", "checkpoints.data-00000-of-00001"],
    "framework": "TensorFlow 1.x + tflearn",
    "dataset": "AffectNet (8 categories)",
}
MODEL_NAME = "bregnext50"

# Optimiser slots and training bookkeeping: never model weights.
_SKIP = [re.compile(p) for p in (
    r"/(Adam|Momentum|RMSProp|Adagrad|Adadelta|Ftrl|Nadam|AdamW)(_\d+)?$",
    r"(^|/)(beta1_power|beta2_power)(_\d+)?$",
    r"(^|/)(global_step|Global_Step|Training_step|is_training)$",
    r"(^|/)Variable(_\d+)?$",
    r"ExponentialMovingAverage",
)]

# (tf suffix, torch suffix, layout) for the tensors of one layer kind.
_CONV = (("W", "weight", "conv"), ("b", "bias", "copy"))
_BN = (("gamma", "weight", "copy"), ("beta", "bias", "copy"),
       ("moving_mean", "running_mean", "copy"), ("moving_variance", "running_var", "copy"))
_FC = (("W", "weight", "fc"), ("b", "bias", "copy"))


def is_skipped_variable(name: str) -> bool:
    """True for optimiser slots and bookkeeping variables (nothing the network computes with)."""
    return any(p.search(name) for p in _SKIP)


def _sfx(i: int) -> str:
    return "" if i == 0 else f"_{i}"


def official_variable_map(model: BregNet) -> dict[str, tuple[str, str]]:
    """``{tf variable name: (torch state-dict key, layout)}`` for the official tflearn layout.

    ``layout`` is ``conv`` (HWIO -> OIHW), ``fc`` ((in, out) -> (out, in)) or ``copy``. Works for
    any BregNet with the adaptive shortcut whose strided units each sit in their own block, as the
    official script builds them.
    """
    mapping: dict[str, tuple[str, str]] = {}

    def add(tf_scope: str, torch_prefix: str, kinds) -> None:
        for tf_sfx, torch_sfx, layout in kinds:
            mapping[f"{tf_scope}/{tf_sfx}"] = (f"{torch_prefix}.{torch_sfx}", layout)

    add("Conv2D", "stem", _CONV)
    # tflearn blocks: every stage after the first begins with a separate 1-unit (strided) block.
    blocks: list[list[tuple[int, int]]] = []
    for s, stage in enumerate(model.stages):
        units = list(range(len(stage)))
        if s > 0 and units:
            blocks.append([(s, 0)])
            units = units[1:]
        if units:
            blocks.append([(s, u) for u in units])
    for b, block in enumerate(blocks):
        scope = f"ResidualBlock{_sfx(b)}"
        for i, (s, u) in enumerate(block):
            prefix = f"stages.{s}.{u}"
            add(f"{scope}/BatchNormalization{_sfx(2 * i)}", f"{prefix}.bn1", _BN)
            add(f"{scope}/Conv2D{_sfx(2 * i)}", f"{prefix}.conv1", _CONV)
            add(f"{scope}/BatchNormalization{_sfx(2 * i + 1)}", f"{prefix}.bn2", _BN)
            add(f"{scope}/Conv2D{_sfx(2 * i + 1)}", f"{prefix}.conv2", _CONV)
            mapping[f"{scope}/shortcut_mod{_sfx(i)}/a"] = (f"{prefix}.shortcut.a", "copy")
            mapping[f"{scope}/shortcut_mod{_sfx(i)}/c"] = (f"{prefix}.shortcut.c", "copy")
    add("BatchNormalization", "final_bn", _BN)
    if model.fc is not None:
        add("FullyConnected", "fc", _FC)
    return mapping


def _to_torch_shape(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    shape = tuple(shape)
    if layout == "conv" and len(shape) == 4:
        h, w, i, o = shape
        return (o, i, h, w)
    if layout == "fc" and len(shape) == 2:
        return (shape[1], shape[0])
    return shape


def _to_tf_shape(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    shape = tuple(shape)
    if layout == "conv" and len(shape) == 4:
        o, i, h, w = shape
        return (h, w, i, o)
    if layout == "fc" and len(shape) == 2:
        return (shape[1], shape[0])
    return shape


def _to_torch(array: np.ndarray, layout: str) -> torch.Tensor:
    if layout == "conv":
        array = array.transpose(3, 2, 0, 1)
    elif layout == "fc":
        array = array.T
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@dataclass
class ConversionReport:
    """What the conversion did, for the CLI and for the checkpoint metadata."""

    prefix: str
    mapped: int = 0
    skipped: list[str] = field(default_factory=list)
    num_classes: int = 0
    shortcut_a: list[float] = field(default_factory=list)
    shortcut_c: list[float] = field(default_factory=list)
    output: str = ""

    def summary(self) -> str:
        a, c = self.shortcut_a, self.shortcut_c
        lines = [f"converted {self.mapped} variables of {self.prefix} "
                 f"({len(self.skipped)} optimiser/bookkeeping variables skipped)",
                 f"model {MODEL_NAME}, {self.num_classes} classes"]
        if a:
            lines.append(f"adaptive shortcuts: a in [{min(a):.4g}, {max(a):.4g}], "
                         f"c in [{min(c):.4g}, {max(c):.4g}]")
        if self.output:
            lines.append(f"wrote {self.output}")
        return "\n".join(lines)


def _short_list(names: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(repr(x) for x in list(names)[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _num_classes(bundle: TensorBundle) -> int:
    entry = bundle.entries.get("FullyConnected/W")
    if entry is None or len(entry.shape) != 2:
        raise TFBundleError(
            f"{bundle.index_path} is not the official BReG-NeXt checkpoint: no 2-D "
            f"'FullyConnected/W' variable (found e.g. {_short_list(bundle.names())})")
    return int(entry.shape[1])


def load_tf_bundle_into_model(bundle: TensorBundle | str | os.PathLike, model: BregNet | None = None,
                              verify: bool = True) -> tuple[BregNet, ConversionReport]:
    """Read the official checkpoint into ``model`` (default: a fresh TF-padded ``bregnext50``
    with as many classes as the checkpoint's classifier). Checks names, shapes and checksums."""
    if not isinstance(bundle, TensorBundle):
        bundle = TensorBundle(bundle)
    src = str(bundle.prefix)
    if model is None:
        model = create_model(MODEL_NAME, num_classes=_num_classes(bundle), tf_same_padding=True)
        model.model_name = MODEL_NAME
    mapping = official_variable_map(model)
    state = model.state_dict()
    needed = {key for key in state if not key.endswith("num_batches_tracked")}
    covered = {key for key, _ in mapping.values()}
    if needed - covered:  # a network the official layout cannot describe (e.g. a va head)
        raise TFBundleError(f"the official TF layout has no variables for {_short_list(sorted(needed - covered))}")

    report = ConversionReport(prefix=src, num_classes=model.num_classes)
    present = [n for n in bundle.names() if not is_skipped_variable(n)]
    report.skipped = [n for n in bundle.names() if is_skipped_variable(n)]
    missing = [n for n in mapping if n not in bundle.entries]
    unknown = [n for n in present if n not in mapping]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} expected variables missing ({_short_list(missing)})")
        if unknown:
            parts.append(f"{len(unknown)} variables that do not map ({_short_list(unknown)})")
        raise TFBundleError(f"{bundle.index_path} is not a BReG-NeXt-50 checkpoint in the official "
                            f"tflearn layout: {'; '.join(parts)}")
    for tf_name, (key, layout) in mapping.items():
        entry = bundle.entries[tf_name]
        want = tuple(state[key].shape)
        got = _to_torch_shape(entry.shape, layout)
        if got != want:
            raise TFBundleError(f"shape mismatch: TF variable {tf_name!r} has shape {list(entry.shape)} "
                                f"but {MODEL_NAME}'s {key} needs {list(_to_tf_shape(want, layout))}")
        if entry.dtype != "float32":
            raise TFBundleError(f"TF variable {tf_name!r} is {entry.dtype}, expected float32")
    bundle.require_shards(list(mapping))

    new_state = {}
    for tf_name, (key, layout) in mapping.items():
        new_state[key] = _to_torch(bundle.read(tf_name, verify=verify), layout)
    model.load_state_dict(new_state, strict=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = TFLEARN_BN_EPSILON
    model.eval()
    report.mapped = len(mapping)
    for unit in model.units:
        if hasattr(unit.shortcut, "a"):
            report.shortcut_a.append(float(unit.shortcut.a.detach()))
            report.shortcut_c.append(float(unit.shortcut.c.detach()))
    return model, report


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _output_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix == ".safetensors":
        return out
    if out.exists() and not out.is_dir():
        raise TFBundleError(f"--out {out} exists and is not a directory or a .safetensors file")
    return out / "model.safetensors"


def convert_tf_checkpoint(prefix: str | os.PathLike, out: str | os.PathLike,
                          labels: Sequence[str] | None = None, verify: bool = True,
                          preprocess: Preprocess | None = None,
                          source_facts: Mapping[str, Any] | None = None,
                          extra: Mapping[str, Any] | None = None,
                          ) -> tuple[Path, ConversionReport]:
    """Convert the official TF checkpoint at ``prefix`` and save it as a bregnet checkpoint.

    ``prefix`` may be the prefix, its ``.index`` file, its data shard or their directory. ``out``
    is a ``.safetensors`` path or a directory (which gets ``model.safetensors``). ``labels``
    defaults to AffectNet's 8 categories in the official order. ``preprocess`` (default: the
    official preprocessing) is stored as the checkpoint's; ``source_facts`` updates the recorded
    ``converted_from`` facts (commit, URLs, ...) and ``extra`` adds metadata keys (both used by
    ``bregnet weights download``). The output path is checked before the conversion starts.
    Returns the written path.
    """
    path = check_output_file(_output_path(out), what="checkpoint")
    bundle = TensorBundle(prefix)
    model, report = load_tf_bundle_into_model(bundle, verify=verify)
    if labels is None:
        if model.num_classes != len(AFFECTNET_LABELS):
            raise TFBundleError(f"the checkpoint has {model.num_classes} classes, not AffectNet's 8: "
                                f"give the label names (--labels)")
        labels = AFFECTNET_LABELS
    labels = [str(x) for x in labels]
    if len(labels) != model.num_classes:
        raise TFBundleError(f"{len(labels)} label names for a checkpoint with {model.num_classes} classes")
    data_files = [bundle.shard_path(i) for i in range(bundle.header.num_shards)]
    source = dict(OFFICIAL_SOURCE)
    source.update({
        "format": "tensorflow-tensor-bundle-v2",
        "prefix_name": bundle.prefix.name,
        "index_sha256": _sha256(bundle.index_path),
        "data_sha256": {p.name: _sha256(p) for p in data_files if p.is_file()},
        "variables_mapped": report.mapped,
        "variables_skipped": len(report.skipped),
        "checksums_verified": bool(verify),
    })
    source.update(source_facts or {})
    meta = CheckpointMeta.for_model(
        model, labels,
        preprocess=preprocess or Preprocess(),
        dataset={"name": "AffectNet", "task": "categorical", "labels": "AffectNet 8 categories"},
        recipe={"name": "official", "note": "trained by the BReG-NeXt authors (TensorFlow/tflearn)"},
        extra={"converted_from": source, "bn_epsilon": TFLEARN_BN_EPSILON,
               "tf_same_padding": True, **(extra or {})},
    )
    save_checkpoint(path, model, meta)
    report.output = str(path)
    return path, report
