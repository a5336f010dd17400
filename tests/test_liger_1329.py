"""Liger-Kernel #1329's mechanism on CPU: flagged by the attainable bound, invisible to the textbook one.

The batch: bfloat16, V = 32000, four rows whose target has p_t about 0.999 (the PR's case):
the target logit 17.25 over others drawn in [-0.5, 0.5]. The plug-in
(tests/liger_1329_adapters.py) rounds p to bfloat16 before p_t - 1: 0 for a true -1.03e-3,
100 % wrong. Its absolute error is far inside the textbook bound of bfloat16 (u = 2**-8 times
a scale of about 17), so the grade is `lossy`, not `inaccurate`: outside the attainable bound
by two orders of magnitude, within the textbook one.

torch.cross_entropy on the CPU returns the very same zeros here (and a loss of 0 for a true
1.03e-3): its bfloat16 log_softmax takes the log of a sum rounded to bfloat16 (1 + 1.03e-3 is
1.0 there), the textbook algorithm in the dtype, so it is `lossy` too. The PR's 0.42 % for
PyTorch is its CUDA kernel. torch.careful (float32 work, one rounding) is `ok`.
"""

import numpy as np
import pytest

from harness.numerics import dtypes
from harness.numerics import reference
from harness.numerics.cases import Case
from harness.testing.outcomes import outcomes

torch = pytest.importorskip("torch")

from harness import adapters as registry  # noqa: E402
from liger_1329_adapters import BF16_RMW  # noqa: E402

V = 32000


def p_near_0999_batch() -> Case:
    rng = np.random.default_rng(1329)
    z = rng.uniform(-0.5, 0.5, size=(4, V))
    target = np.array([3, 100, 31999, 17000])
    z[np.arange(4), target] = 17.25
    return Case("liger-1329/bfloat16/4x32000", "manual", "bfloat16", dtypes.exact(z, "bfloat16"), target)


def test_liger_1329_bf16_read_modify_write_is_lossy_not_ok_and_torch_cpu_loses_the_same_gradient():
    case = p_near_0999_batch()
    ids = ("torch.cross_entropy", "torch.careful")
    got = outcomes(case, [BF16_RMW, *(registry.get(i) for i in ids)])
    rmw, ce, careful = got[BF16_RMW.id], got["torch.cross_entropy"], got["torch.careful"]

    ref = reference.loss_and_grad(case)
    rows = np.arange(4)
    true_g = ref.grad[rows, case.target]
    assert np.all((-1.2e-3 < true_g) & (true_g < -0.9e-3))  # p_t about 0.999, as in the PR

    # The mechanism: p_t rounds to 1.0 in bfloat16, so p_t - 1 is 0 on every row: 100 % off.
    assert np.all(rmw.output.grad.astype(np.float64)[rows, case.target] == 0.0)
    assert rmw.status == "lossy", rmw.row["message"]
    assert rmw.row["n_grad_lossy"] == 4 and rmw.row["grad_att_ratio"] > 100  # the four target elements
    assert rmw.row["grad_tol_ratio"] < 0.1  # today's (textbook) grade would call it ok
    assert rmw.row["n_loss_lossy"] == 0  # its loss, computed in float32 and rounded once, is fine

    # torch.cross_entropy on CPU: the same zeros at the target, and a zero loss.
    assert np.all(ce.output.grad.astype(np.float64)[rows, case.target] == 0.0)
    assert np.all(ce.output.loss.astype(np.float64) == 0.0) and np.all(ref.loss > 1e-3)
    assert ce.status == "lossy", ce.row["message"]

    # The careful implementation keeps the target gradient within an ulp of bfloat16.
    cg = careful.output.grad.astype(np.float64)[rows, case.target]
    assert np.all(np.abs(cg - true_g) <= dtypes.get("bfloat16").unit_roundoff * 2 * np.abs(true_g))
    assert careful.status == "ok", careful.row["message"]
