"""The prepared cache: any data set converted once into memory-mappable uint8 arrays.

Layout of ``OUT/<split>/`` after :func:`prepare_cache` (``bregnet prepare``)::

    images.u8         N x S x S x 3 uint8, raw (row-major, RGB), memory-mapped by open_cache
    labels.npy        (N,) int64 class index, -1 where absent
    va.npy            (N, 2) float32 valence, arousal; NaN where absent
    soft_labels.npy   (N, K) float32 label distributions, only for data sets that have them
    meta.json         data set, split, classes, counts, crop policy, what it was made from
    skipped.txt       one line per unusable source item: index <TAB> source <TAB> reason

Preparation is **resumable**: items are written at fixed positions of a full-size
``images.partial`` (plus ``labels.partial`` / ``va.partial``), unusable ones are appended to
``skipped.partial``, and every ``checkpoint_every`` items the arrays are flushed and
``progress.json`` (done count, length of the skip list, a signature of the source) is replaced
atomically. After an interruption (Ctrl-C, a kill, a crash) the same call continues from the last
checkpoint and produces exactly what an uninterrupted run produces. Skipped items are compacted away
at the end; ``meta.json`` is written last and marks a complete cache. An unreadable or missing image
is never fatal: it is counted, listed with its reason and left out.

**What a cache was made from** is its ``signature`` in ``meta.json``: the cache format version,
data set, split, the reader's output version, the data set's location, the reader options (with
their defaults filled in), the crop policy the reader applied (``crop``, also at the top level of
``meta.json``: the trainer stores it in the checkpoint), the image size and the number of source
items. :func:`signature_mismatch` is the one comparison: ``prepare`` keeps a matching split ("up to
date") and refuses another one without ``--overwrite``; ``train`` and ``evaluate`` refuse a cache
that does not match what they were asked for (:func:`verify_cache`), naming the difference. A
cache of an older format (version 1 recorded no crop policy) is refused with the command that
rebuilds it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._version import __version__
from ..csvsafe import spreadsheet_safe
from ..errors import BregnetError, DataError, UsageError
from ..fileio import (atomic_output, atomic_write, atomic_write_bytes, atomic_write_text,
                      check_input_file, check_output_dir, json_ready, remove_stale_temps, write_json)
from ..limits import MAX_METADATA_BYTES
from .base import ArrayDataset
from .image_io import resize_image
from .readers.base import FaceReader

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "PrepareReport",
    "SplitReport",
    "cache_splits",
    "expected_signature",
    "open_cache",
    "prepare_cache",
    "signature_mismatch",
    "verify_cache",
]

CACHE_FORMAT = "bregnet-cache"
#: 2: the signature records the crop policy and the reader's version (1 recorded neither)
CACHE_VERSION = 2
_FINAL = ("images.u8", "labels.npy", "va.npy", "soft_labels.npy", "meta.json", "skipped.txt")
_PARTIAL = ("images.partial", "labels.partial", "va.partial", "skipped.partial",
            "progress.json")


@dataclass
class SplitReport:
    """What happened to one split: ``status`` is "prepared", "resumed" or "up to date"."""

    split: str
    path: str
    total: int
    written: int
    skipped: int
    resumed_from: int = 0
    seconds: float = 0.0
    status: str = "prepared"

    def line(self, dataset: str = "") -> str:
        name = f"{dataset}/{self.split}" if dataset else self.split
        extra = f", resumed at {self.resumed_from}" if self.status == "resumed" else ""
        skip = f", {self.skipped} skipped (see {Path(self.path) / 'skipped.txt'})" if self.skipped else ""
        return (f"{name}: {self.written} images of {self.total}{skip} -> {self.path} "
                f"[{self.status}{extra}, {self.seconds:.1f} s]")


@dataclass
class PrepareReport:
    """The result of :func:`prepare_cache`: one :class:`SplitReport` per split."""

    dataset: str
    out_dir: str
    splits: list[SplitReport] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.splits)

    @property
    def written(self) -> int:
        return sum(s.written for s in self.splits)

    def summary(self) -> str:
        return "\n".join(s.line(self.dataset) for s in self.splits)

    __str__ = summary


# --------------------------------------------------------------------------------- helpers
def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(json_ready(value), default=str, sort_keys=True))


def _write_json_atomic(path: Path, obj: Any) -> None:
    write_json(obj, path, indent=1)


def _read_json(path: Path) -> dict | None:
    """A cache's own JSON file, or None when it is absent or damaged (the cache is then rebuilt);
    a file that is not a regular file, or over the metadata size limit, is an error."""
    if not path.exists():
        return None
    p = check_input_file(path, "cache description", max_bytes=MAX_METADATA_BYTES)
    try:
        obj = json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _save_array(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def _as_image(img: Any, size: int) -> np.ndarray:
    """Coerce a reader's image to (size, size, 3) uint8 RGB (gray / RGBA / other sizes tolerated)."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise DataError(f"image has dtype {a.dtype}, expected uint8")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"image has shape {a.shape}, expected (H, W, 3)")
    return resize_image(a, size)


