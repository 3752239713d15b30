"""Checkpoints: weights in safetensors, metadata as JSON inside the same file.

A checkpoint is one self-contained ``.safetensors`` file; its header's ``__metadata__`` holds the
key ``"bregnet"`` with a JSON document (model name and arguments, label names in output order,
preprocessing, data set, metrics, recipe, library version). A readable copy of that JSON is written
beside it (``<name>.json``) for people; loading reads only the safetensors file. Loading never
unpickles anything. Training state for resuming lives in ``<name>.state.pt`` and is read with
``torch.load(weights_only=True)``.

A checkpoint is untrusted input: the file must be a regular file, its JSON header no larger than
``BREGNET_MAX_METADATA_BYTES``, and the metadata is validated as a schema (types and ranges of
every field the library uses: labels, preprocessing, crop policy, model arguments) before
anything is built, so a tampered or broken file is one :class:`~bregnet.errors.CheckpointError`
line (or a :class:`~bregnet.errors.LimitError` for a network too large to build), never a
traceback or a huge allocation. Weights or buffers that are not finite (a diverged run's ``inf``
batch-norm variances) are refused the same way, unless asked for explicitly for inspection
(``load_checkpoint(..., allow_nonfinite=True)``). Metrics that do not apply are written as ``null``, never as the
bare ``NaN`` that is not JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from .._version import __version__
from ..errors import CheckpointError, LimitError, UsageError
from ..fileio import atomic_write, atomic_write_text, check_input_file, json_text
from ..limits import MAX_CLASSES, MAX_CROP_SIDE, MAX_METADATA_BYTES
from ..preprocess import COLORS, CropPolicy, Preprocess
from ..weights.cache import resolve_checkpoint

if TYPE_CHECKING:  # torch and the models load where they are used: reading metadata needs neither
    import torch

    from ..models import BregNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMeta",
    "load_checkpoint",
    "nonfinite_report",
    "read_metadata",
    "save_checkpoint",
    "validate_metadata",
]

CHECKPOINT_FORMAT = "bregnet-checkpoint/1"
_COLORS = COLORS


def _bad(where: str, what: str, value: Any) -> CheckpointError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:60] + "..."
    return CheckpointError(f"checkpoint metadata: {where} must be {what}, got {shown}")


def _number(value: Any, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(where, "a finite number", value)
    if positive and not value > 0:
        raise _bad(where, "a positive number", value)
    return float(value)


def _mapping(d: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = d.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(where, "a JSON object", value)
    return value


def _validate_preprocess(pre: Any) -> Preprocess:
    if pre is None:
        return Preprocess()
    if not isinstance(pre, dict):
        raise _bad("preprocess", "a JSON object", pre)
    kwargs: dict[str, Any] = {}
    if "input_size" in pre:
        size = pre["input_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise _bad("preprocess.input_size", "an integer of at least 8", size)
        try:
            MAX_CROP_SIDE.check(size, "checkpoint metadata: preprocess.input_size")
        except LimitError as exc:
            raise CheckpointError(str(exc)) from None
        kwargs["input_size"] = size
    if "color" in pre:
        if pre["color"] not in _COLORS:
            raise _bad("preprocess.color", " or ".join(_COLORS), pre["color"])
        kwargs["color"] = pre["color"]
    if "scale" in pre:
        kwargs["scale"] = _number(pre["scale"], "preprocess.scale", positive=True)
    for key in ("mean", "std"):
        if key in pre:
            v = pre[key]
            if not isinstance(v, list) or len(v) != 3:
                raise _bad(f"preprocess.{key}", "a list of 3 numbers", v)
            kwargs[key] = tuple(_number(x, f"preprocess.{key}", positive=key == "std") for x in v)
    crop = pre.get("crop")
    if crop is not None and not isinstance(crop, dict):
        raise _bad("preprocess.crop", "a JSON object", crop)
    try:
        kwargs["crop"] = CropPolicy.from_dict(crop)
    except UsageError as exc:
        raise CheckpointError(f"checkpoint metadata: preprocess.{exc}") from None
    return Preprocess(**kwargs)


def validate_metadata(doc: Any) -> dict[str, Any]:
    """Check a checkpoint's metadata document field by field (types and ranges of everything the
    library reads) and return the arguments of :class:`CheckpointMeta`; CheckpointError naming
    the field otherwise. The model's own arguments are checked when the model is built."""
    if not isinstance(doc, dict):
        raise CheckpointError(f"checkpoint metadata must be a JSON object, got {type(doc).__name__}")
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a bregnet checkpoint (format {doc.get('format')!r})")
    model = doc.get("model")
    if not isinstance(model, dict):
        raise _bad("model", "a JSON object with the model's name and arguments", model)
    name = model.get("name")
    if not isinstance(name, str) or not name:
        raise _bad("model.name", "a model name", name)
    args = _mapping(model, "args", "model.args")
    labels = doc.get("labels", [])
    if not isinstance(labels, list):
        raise _bad("labels", "a list of class names", labels)
    try:
        MAX_CLASSES.check(len(labels), "checkpoint metadata: labels")
    except LimitError as exc:
        raise CheckpointError(str(exc)) from None
    if not all(isinstance(x, str) for x in labels):
        raise _bad("labels", "a list of class names (strings)", labels)
    if len(set(labels)) != len(labels):
        raise _bad("labels", "unique class names", labels)
    k = args.get("num_classes")
    if isinstance(k, int) and not isinstance(k, bool) and k > 0 and k != len(labels):
        raise CheckpointError(f"checkpoint metadata: {len(labels)} label names for a model with {k} classes")
    va = doc.get("va", False)
    if not isinstance(va, bool):
        raise _bad("va", "true or false", va)
    return {
        "model_name": name,
        "model_args": dict(args),
        "labels": list(labels),
        "preprocess": _validate_preprocess(doc.get("preprocess")),
        "va": va,
        "dataset": dict(_mapping(doc, "dataset", "dataset")),
        "metrics": dict(_mapping(doc, "metrics", "metrics")),
        "recipe": dict(_mapping(doc, "recipe", "recipe")),
        "extra": dict(_mapping(doc, "extra", "extra")),
        "library_version": str(doc.get("library_version", "")),
        "created": str(doc.get("created", "")),
    }


