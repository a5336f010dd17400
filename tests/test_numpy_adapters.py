"""numpy.naive, numpy.stable, scipy.log_softmax and numpy.careful against the reference (real values).

numpy.stable and scipy.log_softmax are the textbook max-shift algorithm: never outside the
textbook bound on these inputs, but `lossy` where a small loss or p_t near 1 needs relative
accuracy; numpy.careful (the attainable bound's model) is `ok`."""

import numpy as np
import pytest

from harness.run import judge
from harness.adapters import registry
from harness import adapters
from harness.numerics import dtypes
from harness.numerics import reference
from harness.inputs import regimes
from harness.numerics.cases import LABEL_KINDS, Case

CAREFUL = ["numpy.stable", "scipy.log_softmax"]  # stable: within the textbook bound (ok or lossy)
WITHIN_TEXTBOOK = ("ok", "lossy")


def result(adapter_id: str, case: Case) -> dict:
    ref = reference.loss_and_grad(case)
    out = adapters.get(adapter_id).compute(case, "cpu")
    return judge.accuracy(ref, out.loss, out.grad, case.dtype) | {"out": out, "ref": ref}


@pytest.mark.parametrize("adapter_id", CAREFUL + ["numpy.naive", "numpy.careful"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", LABEL_KINDS)
def test_typical_inputs_agree_with_reference(adapter_id, dtype, kind):
    case = regimes.make_case("typical", dtype, (16, 50), kind, seed=1)
    r = result(adapter_id, case)
    assert r["status"] == "ok" if adapter_id == "numpy.careful" else r["status"] in WITHIN_TEXTBOOK, r["message"]
    rtol = {"float32": 1e-5, "float64": 1e-13}[dtype]
    np.testing.assert_allclose(r["out"].loss.astype(np.float64), np.asarray(r["ref"].loss, np.float64), rtol=rtol)
    np.testing.assert_allclose(
        r["out"].grad.astype(np.float64), np.asarray(r["ref"].grad, np.float64), rtol=rtol, atol=rtol * 1e-3
    )
    assert r["out"].out_dtype == dtype


def row(values, dtype, target=0):
    return Case("manual", "manual", dtype, dtypes.exact(np.array([values]), dtype), np.array([target]))


@pytest.mark.parametrize("dtype", dtypes.DTYPE_NAMES)
def test_naive_overflows_where_stable_does_not(dtype):
    big = 2 * dtypes.get(dtype).exp_overflow  # exp(big) = inf in this dtype
    case = row([big, big - 1.0, big - 2.0], dtype, target=1)
    naive = result("numpy.naive", case)
    assert naive["status"] == "nonfinite" and np.isnan(naive["out"].loss[0])  # inf / inf
    for adapter_id in CAREFUL:  # float16 arithmetic: lossy there, never nonfinite
        assert result(adapter_id, case)["status"] in WITHIN_TEXTBOOK
    assert result("numpy.careful", case)["status"] == "ok"


def test_naive_underflows_to_nan_when_every_exp_is_zero():
    case = row([-1000.0, -1001.0], "float64")
    r = result("numpy.naive", case)
    assert r["status"] == "nonfinite" and np.isnan(r["out"].grad).all()  # 0 / 0
    assert result("numpy.stable", case)["loss_ulps"] <= 1


def test_naive_multiplies_zero_by_minus_inf_on_masked_classes():
    case = row([0.0, -np.inf, 1.0], "float32", target=2)
    naive = result("numpy.naive", case)
    assert naive["status"] == "nonfinite" and np.isnan(naive["out"].loss[0])  # 0 * log(0)
    assert result("numpy.stable", case)["status"] == "ok"


def test_naive_loses_the_target_when_its_exp_underflows():
    # float32: exp(-110) is 0 but the truth (110 - log-sum) is an ordinary number.
    case = row([0.0, -110.0], "float32", target=1)
    r = result("numpy.naive", case)
    assert r["out"].loss[0] == np.inf and r["status"] == "nonfinite"
    assert float(r["ref"].loss[0]) == pytest.approx(110.0)


def test_bfloat16_sum_stalls_at_256_in_numpy():
    # ml_dtypes' bfloat16 add.reduce accumulates sequentially in bfloat16: 256 + 1 == 256,
    # so a uniform 32000-class row gets p = 1/256 instead of 1/32000. A real finding.
    case = Case("manual", "manual", "bfloat16", dtypes.exact(np.zeros((1, 32000)), "bfloat16"), np.array([0]))
    r = result("numpy.stable", case)
    assert r["status"] == "inaccurate"
    assert float(r["out"].grad[0, 1]) == 1 / 256
    assert r["grad_abs_err"] == pytest.approx(1 / 256 - 1 / 32000)


def test_registry_has_the_numpy_adapters_with_declared_support():
    found = adapters.all_adapters()
    for adapter_id in ["numpy.naive", "numpy.stable", "scipy.log_softmax"]:
        a = found[adapter_id]
        assert set(a.dtypes) == set(dtypes.DTYPE_NAMES) and set(a.label_kinds) == set(LABEL_KINDS)
        assert registry.framework_version(a.framework) != "unknown"
