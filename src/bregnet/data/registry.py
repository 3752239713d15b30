"""Data set name -> reader: ``open_reader(name, root, split, **options)`` and ``list_datasets()``.

Names: ``synthetic`` (the embedded default, generated in code), ``fer2013``, ``ferplus``,
``affectnet``, ``rafdb``, ``affwild2``, ``folder`` and ``csv``. A few spellings are accepted
(``raf-db``, ``aff-wild2``, ``fer+``, ``csvlist``, any case). Every reader's module documents its
layout and options; an unknown option is a DataError listing the known ones.

Label names keep each data set's own spelling and order; :func:`canonical_class` maps the
synonyms (``Angry`` / ``Anger``, ``Happiness`` / ``Happy``, ...) to AffectNet's names, for
evaluating across data sets by name.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import DataError
from .readers.affectnet import AffectNetReader
from .readers.affwild2 import AffWild2Reader
from .readers.base import FaceReader
from .readers.csvlist import CSVListReader
from .readers.fer2013 import FER2013Reader
from .readers.ferplus import FERPlusReader
from .readers.folder import FolderReader
from .readers.rafdb import RAFDBReader
from .synthetic import SyntheticReader

__all__ = ["READERS", "canonical_class", "default_splits", "get_reader_class", "list_datasets",
           "open_reader"]

READERS: dict[str, type[FaceReader]] = {
    "synthetic": SyntheticReader,
    "fer2013": FER2013Reader,
    "ferplus": FERPlusReader,
    "affectnet": AffectNetReader,
    "rafdb": RAFDBReader,
    "affwild2": AffWild2Reader,
    "folder": FolderReader,
    "csv": CSVListReader,
}
_ALIASES = {
    "fer": "fer2013", "fer-2013": "fer2013", "fer+": "ferplus", "fer-plus": "ferplus", "fer2013plus": "ferplus",
    "raf-db": "rafdb", "raf": "rafdb", "aff-wild2": "affwild2", "affwild": "affwild2", "aff-wild": "affwild2",
    "csvlist": "csv", "csv-list": "csv", "imagefolder": "folder", "dir": "folder", "directory": "folder",
}

# label synonyms -> AffectNet spelling (cross-data-set evaluation maps labels by name)
_CANONICAL = {
    "neutral": "Neutral", "happy": "Happy", "happiness": "Happy", "joy": "Happy",
    "sad": "Sad", "sadness": "Sad", "surprise": "Surprise", "surprised": "Surprise",
    "fear": "Fear", "afraid": "Fear", "fearful": "Fear", "disgust": "Disgust", "disgusted": "Disgust",
    "anger": "Anger", "angry": "Anger", "contempt": "Contempt",
}


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    return _ALIASES.get(key, key.replace("-", "") if key.replace("-", "") in READERS else key)


def get_reader_class(name: str) -> type[FaceReader]:
    """The reader class registered under ``name`` (or an accepted spelling of it)."""
    key = _canonical_name(name)
    if key in READERS:
        return READERS[key]
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(list_datasets())}")


def open_reader(name: str, root: str | os.PathLike | None, split: str, **options: Any) -> FaceReader:
    """Open split ``split`` of data set ``name`` stored at ``root`` with reader ``options``.

    Raises :class:`~bregnet.errors.DataError` (one line, naming the path or file:line) for an
    unknown name, split or option, a missing root or file, or malformed annotations.
    """
    cls = get_reader_class(name)
    if root in (None, "") and cls.needs_root:
        raise DataError(f"data set {cls.name!r} needs a root path (--root, or data.root in a recipe)")
    return cls(root, split, **options)  # type: ignore[arg-type]


def default_splits(name: str, root: str | os.PathLike | None, **options: Any) -> list[str]:
    """The splits worth preparing for ``name`` at ``root``: the official ones that exist there
    (a folder's split folders, or ``["all"]`` for a flat one; FER2013's three Usage splits, not
    ``all``, which would repeat them). Falls back to the reader's declared splits minus ``all``."""
    cls = get_reader_class(name)
    finder = getattr(cls, "available_splits", None)
    if finder is not None and root is not None:
        return list(finder(root, **options))
    return [s for s in cls.splits if s != "all"] or list(cls.splits)


def list_datasets() -> list[str]:
    """Registered data set names (``synthetic`` first), for --help and errors."""
    return list(READERS)


def canonical_class(name: str) -> str:
    """A class name in AffectNet's spelling (``Angry`` -> ``Anger``, ``happiness`` -> ``Happy``);
    unknown names are returned stripped and unchanged."""
    return _CANONICAL.get(str(name).strip().lower(), str(name).strip())
