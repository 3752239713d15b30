"""Keep freed memory in the process while training on the CPU (glibc's malloc settings).

Why: PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults a block of
more than 128 KB (a threshold that adapts up to 32 MB) is mapped fresh from the kernel when it is
allocated and unmapped when it is freed, and the top of the heap is handed back above 128 KB
free. A training step allocates and frees hundreds of megabytes of activations and gradients, so
the kernel may map, zero and fault in the same memory again every step. Measured on the 2-core
dev machine (``resource.getrusage``, float32 ``bregnext50``, batch 64, 2 threads): a plain
training loop took 290,000-990,000 minor page faults and 0.7-1.0 s of system CPU time per
5-6 s step, the real ``Trainer`` step 10,000-24,000 faults and 0.03-0.07 s (glibc's threshold
adapts better to its allocation order); in bfloat16 the blocks are half as large and mostly stay
under the threshold. With mapping off and trimming raised (``mallopt(M_MMAP_MAX, 0)``,
``mallopt(M_TRIM_THRESHOLD, 2 GB)``) the heap keeps the freed blocks and reuses them: 4 faults
per step and 0.01 s of system time in both, the plain loop's step 10% faster, the Trainer's
within the noise of its timing; resident memory stays at its per-step peak, as before
(BENCHMARKS.md, *Shortcut cost*).

This is what jemalloc or tcmalloc preloaded (the allocators PyTorch's CPU performance guide
suggests) would do; nothing is changed when one of them is preloaded (``LD_PRELOAD``), when the
user set glibc's malloc tunables (``GLIBC_TUNABLES`` with ``malloc``, ``MALLOC_*_`` variables),
outside Linux with glibc, or with ``BREGNET_MALLOC=system``. The setting lasts for the process;
the trainer applies it when it trains on the CPU.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory", "malloc_plan"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_BYTES = (1 << 31) - 1      # mallopt takes an int: 2 GB
_ENV = "BREGNET_MALLOC"
_PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")
_MALLOC_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")

_applied: str | None = None


def malloc_plan(environ: dict[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why the allocator is left as it is (a short reason), or None when it should be tuned."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if env.get(_ENV, "").strip().lower() in ("system", "0", "off", "no", "false"):
        return f"{_ENV}={env[_ENV]}"
    if not platform.startswith("linux"):
        return f"not Linux ({platform})"
    preload = env.get("LD_PRELOAD", "")
    for name in _PRELOADED:
        if name in preload:
            return f"{name} is preloaded"
    if "malloc" in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets malloc"
    for var in _MALLOC_VARS:
        if var in env:
            return f"{var} is set"
    return None


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed memory for reuse (once per process) and say what was done:
    a line for the training log."""
    global _applied
    if _applied is not None:
        return _applied
    reason = malloc_plan()
    if reason is None:
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES) == 1
        except (OSError, AttributeError):   # musl or another C library: no mallopt
            ok = False
        _applied = ("freed memory kept for reuse (glibc malloc: no per-block mappings, no trimming "
                    f"under 2 GB; {_ENV}=system leaves it)") if ok else \
            "allocator left as it is (no glibc mallopt)"
    else:
        _applied = f"allocator left as it is ({reason})"
    return _applied
