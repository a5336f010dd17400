"""The device's copy bandwidth, measured in the same bench: the roofline a softmax-CE pass
is read against.

A pass must at least read the logits once (forward) and write the gradient once
(forward+backward), `BenchCase.min_bytes`, so `min_bytes / median` is an effective
bandwidth, and its ratio to the copy bandwidth measured here says how far an
implementation is from streaming speed.
"""

from __future__ import annotations

import math
import time

import numpy as np

from harness.errors import first_line
from harness.store import memory, runfolder

def cpu_copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """GB/s (1e9 bytes/s) of a large numpy copy, counting the bytes read and the bytes
    written: the same traffic model as `min_bytes`. One thread, like most adapters' loops."""
    src = np.ones(max(nbytes // 8, 1), dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / float(np.median(times)) / 1e9


def cuda_copy_bandwidth(nbytes: int = 2 << 30, repeats: int = 20) -> tuple[str, float]:
    """(GPU name, GB/s) of a torch device-to-device copy timed with CUDA events, read +
    written bytes. Runs in a spawned process so the bench's own process holds no CUDA context."""
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return torch.cuda.get_device_name(), 2 * src.numel() * 4 / float(np.median(times)) / 1e9


def device_bandwidth(device: str, nbytes: int | None = None) -> tuple[str, float, str]:
    """(device name, copy GB/s, note) measured now, on the bench's device."""
    if device == "cpu":
        # two buffers of 1 GiB, or of a quarter of the memory bound each where that is less
        # (found by tests/test_cli_fuzz.py: 2 GiB under --max-memory 256M)
        return runfolder.cpu_model(), cpu_copy_bandwidth(nbytes or min(1 << 30, memory.limit() // 4)), ""
    import concurrent.futures
    import multiprocessing as mp

    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            name, gbps = pool.submit(cuda_copy_bandwidth, nbytes or 2 << 30).result(timeout=300)
        return name, gbps, ""
    except Exception as exc:  # no torch, no GPU: the bench still runs, fractions are NaN
        return "cuda (unknown)", math.nan, "copy bandwidth not measured: " + first_line(f"{type(exc).__name__}: {exc}")