def parse_metadata_json(raw: str, where: str) -> Any:
    """JSON text of checkpoint metadata. The non-JSON constants ``NaN`` / ``Infinity`` that older
    versions wrote for metrics are read (as floats: the schema refuses them where they matter)."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"corrupt metadata in {where}: {str(exc).splitlines()[0]}") from None


@dataclass
class CheckpointMeta:
    """Everything a user of the weights needs besides the tensors."""

    model_name: str
    model_args: dict[str, Any]
    labels: list[str]
    preprocess: Preprocess = field(default_factory=Preprocess)
    va: bool = False
    dataset: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    library_version: str = __version__
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "library_version": self.library_version,
            "created": self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"name": self.model_name, "args": self.model_args},
            "labels": list(self.labels),
            "va": bool(self.va),
            "preprocess": self.preprocess.to_dict(),
            "dataset": self.dataset,
            "metrics": self.metrics,
            "recipe": self.recipe,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckpointMeta":
        """Metadata from its JSON document, validated (:func:`validate_metadata`)."""
        return cls(**validate_metadata(d))

    @classmethod
    def for_model(cls, model: BregNet, labels: list[str], **kwargs: Any) -> "CheckpointMeta":
        """Metadata for ``model`` (its registry name and constructor arguments).

        The model must come from :func:`~bregnet.models.create_model` (or carry a registered
        ``model_name``): the saved name is the one that describes its layout, so that name and
        arguments rebuild exactly this network. A model without a registry name is a
        ``ValueError`` (a programming error, never guessed).
        """
        from ..models.registry import describing_name, list_models

        name = getattr(model, "model_name", None)
        if not name or name not in list_models():
            raise ValueError(f"model {type(model).__name__} has no registry name (model_name={name!r}); "
                             "build it with bregnet.models.create_model")
        name = describing_name(name, model)
        if model.num_classes and len(labels) != model.num_classes:
            raise ValueError(f"{len(labels)} label names for a model with {model.num_classes} classes")
        return cls(model_name=name, model_args=dict(model.config), labels=list(labels),
                   va=model.has_va, **kwargs)


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, meta: CheckpointMeta,
                    write_json: bool = True) -> Path:
    """Write ``model``'s weights and ``meta`` atomically to ``path`` (a ``.safetensors`` file)."""
    from safetensors.torch import save_file

    path = Path(path)
    module = getattr(model, "module", model)  # unwrap DDP / compiled wrappers
    module = getattr(module, "_orig_mod", module)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    doc = meta.to_dict()
    text = json_text(doc, indent=None, sort_keys=True)  # strict JSON: NaN metrics become null
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"bregnet": text}))
    if write_json:
        atomic_write_text(path.with_suffix(".json"), json_text(doc, indent=2, sort_keys=True))
    return path


