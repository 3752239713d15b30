"""One module per data set format; all implement :class:`FaceReader`."""

from .base import FaceReader, SkippedItem

__all__ = ["FaceReader", "SkippedItem"]