def _open_reader(source: Any, root: Any, split: str, options: dict[str, Any]) -> FaceReader:
    if isinstance(source, FaceReader):
        if split != source.split:
            raise DataError(f"this {source.name} reader holds split {source.split!r}, not {split!r}")
        return source
    if isinstance(source, type) and issubclass(source, FaceReader):
        return source(root, split, **options)
    return _registry().open_reader(str(source), root, split, **options)


def _registry():
    from . import registry

    return registry


def _default_splits(source: Any, root: Any = None, options: dict[str, Any] | None = None) -> list[str]:
    """The splits to prepare when none are named: the ones that exist for this source (never
    the ``all`` union, which would store every image twice)."""
    if isinstance(source, FaceReader):
        return [source.split]
    if isinstance(source, type) and issubclass(source, FaceReader):
        return [s for s in source.splits if s != "all"] or list(source.splits)
    return _registry().default_splits(str(source), root, **(options or {}))


def _signature(reader: FaceReader, split: str) -> dict[str, Any]:
    """What a cache of ``split`` made by ``reader`` was made from (see the module doc)."""
    return _jsonable({
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "dataset": reader.name, "split": split,
        "reader_version": int(reader.version), "root": reader.location(),
        "options": reader.identity_options(dict(reader.options)), "crop": reader.crop_policy.to_dict(),
        "num_source_items": len(reader), "image_size": int(reader.image_size),
    })


# the signature's fields in the order they are compared, and how a difference names them
_FIELDS = (("format", "format"), ("dataset", "data set"), ("split", "split"),
           ("reader_version", "reader version"), ("root", "root"), ("options", "options"),
           ("crop", "crop"), ("image_size", "image size"), ("num_source_items", "source items"))


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _show_crop(value: Any) -> str:
    from ..preprocess import CropPolicy

    try:
        return CropPolicy.from_dict(value).describe() if isinstance(value, dict) else _show(value)
    except UsageError:
        return _show(value)


def signature_mismatch(recorded: Any, expected: dict[str, Any]) -> str | None:
    """How a cache's recorded ``signature`` differs from ``expected`` (only the fields
    ``expected`` states are compared), as one phrase naming the first difference, or None when
    they match. The one comparison of ``prepare``, ``train`` and ``evaluate``."""
    if not isinstance(recorded, dict):
        return "it records no signature of what it was made from"
    have_version, want_version = recorded.get("version"), expected.get("version", CACHE_VERSION)
    if have_version != want_version:
        older = isinstance(have_version, int) and not isinstance(have_version, bool) \
            and have_version < want_version
        return (f"it was prepared by {'an older' if older else 'another'} bregnet (cache format "
                f"version {_show(have_version)}; this one writes version {want_version})")
    for key, label in _FIELDS:
        if key not in expected:
            continue
        have, want = _jsonable(recorded.get(key)), _jsonable(expected[key])
        if have == want:
            continue
        if key == "options" and isinstance(have, dict) and isinstance(want, dict):
            name = next(k for k in sorted(set(have) | set(want)) if have.get(k, "<unset>") != want.get(k, "<unset>"))
            return (f"option {name} is {_show(have.get(name, '<unset>'))} in the cache, "
                    f"{_show(want.get(name, '<unset>'))} asked")
        if key == "crop":
            return f"crop is {_show_crop(have)} in the cache, {_show_crop(want)} asked"
        return f"{label} is {_show(have)} in the cache, {_show(want)} asked"
    return None


