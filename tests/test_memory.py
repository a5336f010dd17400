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


def test_what_a_case_waiting_with_the_workers_holds_is_at_most_its_waiting_bytes_and_float64_answers_reach_it():
    """`memory.waiting_bytes` bounds what the lanes hold per case (`runner._pipelined`): its
    logits and the answer (loss and gradient) of each adapter that runs it. Real numpy adapters' answers on
    every dtype stay within it; float64 ones reach it exactly (a bound nothing reaches would
    hold back the lanes for nothing)."""
    from harness.adapters import registry
    from harness.adapters.workers import call_adapter
    from harness.inputs import regimes
    from harness.run.rows import declined
    from harness.store import memory

    adapters = [registry.get(i) for i in ("numpy.careful", "numpy.naive", "numpy.stable", "scipy.log_softmax")]
    reached = []
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        case = regimes.make_case("typical", dtype, (16, 1000), "index", 0)
        _, runnable = declined(case, adapters, "cpu")
        answers = [call_adapter(a, case, "cpu") for a in runnable]
        held = case.logits.nbytes + sum(x.output.grad.nbytes + x.output.loss.nbytes for x in answers if x.status == "ran")
        bound = memory.waiting_bytes(case.logits, len(runnable))
        assert runnable and held <= bound, dtype
        reached.append(held == bound)
    assert reached[-1]  # float64 answers: the bound, byte for byte
