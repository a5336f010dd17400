"""A worker's thread budget: how many threads its framework may use for one operation.

Workers of different frameworks run at the same time (`--jobs`). Left alone, each
framework sizes its thread pools to every core of the machine, so two workers on two
cores each start two compute threads and spend their time preempting one another (and
spinning in OpenMP barriers). Each worker therefore gets an explicit budget, set before
its framework is imported (most read it only then):

- OpenMP / MKL / OpenBLAS pools (numpy's BLAS, PyTorch's intra-op pool): `*_NUM_THREADS`;
- TensorFlow: `TF_NUM_INTRAOP_THREADS` / `TF_NUM_INTEROP_THREADS`;
- torch.compile's C++ builds: `TORCHINDUCTOR_COMPILE_THREADS` (left alone, inductor starts a
  pool of compile processes as wide as the machine in each torch worker: a Python with torch
  imported, 2-3 CPU seconds, and builds that fight the other workers for the cores; with 1
  it runs the compiler itself, the same command lines, one at a time);
- XLA on CPU (JAX, TF's XLA): Eigen's thread pool off for a budget of 1;
- after the import, `Framework.set_threads` (torch.set_num_threads, tf.config.threading)
  for the frameworks that take it at run time.

The budget is one thread per worker, whatever `--jobs` is and however many cores the
machine has (`PER_WORKER`): torch.compile's CPU kernels round differently with another
thread count (tests/test_ray_executor.py), so a budget that followed `--jobs` or the core
count would make a row depend on them. With one thread, a `--jobs 2` run equals a
`--jobs 1` run row for row (tested), and a local run equals a Ray run (whose units get
one CPU each). The default `--jobs` (the number of cores) gave one thread per worker on
any machine anyway; only a `--jobs` below the core count loses threads it would have had.
"""

from __future__ import annotations

import os

_POOLS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: Threads each framework worker may use (see the module docstring: fixed, so rows never
#: depend on --jobs or on the machine's cores).
PER_WORKER = 1


def apply_environment(threads: int) -> None:
    """Set the thread-pool variables frameworks read when they are imported (in the worker,
    before any framework import)."""
    n = str(int(threads))
    for name in _POOLS:
        os.environ[name] = n
    os.environ["TF_NUM_INTRAOP_THREADS"] = n
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = n
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