def expected_signature(dataset: str, root: str | os.PathLike | None, split: str,
                       options: dict[str, Any]) -> dict[str, Any]:
    """The signature a cache of ``dataset``/``split`` from ``root`` with reader ``options`` must
    record. With a root (or for a data set generated in code) the reader is opened and every field
    is stated, the number of items included; without a root (the cache stands for the data, whose
    files may be gone) only what the request itself says: data set, split, reader version and
    options."""
    cls = _registry().get_reader_class(dataset)
    if root not in (None, "") or not cls.needs_root:
        return _signature(_registry().open_reader(dataset, root, split, **options), split)
    return _jsonable({"format": CACHE_FORMAT, "version": CACHE_VERSION, "dataset": cls.name,
                      "split": split, "reader_version": int(cls.version),
                      "options": cls.identity_options(dict(options))})


def verify_cache(path: str | os.PathLike, split: str, dataset: str, root: str | os.PathLike | None,
                 options: dict[str, Any]) -> None:
    """Refuse (DataError, one line naming the first difference and the command that rebuilds it)
    the prepared ``split`` under ``path`` unless it was made from what is asked for (see
    :func:`expected_signature`)."""
    d = Path(path) / split
    meta = _read_json(d / "meta.json")
    if meta is None or meta.get("format") != CACHE_FORMAT:
        raise DataError(f"{d / 'meta.json'} is not a bregnet cache description")
    diff = signature_mismatch(meta.get("signature"), expected_signature(dataset, root, split, options))
    if diff is not None:
        old = meta.get("signature") if isinstance(meta.get("signature"), dict) else {}
        what = f"{old.get('dataset', meta.get('dataset'))}/{old.get('split', meta.get('split'))}"
        raise DataError(f"the prepared cache {d} ({what}) does not match what was asked: {diff}; "
                        f"rebuild it with bregnet prepare --overwrite --out {Path(path)} and the same "
                        "data set, root and options, or give another cache folder")


def _remove(directory: Path, names: Sequence[str]) -> None:
    for name in names:
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            pass
    remove_stale_temps(directory, names)


def _read_skips(path: Path) -> list[tuple[int, str, str]]:
    rows: list[tuple[int, str, str]] = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) == 3 and parts[0].isdigit():
                rows.append((int(parts[0]), parts[1], parts[2]))
    return rows


def _write_skips(path: Path, rows: list[tuple[int, str, str]]) -> None:
    atomic_write_text(path, "".join(f"{i}\t{src}\t{reason}\n" for i, src, reason in rows))


