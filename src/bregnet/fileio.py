"""Files written so that nothing is lost: the one place for atomic writes and output checks.

* :func:`atomic_write` (and :func:`atomic_write_text` / :func:`atomic_write_bytes`) writes to a
  temporary file beside the target, flushes it to disk, then renames it over the target, so a
  crash, a kill or a full disk leaves either the old file or the new one, never half of one.
* :func:`atomic_output` is the same for streamed outputs (CSV / JSONL written row by row): the
  rows go to a temporary file that replaces the target only when the ``with`` block ends without
  an exception, so a failed run leaves a previous output as it was.
* :func:`check_output_file` / :func:`check_output_dir` check an output path *before* any work
  starts (creatable, not a directory, not one of the inputs, not replaced with ``overwrite=False``)
  and :func:`check_input_file` refuses what is not a readable regular file (a FIFO or a device
  such as ``/dev/zero`` would hang or fill memory) or is larger than a limit.
* :func:`write_json` writes strict JSON (NaN and infinities as ``null``, numpy types converted:
  :func:`json_ready`) atomically; :func:`read_text` reads a small text file (size-limited, strict
  UTF-8, a UTF-16 file named as such) and :func:`decode_text` does the same for bytes.

Temporary files are named ``.<target name>.<random>.tmp`` in the target's folder (a rename is
only atomic within one file system); :func:`remove_stale_temps` clears the ones a killed process
left behind.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import math
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path, PurePath
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

from .errors import BregnetError, DataError, LimitError, OutputError
from .limits import MAX_METADATA_BYTES, Limit

__all__ = [
    "atomic_link_or_copy",
    "atomic_output",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_input_file",
    "check_output_dir",
    "check_output_file",
    "decode_text",
    "fsync_dir",
    "json_ready",
    "json_text",
    "read_text",
    "remove_stale_temps",
    "same_file",
    "sniff_text_encoding",
    "write_json",
]

_TMP_SUFFIX = ".tmp"


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def _read_umask() -> int:
    """The process's umask (read once: setting it back and forth is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _make_temp(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (same folder, so the final rename is atomic), with
    the permissions the finished file should have: those of the file it replaces, or those a
    plain ``open()`` would give (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``."""
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_UMASK
    try:
        os.fchmod(fd, mode)
    except OSError:  # a file system without permissions (e.g. some network shares)
        pass
    return fd, tmp


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where the OS does not support it."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[str], Any], fsync: bool = True) -> Path:
    """Call ``write_fn(tmp_path)`` to write a temporary file, then rename it onto ``path``.

    The temporary file is flushed to disk first (``fsync``), so after a power cut the target holds
    the old or the new content. On any exception (including ``KeyboardInterrupt`` and a full
    disk) the temporary file is removed and the target is left untouched. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _make_temp(path)
    os.close(fd)
    try:
        write_fn(tmp)
        if fsync:
            _fsync_path(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return _install(tmp, path, fsync)


def _install(tmp: str | os.PathLike, path: Path, fsync: bool) -> Path:
    """Rename the finished temporary file ``tmp`` onto ``path`` (removing ``tmp`` if that
    fails), then flush the folder's entry."""
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), fsync=fsync)


