"""The reference against mpmath at 50 digits, and its non-finite conventions.

Claim under test: for float16/bfloat16/float32 inputs the float64 reference is within
2 float64 ulps of the exact loss and of every exact gradient component, over every finite
regime and label kind; for float64 inputs the extended-precision reference is within
2**-4 float64 ulps (it judges float64 implementations to a fraction of an ulp).

One allowance, soft labels and smoothing only: p_j - y_j with fractional y_j cancels for
every algorithm, so there the gradient may also be off by 2**-60 * max(p_j, y_j) (the
extended-precision floor; 2**-37 of a float32 ulp of p_j). See `harness.numerics.reference`.
"""

import mpmath
import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import oracle
from harness.numerics import dtypes
from harness.numerics import reference
from harness.inputs import regimes
from harness.numerics.cases import LABEL_KINDS, Case

FINITE_REGIMES = [name for name, r in regimes.REGIMES.items() if r.finite and not r.invalid]


def f64_ulp(x: float) -> float:
    """float64 ulp at |x| with the subnormal floor (2**-1074)."""
    if not np.isfinite(x):
        return float("nan")
    with np.errstate(over="ignore"):  # spacing(max) is inf in float64; use the binade's ulp
        return max(float(np.spacing(abs(x))), 2.0**-1074) if abs(x) < 2.0**1023 else 2.0**971


def worst_ulps(case: Case, compiled: bool = True, floor_bits: int = 60) -> tuple[float, float]:
    """Max loss and max gradient error of the reference (`compiled` False: numpy's rows, the
    definition), in float64 ulps of the exact value; soft and smoothing gradients less the
    cancellation floor 2**-floor_bits * max(p_j, y_j)."""
    ref = reference.loss_and_grad(case, compiled=compiled)
    truth = oracle.loss_and_grad(case)
    loss_err = grad_err = 0.0
    fractional = case.label_kind in ("soft", "smoothing")
    with mpmath.workdps(oracle.DIGITS):
        for i, row in enumerate(truth):
            if row is None:
                assert not ref.defined[i] and np.isnan(ref.loss[i]) and np.isnan(ref.grad[i]).all()
                continue
            loss, grad = row
            y = oracle.labels(case, i)
            loss_err = max(loss_err, oracle.ulps_off(ref.loss[i], loss, f64_ulp))
            for j, g in enumerate(grad):
                floor = mpmath.mpf(2) ** -floor_bits * max(abs(g + y[j]), y[j]) if fractional else 0
                off = abs(oracle.mpf(ref.grad[i, j]) - g) - floor
                grad_err = max(grad_err, float(max(off, 0) / mpmath.mpf(f64_ulp(float(g)))))
    return loss_err, grad_err


def bound(case: Case) -> float:
    return 2.0 if case.dtype != "float64" else 2.0**-4


@given(
    regime=st.sampled_from(FINITE_REGIMES),
    dtype=st.sampled_from(dtypes.DTYPE_NAMES),
    n=st.integers(1, 3),
    v=st.sampled_from([2, 3, 7, 33]),
    kind=st.sampled_from(LABEL_KINDS),
    seed=st.integers(0, 2**32 - 1),
    compiled=st.booleans(),
)
def test_reference_matches_mpmath_over_regimes(regime, dtype, n, v, kind, seed, compiled):
    case = regimes.make_case(regime, dtype, (n, v), kind, seed)
    note(f"logits={np.asarray(case.logits, np.float64).tolist()} target={case.target.tolist()}")
    loss_err, grad_err = worst_ulps(case, compiled)
    assert loss_err <= bound(case), f"loss off by {loss_err} ulps"
    assert grad_err <= bound(case), f"gradient off by {grad_err} ulps"


@st.composite
def raw_logits(draw, dtype: str, v: int):
    """One row of arbitrary finite values of `dtype` (subnormals and extremes included),
    some entries masked with -inf, never all."""
    fmt = dtypes.get(dtype)
    width = {"float16": 16, "float32": 32, "float64": 64, "bfloat16": 32}[dtype]
    values = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=width), min_size=v, max_size=v))
    mask = draw(st.lists(st.booleans(), min_size=v, max_size=v))
    row = np.array(values, dtype=np.float64)
    row = np.where(mask, -np.inf, row)
    if np.isneginf(row).all():
        row[draw(st.integers(0, v - 1))] = values[0]
    return np.asarray(row.astype(fmt.numpy_dtype))[None, :]