def _clean(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------- prepare
def prepare_cache(reader_or_name: Any, root: str | os.PathLike | None = None,
                  out_dir: str | os.PathLike = "cache", splits: str | Sequence[str] | None = None,
                  progress: bool = True, overwrite: bool = False, checkpoint_every: int = 1000,
                  **reader_options: Any) -> PrepareReport:
    """Convert a data set into the prepared cache under ``out_dir/<split>/`` (see the module doc).

    ``reader_or_name`` is a registered data set name (``bregnet.data.registry``), a
    :class:`FaceReader` subclass (opened as ``cls(root, split, **reader_options)``) or an opened
    reader (its split only). ``splits`` defaults to all of the data set's splits. A split whose
    complete cache already exists for the same source is left alone ("up to date"); an
    interrupted one is resumed; ``overwrite=True`` rebuilds. Unusable items are skipped and
    listed in ``skipped.txt``. Raises :class:`DataError` for a bad name/root/option, or when
    not a single item of a split could be read (its cache and report are still written).
    """
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise UsageError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    if isinstance(splits, str):
        split_list = [splits]
    elif splits is None:
        split_list = _default_splits(reader_or_name, root, reader_options)
    else:
        split_list = list(splits)
    if not split_list:
        raise DataError("no split to prepare")
    out = check_output_dir(out_dir, "cache folder")
    dataset = reader_or_name.name if isinstance(reader_or_name, (FaceReader, type)) else str(reader_or_name)
    report = PrepareReport(dataset=dataset, out_dir=str(out))
    failures: list[str] = []
    for split in split_list:
        reader = _open_reader(reader_or_name, root, split, reader_options)
        report.dataset = reader.name
        rep = _prepare_split(reader, split, out / split, progress, overwrite, checkpoint_every)
        report.splits.append(rep)
        if rep.total > 0 and rep.written == 0:
            failures.append(f"{reader.name}/{split}: none of the {rep.total} items could be read "
                            f"(reasons in {Path(rep.path) / 'skipped.txt'})")
    if failures:
        raise DataError("; ".join(failures))
    return report


def _prepare_split(reader: FaceReader, split: str, d: Path, progress: bool, overwrite: bool,
                   every: int) -> SplitReport:
    t0 = time.perf_counter()
    sig = _signature(reader, split)
    n = len(reader)
    size = int(reader.image_size)
    item_bytes = size * size * 3
    d.mkdir(parents=True, exist_ok=True)

    meta = _read_json(d / "meta.json")
    diff = None if meta is None else signature_mismatch(meta.get("signature"), sig)
    if meta is not None and not overwrite and diff is None and not (d / "images.u8").exists():
        meta = None  # a damaged cache of the same source: rebuild it
        _remove(d, _FINAL)
    if meta is not None and not overwrite:
        if diff is None:
            return SplitReport(split, str(d), n, int(meta.get("num_items", 0)), int(meta.get("num_skipped", 0)),
                               0, time.perf_counter() - t0, "up to date")
        old = meta.get("signature") if isinstance(meta.get("signature"), dict) else {}
        raise DataError(f"{d} already holds a prepared cache of {old.get('dataset')}/{old.get('split')} "
                        f"that does not match: {diff}; use --overwrite or another --out")
    if meta is not None or overwrite:
        _remove(d, _FINAL + _PARTIAL)

    state = _read_json(d / "progress.json")
    done = 0
    have_partial = all((d / f).exists() for f in ("images.partial", "labels.partial", "va.partial"))
    if state is not None and state.get("signature") == sig and (have_partial or state.get("done") == n):
        done = int(state.get("done", 0))
    else:
        _remove(d, _PARTIAL)
        state = None
    resumed_from = done
    # Skip lines of items >= done (written after the last checkpoint) will be written again.
    rows = [r for r in _read_skips(d / "skipped.partial") if r[0] < done]
    _write_skips(d / "skipped.partial", rows)

    if n > 0 and (state is None or have_partial):
        mode = "r+" if state is not None else "w+"
        images = np.memmap(d / "images.partial", np.uint8, mode, shape=(n, size, size, 3))
        labels = np.memmap(d / "labels.partial", np.int64, mode, shape=(n,))
        va = np.memmap(d / "va.partial", np.float32, mode, shape=(n, 2))
        with open(d / "skipped.partial", "a", encoding="utf-8") as skf:

            def checkpoint(count: int) -> None:
                images.flush()
                labels.flush()
                va.flush()
                skf.flush()
                os.fsync(skf.fileno())
                _write_json_atomic(d / "progress.json", {"signature": sig, "done": count})

            if state is None:
                checkpoint(0)
            bar = None
            if progress and done < n:
                from tqdm.auto import tqdm

                bar = tqdm(total=n, initial=done, desc=f"{reader.name}/{split}", unit="img",
                           dynamic_ncols=True)
            i = done
            try:
                while i < n:
                    try:
                        sample = reader.load(i)
                        images[i] = _as_image(sample.image, size)
                        labels[i] = int(sample.label)
                        va[i] = (sample.valence, sample.arousal)
                    except Exception as exc:  # noqa: BLE001 - an unusable item is never fatal
                        reason = str(exc) if isinstance(exc, BregnetError) else f"{type(exc).__name__}: {exc}"
                        try:
                            src = reader.source(i)
                        except Exception:  # noqa: BLE001
                            src = f"{reader.name}[{i}]"
                        skf.write(f"{i}\t{_clean(src)}\t{_clean(reason)}\n")
                        images[i] = 0
                        labels[i] = -1
                        va[i] = (np.nan, np.nan)
                    i += 1
                    if bar is not None:
                        bar.update(1)
                    if i % every == 0 and i < n:
                        checkpoint(i)
                checkpoint(n)
            except KeyboardInterrupt:
                checkpoint(i)  # items < i are complete: a rerun resumes exactly here
                raise
            finally:
                if bar is not None:
                    bar.close()
        del images, labels, va
    elif n == 0:
        _write_json_atomic(d / "progress.json", {"signature": sig, "done": 0})

    written, skipped = _finalize(reader, split, d, sig, n, size, item_bytes)
    return SplitReport(split, str(d), n, written, skipped, resumed_from, time.perf_counter() - t0,
                       "resumed" if resumed_from > 0 else "prepared")


def _finalize(reader: FaceReader, split: str, d: Path, sig: dict, n: int, size: int,
              item_bytes: int) -> tuple[int, int]:
    """Compact away skipped items, write the final arrays, the report and meta.json (last)."""
    skips = sorted({r[0]: r for r in _read_skips(d / "skipped.partial") if 0 <= r[0] < n}.values())
    keep = np.ones(n, bool)
    for i, _, _ in skips:
        keep[i] = False
    kept = np.flatnonzero(keep)
    m = len(kept)
    if n > 0:
        labels = np.array(np.memmap(d / "labels.partial", np.int64, "r", shape=(n,)))[kept]
        va = np.array(np.memmap(d / "va.partial", np.float32, "r", shape=(n, 2)))[kept]
    else:
        labels = np.zeros(0, np.int64)
        va = np.zeros((0, 2), np.float32)
    partial = d / "images.partial"
    final = d / "images.u8"
    if n > 0 and partial.exists():
        if m == n:
            os.replace(partial, final)
        else:
            src = np.memmap(partial, np.uint8, "r", shape=(n, size, size, 3))
            with atomic_output(final, "wb") as f:
                for s in range(0, m, 4096):
                    f.write(np.ascontiguousarray(src[kept[s:s + 4096]]).tobytes())
            del src
            partial.unlink()
    elif n == 0:
        atomic_write_bytes(final, b"")
    if not final.exists() or final.stat().st_size != m * item_bytes:
        raise DataError(f"{d}: the partial cache is inconsistent; rerun with --overwrite")

    _save_array(d / "labels.npy", labels)
    _save_array(d / "va.npy", va)
    soft = reader.soft_labels()
    if soft is not None:
        _save_array(d / "soft_labels.npy", np.asarray(soft, np.float32)[kept])
    report = [f"# {len(skips)} of {n} items of {reader.name}/{split} skipped\n# index\tsource\treason\n"]
    # tab-separated: open in a spreadsheet without running it
    report += [f"{i}\t{spreadsheet_safe(src)}\t{spreadsheet_safe(reason)}\n" for i, src, reason in skips]
    atomic_write_text(d / "skipped.txt", "".join(report))
    classes = list(reader.classes)
    valid = labels[labels >= 0]
    counts = np.bincount(valid, minlength=len(classes)).tolist() if classes else []
    meta = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "bregnet_version": __version__,
        "dataset": reader.name,
        "synthetic": bool(reader.synthetic),
        "split": split,
        "classes": classes,
        "counts": dict(zip(classes, counts)),
        "num_items": m,
        "num_skipped": len(skips),
        "num_source_items": n,
        "image_shape": [size, size, 3],
        "has_va": bool(np.isfinite(va).any()),
        "has_soft_labels": soft is not None,
        "crop": sig["crop"],
        "source": {"root": sig["root"], "options": sig["options"]},
        "signature": sig,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json_atomic(d / "meta.json", meta)
    _remove(d, _PARTIAL)
    return m, len(skips)


# --------------------------------------------------------------------------------- open
def _split_dir(path: str | os.PathLike, split: str | None) -> Path:
    base = Path(path)
    if split is not None:
        d = base / split
        if (d / "meta.json").exists():
            return d
        if (base / "meta.json").exists() and (_read_json(base / "meta.json") or {}).get("split") == split:
            return base
        if (d / "progress.json").exists():
            raise DataError(f"{d}: the cache is incomplete (interrupted?); rerun bregnet prepare to finish it")
        if not base.exists():
            raise DataError(f"cache directory {base} does not exist")
        have = cache_splits(base)
        hint = f"; it has {', '.join(have)}" if have else "; run bregnet prepare first"
        raise DataError(f"no prepared split {split!r} in {base}{hint}")
    if (base / "meta.json").exists():
        return base
    if not base.exists():
        raise DataError(f"cache directory {base} does not exist")
    raise DataError(f"{base} is not a prepared cache split (no meta.json); name the split")


def cache_splits(path: str | os.PathLike) -> list[str]:
    """Names of the complete splits under a cache directory."""
    base = Path(path)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "meta.json").exists())


