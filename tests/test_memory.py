"""engine.memory: glibc keeps the freed blocks of a training step instead of re-faulting them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from bregnet.engine.memory import malloc_plan

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")

_CHILD = textwrap.dedent("""
    import resource, sys
    import torch
    from bregnet.engine.memory import keep_freed_memory
    print(keep_freed_memory())
    def churn():
        for _ in range(10):   # big blocks, freed and allocated again, as in training steps
            xs = [torch.ones(10 << 20) for _ in range(2)]   # 2 x 40 MB (glibc maps >32 MB)
            del xs
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(env_extra: dict[str, str]) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", "BREGNET_MALLOC")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()
    return out[0], int(out[-1])


def test_freed_blocks_are_reused_not_faulted_again():
    note, kept = _faults({})
    assert note.startswith("freed memory kept for reuse"), note
    system_note, system = _faults({"BREGNET_MALLOC": "system"})
    assert "BREGNET_MALLOC=system" in system_note
    # 10 x 80 MB written through fresh mappings is about 200,000 pages with glibc's defaults
    assert system > 100_000, system
    assert kept < system / 20, (kept, system)


def test_what_the_user_chose_is_left_alone():
    assert malloc_plan({}, "linux") is None
    assert malloc_plan({"BREGNET_MALLOC": "system"}, "linux") == "BREGNET_MALLOC=system"
    assert malloc_plan({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "linux") == "jemalloc is preloaded"
    assert malloc_plan({"LD_PRELOAD": "libtcmalloc_minimal.so"}, "linux") == "tcmalloc is preloaded"
    assert malloc_plan({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "linux") \
        == "GLIBC_TUNABLES sets malloc"
    assert malloc_plan({"MALLOC_ARENA_MAX": "2"}, "linux") == "MALLOC_ARENA_MAX is set"
    assert malloc_plan({}, "darwin").startswith("not Linux")

