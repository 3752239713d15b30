"""The registry of named pretrained weights, in the style of torchvision's weight enums and timm's
pretrained tags: ``list_weights()``, ``get_weights(name)``, ``register_weights(entry)``.

An entry says everything needed to fetch, check, convert and use one set of weights: the network
and its arguments, where the files come from (repository, commit, paths, URLs), the byte size of
every file and its integrity data (SHA-256 where known; for a TensorFlow tensor bundle a manifest
of every tensor's byte range and CRC32C), the label names in output order, the preprocessing and
crop policy the network was trained with, provenance, licence, and the figures its source reports
(reported, not reproduced by bregnet). Entries never hold the weights themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import CheckpointError, UsageError
from ..preprocess import Preprocess

__all__ = [
    "SUPPORTED_FORMATS",
    "ReportedFigure",
    "SourceFile",
    "WeightsEntry",
    "WeightsError",
    "WeightsSource",
    "get_weights",
    "list_weights",
    "register_weights",
    "unregister_weights",
]

SUPPORTED_FORMATS = ("tensorflow-tensor-bundle-v2",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CHECKPOINT_SUFFIXES = (".safetensors", ".st", ".onnx", ".json", ".pt", ".index")
REPORTED_STATUS = "reported by the source, not reproduced by bregnet"


class WeightsError(CheckpointError):
    """Named weights that are unknown, not downloaded yet, or could not be fetched or verified."""


@dataclass(frozen=True)
class SourceFile:
    """One file of the published weights: local name, path in the source, size, SHA-256."""

    name: str  # file name in the cache and in a --from folder, e.g. "checkpoints.index"
    path: str  # path inside the source repository (joined to the base URL or a mirror)
    size: int  # expected bytes: a file of any other size is refused
    sha256: str | None = None  # None where the source publishes none (then the manifest checks it)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class WeightsSource:
    """Where the files are published: a repository pinned to one commit, and a base URL under
    which each file's ``path`` is found (a mirror replaces only the base URL)."""

    repository: str
    commit: str
    base_url: str
    files: tuple[SourceFile, ...]
    format: str = "tensorflow-tensor-bundle-v2"
    homepage: str = ""

    def url(self, f: SourceFile, mirror: str | None = None) -> str:
        """The download URL of ``f`` (under ``mirror`` instead of the base URL when given)."""
        base = mirror if mirror else self.base_url
        return base.rstrip("/") + "/" + f.path.lstrip("/")

    def file(self, name: str) -> SourceFile:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def prefix_name(self) -> str:
        """The tensor bundle's prefix (``checkpoints`` for ``checkpoints.index``)."""
        for f in self.files:
            if f.name.endswith(".index"):
                return f.name[: -len(".index")]
        raise WeightsError(f"source of {self.repository} has no .index file")

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], base_url: str, homepage: str = ""
                      ) -> "WeightsSource":
        """The source described by a tensor-bundle manifest (:mod:`bregnet.weights.manifest`)."""
        src = manifest["source"]
        files = tuple(SourceFile(name=f["name"], path=f["path"], size=int(f["size"]),
                                 sha256=f.get("sha256")) for f in manifest["files"])
        return cls(repository=src["repository"], commit=src["commit"], base_url=base_url,
                   files=files, format=manifest.get("bundle_format", "tensorflow-tensor-bundle-v2"),
                   homepage=homepage)

    def to_dict(self) -> dict[str, Any]:
        return {"repository": self.repository, "commit": self.commit, "homepage": self.homepage,
                "format": self.format, "base_url": self.base_url,
                "files": [dict(f.to_dict(), url=self.url(f)) for f in self.files]}


@dataclass(frozen=True)
class ReportedFigure:
    """A figure the source reports for these weights; bregnet has not reproduced it."""

    metric: str
    value: float
    dataset: str
    classes: int | None = None
    split: str = ""
    source: str = ""
    status: str = REPORTED_STATUS

    def describe(self) -> str:
        classes = f" ({self.classes} classes)" if self.classes else ""
        split = f", {self.split}" if self.split else ""
        return f"{self.metric} {self.value:.2f}% on {self.dataset}{classes}{split} [{self.status}]"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "dataset": self.dataset,
                "classes": self.classes, "split": self.split, "source": self.source,
                "status": self.status}