def open_cache(path: str | os.PathLike, split: str | None = None) -> ArrayDataset:
    """Open a prepared split as an :class:`ArrayDataset` whose images are a read-only memory map.

    ``path`` is the ``--out`` directory with ``split``, or a split directory itself.
    """
    d = _split_dir(path, split)
    meta = _read_json(d / "meta.json")
    if meta is None or meta.get("format") != CACHE_FORMAT:
        raise DataError(f"{d / 'meta.json'} is not a bregnet cache description")
    if int(meta.get("version", 0)) > CACHE_VERSION:
        raise DataError(f"{d} was written by a newer bregnet (cache version {meta.get('version')})")
    n, shape = meta.get("num_items"), meta.get("image_shape")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or not isinstance(shape, list) \
            or len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape) \
            or shape[2] != 3:
        raise DataError(f"{d / 'meta.json'}: num_items / image_shape are not a cache's "
                        f"(got {n!r}, {shape!r})")
    h, w, c = shape
    img_path = d / "images.u8"
    if not img_path.exists():
        raise DataError(f"{img_path} is missing")
    if img_path.stat().st_size != n * h * w * c:
        raise DataError(f"{img_path} has {img_path.stat().st_size} bytes, expected {n * h * w * c}")
    if n > 0:
        images = np.memmap(img_path, np.uint8, "r", shape=(n, h, w, c))
    else:
        images = np.zeros((0, h, w, c), np.uint8)
    try:
        labels = np.load(d / "labels.npy")
        va = np.load(d / "va.npy")
        soft = np.load(d / "soft_labels.npy") if (d / "soft_labels.npy").exists() else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{d}: cannot read the label arrays ({exc})") from None
    if len(labels) != n or len(va) != n:
        raise DataError(f"{d}: labels/va do not match images ({len(labels)}/{len(va)} vs {n})")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or va.shape != (n, 2) or va.dtype.kind != "f":
        raise DataError(f"{d}: labels.npy must be (N,) integers and va.npy (N, 2) floats, got "
                        f"{labels.shape} {labels.dtype} and {va.shape} {va.dtype}")
    if soft is not None and (soft.ndim != 2 or len(soft) != n or soft.dtype.kind != "f"):
        raise DataError(f"{d}: soft_labels.npy must be (N, K) floats, got {soft.shape} {soft.dtype}")
    classes = meta.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{d / 'meta.json'}: classes must be a list of names")
    return ArrayDataset(images=images, labels=labels, va=va, classes=list(classes),
                        name=str(meta.get("dataset", "cache")), split=str(meta.get("split", "")),
                        soft_labels=soft, meta=meta)
