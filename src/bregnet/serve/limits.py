"""What the service accepts: upload sizes, pixel counts, file types sniffed from the bytes.

Every check here runs *before* the expensive step it protects: the body size while the body
streams in (never after reading it all), the pixel count from the image header before the image is
decoded (a decompression bomb is refused without allocating its pixels), the file type from the
first bytes whatever the client's ``Content-Type`` says. A failed check raises :class:`HTTPError`
with the status code the client should get.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

__all__ = [
    "HTTPError",
    "IMAGE_FORMATS",
    "Limits",
    "Upload",
    "VIDEO_CONTAINERS",
    "receive_upload",
    "sniff_image",
    "sniff_video",
]

MB = 1024 * 1024

#: Image formats the service decodes (PIL's names; a phone's multi-picture JPEG, MPO, counts as
#: JPEG). Everything else is refused with 415; in particular formats whose decoders call external
#: programs (EPS, PDF) never reach a decoder.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")

#: Video containers recognised from their first bytes -> the file suffix given to the decoder.
VIDEO_CONTAINERS = {"mp4": ".mp4", "avi": ".avi", "matroska": ".mkv", "mpeg-ts": ".ts",
                    "mpeg-ps": ".mpg", "flv": ".flv", "ogg": ".ogv", "asf": ".wmv"}


class HTTPError(Exception):
    """A request the service refuses: ``status`` (4xx/5xx), a one-line ``message`` for the client's
    ``{"error": ...}``, and extra response ``headers`` (e.g. ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may cost. Sizes in bytes, times in seconds."""

    max_upload_bytes: int = 20 * MB        # one image (the whole request body)
    max_video_bytes: int = 200 * MB        # one video upload, spooled to a temporary file
    max_pixels: int = 50_000_000           # width x height of an image or a video frame
    max_faces: int = 32                    # faces per image answered (the highest scores)
    max_video_frames: int = 10_000         # sampled frames processed per video request
    request_timeout_s: float = 30.0        # an image request, from its first byte to its answer
    video_timeout_s: float = 600.0         # a video request, including its streamed answer
    max_concurrent_videos: int = 2         # video requests processed at once (more: 503)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- sniffing ---------------------------------------------------------------------------------
def sniff_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """``(format, width, height)`` of encoded image bytes, read from the header only.

    Raises HTTPError 415 for bytes that are not one of :data:`IMAGE_FORMATS`, 413 for an image of
    more than ``max_pixels`` pixels (refused before any pixel is decoded)."""
    from PIL import Image

    if not data:
        raise HTTPError(400, "empty upload: send the image as the request body or a form file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # DecompressionBombWarning: we check ourselves
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:   # lazy: header only
                fmt, (width, height) = str(im.format), im.size
    except Image.DecompressionBombError:
        raise HTTPError(413, f"image has more than {max_pixels:,} pixels (the limit)") from None
    except Exception:  # noqa: BLE001 - whatever PIL cannot identify is not an accepted image
        raise HTTPError(415, "not an image in an accepted format ("
                             + ", ".join(IMAGE_FORMATS) + ")") from None
    if width <= 0 or height <= 0:
        raise HTTPError(422, f"{fmt} image with no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise HTTPError(413, f"image of {width}x{height} = {width * height:,} pixels exceeds the "
                             f"limit of {max_pixels:,} pixels")
    return fmt, width, height


def sniff_video(head: bytes) -> str:
    """The container of a video from its first bytes (a key of :data:`VIDEO_CONTAINERS`);
    HTTPError 415 for anything else."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpeg-ts"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return "asf"
    if not head:
        raise HTTPError(400, "empty upload: send the video as the request body or a form file")
    raise HTTPError(415, "not a video in a recognised container (MP4/MOV, AVI, MKV/WebM, "
                         "MPEG-TS/PS, FLV, Ogg, ASF/WMV)")


# -- receiving a body under a size limit ------------------------------------------------------
@dataclass
class Upload:
    """The received file: ``data`` (in memory) or ``path`` (a temporary file the service created
    and deletes with :meth:`discard`), its ``size``, and the client's file name if a form gave one."""

    size: int
    data: bytes | None = None
    path: Path | None = None
    filename: str | None = None

    def discard(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.path = None


class _Sink:
    """Where the file's bytes go: a bytearray, or a temporary file the service owns."""

    def __init__(self, spool_dir: str | None) -> None:
        self.size = 0
        self.buffer = bytearray() if spool_dir is None else None
        self.path: Path | None = None
        self._fh: Any = None
        if spool_dir is not None:
            fd, name = tempfile.mkstemp(prefix="bregnet-upload-", suffix=".bin", dir=spool_dir)
            self.path = Path(name)
            self._fh = os.fdopen(fd, "wb")

    def write(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self.buffer is not None:
            self.buffer += chunk
        else:
            self._fh.write(chunk)

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


_FILE_FIELDS = (b"file", b"image", b"video", b"upload")
_MAX_PARTS = 16


class _FormFile:
    """Streams the file part of a ``multipart/form-data`` body into a sink (python-multipart's
    push parser): the first part with a file name or named ``file``/``image``/``video``."""

    def __init__(self, boundary: bytes, sink: _Sink) -> None:
        from python_multipart.multipart import MultipartParser

        self.sink = sink
        self.found = False
        self.done = False
        self.filename: str | None = None
        self.parts = 0
        self._capturing = False
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        })

    def write(self, chunk: bytes) -> None:
        from python_multipart.exceptions import MultipartParseError

        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise HTTPError(400, f"malformed multipart body ({exc})") from None

    def finish(self) -> None:
        from python_multipart.exceptions import MultipartParseError

        try:
            self.parser.finalize()
        except MultipartParseError as exc:
            raise HTTPError(400, f"malformed multipart body ({exc})") from None
        if not self.found:
            raise HTTPError(400, "no file in the multipart form (send it as the field 'file')")
        if not self.done:
            raise HTTPError(400, "the multipart body ends inside the file part")

    # callbacks
    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > _MAX_PARTS:
            raise HTTPError(400, f"more than {_MAX_PARTS} parts in the multipart form")
        self._disposition = b""
        self._header_field = self._header_value = b""

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"")
        has_name = b"filename" in options
        self._capturing = not self.found and (has_name or name in _FILE_FIELDS)
        if self._capturing:
            self.found = True
            raw = options.get(b"filename", b"")
            self.filename = raw.decode("utf-8", "replace") or None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._capturing:
            self.sink.write(memoryview(data)[start:end])

    def _part_end(self) -> None:
        if self._capturing:
            self._capturing = False
            self.done = True

    def _end(self) -> None:
        pass


