"""The one place where a device name becomes a usable :class:`torch.device`.

``--device`` is spelled ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; the CLI checks the
spelling when it parses the argument (:func:`bregnet.cli._common.device_arg`) and every command
that runs a model (train, evaluate, predict, export) then calls :func:`resolve_device`, which
checks that the device exists in this build of PyTorch on this machine. Asking for CUDA on a
CPU-only build is one line (:class:`~bregnet.errors.UsageError`), not a traceback from deep
inside the first ``.to(device)``.
"""

from __future__ import annotations

import re

from .errors import UsageError

__all__ = ["DEVICE_PATTERN", "check_device_name", "resolve_device"]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: str) -> str:
    """The normalised spelling of a device name (lower case, stripped); UsageError otherwise."""
    value = str(name).strip().lower()
    if not DEVICE_PATTERN.match(value):
        raise UsageError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto")
    return value


def resolve_device(name: str | None = "auto"):
    """``auto`` (or None) -> CUDA when available, else the CPU; any other name -> that device,
    after checking that it is available (UsageError naming what is missing)."""
    import torch

    value = "auto" if name is None else check_device_name(name)
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    if value == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("device 'mps' is not available here (no Apple GPU, or this PyTorch "
                             "build has no MPS support); use --device cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = "this PyTorch build has no CUDA support" if torch.version.cuda is None \
            else "no CUDA GPU is visible"
        raise UsageError(f"device {value!r} is not available ({why}); use --device cpu")
    index = int(value.split(":", 1)[1]) if ":" in value else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise UsageError(f"device {value!r} does not exist: {count} CUDA GPU(s) visible "
                         f"(cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)
