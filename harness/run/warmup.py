"""Compile the judging and reference kernels (numba, `numerics.fused_kernels`) into the
checkout's cache, once, when the venv is built (`make setup`: `python -m harness.run.warmup`).

Why: numba compiles a kernel on its first call and caches it beside its source, so a
checkout's first run compiled every kernel on the parent's threads, beside the workers:
~10-15 CPU seconds of harness work the second run does not pay. Compiled here, as a
package's extensions are built when it is installed, the first `make run` loads them.

It takes the paths a run takes, on tiny cases, so it compiles the very signatures a run
calls (tests/test_fused.py checks that a run after it compiles nothing): a narrow dtype's
reference and a float64 one (its double-double exp and extended-precision truth), the
judge's columns, and the search's row scores. Where numba is missing it does nothing.
"""

from __future__ import annotations

import numpy as np

from harness.inputs.regimes import make_case
from harness.numerics import fused, metrics, reference
from harness.run import rowsearch


def compile_kernels() -> bool:
    """Call every kernel once; False where numba is not installed."""
    if fused.kernels() is None:
        return False
    for dtype in ("float32", "float64"):
        for kind in ("index", "soft"):
            case = make_case("typical", dtype, (4, 8), kind, 0)
            for attainable in (True, False):
                ref = reference.loss_and_grad(case, attainable=attainable)
                loss = np.asarray(ref.loss, np.float64).astype(case.logits.dtype)
                grad = np.asarray(ref.grad, np.float64).astype(case.logits.dtype)
                if attainable:
                    metrics.measure(ref, loss, grad, dtype)
                else:
                    rowsearch.judge_rows(ref, loss, grad, dtype)
    return True


if __name__ == "__main__":
    compile_kernels()
