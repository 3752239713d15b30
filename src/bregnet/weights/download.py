"""``bregnet weights download``: the only code in bregnet that touches the network, and only when
asked.

Each file of an entry is fetched into ``$BREGNET_HOME/weights/.partial/NAME/FILE.part`` with HTTP
range requests, so an interrupted download resumes where it stopped (in the same run after a
retry, or in the next run); timeouts bound every connect and read; transient failures (a dropped
connection, a timeout, HTTP 5xx/429) are retried with a growing pause. Nothing is converted until
every file has its published size and every published checksum matches (for the official
checkpoint: the index's SHA-256 and the CRC32C of each of its 840 tensors, which together cover
every byte of the data file). The converted checkpoint is written beside the partial files and
moved into ``NAME/`` by renames (one file system), so a name is either fully installed or not at
all. ``--from DIR`` verifies and converts files fetched by other means; ``--mirror URL`` fetches
the same paths from another base URL.

HTTP is done with httpx (timeouts, redirects, proxies from the environment, streaming); the cache
folder comes from platformdirs; the lock from filelock. pooch is not used: its downloader opens
the output anew (``"w+b"``) and its ``retrieve`` deletes the temporary file on any failure and
restarts retries from byte 0, so it cannot resume (no ``Range``), which a 37 MB download over a
poor connection needs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .._version import __version__
from ..errors import BregnetError, UsageError
from ..fileio import check_input_file, fsync_dir, is_disk_full
from .cache import (
    CHECKPOINT_NAME,
    cache_lock,
    checkpoint_file,
    installed_dir,
    partial_dir,
    weights_dir,
)
from .manifest import verify_source_files
from .registry import SourceFile, WeightsEntry, WeightsError, get_weights, integrity_summary

__all__ = ["DEFAULT_RETRIES", "DEFAULT_TIMEOUT", "download_weights"]

DEFAULT_TIMEOUT = 30.0  # seconds without progress (connect: at most 15 s)
DEFAULT_RETRIES = 3
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Retry(Exception):
    """A transient failure: try again (resuming from what was written)."""


def _say_nothing(_line: str) -> None:
    pass


def download_weights(
    name: str,
    from_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = 1.0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Fetch (or take from ``from_dir``), verify, convert and install weights ``name``; return the
    installed checkpoint. Already installed: returns at once unless ``force``. Every fault raises
    :class:`WeightsError` (one line) and leaves the cache as it was, except that the bytes of an
    interrupted download are kept so that the next run resumes them."""
    entry = get_weights(name)
    if from_dir is not None and mirror is not None:
        raise UsageError("--from and --mirror exclude each other: give one")
    if timeout <= 0 or retries < 0 or backoff < 0:
        raise UsageError("timeout must be > 0, retries and backoff >= 0")
    say = log or _say_nothing
    try:
        return _download(entry, from_dir, mirror, force, timeout, retries, backoff, progress, say)
    except OSError as exc:
        raise _cache_error(exc) from None


def _cache_error(exc: OSError) -> Exception:
    """One line for a cache folder that is full or cannot be written; other OSErrors unchanged."""
    home = weights_dir()
    if is_disk_full(exc):
        return WeightsError(f"the weights cache {home} is full ({exc.strerror}): free some space or "
                            f"set BREGNET_HOME to another folder, then run the command again (a "
                            f"partial download is kept and resumes)")
    inside = exc.filename is not None and str(exc.filename).startswith(str(home))
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and (inside or exc.filename is None):
        return WeightsError(f"cannot write the weights cache {home} ({exc.strerror}): make it "
                            f"writable or set BREGNET_HOME to a writable folder")
    return exc


