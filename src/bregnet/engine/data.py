"""Turning a ``data`` config section into in-memory or memory-mapped :class:`ArrayDataset` splits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.base import ArrayDataset
from ..errors import ConfigError, DataError, UsageError
from ..preprocess import CropPolicy

__all__ = ["crop_policy_of", "label_mapping", "load_split", "remap_to_model"]


def crop_policy_of(ds: ArrayDataset) -> CropPolicy:
    """The crop policy the images of ``ds`` were made with (what its reader or prepared cache
    records in ``ds.meta["crop"]``): what the trainer stores in the checkpoint. A data set that
    records none (arrays built by hand) gets the default :class:`CropPolicy`."""
    crop = ds.meta.get("crop")
    if crop is None:
        return CropPolicy()
    try:
        return CropPolicy.from_dict(crop)
    except (UsageError, TypeError) as exc:
        raise DataError(f"{ds.name}/{ds.split}: the recorded crop policy is not valid ({exc})") from None


def color_of(ds: ArrayDataset, sample: int = 4096) -> str:
    """``GRAY`` when the images of ``ds`` are grayscale (three equal channels in every one of up
    to ``sample`` images spread over the set, as FER2013's and FERPlus's are), else ``RGB``: what
    the trainer stores as ``preprocess.color``, so the predictor makes a colour photo's face gray
    before a model that has only seen gray faces runs on it."""
    images = ds.images
    if len(images) == 0:
        return "RGB"
    idx = np.unique(np.linspace(0, len(images) - 1, min(sample, len(images))).astype(np.int64))
    x = np.asarray(images[idx])
    gray = bool(np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2]))
    return "GRAY" if gray else "RGB"


def load_split(data_cfg: dict[str, Any], split: str, progress: bool = True) -> ArrayDataset:
    """Load one split: from the prepared cache when ``data.cache`` is set (building it first if
    it does not exist yet, else refusing it unless it was made from this data set, root, split
    and options: :func:`bregnet.data.cache.verify_cache`), else by decoding through the data
    set's reader. Either way ``ds.meta["crop"]`` is the crop policy its images were made with.

    ``data.sizes`` sets a split's number of items for data sets generated in code (the reader's
    ``size_option``, e.g. synthetic's ``n``); for a data set of files it is a ConfigError.
    """
    from ..data.registry import get_reader_class, open_reader

    name = data_cfg["name"]
    cls = get_reader_class(name)
    options = dict(data_cfg.get("options") or {})
    options.update((data_cfg.get("split_options") or {}).get(split) or {})
    sizes = data_cfg.get("sizes") or {}
    if split in sizes:
        if cls.size_option is None:
            raise ConfigError(f"data.sizes sets the size of generated data sets; {cls.name!r} has "
                              "a fixed number of items (remove data.sizes)")
        options[cls.size_option] = sizes[split]
    # a path given as a YAML number (data.root=2013) is the folder "2013"
    root, cache = (None if v is None else v if isinstance(v, (str, os.PathLike)) else str(v)
                   for v in (data_cfg.get("root"), data_cfg.get("cache")))
    if cache:
        from ..data.cache import open_cache, prepare_cache, verify_cache

        split_dir = Path(cache) / split
        if not (split_dir / "meta.json").is_file():
            prepare_cache(name, root, cache, splits=[split], progress=progress, **options)
        else:
            verify_cache(cache, split, name, root, options)
        return open_cache(cache, split)
    reader = open_reader(name, root, split, **options)
    ds, skipped = reader.to_arrays(progress=progress)
    if skipped:
        print(f"bregnet: skipped {len(skipped)} unreadable item(s) of {cls.name}/{split}; "
              f"first: {skipped[0][1]}")
    if len(ds) == 0:
        raise DataError(f"{cls.name}/{split}: no usable items" + (f" under {root}" if root else ""))
    return ds


def label_mapping(model_labels: list[str], data_classes: list[str]) -> np.ndarray:
    """For each data-set class, the index of the model output with the same name (by canonical
    spelling, so FER2013's ``Angry`` meets AffectNet's ``Anger``), or -1 if the model lacks it."""
    from ..data.registry import canonical_class

    model_index = {canonical_class(n).lower(): i for i, n in enumerate(model_labels)}
    return np.array([model_index.get(canonical_class(c).lower(), -1) for c in data_classes], np.int64)


def remap_to_model(model_labels: list[str], ds_classes: list[str], labels: np.ndarray,
                   probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Express predictions and labels in the classes both sides know, in the data set's order.

    Returns (labels, probs renormalised over the shared classes, shared class names). Samples
    whose class the model does not know are dropped (label -1).
    """
    mapping = label_mapping(model_labels, ds_classes)
    if list(model_labels) == list(ds_classes):
        return labels, probs, list(ds_classes)
    shared = np.flatnonzero(mapping >= 0)
    if len(shared) < 2:
        raise DataError(f"model classes {model_labels} and data set classes {ds_classes} share "
                        f"fewer than two names; cannot evaluate across them")
    new_index = np.full(len(ds_classes), -1, np.int64)
    new_index[shared] = np.arange(len(shared))
    valid = labels >= 0
    new_labels = np.full_like(labels, -1)
    new_labels[valid] = new_index[labels[valid]]
    sub = probs[:, mapping[shared]]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    return new_labels, sub, [ds_classes[i] for i in shared]
