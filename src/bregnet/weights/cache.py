"""The weights cache (``$BREGNET_HOME``) and the resolution of a weights name to a checkpoint file.

Layout (all under ``$BREGNET_HOME/weights``; ``$BREGNET_HOME`` defaults to the platform's user
cache folder, e.g. ``~/.cache/bregnet`` on Linux, from :mod:`platformdirs`)::

    NAME/model.safetensors        the converted checkpoint: its presence means "installed"
    NAME/model.json               its metadata, readable
    .partial/NAME/FILE.part       a download in progress (kept after a failure, to resume it)
    .partial/NAME/FILE            a fetched file waiting for verification and conversion
    .locks/NAME.lock              held while NAME is downloaded or removed

:func:`resolve_checkpoint` is the one place where a weights name becomes a path. It never
downloads anything: a name that is not installed raises :class:`WeightsError` with the exact
``bregnet weights download NAME`` command.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..errors import CheckpointError
from ..fileio import remove_stale_temps
from .registry import WeightsEntry, WeightsError, find_weights, get_weights, list_weights

__all__ = [
    "CHECKPOINT_NAME",
    "ENV_HOME",
    "bregnet_home",
    "cache_lock",
    "checkpoint_file",
    "installed_dir",
    "is_installed",
    "not_downloaded_message",
    "partial_dir",
    "remove_weights",
    "resolve_checkpoint",
    "weights_dir",
]

ENV_HOME = "BREGNET_HOME"
CHECKPOINT_NAME = "model.safetensors"
INSTALLED_FILES = (CHECKPOINT_NAME, "model.json")
_FILE_SUFFIXES = (".safetensors", ".st", ".onnx", ".json", ".pt", ".index", ".yaml")


def bregnet_home() -> Path:
    """``$BREGNET_HOME``, or the platform's user cache folder for bregnet."""
    env = os.environ.get(ENV_HOME, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bregnet", appauthor=False))


def weights_dir() -> Path:
    return bregnet_home() / "weights"


def installed_dir(name: str) -> Path:
    return weights_dir() / name


def checkpoint_file(name: str) -> Path:
    """Where the converted checkpoint of weights ``name`` is (or will be) installed."""
    return installed_dir(name) / CHECKPOINT_NAME


def partial_dir(name: str) -> Path:
    return weights_dir() / ".partial" / name


def lock_file(name: str) -> Path:
    return weights_dir() / ".locks" / f"{name}.lock"


def is_installed(name: str) -> bool:
    return checkpoint_file(name).is_file()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def not_downloaded_message(entry: WeightsEntry) -> str:
    return (f"weights {entry.name!r} are not downloaded yet: run `bregnet weights download "
            f"{entry.name}` (fetches {_mb(entry.source.total_size)} from {entry.source.repository}; "
            f"bregnet never downloads implicitly)")


def resolve_checkpoint(path_or_name: str | os.PathLike) -> Path:
    """A checkpoint path for ``path_or_name``: an existing path as it is, a registered weights
    name as its installed checkpoint. A name not downloaded yet raises :class:`WeightsError`
    saying which command downloads it; a path that does not exist is returned unchanged (the
    caller reports it), except a bare word that is neither a file nor a known weights name."""
    p = Path(path_or_name)
    if p.exists():
        return p
    text = os.fspath(path_or_name)
    entry = find_weights(text)
    if entry is not None:
        f = checkpoint_file(entry.name)
        if f.is_file():
            return f
        raise WeightsError(not_downloaded_message(entry))
    if "/" not in text and os.sep not in text and not text.lower().endswith(_FILE_SUFFIXES):
        raise CheckpointError(f"checkpoint not found: {text} is neither a file or folder nor a "
                              f"known weights name (known: {', '.join(list_weights()) or 'none'}; "
                              f"see `bregnet weights list`)")
    return p


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[Path]:
    """Hold the lock of weights ``name`` (two downloads or removals of one name never overlap);
    when another process holds it, fail at once with one line instead of waiting."""
    from filelock import FileLock, Timeout

    path = lock_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise WeightsError(f"another bregnet process is downloading or removing {name!r} right now "
                           f"(it holds {path}): let it finish, then run the command again") from None
    try:
        yield path
    finally:
        lock.release()


def _our_files(entry: WeightsEntry) -> tuple[set[str], set[str]]:
    """File names bregnet writes for ``entry``: in the installed folder, in the partial folder."""
    partial = set(INSTALLED_FILES)
    for f in entry.source.files:
        partial |= {f.name, f.name + ".part"}
    return set(INSTALLED_FILES), partial


def remove_weights(name: str) -> list[Path]:
    """Delete what bregnet put in the cache for weights ``name`` (the converted checkpoint, a
    partial download, leftover temporary files); anything else in those folders stays. Returns
    the removed files. The registry entry is kept."""
    entry = get_weights(name)
    if not weights_dir().is_dir():
        return []
    installed, partial = _our_files(entry)
    removed: list[Path] = []
    with cache_lock(name):
        for folder, names in ((installed_dir(name), installed), (partial_dir(name), partial)):
            if not folder.is_dir():
                continue
            # the checkpoint first: without it the name counts as not installed
            for n in sorted(names, key=lambda n: n != CHECKPOINT_NAME):
                p = folder / n
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    removed.append(p)
            removed += remove_stale_temps(folder, names)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: files bregnet did not write stay
    return removed
