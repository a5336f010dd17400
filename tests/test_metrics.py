"""Metrics and the tolerance table on hand-computed values."""

import numpy as np
import pytest

from harness.run import judge
from harness.numerics import dtypes
from harness.numerics import metrics
from harness.numerics import reference
from harness.numerics.cases import Case
from harness.numerics.reference import Reference


@pytest.mark.parametrize(
    "dtype, x, expected",
    [
        ("bfloat16", 1.0, 2.0**-7),
        ("float16", 1.0, 2.0**-10),
        ("float32", 1.0, 2.0**-23),
        ("float64", 1.0, 2.0**-52),
        ("bfloat16", 1.5, 2.0**-7),  # same binade as 1.0
        ("bfloat16", 0.999, 2.0**-8),  # ulp taken at the true value, below the binade of 1
        ("float16", 65504.0, 32.0),
        ("float16", 70000.0, 64.0),  # past float16's max: exponent continues unbounded
        ("float16", 0.0, 2.0**-24),  # subnormal floor
        ("float16", 1e-9, 2.0**-24),
        ("float16", 2.0**-14, 2.0**-24),  # smallest normal
        ("bfloat16", 1e-40, 2.0**-133),
        ("float32", 1e-45, 2.0**-149),
        ("float64", 5e-324, 2.0**-1074),
    ],
)
def test_ulp_hand_values(dtype, x, expected):
    assert metrics.ulp(np.array([x]), dtype)[0] == expected
    assert metrics.ulp(np.array([-x]), dtype)[0] == expected


def test_ulp_of_extended_precision_value():
    x = np.array([np.longdouble(1) + np.longdouble(2) ** -60])
    assert metrics.ulp(x, "float64")[0] == 2.0**-52


def single(truth_loss, computed_loss, dtype, loss_scale=None):
    """A one-row, two-class result whose gradient is exact, so only the loss is judged."""
    work = np.float64 if dtype != "float64" else reference.EXTENDED
    ref = Reference(
        loss=np.array([truth_loss], dtype=work),
        grad=np.array([[0.25, -0.25]], dtype=work),
        defined=np.array([True]),
        loss_scale=np.array([0.0 if loss_scale is None else loss_scale]),
        grad_scale=np.zeros((1, 2)),
        precision="float64",
    )
    grad = dtypes.exact(np.array([[0.25, -0.25]]), dtype)
    return judge.accuracy(ref, np.array([computed_loss]), grad, dtype)


def test_float16_65504_against_true_70000_is_inaccurate():
    out = single(70000.0, np.float16(65504.0), "float16", loss_scale=70000.0 + 3)
    assert out["status"] == "inaccurate"
    assert out["loss_abs_err"] == 4496.0
    assert out["loss_ulps"] == 4496.0 / 64
    assert out["loss_rel_err"] == pytest.approx(4496.0 / 70000.0)


def test_float16_inf_for_true_70000_is_the_correctly_rounded_overflow():
    # 70000 rounds to +inf in float16 (above 65504 + 16): returning inf is right.
    out = single(70000.0, np.float16(np.inf), "float16", loss_scale=70000.0 + 3)
    assert out["status"] == "ok" and out["loss_abs_err"] == 0.0


def test_inf_where_truth_is_finite_and_representable_is_nonfinite():
    out = single(60000.0, np.float16(np.inf), "float16")
    assert out["status"] == "nonfinite"
    assert out["n_loss_nonfinite"] == 1
    assert out["loss_ulps"] == np.inf


def test_nan_is_nonfinite_even_where_the_truth_is_inf():
    out = single(np.inf, np.float32(np.nan), "float32")
    assert out["status"] == "nonfinite"


def test_finite_where_truth_is_inf_is_inaccurate():
    out = single(np.inf, np.float32(1e30), "float32")
    assert out["status"] == "inaccurate" and out["loss_abs_err"] == np.inf


def test_one_ulp_off_is_ok_and_three_ulps_off_is_not_in_bfloat16():
    # bfloat16 tolerance: 2 ulps (+ cond * u * scale, zero here).
    u = 2.0**-7
    assert single(1.0, np.float64(1.0 + u), "bfloat16")["status"] == "ok"
    out = single(1.0, np.float64(1.0 + 3 * u), "bfloat16")
    assert out["status"] == "inaccurate" and out["loss_ulps"] == 3.0
    assert out["loss_tol_ratio"] == pytest.approx(1.5)


