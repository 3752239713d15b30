"""Integrity manifests of TensorFlow tensor bundles, and the check of downloaded files against them.

A manifest is a compact JSON document derived from a bundle's ``.index`` file alone: the source
(repository, commit, prefix path), each file with its expected size (the index's own size and
SHA-256; each data shard's size, the end of its last tensor), the bundle header, and one row per
tensor ``[name, dtype, shape, shard, offset, size, crc32c]`` (``crc32c``: the plain CRC32C of the
tensor's bytes, unmasked). Checking every tensor's CRC32C checks every byte of a data shard whose
tensors are stored back to back, as TensorFlow writes them, so a data file whose SHA-256 nobody
published is still verified completely, before anything is converted.

The package ships the manifest of the authors' checkpoint (``manifests/*.json``), never the index.
Regenerate it with ``python tools/make_weights_manifest.py INDEX`` (see that script) or
:func:`manifest_from_index`.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import UsageError
from ..export.tf_bundle import TFBundleError, crc32c, read_index, shard_path, unmask_crc32c
from .registry import WeightsError

if TYPE_CHECKING:
    from .registry import WeightsEntry

__all__ = [
    "MANIFEST_FORMAT",
    "TENSOR_COLUMNS",
    "check_manifest",
    "dump_manifest",
    "load_builtin_manifest",
    "manifest_from_index",
    "verify_source_files",
]

MANIFEST_FORMAT = "bregnet-weights-manifest/1"
BUNDLE_FORMAT = "tensorflow-tensor-bundle-v2"
TENSOR_COLUMNS = ["name", "dtype", "shape", "shard", "offset", "size", "crc32c"]


def _sha256(path: Path) -> str:
    from ..export.convert_tf import _sha256 as sha256_file  # the package's one file hasher

    return sha256_file(path)


def manifest_from_index(index_path: str | os.PathLike, repository: str, commit: str,
                        prefix_path: str) -> dict[str, Any]:
    """The manifest of the bundle whose index is ``index_path``, published in ``repository`` at
    ``commit`` under ``prefix_path`` (e.g. ``codes/Snapshots/categorical_attempt_1/checkpoints``;
    the local file names come from it, not from ``index_path``'s name)."""
    index_path = Path(index_path)
    header, entries = read_index(index_path)
    prefix_name = prefix_path.rstrip("/").rsplit("/", 1)[-1]
    ends = [0] * max(header.num_shards, 1)
    tensors = []
    for name in sorted(entries):
        e = entries[name]
        if not 0 <= e.shard_id < len(ends):
            raise TFBundleError(f"{index_path}: tensor {name!r} is in shard {e.shard_id} of "
                                f"{header.num_shards}")
        ends[e.shard_id] = max(ends[e.shard_id], e.offset + e.size)
        crc = None if e.crc32c is None else unmask_crc32c(e.crc32c)
        tensors.append([name, e.dtype, list(e.shape), e.shard_id, e.offset, e.size, crc])
    files = [{"name": f"{prefix_name}.index", "path": f"{prefix_path}.index",
              "size": index_path.stat().st_size, "sha256": _sha256(index_path)}]
    folder = prefix_path.rsplit("/", 1)[0] + "/" if "/" in prefix_path else ""
    for i, end in enumerate(ends):
        shard = shard_path(prefix_name, i, header.num_shards).name
        files.append({"name": shard, "path": folder + shard, "size": end, "sha256": None})
    return {
        "format": MANIFEST_FORMAT,
        "bundle_format": BUNDLE_FORMAT,
        "source": {"repository": repository, "commit": commit, "prefix": prefix_path},
        "files": files,
        "header": {"num_shards": header.num_shards, "endianness": header.endianness,
                   "version": header.version},
        "tensor_columns": list(TENSOR_COLUMNS),
        "tensors": tensors,
    }


def dump_manifest(manifest: Mapping[str, Any]) -> str:
    """Stable text of a manifest: one key per line, one tensor per line (small diffs)."""
    lines = []
    for key, value in manifest.items():
        if key == "tensors":
            continue
        lines.append(f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}")
    rows = ",\n    ".join(json.dumps(row) for row in manifest["tensors"])
    lines.append(f'  "tensors": [\n    {rows}\n  ]')
    text = "{\n" + ",\n".join(lines) + "\n}\n"
    assert json.loads(text) == json.loads(json.dumps(manifest)), "manifest text does not round-trip"
    return text


def load_builtin_manifest(filename: str) -> dict[str, Any]:
    """A manifest shipped in the package (``bregnet/weights/manifests/FILENAME``)."""
    text = (resources.files("bregnet.weights") / "manifests" / filename).read_text(encoding="utf-8")
    return json.loads(text)


def check_manifest(manifest: Mapping[str, Any], entry: "WeightsEntry | None" = None) -> None:
    """Refuse (:class:`UsageError`) a malformed manifest, or one whose files disagree with
    ``entry``'s source files."""
    where = f"weights {entry.name!r}: manifest" if entry is not None else "manifest"
    if not isinstance(manifest, Mapping) or manifest.get("format") != MANIFEST_FORMAT:
        raise UsageError(f"{where} is not a {MANIFEST_FORMAT} document")
    try:
        files = {f["name"]: (int(f["size"]), f.get("sha256")) for f in manifest["files"]}
        sizes = {name: size for name, (size, _) in files.items()}
        prefix = str(manifest["source"]["prefix"]).rsplit("/", 1)[-1]
        num_shards = int(manifest["header"]["num_shards"])
        for row in manifest["tensors"]:
            name, dtype, shape, shard, offset, size, crc = row
            data = shard_path(prefix, int(shard), num_shards).name
            if not (isinstance(name, str) and isinstance(dtype, str) and isinstance(shape, list)
                    and int(offset) >= 0 and int(size) >= 0 and (crc is None or int(crc) >= 0)):
                raise ValueError(f"bad row for {name!r}")
            if data not in sizes or int(offset) + int(size) > sizes[data]:
                raise ValueError(f"tensor {name!r} lies outside {data}")
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{where} is malformed: {exc}") from None
    if entry is not None:
        mine = {f.name: (f.size, f.sha256) for f in entry.source.files}
        if mine != files:
            raise UsageError(f"{where} lists files {files}, the entry {mine}")


def _tensor_rows(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(TENSOR_COLUMNS, row)) for row in manifest["tensors"]]


