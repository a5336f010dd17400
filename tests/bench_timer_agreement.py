"""The harness's timing method against torch.utils.benchmark.Timer: a benchmark, run on
demand on a quiet machine (`.venv/bin/python -m pytest tests/bench_timer_agreement.py`),
never part of the test run: a timed comparison on a shared 2-core machine is at the mercy
of every other process. scripts/gpu_bench.sh makes the same check on a GPU."""

import statistics

import pytest

from harness.adapters import get
from harness.bench import measure


def test_harness_median_agrees_with_torch_timer():
    """The harness's median for F.cross_entropy's forward is within 5% of
    torch.utils.benchmark.Timer's, measured in the same process.

    A shared 2-core machine drifts by tens of percent over seconds, so the two are
    interleaved in short rounds and their samples pooled. The batch (512 x 8192, ~4-10 ms a
    call) is large enough that Timer times single calls (number_per_run 1), the harness's
    own pattern: on calls under 10 ms Timer averages blocks of back-to-back calls, which on
    this machine run up to 2x slower than calls timed one by one (caches and the allocator),
    a difference of method, not of accuracy.
    """
    torch = pytest.importorskip("torch")
    from torch.utils.benchmark import Timer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Timer's default; one thread is also far less noisy here
    try:
        bench_case = measure.BenchCase("float32", 512, 8192, timing=measure.TimingSpec(5, 100, 0.1, 0.5))
        case = bench_case.case()
        prepared = get("torch.cross_entropy").prepare(case, "cpu")
        z = torch.from_numpy(case.logits.copy()).requires_grad_()
        t = torch.from_numpy(case.target)
        timer = Timer(
            "F.cross_entropy(z, t, reduction='none', ignore_index=-100)",
            globals={"F": torch.nn.functional, "z": z, "t": t},
        )
        def harness_samples():
            return list(measure.measure_pass(prepared, "forward", bench_case.timing).samples)

        def timer_samples():
            m = timer.blocked_autorange(min_run_time=0.1)
            return [x / m.number_per_run for x in m.raw_times]

        for _ in range(4):  # retries: a burst of load from another process can spoil an attempt
            ours, theirs = [], []
            for _ in range(4):  # A B B A: neither method always runs first after the other
                ours += harness_samples()
                theirs += timer_samples() + timer_samples()
                ours += harness_samples()
            ratio = statistics.median(ours) / statistics.median(theirs)
            print(f"harness/Timer {ratio:.3f}")
            if abs(ratio - 1) <= 0.05:
                break
        assert abs(ratio - 1) <= 0.05, f"harness/Timer median ratio {ratio:.3f} ({len(ours)} vs {len(theirs)} samples)"
    finally:
        torch.set_num_threads(threads)