def _boundary(content_type: str) -> bytes | None:
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(content_type)
    if kind.lower() != b"multipart/form-data":
        return None
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPError(400, "multipart/form-data without a boundary")
    return boundary


async def _drain(stream: AsyncIterator[bytes], budget: int, deadline: float) -> None:
    """Read and drop the rest of a refused body (up to ``budget`` bytes) so that the client, still
    sending, receives the error answer instead of a broken connection."""
    async for chunk in stream:
        budget -= len(chunk)
        if budget < 0 or time.monotonic() > deadline:
            return


async def receive_upload(
    stream: AsyncIterator[bytes],
    headers: Any,
    max_bytes: int,
    spool_dir: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
    drain_deadline: float | None = None,
) -> Upload:
    """Receive a request body holding one file, raw or as ``multipart/form-data``, refusing it with
    413 as soon as more than ``max_bytes`` arrive (or ``Content-Length`` announces more).

    ``spool_dir`` None keeps the file in memory; otherwise it is written to a temporary file in
    that folder (the caller deletes it with :meth:`Upload.discard`; on any error it is deleted
    here). ``headers`` is a mapping of lower-case header names."""
    declared = headers.get("content-length")
    if declared is not None:
        try:
            declared_n = int(declared)
        except ValueError:
            raise HTTPError(400, f"bad Content-Length {declared!r}") from None
        if declared_n > max_bytes:
            # refuse before reading; a modest excess is drained so the client sees the answer
            if declared_n <= 4 * max_bytes:
                await _drain(stream, declared_n, drain_deadline or time.monotonic() + 10.0)
            raise HTTPError(413, f"upload of {declared_n:,} bytes exceeds the limit of "
                                 f"{max_bytes:,} bytes", {"Connection": "close"})
    boundary = _boundary(headers.get("content-type", ""))
    sink = _Sink(spool_dir)
    form = _FormFile(boundary, sink) if boundary is not None else None
    received = 0
    try:
        async for chunk in stream:
            if not chunk:
                continue
            received += len(chunk)
            if received > max_bytes:
                await _drain(stream, 3 * max_bytes, drain_deadline or time.monotonic() + 10.0)
                raise HTTPError(413, f"upload exceeds the limit of {max_bytes:,} bytes",
                                {"Connection": "close"})
            if on_chunk is not None:
                on_chunk(len(chunk))
            if form is not None:
                form.write(chunk)
            else:
                sink.write(chunk)
        if form is not None:
            form.finish()
        sink.close()
    except BaseException:
        sink.discard()
        raise
    data = bytes(sink.buffer) if sink.buffer is not None else None
    return Upload(sink.size, data=data, path=sink.path,
                  filename=form.filename if form is not None else None)