def _resolve(path: str | os.PathLike) -> Path:
    """The checkpoint file for ``path`` (a file, or a run folder holding one), checked to be a
    readable regular file: a device, a FIFO or an unreadable file is named as such."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "model.safetensors", "last.safetensors"):
            if (p / name).is_file():
                return check_input_file(p / name, "checkpoint", error=CheckpointError)
        raise CheckpointError(f"no checkpoint (best/model/last.safetensors) in directory {p}")
    return check_input_file(p, "checkpoint", error=CheckpointError)


def _check_header(p: Path) -> None:
    """A safetensors file starts with the 8-byte length of its JSON header: refuse one that is
    larger than the metadata limit or than the file, before anything reads it."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"{p}: not a safetensors checkpoint (file of {size} bytes)")
    n = int.from_bytes(head, "little")
    if n > size - 8:
        raise CheckpointError(f"{p}: not a safetensors checkpoint, or truncated (header of {n:,} "
                              f"bytes in a file of {size:,})")
    MAX_METADATA_BYTES.check(n, f"{p}: checkpoint header")


def read_metadata(path: str | os.PathLike) -> CheckpointMeta:
    """Read only the metadata of a checkpoint (fast: the header, not the tensors), validated.
    ``path`` may also be a downloaded weights name (``bregnet weights list``)."""
    p = _resolve(resolve_checkpoint(path))
    _check_header(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("bregnet")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from None
    if raw is None:
        raise CheckpointError(f"{p} is a safetensors file without bregnet metadata")
    try:
        return CheckpointMeta.from_dict(parse_metadata_json(raw, str(p)))
    except CheckpointError as exc:
        text = str(exc)
        raise CheckpointError(text if str(p) in text else f"{p}: {text}") from None


def build_model(meta: CheckpointMeta, where: str = "checkpoint") -> BregNet:
    """The network the metadata describes (not yet loaded with weights): CheckpointError for
    arguments that do not build, LimitError for a network over the size limits."""
    from ..models import create_model

    try:
        return create_model(meta.model_name, **meta.model_args)
    except UsageError as exc:
        raise CheckpointError(f"{where} describes an unbuildable model: {exc}") from None
    except LimitError as exc:
        raise LimitError(f"{where}: {exc}") from None


def nonfinite_report(tensors: dict[str, torch.Tensor] | torch.nn.Module) -> str | None:
    """None when every floating-point tensor (weights and buffers such as batch-norm running
    statistics) is finite; else a short description of what is not, e.g. ``inf in 8 values of
    final_bn.running_var (and 3 more tensors)``."""
    import torch

    if isinstance(tensors, torch.nn.Module):
        tensors = tensors.state_dict()
    bad: list[tuple[str, torch.Tensor]] = []
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append((name, t))
    if not bad:
        return None
    name, t = bad[0]
    t = t.detach()
    n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    kinds = " and ".join(f"{k} in {n} value{'s' if n != 1 else ''}" for k, n in (("NaN", n_nan), ("inf", n_inf)) if n)
    more = f" (and {len(bad) - 1} more tensor{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
    return f"{kinds} of {name}{more}"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    allow_nonfinite: bool = False) -> tuple[BregNet, CheckpointMeta]:
    """Rebuild the network from a checkpoint's metadata and load its weights (eval mode). ``path``
    may also be a downloaded weights name (``bregnet weights list``).

    Weights or buffers that are NaN or infinite are a CheckpointError (the model would answer
    NaN for every input); ``allow_nonfinite=True`` loads them anyway, for inspection only."""
    from safetensors.torch import load_file

    p = _resolve(resolve_checkpoint(path))
    meta = read_metadata(p)
    model = build_model(meta, f"checkpoint {p}")
    try:
        state = load_file(str(p), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read weights from {p}: {exc}") from None
    if not allow_nonfinite:
        bad = nonfinite_report(state)
        if bad is not None:
            raise CheckpointError(f"{p} holds non-finite weights ({bad}): the model would answer NaN; "
                                  "it comes from a diverged run or a damaged file")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"weights in {p} do not fit {meta.model_name}: "
                              f"{' '.join(first[1:3]) if len(first) > 1 else first[0]}") from None
    model.to(map_location).eval()
    return model, meta