def _download(entry: WeightsEntry, from_dir: str | os.PathLike | None, mirror: str | None,
              force: bool, timeout: float, retries: int, backoff: float, progress: bool,
              say: Callable[[str], None]) -> Path:
    target = checkpoint_file(entry.name)
    staging = partial_dir(entry.name)
    with cache_lock(entry.name):
        if target.is_file() and not force:
            say(f"{entry.name} is already installed: {target}")
            return target
        staging.mkdir(parents=True, exist_ok=True)
        if from_dir is not None:
            paths = _locate_local(entry, Path(from_dir))
            origin: dict[str, Any] = {"from_dir": str(Path(from_dir).resolve())}
            _check_space(entry, staging, fetch=False)
        else:
            _check_space(entry, staging, fetch=True)
            paths = _fetch_all(entry, staging, mirror, timeout, retries, backoff, progress, say)
            origin = {"urls": {f.name: entry.source.url(f, mirror) for f in entry.source.files}}
        say(f"verifying {integrity_summary(entry)}")
        try:
            shas = verify_source_files(entry, paths)
        except WeightsError:
            if from_dir is None:  # corrupt downloads cannot be resumed: drop them
                for p in paths.values():
                    with contextlib.suppress(OSError):
                        p.unlink()
                _rmdir(staging)
            raise
        say("converting to a bregnet checkpoint")
        try:
            converted = _convert(entry, paths, staging, shas, origin)
            _install(converted, installed_dir(entry.name))
        except BregnetError:  # refused: the same files would be refused again
            _drop_sources(entry, staging, from_dir is None)
            raise
        # (an OSError such as a full disk keeps the verified files: the next run converts them)
        _drop_sources(entry, staging, from_dir is None)
    return target


def _drop_sources(entry: WeightsEntry, staging: Path, downloaded: bool) -> None:
    for n in (f.name for f in entry.source.files) if downloaded else ():
        with contextlib.suppress(OSError):
            (staging / n).unlink()
    _rmdir(staging)


def _rmdir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # .partial, when no other download is pending


def _locate_local(entry: WeightsEntry, folder: Path) -> dict[str, Path]:
    """The entry's files in ``folder``: side by side by file name, or in the repository's layout."""
    if not folder.is_dir():
        raise WeightsError(f"--from {folder}: not a folder (give the folder holding "
                           f"{', '.join(f.name for f in entry.source.files)})")
    layouts = ({f.name: folder / f.name for f in entry.source.files},
               {f.name: folder / f.path for f in entry.source.files})
    for layout in layouts:
        if all(p.is_file() for p in layout.values()):
            for p in layout.values():
                check_input_file(p, what="weights file")
            return layout
    missing = [f.name for f in entry.source.files
               if not (layouts[0][f.name].is_file() or layouts[1][f.name].is_file())]
    raise WeightsError(f"--from {folder}: {', '.join(missing) or 'some files'} not found; put "
                       f"{' and '.join(f.name for f in entry.source.files)} side by side in that folder")


def _converted_size(entry: WeightsEntry) -> int:
    """About the bytes of the converted checkpoint (the model's tensors, without optimiser slots)."""
    if entry.manifest is None:
        return entry.source.total_size
    from ..export.convert_tf import is_skipped_variable

    return sum(row[5] for row in entry.manifest["tensors"] if not is_skipped_variable(row[0])) + (1 << 20)