@given(data=st.data(), dtype=st.sampled_from(dtypes.DTYPE_NAMES), v=st.sampled_from([2, 5, 17]), compiled=st.booleans())
def test_reference_matches_mpmath_on_raw_values(data, dtype, v, compiled):
    logits = data.draw(raw_logits(dtype, v))
    finite = np.flatnonzero(np.isfinite(logits[0].astype(np.float64)))
    target = np.array([data.draw(st.sampled_from(finite.tolist()))])
    case = Case("raw", "raw", dtype, logits, target)
    note(f"logits={logits.astype(np.float64).tolist()} target={target.tolist()}")
    loss_err, grad_err = worst_ulps(case, compiled)
    assert loss_err <= bound(case) and grad_err <= bound(case), (loss_err, grad_err)


def one_row(values, dtype="float32", target=0, kind="index") -> Case:
    logits = dtypes.exact(np.array([values], dtype=np.float64), dtype)
    return Case("manual", "manual", dtype, logits, np.array([target]), label_kind=kind)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiny_true_loss_is_not_cancelled_to_zero(dtype):
    # z_t leads by 80: loss = log1p(e^-80) ~ 1.8e-35, gradient at the target -1.8e-35.
    case = one_row([80.0, 0.0], dtype)
    ref = reference.loss_and_grad(case)
    exact = float(mpmath.log1p(mpmath.exp(-80)))
    assert ref.loss[0] < 1e-30
    assert abs(float(ref.loss[0]) - exact) <= 2 * f64_ulp(exact)
    assert abs(float(ref.grad[0, 0]) + exact) <= 2 * f64_ulp(exact)  # p_t - 1 = -R/(1+R) ~ -e^-80
    assert worst_ulps(case) <= (bound(case), bound(case))


def test_logits_spanning_past_exp_range():
    # exp(800) overflows and exp(-800) underflows in float64; the truth is still finite.
    case = one_row([800.0, -800.0, 0.0], "float64", target=1)
    ref = reference.loss_and_grad(case)
    assert np.isfinite(ref.loss).all() and abs(float(ref.loss[0]) - 1600.0) < 1e-9
    assert worst_ulps(case) <= (bound(case), bound(case))


def test_large_vocabulary_row_matches_mpmath():
    case = regimes.make_case("typical", "float32", (1, 32000), "index", seed=7)
    assert worst_ulps(case) <= (2.0, 2.0)


def test_masked_non_target_class_has_zero_gradient():
    case = one_row([1.0, -np.inf, 2.0], target=0)
    ref = reference.loss_and_grad(case)
    assert ref.grad[0, 1] == 0.0
    expected = float(mpmath.log(mpmath.e + mpmath.e**2) - 1)
    assert abs(ref.loss[0] - expected) <= 2 * f64_ulp(expected)


def test_masked_target_gives_infinite_loss_and_minus_one_gradient():
    case = one_row([-np.inf, 0.0, 1.0], target=0)
    ref = reference.loss_and_grad(case)
    assert ref.defined[0] and ref.loss[0] == np.inf
    assert ref.grad[0, 0] == -1.0
    np.testing.assert_allclose(ref.grad[0, 1:], [1 / (1 + np.e), np.e / (1 + np.e)], rtol=1e-15)


@pytest.mark.parametrize(
    "values",
    [[np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0], [-np.inf, -np.inf, -np.inf], [0.0, np.inf, -np.inf]],
    ids=["plus-inf", "nan", "all-minus-inf", "plus-inf-with-mask"],
)
def test_undefined_rows_are_nan_and_flagged(values):
    logits = dtypes.exact(np.array([values, [0.0, 1.0, 2.0]]), "float32")
    case = Case("manual", "manual", "float32", logits, np.array([1, 2]))
    ref = reference.loss_and_grad(case)
    assert ref.defined.tolist() == [False, True]
    assert np.isnan(ref.loss[0]) and np.isnan(ref.grad[0]).all()
    assert np.isfinite(ref.loss[1]) and np.isfinite(ref.grad[1]).all()


def test_float64_reference_keeps_extended_precision():
    case = one_row([0.1, 0.2, 0.3], "float64", target=2)
    ref = reference.loss_and_grad(case)
    assert ref.loss.dtype == reference.EXTENDED
    assert ref.precision == reference.PRECISION