def _check_index(entry: "WeightsEntry", index: Path) -> None:
    """The index's entries must be exactly the manifest's rows (names, layout, checksums)."""
    assert entry.manifest is not None
    try:
        _header, entries = read_index(index)
    except TFBundleError as exc:
        raise WeightsError(f"{index} is not the published index: {exc}") from None
    want = {r["name"]: r for r in _tensor_rows(entry.manifest)}
    if sorted(entries) != sorted(want):
        raise WeightsError(f"{index} lists other tensors than the published index of {entry.name}")
    for name, e in entries.items():
        r = want[name]
        got = [e.dtype, list(e.shape), e.shard_id, e.offset, e.size,
               None if e.crc32c is None else unmask_crc32c(e.crc32c)]
        if got != [r["dtype"], list(r["shape"]), r["shard"], r["offset"], r["size"], r["crc32c"]]:
            raise WeightsError(f"{index}: tensor {name!r} differs from the published index of "
                               f"{entry.name}")


def _check_shard(entry: "WeightsEntry", shard_id: int, path: Path,
                 progress: Callable[[int], None] | None) -> None:
    assert entry.manifest is not None
    rows = sorted((r for r in _tensor_rows(entry.manifest) if r["shard"] == shard_id),
                  key=lambda r: r["offset"])
    with open(path, "rb") as f:
        for r in rows:
            if r["crc32c"] is None:
                continue
            f.seek(r["offset"])
            raw = f.read(r["size"])
            if len(raw) != r["size"] or crc32c(raw) != r["crc32c"]:
                raise WeightsError(
                    f"checksum mismatch in {path}: tensor {r['name']!r} (bytes {r['offset']:,}.."
                    f"{r['offset'] + r['size']:,}) is not what the published checkpoint of "
                    f"{entry.name} holds: the file is corrupt or not the published one")
            if progress is not None:
                progress(r["size"])


def verify_source_files(entry: "WeightsEntry", paths: Mapping[str, Path],
                        progress: Callable[[int], None] | None = None) -> dict[str, str]:
    """Check the files of ``entry`` (``{file name: path}``) before anything uses them: every
    size, every published SHA-256, and, with a manifest, the index's entries and every tensor's
    CRC32C. Returns ``{file name: SHA-256 as fetched}``; raises :class:`WeightsError` (one line)."""
    for f in entry.source.files:
        size = paths[f.name].stat().st_size
        if size != f.size:
            raise WeightsError(f"{paths[f.name]} is {size:,} bytes, but the published {f.name} of "
                               f"{entry.name} is {f.size:,} bytes: a truncated or different file")
    shas = {f.name: _sha256(paths[f.name]) for f in entry.source.files}
    for f in entry.source.files:
        if f.sha256 and shas[f.name] != f.sha256.lower():
            raise WeightsError(f"SHA-256 mismatch for {paths[f.name]}: {shas[f.name][:16]}..., the "
                               f"published {f.name} has {f.sha256[:16]}...: a corrupt or different file")
    if entry.manifest is not None:
        prefix = entry.source.prefix_name
        _check_index(entry, paths[f"{prefix}.index"])
        num_shards = int(entry.manifest["header"]["num_shards"])
        for i in range(num_shards):
            name = shard_path(prefix, i, num_shards).name
            _check_shard(entry, i, paths[name], progress)
    return shas