def atomic_link_or_copy(src: str | os.PathLike, dst: str | os.PathLike, fsync: bool = True) -> Path:
    """Make ``dst`` a complete copy of the file ``src``, atomically: a hard link where the file
    system allows one (no bytes copied, no space used), else a copy; either way through a
    temporary name and a rename, so ``dst`` holds the old or the new content at every instant."""
    src, dst = Path(src), Path(dst)
    if same_file(src, dst):
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f"{_tmp_prefix(dst)}{secrets.token_hex(6)}{_TMP_SUFFIX}"
    try:
        os.link(src, tmp)
    except OSError as exc:
        if is_disk_full(exc) or isinstance(exc, FileNotFoundError):
            raise
        return atomic_write(dst, lambda t: shutil.copyfile(src, t), fsync=fsync)  # no hard links here
    return _install(tmp, dst, fsync)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w", overwrite: bool = True,
                  **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for streaming an output; it replaces ``path`` when the block ends
    without an exception, and is removed otherwise (an existing ``path`` is then untouched).

    ``overwrite=False`` refuses (:class:`OutputError`) when ``path`` already exists, checked
    before and again at the end. Text mode defaults to UTF-8.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputError(f"{path} already exists (remove it or allow overwriting)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp = _make_temp(path)
    try:
        fh = os.fdopen(fd, mode, **open_kwargs)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if not overwrite and path.exists():
            raise OutputError(f"{path} appeared while this run was writing it; left as it was")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_stale_temps(directory: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Delete temporary files that :func:`atomic_write` / :func:`atomic_output` created in
    ``directory`` and a killed process left behind (only those for ``names``, when given).
    Returns what was removed. Only call it where no other process is writing the same files."""
    d = Path(directory)
    if not d.is_dir():
        return []
    wanted = None if names is None else {_tmp_prefix(Path(n)) for n in names}
    removed = []
    for p in d.iterdir():
        name = p.name
        if not (name.startswith(".") and name.endswith(_TMP_SUFFIX)):
            continue
        if wanted is not None and not any(name.startswith(w) for w in wanted):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths exist and name the same file (hard links and symlinks included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _writable_ancestor(path: Path, what: str, shown: Path | None = None) -> None:
    """OutputError unless ``path`` can be created: its nearest existing ancestor must be a
    writable folder (``shown`` is the path named in the message; default ``path``)."""
    shown = path if shown is None else shown
    probe = path.parent if str(path.parent) else Path(".")
    while not probe.exists() and not probe.is_symlink():  # the nearest existing ancestor decides
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"cannot write {what} {shown}: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {shown}: no permission to write in {probe}")


def check_output_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                      overwrite: bool = True, what: str = "output") -> Path:
    """Check, before any work, that ``path`` can be written as a file: it is not a folder, its
    folder exists or can be created and is writable, it is not one of ``inputs``, and with
    ``overwrite=False`` it does not exist yet. Raises :class:`OutputError` (one line)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"cannot write {what} {p}: it is a folder")
    for item in inputs:
        if same_file(p, item):
            raise OutputError(f"refusing to write {what} {p}: it is one of the inputs")
    if p.exists():
        if not overwrite:
            raise OutputError(f"{p} already exists; remove it or choose another {what} path")
        if not p.is_file():  # a device or a pipe (/dev/null, a FIFO): written to, never replaced
            if not os.access(p, os.W_OK):
                raise OutputError(f"cannot write {what} {p}: no permission")
            return p
        if not os.access(p, os.W_OK) and not os.access(p.parent, os.W_OK):
            raise OutputError(f"cannot write {what} {p}: no permission")
    _writable_ancestor(p, what)
    return p


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check that ``path`` is, or can be created as, a writable folder (:class:`OutputError`)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"cannot use {what} {p}: it is a file, not a folder")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write into {what} {p}: no permission")
        return p
    _writable_ancestor(p / "x", what, shown=p)
    return p


def check_input_file(path: str | os.PathLike, what: str = "input",
                     max_bytes: int | Limit | None = None,
                     error: type[BregnetError] = DataError) -> Path:
    """Refuse anything but an existing, readable, regular file no larger than ``max_bytes`` (a
    number or a :class:`~bregnet.limits.Limit`): FIFOs, sockets and devices would block or never
    end. Symlinks are followed. Raises ``error`` (:class:`DataError` unless told otherwise, e.g.
    :class:`~bregnet.errors.CheckpointError`) or :class:`LimitError` for the size."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except PermissionError:
        raise error(f"{p}: cannot read {what}: no permission") from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{p}: {what} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: {what} is not a regular file (a device, pipe or socket)")
    if not os.access(p, os.R_OK):
        raise error(f"{p}: cannot read {what}: no permission")
    if isinstance(max_bytes, Limit):
        max_bytes.check(st.st_size, f"{what} {p}")
    elif max_bytes is not None and st.st_size > max_bytes:
        raise LimitError(f"{what} {p} is {st.st_size:,} bytes, over the limit of {max_bytes:,}")
    return p


def is_disk_full(exc: BaseException) -> bool:
    """True for the OS errors of a full disk or exceeded quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