def _human(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _check_space(entry: WeightsEntry, staging: Path, fetch: bool) -> None:
    need = _converted_size(entry)
    if fetch:
        for f in entry.source.files:
            done = _size(staging / f.name) or _size(staging / (f.name + ".part"))
            need += max(f.size - done, 0)
    free = shutil.disk_usage(staging).free
    if free < need:
        raise WeightsError(f"not enough space in the weights cache {weights_dir()}: {entry.name} "
                           f"needs about {need / 1e6:.1f} MB, {free / 1e6:.1f} MB are free; free some "
                           f"space or set BREGNET_HOME to another folder")


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


def _fetch_all(entry: WeightsEntry, staging: Path, mirror: str | None, timeout: float,
               retries: int, backoff: float, progress: bool, say: Callable[[str], None]
               ) -> dict[str, Path]:
    import httpx

    paths: dict[str, Path] = {}
    limits = httpx.Timeout(timeout, connect=min(timeout, 15.0))
    headers = {"User-Agent": f"bregnet/{__version__}", "Accept-Encoding": "identity"}
    with httpx.Client(timeout=limits, follow_redirects=True, headers=headers) as client:
        for f in entry.source.files:
            url = entry.source.url(f, mirror)
            say(f"fetching {f.name} ({_human(f.size)}) from {url}")
            paths[f.name] = _fetch(client, url, staging / f.name, f, entry.name, timeout, retries,
                                   backoff, progress)
    return paths


def _fetch(client: Any, url: str, dest: Path, f: SourceFile, name: str, timeout: float,
           retries: int, backoff: float, progress: bool) -> Path:
    """Fetch ``url`` into ``dest`` through ``dest.part``, resuming and retrying (see the module)."""
    import httpx
    from tqdm import tqdm

    if dest.is_file():
        if dest.stat().st_size == f.size:
            return dest  # fetched by an earlier run that stopped before converting
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    failures = 0
    with tqdm(total=f.size, initial=min(_size(part), f.size), unit="B", unit_scale=True,
              unit_divisor=1024, desc=f.name, disable=not progress, leave=False,
              file=sys.stderr) as bar:
        while True:
            have = _size(part)
            if have > f.size:
                part.unlink()
                have = 0
            if have == f.size:
                break
            try:
                _get(client, url, part, have, f, bar)
                continue
            except _Retry as exc:
                error = str(exc)
            except httpx.TransportError as exc:
                error = _describe(exc, url, timeout)
            failures += 1
            if failures > retries:
                raise WeightsError(_failed_message(f, url, name, error, failures, part))
            time.sleep(backoff * 2 ** (failures - 1))
    os.replace(part, dest)
    return dest


def _failed_message(f: SourceFile, url: str, name: str, error: str, attempts: int,
                    part: Path) -> str:
    kept = _size(part)
    if not kept:
        with contextlib.suppress(OSError):
            part.unlink()
    again = f"`bregnet weights download {name}`"
    tail = (f"{kept:,} of {f.size:,} bytes are kept: run {again} again to resume" if kept else
            f"run {again} again when the network is back, use --mirror URL, or fetch the files "
            f"another way and use --from DIR")
    return (f"cannot download {f.name} from {url}: {error} "
            f"({attempts} attempt{'s' if attempts > 1 else ''}); {tail}")


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """``(start, total)`` from ``Content-Range: bytes START-END/TOTAL`` (total None for ``*``)."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, total = value[6:].split("/", 1)
        start = int(span.split("-", 1)[0])
        return start, None if total.strip() == "*" else int(total)
    except ValueError:
        return None


def _get(client: Any, url: str, part: Path, have: int, f: SourceFile, bar: Any) -> None:
    """One GET of the rest of the file (``Range: bytes=HAVE-`` when resuming), appended to
    ``part``. Raises _Retry for a transient failure, WeightsError for a final one."""
    headers = {"Range": f"bytes={have}-"} if have else {}
    too_long = False
    with client.stream("GET", url, headers=headers) as r:
        code = r.status_code
        if code == 416:  # what we have is not a prefix of the server's file: start again
            part.unlink(missing_ok=True)
            raise _Retry("the server refused to resume (HTTP 416)")
        if code in _RETRY_STATUS:
            raise _Retry(f"HTTP {code} {r.reason_phrase}")
        if code not in (200, 206):
            hint = ("the file is not at that address: check the URL or --mirror, or fetch the "
                    "files another way and use --from DIR") if code in (404, 410) else \
                   ("the server refuses access: use --mirror URL or --from DIR") if code in (401, 403) \
                   else "unexpected answer: use --mirror URL or --from DIR"
            raise WeightsError(f"cannot download {f.name}: HTTP {code} {r.reason_phrase} for {url} "
                               f"({hint})")
        encoded = r.headers.get("content-encoding", "identity").lower() not in ("", "identity")
        if code == 206:
            cr = _content_range(r.headers.get("content-range"))
            if cr is None or cr[0] != have:
                part.unlink(missing_ok=True)
                raise _Retry("the server answered the resume request with another byte range")
            total, mode = cr[1], "ab"
        else:
            length = r.headers.get("content-length")
            total = int(length) if length and length.isdigit() and not encoded else None
            have, mode = 0, "wb"
            bar.reset(total=f.size)
        if total is not None and total != f.size:
            part.unlink(missing_ok=True)
            raise WeightsError(f"{url} is {total:,} bytes, but the published {f.name} is {f.size:,} "
                               f"bytes: not the same file (check the URL or --mirror); nothing was "
                               f"installed")
        with open(part, mode) as out:
            for chunk in r.iter_bytes():  # as received: a drop loses nothing written
                if have + len(chunk) > f.size:
                    too_long = True
                    break
                out.write(chunk)
                have += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    if too_long:
        part.unlink(missing_ok=True)
        raise WeightsError(f"{url} sends more than the {f.size:,} bytes of the published {f.name}: "
                           f"not the same file (check the URL or --mirror); nothing was installed")
    if have < f.size:
        raise _Retry(f"the server ended the file after {have:,} of {f.size:,} bytes")


def _os_cause(exc: BaseException) -> BaseException | None:
    seen = exc
    for _ in range(8):
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
        if seen is None or isinstance(seen, OSError):
            return seen
    return None


def _describe(exc: Exception, url: str, timeout: float) -> str:
    """One phrase for a transport failure: refused, no network, timeout, dropped connection."""
    import httpx

    u = httpx.URL(url)
    host = f"{u.host}:{u.port}" if u.port else u.host
    low = str(exc).lower()
    cause = _os_cause(exc)
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out connecting to {host}"
    if isinstance(exc, httpx.ConnectError):
        if isinstance(cause, ConnectionRefusedError) or "refused" in low:
            return f"connection refused by {host} (nothing listens there)"
        if isinstance(cause, socket.gaierror) or any(
                s in low for s in ("name or service", "name resolution", "nodename", "getaddrinfo")):
            return f"cannot resolve {u.host} (no network connection?)"
        if "unreachable" in low:
            return f"{host} is unreachable (no network connection?)"
        return f"cannot connect to {host}: {' '.join(str(exc).split())}"
    if isinstance(exc, httpx.TimeoutException):
        return f"{host} sent nothing for {timeout:g} s"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return f"{host} dropped the connection"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# --------------------------------------------------------------------------------------------
# Conversion and installation
# --------------------------------------------------------------------------------------------


def _convert(entry: WeightsEntry, paths: dict[str, Path], staging: Path, shas: dict[str, str],
             origin: dict[str, Any]) -> Path:
    from ..engine.checkpoint import read_metadata
    from ..export.convert_tf import convert_tf_checkpoint

    prefix = entry.source.prefix_name
    bundle = paths[f"{prefix}.index"].parent / prefix
    source = {
        "repository": entry.source.repository,
        "commit": entry.source.commit,
        "path": entry.source.file(f"{prefix}.index").path[: -len(".index")],
        "files": [f.name for f in entry.source.files],
        "sha256": shas,  # of each source file as fetched
        "sizes": {f.name: f.size for f in entry.source.files},
        "verified": integrity_summary(entry),
        "checksums_verified": True,  # by verify_source_files, before this conversion
        "fetched": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **origin,
    }
    weights = {"name": entry.name, "description": entry.description,
               "provenance": entry.provenance, "license": entry.license,
               "reported": [r.to_dict() for r in entry.reported], **dict(entry.metadata)}
    out = staging / CHECKPOINT_NAME
    # with a manifest every tensor's CRC32C was just checked: the converter need not repeat it
    convert_tf_checkpoint(bundle, out, labels=list(entry.labels), verify=entry.manifest is None,
                          preprocess=entry.preprocess, source_facts=source, extra={"weights": weights})
    meta = read_metadata(out)
    wrong = {k: (meta.model_args.get(k), v) for k, v in entry.arch_args.items()
             if meta.model_args.get(k) != v}
    if meta.model_name != entry.architecture or wrong:
        for p in (out, out.with_suffix(".json")):
            with contextlib.suppress(OSError):
                p.unlink()
        raise WeightsError(f"the files of {entry.name} convert to a {meta.model_name} with "
                           f"{wrong or 'other arguments'}, not the registered {entry.architecture} "
                           f"{dict(entry.arch_args)}")
    return out


def _install(converted: Path, dest: Path) -> None:
    """Move the converted checkpoint into ``dest`` by renames; the ``.safetensors`` goes last, so
    the name counts as installed only once everything is there."""
    dest.mkdir(parents=True, exist_ok=True)
    readable = converted.with_suffix(".json")
    if readable.is_file():
        os.replace(readable, dest / readable.name)
    os.replace(converted, dest / CHECKPOINT_NAME)
    fsync_dir(dest)
