"""JAX/optax adapters against the reference, their input/output dtypes, jit caching,
ignored rows, and findings about optax and XLA:CPU checked on real values."""

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from harness.run import judge
from harness.adapters import registry
from harness import adapters
from harness.numerics import dtypes
from harness.numerics import reference
from harness.inputs import regimes  # noqa: E402
from harness.numerics.cases import Case  # noqa: E402
from implementations import jax_impl  # noqa: E402

DENSE = ["jax.optax.softmax_cross_entropy", "jax.optax.safe_softmax_cross_entropy"]
INDEX = ["jax.optax.softmax_cross_entropy_with_integer_labels", "jax.log_softmax_gather"]
WITH_WHERE = ["jax.optax.softmax_cross_entropy", "jax.optax.softmax_cross_entropy_with_integer_labels"]
WITH_MASK = ["jax.optax.safe_softmax_cross_entropy", "jax.log_softmax_gather"]
EAGER = DENSE + INDEX
ALL = EAGER + [a + ".jit" for a in EAGER]


def both_modes(ids):
    return ids + [a + ".jit" for a in ids]


def result(adapter_id: str, case: Case) -> dict:
    ref = reference.loss_and_grad(case)
    out = adapters.get(adapter_id).compute(case, "cpu")
    return judge.accuracy(ref, out.loss, out.grad, case.dtype) | {"out": out, "ref": ref}


def typical_cases() -> list:
    return [
        pytest.param(adapter_id, dtype, kind, id=f"{adapter_id}-{dtype}-{kind}")
        for adapter_id in ALL
        for kind in adapters.get(adapter_id).label_kinds
        for dtype in ("float32", "float64")
    ]


def test_registry_declares_every_jax_adapter():
    found = adapters.all_adapters()
    assert {a for a in found if a.startswith("jax.")} == set(ALL)
    for adapter_id in ALL:
        a = found[adapter_id]
        assert a.framework == "jax" and registry.framework_version(a.framework) != "unknown"
        assert set(a.dtypes) == set(dtypes.DTYPE_NAMES) and a.devices == ("cpu", "cuda")
        assert a.label_kinds == (("index",) if adapter_id.removesuffix(".jit") in INDEX else jax_impl.DENSE_KINDS)
        assert a.supports_ignore


@pytest.mark.parametrize("adapter_id, dtype, kind", typical_cases())
def test_typical_inputs_agree_with_reference(adapter_id, dtype, kind):
    case = regimes.make_case("typical", dtype, (16, 50), kind, seed=1)
    r = result(adapter_id, case)
    assert r["status"] in ("ok", "lossy"), r["message"]  # within the textbook bound (lossy: see harness.numerics.bounds)
    rtol = {"float32": 1e-5, "float64": 1e-12}[dtype]
    np.testing.assert_allclose(r["out"].loss, np.asarray(r["ref"].loss, np.float64), rtol=rtol)
    np.testing.assert_allclose(r["out"].grad, np.asarray(r["ref"].grad, np.float64), rtol=rtol, atol=rtol * 1e-3)
    assert r["out"].loss.dtype == r["out"].grad.dtype == np.dtype(dtype)  # float64 stays float64 (x64 is on)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits_reach_jax_bit_exactly_and_come_back_in_their_dtype(dtype):
    case = regimes.make_case("exp_range_spread", dtype, (4, 10), "index", seed=0)
    logits, labels, keep = jax_impl.inputs(case, "cpu", dense=False)
    back = np.asarray(logits)
    assert back.dtype == case.logits.dtype and keep is None
    np.testing.assert_array_equal(back.view(np.uint16), case.logits.view(np.uint16))
    np.testing.assert_array_equal(np.asarray(labels), case.target)
    out = adapters.get("jax.log_softmax_gather").compute(case, "cpu")
    assert out.out_dtype == dtype and out.grad.dtype == case.logits.dtype  # JAX keeps the dtype