# ------------------------------------------------------------------------------------ text and JSON
_UTF16_32_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                  (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def sniff_text_encoding(head: bytes) -> str | None:
    """``"UTF-16"`` / ``"UTF-32"`` when the first bytes of a file show that encoding (a byte-order
    mark, or the NUL bytes every other byte that ASCII text in UTF-16 has), else None."""
    for bom, name in _UTF16_32_BOMS:  # UTF-32-LE's BOM starts with UTF-16-LE's: test it first
        if head.startswith(bom):
            return name
    sample = head[:4096]
    if len(sample) >= 4 and sample.count(0) * 4 >= len(sample):
        return "UTF-16" if sample.count(0) * 4 < len(sample) * 3 else "UTF-32"
    return None


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def utf8_error_message(where: str, bad: bytes) -> str:
    """The one-line message for text that is not UTF-8: ``where`` is ``"file:line"``, ``bad`` the
    offending bytes."""
    hint = ""
    if bad and 0x80 <= bad[0] <= 0xFF:
        try:
            hint = f" (as Latin-1 it would read {bad[:1].decode('latin-1')!r})"
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            pass
    return f"{where}: not UTF-8 text: byte 0x{bad[0]:02x}{hint}; re-save the file as UTF-8"


def decode_text(data: bytes, name: str = "<text>") -> str:
    """Strict UTF-8 (a leading BOM dropped): a UTF-16 / UTF-32 file, or bytes that are not UTF-8
    (Latin-1, say), are a :class:`DataError` naming the file and line, never garbled text."""
    other = sniff_text_encoding(data[:4096])
    if other is not None:
        raise DataError(f"{name}: the file is {other}, expected UTF-8; re-save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(utf8_error_message(f"{name}:{_line_of(data, exc.start)}",
                                           data[exc.start:exc.end])) from None


def read_text(path: str | os.PathLike, what: str = "file",
              max_bytes: int | Limit | None = MAX_METADATA_BYTES) -> str:
    """A small text file (a recipe, a JSON description) read whole: a regular file no larger
    than ``max_bytes``, strict UTF-8 (see :func:`decode_text`)."""
    p = check_input_file(path, what, max_bytes=max_bytes)
    return decode_text(p.read_bytes(), str(p))


def json_ready(obj: Any) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` accepts with ``allow_nan=False``: numpy / torch
    scalars and arrays become numbers and lists, NaN and infinities ``None``, tuples and sets
    lists, paths strings, dict keys strings."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    import numpy as np

    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (PurePath, os.PathLike)):
        return os.fspath(obj)
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # a torch tensor
        return json_ready(obj.detach().cpu().tolist())
    if hasattr(obj, "item"):
        return json_ready(obj.item())
    if hasattr(obj, "to_dict"):
        return json_ready(obj.to_dict())
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def json_text(obj: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of ``obj`` (see :func:`json_ready`): never a bare ``NaN``."""
    return json.dumps(json_ready(obj), indent=indent, allow_nan=False, ensure_ascii=False,
                      sort_keys=sort_keys)


def write_json(obj: Any, path: str | os.PathLike, indent: int = 2, fsync: bool = True) -> str:
    """Write ``obj`` as strict JSON (NaN / inf -> null, numpy types converted) atomically
    (:func:`atomic_write_text`); folders are created. Returns the path as a string."""
    atomic_write_text(path, json_text(obj, indent) + "\n", fsync=fsync)
    return os.fspath(path)
