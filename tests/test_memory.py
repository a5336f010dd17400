"""`store.memory.reuse_freed_memory`: judging makes and frees many ~1 MB arrays; with glibc's
defaults each one is faulted in afresh, with the setting they are reused."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    if sys.argv[1] == "on":
        from harness.store import memory
        assert memory.reuse_freed_memory()
    for _ in range(3):  # the first rounds map the heap
        arrays = [np.ones(1 << 17) for _ in range(20)]; del arrays
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):  # 20 arrays of 1 MB made, then all freed: judging's pattern
        arrays = [np.ones(1 << 17) for _ in range(20)]; del arrays
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_megabyte_arrays_are_reused_instead_of_faulted_in_again():
    default, reused = _faults("off"), _faults("on")
    # 50 rounds x 20 MB: with glibc's defaults the freed heap is trimmed and ~256 pages per
    # array are faulted in again each round (~250,000 faults); kept, none are.
    assert default > 50 * 20 * 128
    assert reused < default / 100