def test_smoothed_labels_are_optax_smooth_labels_in_the_tested_dtype():
    case = regimes.make_case("typical", "bfloat16", (4, 10), "smoothing", seed=0)
    _, labels, _ = jax_impl.inputs(case, "cpu", dense=True)
    y = np.asarray(labels)
    assert y.dtype == ml_dtypes.bfloat16
    # (1 - 0.1) * 1 + 0.1 / 10 = 0.91 and 0.01, each rounded once to bfloat16.
    expected = case.target_distribution().astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(y.view(np.uint16), expected.view(np.uint16))


def test_float64_is_float64_inside_jax():
    case = regimes.make_case("typical", "float64", (2, 3), "onehot", seed=0)
    logits, labels, _ = jax_impl.inputs(case, "cpu", dense=True)
    assert str(logits.dtype) == str(labels.dtype) == "float64"
    np.testing.assert_array_equal(np.asarray(logits), case.logits)


X64_OFF_PROBE = """
import json, sys
import numpy as np
from harness import adapters
from harness.inputs import regimes
from implementations import jax_impl
jax = jax_impl._jax()
jax.config.update("jax_enable_x64", False)  # undo it: the same code as in the default JAX
out = {}
for adapter_id, kind in json.loads(sys.argv[1]):
    case = regimes.make_case("typical", "float32", (8, 20), kind, seed=3)
    o = adapters.get(adapter_id).compute(case, "cpu")
    out[adapter_id] = [o.loss.view(np.uint32).tolist(), o.grad.view(np.uint32).ravel().tolist()]
print(json.dumps(out))
"""


def test_enabling_x64_leaves_float32_results_bit_identical():
    plan = [(a, adapters.get(a).label_kinds[0]) for a in ALL]
    probe = subprocess.run(
        [sys.executable, "-c", X64_OFF_PROBE, json.dumps(plan)], capture_output=True, text=True, check=True
    )
    without_x64 = json.loads(probe.stdout)
    for adapter_id, kind in plan:
        out = adapters.get(adapter_id).compute(regimes.make_case("typical", "float32", (8, 20), kind, seed=3), "cpu")
        assert out.loss.view(np.uint32).tolist() == without_x64[adapter_id][0], adapter_id
        assert out.grad.view(np.uint32).ravel().tolist() == without_x64[adapter_id][1], adapter_id


def test_jit_compiles_once_per_shape_and_reports_it_once():
    case = regimes.make_case("typical", "float32", (3, 7), "index", seed=5)
    first = adapters.get("jax.log_softmax_gather.jit").compute(case, "cpu")
    second = adapters.get("jax.log_softmax_gather.jit").compute(case, "cpu")
    assert first.compile_seconds > 0 and second.compile_seconds == 0
    np.testing.assert_array_equal(first.grad, second.grad)
    assert adapters.get("jax.log_softmax_gather").compute(case, "cpu").compile_seconds == 0
    wider = regimes.make_case("typical", "float32", (3, 8), "index", seed=5)
    assert adapters.get("jax.log_softmax_gather.jit").compute(wider, "cpu").compile_seconds > 0


def ignored_case(adapter_id):
    kind = adapters.get(adapter_id).label_kinds[0]
    return regimes.make_case("ignored_rows", "float32", (6, 10), kind, seed=0)


@pytest.mark.parametrize("adapter_id", both_modes(WITH_WHERE))
def test_where_makes_ignored_rows_count_for_nothing(adapter_id):
    case = ignored_case(adapter_id)  # rows 1 and 4 ignored, row 1 all -inf padding
    r = result(adapter_id, case)
    assert r["status"] == "ok", r["message"]
    assert (r["out"].loss[case.ignored] == 0).all() and (r["out"].grad[case.ignored] == 0).all()