def test_smoothing_loss_and_gradient_sum_to_the_right_totals():
    # With smoothing, sum_j g_j = sum p - sum y = 0 exactly in exact arithmetic.
    case = regimes.make_case("typical", "float32", (4, 100), "smoothing", seed=3)
    ref = reference.loss_and_grad(case)
    assert np.abs(np.asarray(ref.grad, np.float64).sum(axis=1)).max() < 1e-15


def test_float64_loss_beyond_float64_max_stays_finite_in_extended_precision():
    # z - m = -2 * 1.6e308 overflows float64; the true loss 3.2e308 does not overflow x87.
    case = one_row([1.6e308, -1.6e308], "float64", target=1)
    ref = reference.loss_and_grad(case)
    if reference.PRECISION == "x87-extended":
        assert np.isfinite(ref.loss[0]) and ref.loss[0] == np.longdouble(1.6e308) * 2
    assert ref.grad[0, 1] == -1.0 and ref.grad[0, 0] == 1.0


def test_float64_top_binade_row_matches_mpmath():
    # TwoSum's intermediates overflow for |z| >= 2**1023; the reference halves first.
    case = one_row([1.7976931348623157e308, 1.7976931348623155e308, -1.7e308, 1e308], "float64", target=1)
    assert worst_ulps(case) <= (bound(case), bound(case))


def test_classes_more_than_708_below_the_max_keep_two_ulps_at_v_32000():
    """float32, V = 32000, z = [0, -716, ..., -716], label 0 (issue 12): exp(-716) is a
    subnormal float64, so a float64 exp loses each term's low bits; 31999 of them once put the
    loss (true 3.5504823960453845e-307, a normal float64) 1,812 ulps off. The reference takes
    those terms in extended precision."""
    v = 32000
    z = np.full((1, v), -716.0)
    z[0, 0] = 0.0
    case = Case("manual/subnormal-exp-terms", "manual", "float32", dtypes.exact(z, "float32"), np.array([0]))
    ref = reference.loss_and_grad(case)
    assert float(ref.loss[0]) == pytest.approx(3.5504823960453845e-307, rel=4e-16)
    loss_err, grad_err = worst_ulps(case)
    assert loss_err <= 2 and grad_err <= 2, (loss_err, grad_err)


def exp_pair_points() -> tuple[np.ndarray, np.ndarray]:
    """TwoSum pairs d_hi + d_lo <= 0 over exp_pair's whole domain: random distances, every
    table entry's neighbourhood (multiples of ln2/256, and halfway between), the floor, zero,
    and tiny ones; half of them with a low part."""
    rng = np.random.default_rng(5)
    step = np.log(2) / 256
    hi = np.concatenate([
        -rng.exponential(60, 6000), -rng.random(2000) * 1e-3, -np.abs(rng.standard_normal(2000)),
        -step * np.arange(0, 600), -step * (np.arange(0, 600) + 0.5), -step * (np.arange(0, 600) + 0.4999),
        [0.0, -0.0, -1e-300, -2.0**-1074, -680.0, np.nextafter(-680.0, 0)],
    ])
    hi = hi[hi >= -680.0]
    lo = np.where(rng.random(hi.size) < 0.5, (rng.random(hi.size) - 0.5) * np.spacing(np.abs(hi)), 0.0)
    return hi, lo


def test_double_double_exp_is_within_its_derived_bound_and_comes_near_it():
    """`fused_kernels.exp_pair`'s docstring derives a relative error below 2**-78.5 (the
    left-out r**7/7! at |r| = ln2/512 dominates): held here against mpmath, and the worst
    point comes within a factor 2 of it, so the bound is the algorithm's, not a loose one."""
    from harness.numerics import fused

    k = fused.kernels()
    hi, lo = exp_pair_points()
    out_hi, out_lo = np.empty_like(hi), np.empty_like(hi)
    left = k.exp_pair_into(hi, lo, out_hi, out_lo)
    assert left == 0
    worst = mpmath.mpf(0)
    with mpmath.workprec(200):
        for a, b, h, l in zip(hi, lo, out_hi, out_lo):
            true = mpmath.exp(mpmath.mpf(float(a)) + mpmath.mpf(float(b)))
            worst = max(worst, abs(mpmath.mpf(float(h)) + mpmath.mpf(float(l)) - true) / true)
    assert 2.0**-80 < worst <= 2.0**-78.5, float(mpmath.log(worst, 2))