@dataclass(frozen=True)
class WeightsEntry:
    """One named set of pretrained weights (see the module docstring)."""

    name: str
    architecture: str
    arch_args: Mapping[str, Any]
    labels: tuple[str, ...]
    preprocess: Preprocess
    source: WeightsSource
    description: str = ""
    provenance: str = ""
    license: str = ""
    manifest: Mapping[str, Any] | None = None  # per-tensor byte ranges and CRC32C of a bundle
    reported: tuple[ReportedFigure, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.arch_args.get("num_classes", len(self.labels)))

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-tensor manifest, as plain JSON types (for ``info --json``)."""
        return {
            "name": self.name, "description": self.description,
            "architecture": self.architecture, "arch_args": dict(self.arch_args),
            "labels": list(self.labels), "preprocess": self.preprocess.to_dict(),
            "source": self.source.to_dict(),
            "integrity": integrity_summary(self),
            "provenance": self.provenance, "license": self.license,
            "reported": [r.to_dict() for r in self.reported],
            "metadata": dict(self.metadata),
        }


def integrity_summary(entry: WeightsEntry) -> str:
    """What a download of ``entry`` is checked against, in one line."""
    parts = [f"byte size of each of {len(entry.source.files)} files"]
    with_sha = [f.name for f in entry.source.files if f.sha256]
    if with_sha:
        parts.append(f"SHA-256 of {', '.join(with_sha)}")
    if entry.manifest:
        parts.append(f"CRC32C of each of {len(entry.manifest['tensors'])} tensors (byte ranges "
                     f"from the index)")
    return "; ".join(parts)


_REGISTRY: dict[str, WeightsEntry] = {}
_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from .official import builtin_entries

        for entry in builtin_entries():
            _REGISTRY.setdefault(entry.name, entry)


def _check_entry(entry: WeightsEntry) -> None:
    from ..models import list_models

    if not _NAME.match(entry.name) or entry.name.lower().endswith(_CHECKPOINT_SUFFIXES):
        raise UsageError(f"weights name {entry.name!r} is not valid: letters, digits, '.', '_' and "
                         f"'-' only, not ending like a file ({', '.join(_CHECKPOINT_SUFFIXES)})")
    if entry.architecture not in list_models():
        raise UsageError(f"weights {entry.name!r}: unknown architecture {entry.architecture!r}; "
                         f"available: {', '.join(list_models())}")
    if entry.source.format not in SUPPORTED_FORMATS:
        raise UsageError(f"weights {entry.name!r}: source format {entry.source.format!r} is not "
                         f"supported (supported: {', '.join(SUPPORTED_FORMATS)})")
    if entry.num_classes != len(entry.labels):
        raise UsageError(f"weights {entry.name!r}: {len(entry.labels)} label names for "
                         f"{entry.num_classes} classes")
    if not entry.source.files or any(f.size < 0 for f in entry.source.files):
        raise UsageError(f"weights {entry.name!r}: the source must list its files with their sizes")
    names = [f.name for f in entry.source.files]
    if len(set(names)) != len(names) or any("/" in n or "\\" in n or n in ("", ".", "..")
                                            for n in names):
        raise UsageError(f"weights {entry.name!r}: file names must be unique plain names, got {names}")
    entry.source.prefix_name  # noqa: B018  (raises when there is no .index file)
    if entry.manifest is not None:
        from .manifest import check_manifest

        check_manifest(entry.manifest, entry)


def register_weights(entry: WeightsEntry, overwrite: bool = False) -> WeightsEntry:
    """Add ``entry`` to the registry (``overwrite=True`` replaces an entry of the same name).

    Raises :class:`~bregnet.errors.UsageError` for an invalid entry or a name already taken.
    """
    _ensure_builtins()
    _check_entry(entry)
    if entry.name in _REGISTRY and not overwrite:
        raise UsageError(f"weights {entry.name!r} are already registered (pass overwrite=True)")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_weights(name: str) -> None:
    """Remove ``name`` from the registry (its cached files stay; see ``remove_weights``)."""
    _ensure_builtins()
    _REGISTRY.pop(name, None)


def list_weights() -> list[str]:
    """Names of the registered weights, sorted."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def find_weights(name: str) -> WeightsEntry | None:
    """The entry called ``name``, or None."""
    _ensure_builtins()
    return _REGISTRY.get(name)


def get_weights(name: str) -> WeightsEntry:
    """The entry called ``name``; an unknown name raises :class:`WeightsError` (one line)."""
    entry = find_weights(name)
    if entry is None:
        raise WeightsError(f"unknown weights name {name!r}; known: {', '.join(list_weights()) or 'none'} "
                           f"(see `bregnet weights list`)")
    return entry
