"""Checkpoints: weights in safetensors, metadata as JSON inside the same file.

A checkpoint is one self-contained ``.safetensors`` file; its header's ``__metadata__`` holds the
key ``"bregnet"`` with a JSON document (model name and arguments, label names in output order,
preprocessing, data set, metrics, recipe, library version). A readable copy of that JSON is written
beside it (``<name>.json``) for people; loading reads only the safetensors file. Loading never
unpickles anything. Training state for resuming lives in ``<name>.state.pt`` and is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .._version import __version__
from ..errors import CheckpointError
from ..fileio import atomic_write
from ..models import BregNet, create_model
from ..preprocess import Preprocess
from ..weights.cache import resolve_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMeta",
    "atomic_write",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "bregnet-checkpoint/1"


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
        if d.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"not a bregnet checkpoint (format {d.get('format')!r})")
        try:
            return cls(
                model_name=d["model"]["name"],
                model_args=dict(d["model"].get("args", {})),
                labels=list(d.get("labels", [])),
                preprocess=Preprocess.from_dict(d.get("preprocess")),
                va=bool(d.get("va", False)),
                dataset=dict(d.get("dataset", {})),
                metrics=dict(d.get("metrics", {})),
                recipe=dict(d.get("recipe", {})),
                extra=dict(d.get("extra", {})),
                library_version=str(d.get("library_version", "")),
                created=str(d.get("created", "")),
            )
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint metadata is incomplete: missing {exc}") from None

    @classmethod
    def for_model(cls, model: BregNet, labels: list[str], **kwargs: Any) -> "CheckpointMeta":
        """Metadata for ``model`` (its registry name and constructor arguments)."""
        name = getattr(model, "model_name", "bregnext50")
        if model.num_classes and len(labels) != model.num_classes:
            raise ValueError(f"{len(labels)} label names for a model with {model.num_classes} classes")
        return cls(model_name=name, model_args=dict(model.config), labels=list(labels),
                   va=model.has_va, **kwargs)


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, meta: CheckpointMeta,
                    write_json: bool = True) -> Path:
    """Write ``model``'s weights and ``meta`` atomically to ``path`` (a ``.safetensors`` file)."""
    path = Path(path)
    module = getattr(model, "module", model)  # unwrap DDP / compiled wrappers
    module = getattr(module, "_orig_mod", module)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    doc = meta.to_dict()
    text = json.dumps(doc, sort_keys=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"bregnet": text}))
    if write_json:
        atomic_write(path.with_suffix(".json"),
                     lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2, sort_keys=True)))
    return path


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "model.safetensors", "last.safetensors"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"no checkpoint (best/model/last.safetensors) in directory {p}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


def read_metadata(path: str | os.PathLike) -> CheckpointMeta:
    """Read only the metadata of a checkpoint (fast: the header, not the tensors). ``path`` may
    also be a downloaded weights name (``bregnet weights list``)."""
    p = _resolve(resolve_checkpoint(path))
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("bregnet")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from None
    if raw is None:
        raise CheckpointError(f"{p} is a safetensors file without bregnet metadata")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"corrupt metadata in {p}: {exc}") from None
    return CheckpointMeta.from_dict(doc)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[BregNet, CheckpointMeta]:
    """Rebuild the network from a checkpoint's metadata and load its weights (eval mode). ``path``
    may also be a downloaded weights name (``bregnet weights list``)."""
    p = _resolve(resolve_checkpoint(path))
    meta = read_metadata(p)
    try:
        model = create_model(meta.model_name, **meta.model_args)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {p} describes an unbuildable model: {exc}") from None
    try:
        state = load_file(str(p), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights from {p}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"weights in {p} do not fit {meta.model_name}: "
                              f"{' '.join(first[1:3]) if len(first) > 1 else first[0]}") from None
    model.to(map_location).eval()
    return model, meta