def test_double_double_exp_leaves_what_it_cannot_do_and_zeroes_masks():
    """-inf (a mask) is exp 0; below the floor (the low part would be subnormal), above 0
    and NaN are left to the caller as NaN, and counted."""
    from harness.numerics import fused

    k = fused.kernels()
    hi = np.array([-np.inf, -681.0, -11000.0, 1.0, np.nan, -1.0])
    out_hi, out_lo = np.empty_like(hi), np.empty_like(hi)
    left = k.exp_pair_into(hi, np.zeros_like(hi), out_hi, out_lo)
    assert left == 4
    assert (out_hi[0], out_lo[0]) == (0.0, 0.0)
    assert np.isnan(out_hi[1:5]).all()
    assert out_hi[5] == np.exp(-1.0) or abs(out_hi[5] - np.exp(-1.0)) <= np.spacing(np.exp(-1.0))


@pytest.mark.skipif(reference.EXTENDED is np.float64, reason="no extended precision on this platform")
def test_extended_exp_is_correctly_rounded_or_next_to_it_on_both_sides_of_the_floor():
    """`reference.exp_extended`: the double-double rounded once to extended precision, and
    x87's expl below the floor (deep masses of a float64 row): within one extended ulp of
    mpmath everywhere, -inf masks exactly 0."""
    hi, lo = exp_pair_points()
    hi = np.concatenate([hi, [-700.0, -5000.0, -11000.0, -np.inf]])
    lo = np.concatenate([lo, [1e-14, 0.0, -1e-13, 0.0]])
    e = reference.exp_extended(hi.reshape(2, -1), lo.reshape(2, -1)).reshape(-1)
    assert e.dtype == reference.EXTENDED and e[-1] == 0
    with mpmath.workprec(200):
        for a, b, x in zip(hi[:-1], lo[:-1], e[:-1]):
            true = mpmath.exp(mpmath.mpf(float(a)) + mpmath.mpf(float(b)))
            off = abs(mpmath.mpf(np.format_float_scientific(x, unique=True)) - true) / true
            assert off <= 2.0**-63, (a, b, float(off))


@pytest.mark.skipif(reference.EXTENDED is np.float64, reason="no extended precision on this platform")
def test_expl_skips_only_the_terms_that_underflow_to_zero_bit_for_bit():
    """`reference.expl` leaves out expl's slow underflowing calls: it must give the very
    bits numpy's long double exp gives, in particular on the last doubles above and the
    first below `EXP_UNDERFLOW` (the last one above is extended's smallest subnormal)."""
    X = reference.EXTENDED
    edge = [reference.EXP_UNDERFLOW]
    for _ in range(3):
        edge.insert(0, np.nextafter(edge[0], 0.0))
    for _ in range(200):
        edge.append(np.nextafter(edge[-1], -np.inf))
    rng = np.random.default_rng(5)
    d_hi = np.concatenate([edge, -rng.uniform(0, 140000, 5000), -rng.uniform(11390, 11410, 5000),
                           [-np.inf, 0.0, -745.2, -65504.0 * 2]])
    d_lo = rng.uniform(-1e-13, 1e-13, d_hi.size) * np.isfinite(d_hi)
    plain = np.exp(d_hi.astype(X)) * (1 + d_lo.astype(X))
    got = reference.expl(d_hi.reshape(2, -1), d_lo.reshape(2, -1)).reshape(-1)
    assert got.dtype == X and np.array_equal(got, plain)
    assert np.signbit(got).sum() == np.signbit(plain).sum() == 0
    assert got[3] == np.finfo(X).smallest_subnormal and (got[4:204] == 0).all()


@pytest.mark.parametrize("dtype", dtypes.DTYPE_NAMES)
def test_a_reference_without_the_attainable_scales_is_the_same_truth_and_textbook_scales(dtype):
    """`loss_and_grad(case, attainable=False)` (the search's: it scores rows by the textbook
    bound alone) gives the same bits for everything it keeps, and None for what it skips."""
    checked = 0
    for name in regimes.REGIMES:
        for kind in LABEL_KINDS:
            case = regimes.make_case(name, dtype, (16, 1000) if kind != "soft" else (64, 10), kind, 0)
            full, lean = reference.loss_and_grad(case), reference.loss_and_grad(case, attainable=False)
            assert lean.loss_scale_att is None and lean.grad_scale_att is None
            if full.precision == "none":  # invalid labels: no truth either way
                continue
            assert full.loss_scale_att is not None
            for field in ("loss", "grad", "defined", "loss_scale", "grad_scale"):
                a, b = getattr(full, field), getattr(lean, field)
                # values, not bytes: an extended-precision array's padding bytes are garbage
                assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (case.case_id, field)
            checked += 1
    assert checked > 20


