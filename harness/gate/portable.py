"""The gate's portable environment: the same kernels on every x86-64 CPU the gate runs on.

Why: numpy, PyTorch (eager ATen and torch.compile's inductor), XLA (JAX, TensorFlow's jit)
and TensorFlow's oneDNN pick their exp, log and reduction kernels at run time from the CPU's
vector ISA, and thread counts reorder sums. The same code then lands on either side of a
tight bound from one machine to the next. Measured on one Sapphire Rapids Xeon, the gate's
quick run with native AVX-512 kernels against the same run pinned to AVX2 (torch's
`ATEN_CPU_CAPABILITY=avx2`, numpy's AVX-512 dispatch off, XLA's `--xla_cpu_max_isa=AVX2`):
6 status changes in eager torch (ok -> lossy past 1.5x the attainable bound, e.g.
torch.softmax_log float32 typical), and float32 label smoothing at V = 1000 goes from ok to
lossy in torch.cross_entropy. oneDNN limited to AVX2 cannot build TensorFlow's float16 and
bfloat16 softmax at all (an error on every Keras probs case), so TensorFlow runs without
oneDNN here (Eigen's kernels, fixed when the wheel was built).

So the gate's quick run (`check.quick_run`, for both `--update-baseline` and the check)
runs its workers with every framework limited to the x86-64-v3 level (AVX2 + FMA, which
every x86 server CPU of the last decade has, Intel and AMD). Thread counts need nothing
here: every worker, of any run, already has a fixed budget of one thread
(`harness/adapters/threads.py`). A baseline
made on an AVX-512 Xeon then holds on an AVX2 EPYC and back. `cestab run` (the comparison
suite) keeps the native kernels: it measures what users get on their machine, and run.json
records the machine.

Only the workers see this environment (they are spawned after it is set); the reference
runs in this process and needs no pinning (float64 exp within 0.7 ulp, extended
precision for float64 cases: far below any float32 ulp).
"""

from __future__ import annotations

import contextlib
import os

#: Set for every worker of a gate run (XLA_FLAGS is appended to, see `environment`).
FIXED = {
    "ATEN_CPU_CAPABILITY": "avx2",  # eager ATen kernels and inductor's vector ISA
    "TF_ENABLE_ONEDNN_OPTS": "0",  # TensorFlow's Eigen kernels instead of oneDNN's run-time dispatch
}

#: XLA's own ISA cap (JAX and TensorFlow's XLA).
XLA = ("--xla_cpu_max_isa=AVX2",)


def numpy_features_above_avx2() -> list[str]:
    """numpy's run-time dispatch targets above AVX2 that this CPU has (numpy 2.4 names them
    X86_V4, AVX512_ICL, AVX512_SPR); disabling one this CPU lacks would be an error."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [f for f in __cpu_dispatch__ if ("AVX512" in f or f == "X86_V4") and __cpu_features__.get(f)]


def environment() -> dict[str, str]:
    """The variables a gate run's workers get (on top of the inherited environment)."""
    env = dict(FIXED)
    flags = os.environ.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(flags + [f for f in XLA if f not in flags])
    disable = numpy_features_above_avx2()
    if disable:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(disable)
    return env


@contextlib.contextmanager
def pinned():
    """Within the block, spawned workers inherit `environment()`; the old values come back after."""
    env = environment()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
