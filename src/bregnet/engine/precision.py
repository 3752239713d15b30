"""What ``train.amp`` and ``train.channels_last`` mean on a given device.

* CUDA: ``auto`` is bfloat16 autocast where the GPU supports it, else float16 (with a gradient
  scaler); channels-last is on.
* CPU: ``auto`` is bfloat16 autocast where the processor computes bfloat16 natively (AVX512-BF16
  or AMX-BF16), else float32; float16 is refused (no CPU gradient scaling here, nothing to gain).
  On the dev CPU (AMD EPYC with AVX512-BF16) bf16 trained bregnext50 about 1.8-2x and the demo
  model about 1.3x faster than float32, to the same accuracy within one-seed noise
  (BENCHMARKS.md, "CPU precision and memory format"). Channels-last (``auto``) is used where it
  measured faster there: with float32 (bregnext50 +10%, the demo level), not with bf16 (the demo
  7% slower, bregnext50 level).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..errors import ConfigError

__all__ = ["CPU_CHANNELS_LAST", "cpu_has_native_bf16", "resolve_amp", "resolve_channels_last"]


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX-BF16).

    Asks PyTorch's cpuinfo (``torch.cpu.get_capabilities``); on builds without it, reads the
    kernel's CPU flags. (``torch.ops.mkldnn._is_mkldnn_bf16_supported`` is not the test: it is
    also true where oneDNN only emulates bf16 with AVX-512, which is slower than float32.)
    """
    get_caps = getattr(torch.cpu, "get_capabilities", None)
    if get_caps is not None:
        try:
            caps = get_caps()
        except RuntimeError:  # cpuinfo could not initialise (unusual VMs)
            caps = None
        if caps:
            return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_amp(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` (auto | bf16 | fp16 | off) on ``device``; None: fp32."""
    if setting == "off":
        return None
    if device.type == "cuda":
        if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float16
    if device.type == "cpu":
        if setting == "fp16":
            raise ConfigError("train.amp=fp16 needs a CUDA device; on the CPU use bf16, auto or off")
        if setting == "bf16":
            if not cpu_has_native_bf16():
                print("bregnet: note: this CPU has no bfloat16 instructions (AVX512-BF16/AMX); "
                      "train.amp=bf16 runs emulated and slower than train.amp=off", flush=True)
            return torch.bfloat16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None  # other devices: float32


# train.channels_last=auto on the CPU, by autocast dtype (None: float32): where it measured
# faster on the dev CPU (BENCHMARKS.md, "CPU precision and memory format").
CPU_CHANNELS_LAST: dict[torch.dtype | None, bool] = {None: True, torch.bfloat16: False}


def resolve_channels_last(setting: str | bool, device: torch.device,
                          amp_dtype: torch.dtype | None) -> bool:
    """Whether the model and its inputs use the channels-last memory format."""
    if setting != "auto":
        return bool(setting)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and CPU_CHANNELS_LAST.get(amp_dtype, False)
