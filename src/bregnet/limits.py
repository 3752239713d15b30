"""Resource limits on untrusted input, checked *before* memory is allocated.

A hostile or broken file must not make bregnet allocate gigabytes or run for ever: a tiny PNG can
announce 60000 x 60000 pixels, a checkpoint's metadata a network with a stage of width 30000, a
CSV a class index of 10^23. Each such quantity has a limit here, checked before the allocation
it would cause; going over raises :class:`~bregnet.errors.LimitError` with one line that names
the limit and the environment variable that raises it.

==============================  ===============  ==============================================
environment variable            default          what it bounds
==============================  ===============  ==============================================
``BREGNET_MAX_IMAGE_PIXELS``    50,000,000       decoded pixels of one image (read from its
                                                 header before decoding)
``BREGNET_MAX_IMAGE_BYTES``     256 MiB          size of one image file
``BREGNET_MAX_CROP_SIDE``       1,024            side of a model input / face crop (a
                                                 checkpoint's ``input_size``)
``BREGNET_MAX_CLASSES``         10,000           classes of a data set or a checkpoint
``BREGNET_MAX_MODEL_PARAMS``    250,000,000      parameters of a network built from a recipe or
                                                 a checkpoint's metadata (estimated before
                                                 building)
``BREGNET_MAX_MODEL_UNITS``     1,000            residual units of such a network
``BREGNET_MAX_METADATA_BYTES``  16 MiB           a checkpoint's JSON header, a recipe, a cache's
                                                 JSON files
``BREGNET_MAX_MODEL_BYTES``     2 GiB            an ONNX model file (read whole)
==============================  ===============  ==============================================

The values are read from the environment each time they are checked, so a process (or a test)
can change them at run time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import LimitError

__all__ = [
    "LIMITS",
    "Limit",
    "MAX_CLASSES",
    "MAX_CROP_SIDE",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_METADATA_BYTES",
    "MAX_MODEL_BYTES",
    "MAX_MODEL_PARAMS",
    "MAX_MODEL_UNITS",
]


@dataclass(frozen=True)
class Limit:
    """One limit: its environment variable, default and unit (for the message)."""

    env: str
    default: int
    unit: str

    @property
    def value(self) -> int:
        """The limit in force: the environment variable when set to a positive integer, else the
        default (a malformed value is a :class:`LimitError`, not silently ignored)."""
        raw = os.environ.get(self.env, "").strip().replace("_", "")
        if not raw:
            return self.default
        try:
            value = int(raw)
        except ValueError:
            raise LimitError(f"{self.env}={os.environ[self.env]!r} is not a whole number") from None
        if value < 1:
            raise LimitError(f"{self.env}={value} must be positive")
        return value

    def check(self, amount: int | float, what: str) -> None:
        """Raise :class:`LimitError` when ``amount`` exceeds the limit; ``what`` names the input
        (e.g. ``"image a.png (60000 x 60000)"``)."""
        limit = self.value
        if amount > limit:
            shown = f"{amount:,.0f}" if isinstance(amount, float) else f"{amount:,}"
            raise LimitError(f"{what}: {shown} {self.unit}, over the limit of {limit:,} "
                             f"(set {self.env} to allow more)")


MAX_IMAGE_PIXELS = Limit("BREGNET_MAX_IMAGE_PIXELS", 50_000_000, "pixels")
MAX_IMAGE_BYTES = Limit("BREGNET_MAX_IMAGE_BYTES", 256 << 20, "bytes")
MAX_CROP_SIDE = Limit("BREGNET_MAX_CROP_SIDE", 1024, "pixels per side")
MAX_CLASSES = Limit("BREGNET_MAX_CLASSES", 10_000, "classes")
MAX_MODEL_PARAMS = Limit("BREGNET_MAX_MODEL_PARAMS", 250_000_000, "parameters")
MAX_MODEL_UNITS = Limit("BREGNET_MAX_MODEL_UNITS", 1_000, "residual units")
MAX_METADATA_BYTES = Limit("BREGNET_MAX_METADATA_BYTES", 16 << 20, "bytes")
MAX_MODEL_BYTES = Limit("BREGNET_MAX_MODEL_BYTES", 2 << 30, "bytes")

#: Every limit, for documentation and tests.
LIMITS: tuple[Limit, ...] = (MAX_IMAGE_PIXELS, MAX_IMAGE_BYTES, MAX_CROP_SIDE, MAX_CLASSES,
                             MAX_MODEL_PARAMS, MAX_MODEL_UNITS, MAX_METADATA_BYTES, MAX_MODEL_BYTES)