NARROW = ["float16", "bfloat16", "float32"]


def test_compiled_rows_hold_their_derived_bounds_and_come_near_them():
    """`fused_kernels.reference_rows` derives: soft labels and smoothing (double-double
    throughout) within 0.51 float64 ulps, less a cancellation floor of 2**-76 max(p_j, y_j)
    (numpy's extended-precision code needs 2**-60); integer labels (a float64 exp of 0.51
    ulp) within 1.52. Held over every finite regime against mpmath, and the worst case
    comes near each bound: 0.45 ulps and more (the final rounding dominates), and past 1 ulp
    for integer labels (the exp's error is really there), so neither bound is loose."""
    worst = {"fractional": 0.0, "integer": 0.0}
    rng = np.random.default_rng(11)
    for regime in FINITE_REGIMES:
        for kind in LABEL_KINDS:
            for v in (3, 33, 300):
                dtype = NARROW[int(rng.integers(3))]
                case = regimes.make_case(regime, dtype, (2, v), kind, int(rng.integers(2**31)))
                fractional = kind in ("soft", "smoothing")
                loss_err, grad_err = worst_ulps(case, compiled=True, floor_bits=76)
                key = "fractional" if fractional else "integer"
                worst[key] = max(worst[key], loss_err, grad_err)
    assert 0.45 <= worst["fractional"] <= 0.51, worst
    assert 1.0 <= worst["integer"] <= 1.52, worst


def test_compiled_rows_take_classes_past_exps_floor_apart_and_leave_rows_of_only_those_to_numpy():
    """Classes more than 708 (integer labels) or 680 (soft, smoothing) below the max: where
    the rest of the row's terms add up to 2**-850 or more, the loop leaves them out of T
    (2**-100 of it) and scales their own p (subnormal, or 0); a row of only such classes
    (T itself tiny: issue 12's) is numpy's. Each row is the reference of that row alone
    (rows are independent) and within the bound of mpmath."""
    from harness.numerics import fused

    kernels = fused.kernels()
    z = np.array([[0.0, -3.0, 1.5, -2.0, -1.0], [0.0, -716.0, -740.0, -1.0, -750.0],
                  [0.0, -716.0, -740.0, -690.0, -750.0], [4.0, 4.0, -np.inf, 0.0, -1.0]])
    soft = np.array([[0.5, 0.25, 0.25, 0.0, 0.0], [0.5, 0.0, 0.25, 0.25, 0.0], [0.5, 0.0, 0.0, 0.25, 0.25],
                     [0.75, 0.0, 0.0, 0.25, 0.0]])
    target = np.array([0, 1, 2, 3])
    for kind in ("index", "soft", "smoothing"):
        n, v = z.shape
        fallback, scratch = np.empty(n, bool), [np.empty(n), np.empty(n), np.empty((n, v)), np.empty((n, v))]
        kernels.reference_rows_into(z, target, reference._KIND_CODES[kind], soft if kind == "soft" else reference._NO_ROWS,
                                    0.1, 4.0, False, *scratch, reference._NO_ROWS, reference._NO_ROWS,
                                    np.empty(n, np.int64), fallback,
                                    reference.SUBNORMAL_EXP if kind == "index" else kernels.EXP_PAIR_FLOOR)
        assert fallback.tolist() == [False, False, True, False], kind
        case = Case("manual/deep", "manual", "float32", dtypes.exact(z, "float32"), target, label_kind=kind,
                    soft_labels=soft if kind == "soft" else None, smoothing=0.1 if kind == "smoothing" else 0.0)
        both = reference.loss_and_grad(case)
        if kind == "index":  # p of -740: subnormal; of -750: 0
            assert 0 < both.grad[1, 2] < 2.0**-1022 and both.grad[1, 4] == 0
        for i in range(n):
            alone = reference.loss_and_grad(Case(
                "manual/deep", "manual", "float32", case.logits[i : i + 1], case.target[i : i + 1], label_kind=kind,
                soft_labels=None if case.soft_labels is None else case.soft_labels[i : i + 1], smoothing=case.smoothing))
            for field in ("loss", "grad", "loss_scale", "grad_scale", "loss_scale_att", "grad_scale_att"):
                assert np.array_equal(getattr(both, field)[i], getattr(alone, field)[0]), (kind, i, field)
        loss_err, grad_err = worst_ulps(case)
        assert loss_err <= 2 and grad_err <= 2, (kind, loss_err, grad_err)