def test_condition_scale_widens_the_tolerance():
    # True loss 1e-30 computed as 0 (a stable lse - z_t): huge in ulps, yet within
    # cond * u * scale when the scale (log-sum-exp depth) is 3.
    out = single(1e-30, np.float32(0.0), "float32", loss_scale=3.0)
    assert out["loss_ulps"] > 1e6
    assert out["status"] == "ok"


def test_gradient_mismatch_report_counts_and_locates():
    case = Case("c", "manual", "float32", dtypes.exact(np.array([[0.0, 1.0, 2.0], [3.0, 1.0, 0.0]]), "float32"), np.array([0, 1]))
    ref = reference.loss_and_grad(case)
    grad = np.asarray(ref.grad, np.float64).astype(np.float32)
    grad[1, 2] += 1e-3
    out = judge.accuracy(ref, np.asarray(ref.loss, np.float32), grad, "float32")
    assert out["status"] == "inaccurate"
    assert out["n_grad_bad"] == 1 and out["grad_worst"] == "1,2"
    assert out["grad_abs_err"] == pytest.approx(1e-3, rel=1e-3)


def test_all_rows_undefined_records_behaviour():
    case = Case("c", "manual", "float32", dtypes.exact(np.array([[np.nan, 1.0]]), "float32"), np.array([0]))
    ref = reference.loss_and_grad(case)
    out = judge.accuracy(ref, np.array([np.nan], np.float32), np.array([[np.nan, np.inf]], np.float32), "float32")
    assert out["status"] == "undefined"
    assert "loss: 1 nan, 0 inf, 0 finite" in out["message"] and "grad: 1 nan, 1 inf" in out["message"]


def test_wrong_output_shape_is_an_error():
    case = Case("c", "manual", "float32", dtypes.exact(np.array([[0.0, 1.0]]), "float32"), np.array([0]))
    ref = reference.loss_and_grad(case)
    out = judge.accuracy(ref, np.zeros(2, np.float32), np.zeros((1, 2), np.float32), "float32")
    assert out["status"] == "error" and "shape" in out["message"]


def test_flush_to_zero_is_counted_not_judged():
    # float32 gradient whose true value is subnormal (1e-40) returned as 0, as XLA does.
    case = Case("c", "manual", "float32", dtypes.exact(np.array([[0.0, -92.0]]), "float32"), np.array([0]))
    ref = reference.loss_and_grad(case)
    assert 0 < ref.grad[0, 1] < 2.0**-126
    grad = np.asarray(ref.grad, np.float64).astype(np.float32)
    grad[0, 1] = 0.0
    out = judge.accuracy(ref, np.asarray(ref.loss, np.float32), grad, "float32")
    assert out["status"] == "ok" and out["n_flushed"] == 1
    assert out["grad_ulps"] > 1000  # the raw error stays on record
    grad[0, 1] = np.float32(ref.grad[0, 1]) * 3  # a wrong subnormal is still judged
    assert judge.accuracy(ref, np.asarray(ref.loss, np.float32), grad, "float32")["status"] == "inaccurate"


needs_extended = pytest.mark.skipif(reference.EXTENDED is np.float64, reason="np.longdouble is float64 here: no extended truth to split")


def _float64_reference_errors(computed, truth):
    """element_errors of float64 `computed` against an extended-precision `truth` (textbook)."""
    scale = np.ones(truth.shape)
    return metrics.element_errors(computed, truth, scale, "float64")


@needs_extended
def test_float64_judging_in_float64_pieces_equals_the_extended_subtraction_near_the_truth():
    # (c - hi) - lo is exact wherever c is within a factor of 2 of the truth: the judge's
    # float64 path must give the very doubles of |c - truth| computed in extended precision.
    rng = np.random.default_rng(3)
    x = reference.EXTENDED
    truth = rng.uniform(-4, 4, 4000).astype(x) * (1 + rng.integers(-(2**10), 2**10, 4000).astype(x) * x(2) ** -63)
    truth = truth * x(2.0) ** rng.integers(-1000, 1000, 4000).astype(x)
    hi = truth.astype(np.float64)
    computed = hi + rng.integers(-5, 6, 4000) * np.spacing(hi)
    e = _float64_reference_errors(computed, truth)
    assert metrics.truth_terms(truth, np.ones(truth.shape), "float64").lo is not None  # the float64 path ran
    expected = np.abs(computed.astype(x) - truth).astype(np.float64)
    assert np.array_equal(e.abs, expected)
    assert (e.abs > 0).mean() > 0.9  # the rest below float64's last bit is seen, not rounded away