@pytest.mark.parametrize("adapter_id", both_modes(WITH_MASK))
def test_mask_multiply_zeroes_finite_ignored_rows_but_all_minus_inf_padding_gives_nan(adapter_id):
    # Finding: loss * mask is what users write without `where`; on an all -inf padding
    # row log_softmax is NaN and 0 * NaN stays NaN in the gradient (eager and jit).
    case = ignored_case(adapter_id)
    padding, finite = np.flatnonzero(case.ignored)
    assert np.isneginf(case.logits[padding]).all()
    r = result(adapter_id, case)
    assert r["status"] == "nonfinite"
    assert r["out"].loss[finite] == 0 and (r["out"].grad[finite] == 0).all()
    assert np.isnan(r["out"].grad[padding]).all()
    assert np.isfinite(np.delete(r["out"].grad, padding, axis=0)).all()


@pytest.mark.parametrize("mode", ["", ".jit"])
def test_softmax_cross_entropy_gives_nan_loss_on_minus_inf_masks_where_safe_does_not(mode):
    # Finding: -(labels * log_softmax) multiplies a 0 label by a -inf log-probability.
    case = regimes.make_case("neg_inf_mask", "float32", (8, 10), "onehot", seed=0)
    plain = result("jax.optax.softmax_cross_entropy" + mode, case)
    assert plain["status"] == "nonfinite" and plain["n_grad_nonfinite"] == 0
    assert np.isnan(plain["out"].loss).sum() == plain["n_loss_nonfinite"] == 7  # rows with a mask but a live target
    safe = result("jax.optax.safe_softmax_cross_entropy" + mode, case)
    assert safe["status"] == "ok", safe["message"]
    masked_target = np.isneginf(case.logits[np.arange(8), case.target])
    assert (safe["out"].loss[masked_target] == np.inf).all() and masked_target.sum() == 2


@pytest.mark.parametrize("mode", ["", ".jit"])
def test_integer_labels_lose_the_loss_to_cancellation_at_a_large_offset(mode):
    # Finding: optax computes logsumexp(z) - z_t without shifting z_t; at an offset of
    # 1.8e19 both round to the same float32 and the loss is 0, truth log(10). The
    # log_softmax + gather pattern shifts first and stays within tolerance.
    case = regimes.make_case("large_offset", "float32", (64, 10), "index", seed=0)
    optax_int = result("jax.optax.softmax_cross_entropy_with_integer_labels" + mode, case)
    assert optax_int["status"] == "inaccurate" and optax_int["n_loss_bad"] == 49
    assert optax_int["out"].loss[0] == 0 and float(optax_int["ref"].loss[0]) == pytest.approx(np.log(10))
    assert result("jax.log_softmax_gather" + mode, case)["status"] == "ok"


@pytest.mark.parametrize("adapter_id", ["jax.log_softmax_gather", "jax.optax.softmax_cross_entropy_with_integer_labels.jit"])
def test_xla_cpu_flushes_subnormal_probabilities_to_zero(adapter_id):
    # Finding: p = exp(-100) / (1 + exp(-100)) = 3.7e-44 is a float32 subnormal; XLA:CPU
    # runs with flush-to-zero, so the gradient there is exactly 0: counted, not judged.
    case = Case("manual", "manual", "float32", dtypes.exact(np.array([[0.0, -100.0]]), "float32"), np.array([0]))
    r = result(adapter_id, case)
    assert float(r["ref"].grad[0, 1]) == pytest.approx(np.exp(-100.0), rel=1e-12)
    assert np.exp(np.float32(-100.0)) > 0  # numpy keeps the subnormal
    assert r["out"].grad[0, 1] == 0 and r["n_flushed"] == 3  # loss, p_t - 1 and p_1: all +-p_1
    assert r["status"] == "ok" and r["grad_ulps"] > 20


def test_cuda_runs_on_a_gpu_or_is_unsupported_with_jaxs_own_reason():
    case = regimes.make_case("typical", "float32", (2, 3), "index", seed=0)
    try:
        out = adapters.get("jax.log_softmax_gather").compute(case, "cuda")
    except adapters.Unsupported as exc:  # a CPU-only jaxlib, as on the development machine
        assert "gpu" in str(exc) and "\n" not in str(exc)
    else:
        assert judge.accuracy(reference.loss_and_grad(case), out.loss, out.grad, "float32")["status"] == "ok"