@needs_extended
def test_float64_judging_far_from_the_truth_is_within_an_ulp_of_the_extended_subtraction():
    rng = np.random.default_rng(4)
    x = reference.EXTENDED
    truth = rng.uniform(0.5, 1, 1000).astype(x) + x(2) ** -60
    computed = -3.0 * truth.astype(np.float64)  # opposite sign: no Sterbenz, two roundings
    e = _float64_reference_errors(computed, truth)
    expected = np.abs(computed.astype(x) - truth).astype(np.float64)
    assert np.all(np.abs(e.abs - expected) <= np.spacing(expected))


@needs_extended
def test_truth_past_float64_range_is_judged_in_its_own_precision():
    # A float64 case's extended truth may pass float64's max (a loss of 1.5 * max): no
    # float64 pair holds it, so the subtraction stays extended and comes out finite.
    x = reference.EXTENDED
    truth = np.array([x(np.finfo(np.float64).max) * x(1.5), x(1.0)])
    assert metrics.truth_terms(truth, np.ones(2), "float64").hi is None
    computed = np.array([np.finfo(np.float64).max, 1.0])
    e = _float64_reference_errors(computed, truth)
    assert e.abs[0] == np.float64(x(np.finfo(np.float64).max) * x(0.5))
    assert e.abs[1] == 0.0 and not e.nonfinite.any()


def test_a_bit_identical_answer_reuses_the_columns_and_a_one_ulp_change_is_measured_afresh():
    from harness.inputs.regimes import make_case

    case = make_case("typical", "float32", (16, 1000), "index", seed=0)
    shared = reference.loss_and_grad(case)
    loss = np.asarray(shared.loss, np.float64).astype(np.float32)
    grad = np.asarray(shared.grad, np.float64).astype(np.float32)
    nudged = grad.copy()
    nudged[3, 7] = np.nextafter(nudged[3, 7], np.float32(np.inf))  # one element, one ulp
    zeroed = grad.copy()
    zeroed[0, 0] = 0.0
    signed = zeroed.copy()
    signed[0, 0] = -0.0  # the same value as `zeroed`, other bits

    def kept():  # answers kept against `shared`
        return len(shared.memo.get(("answers", ("measure", "float32")), ()))

    def fresh(g):  # a reference of its own: nothing kept from other answers
        return metrics.measure(reference.loss_and_grad(case), loss, g, "float32")

    first = metrics.measure(shared, loss, grad, "float32")
    assert first == fresh(grad) and kept() == 1
    again = metrics.measure(shared, loss.copy(), grad.copy(), "float32")  # other arrays, same bits
    assert again == first and kept() == 1  # reused, not measured again
    moved = metrics.measure(shared, loss, nudged, "float32")
    assert moved == fresh(nudged) and moved["grad_rel_norm"] != first["grad_rel_norm"] and kept() == 2
    assert metrics.measure(shared, loss, zeroed, "float32") == fresh(zeroed) and kept() == 3
    assert metrics.measure(shared, loss, signed, "float32") == fresh(signed) and kept() == 4  # measured
    wider = metrics.measure(shared, loss.astype(np.float64), grad.astype(np.float64), "float32")
    assert wider == first and kept() == 5  # the same values in another dtype: measured, same columns
    import ml_dtypes

    half = (loss.astype(np.float16), grad.astype(np.float16))
    brain = tuple(a.view(ml_dtypes.bfloat16) for a in half)  # the same bits, other values
    assert metrics.measure(shared, *half, "float32") == metrics.measure(reference.loss_and_grad(case), *half, "float32")
    assert metrics.measure(shared, *brain, "float32") == metrics.measure(reference.loss_and_grad(case), *brain, "float32")
    assert kept() == 7
