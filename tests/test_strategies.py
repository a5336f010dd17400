"""The hypothesis strategies draw what their names promise: exact values in the tested dtype,
near ties within the stated ulps, gaps that straddle exp's thresholds, masks that keep rows
defined, valid cases the reference accepts, and every named piece reachable."""

import math
from collections import Counter
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import find, given, note, settings
from hypothesis import strategies as st

from harness.numerics import dtypes
from harness.numerics import reference
from harness.inputs import strategies as S
from harness.numerics.cases import LABEL_KINDS, Case
from harness.errors import UsageError

FORMATS = [dtypes.get(name) for name in dtypes.DTYPE_NAMES]
ALL_PIECES = {p for group in S.PIECES.values() for p in group}


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize])


def assert_exact(values: np.ndarray, fmt) -> None:
    """float64 values that survive a round trip through the dtype bit for bit."""
    rounded = dtypes.exact(values, fmt.name)
    assert np.array_equal(dtypes.widen(rounded), values, equal_nan=True)


def small_inputs(fmt, data, max_v=40):
    """A base (float64, exact) of a small shape with targets, for testing one transform."""
    n = data.draw(st.integers(1, 6), label="n")
    v = data.draw(st.integers(2, max_v), label="v")
    target = data.draw(S.targets(n, v), label="target")
    base = data.draw(S.base_logits(fmt, n, v), label="base")
    return base.values, target


def live_row_ok(case: Case) -> np.ndarray:
    """Rows that are defined (some finite logit) or ignored."""
    z = case.logits.astype(np.float64)
    has_live = ~np.isneginf(z).all(axis=1)
    return has_live | (case.ignored if case.ignored is not None else False)


# --- the dtype's representable numbers ---------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_step_is_nextafter_in_the_dtype_and_ordinals_invert(fmt):
    x = dtypes.widen(dtypes.exact([0.0, -0.0, 1.0, -1.0, 3.5, fmt.smallest_subnormal, 2.0**fmt.min_exponent,
                                   -fmt.max, fmt.max / 3, fmt.exp_overflow, fmt.exp_underflow], fmt.name))
    narrow = dtypes.exact(x, fmt.name)
    up = np.nextafter(narrow, np.array(np.inf, dtype=fmt.numpy_dtype))
    inside = (x != 0) & (x != -fmt.max)  # step keeps -0 out and saturates at -max
    down = np.nextafter(narrow[inside], np.array(-np.inf, dtype=fmt.numpy_dtype))
    assert np.array_equal(S.step(x, 1, fmt), dtypes.widen(up))
    assert np.array_equal(S.step(x[inside], -1, fmt), dtypes.widen(down))
    assert np.array_equal(S.from_ordinals(S.ordinals(x, fmt), fmt), x)
    assert S.step(fmt.max, 5, fmt) == fmt.max and S.step(-fmt.max, -5, fmt) == -fmt.max  # saturates, no inf
    assert S.ordinals(fmt.smallest_subnormal, fmt) == 1 and S.ordinals(-0.0, fmt) == 0


def test_bfloat16_steps_are_bfloat16_ulps():
    fmt = dtypes.get("bfloat16")
    assert S.step(1.0, 1, fmt) == 1.0 + 2.0**-7 and S.step(1.0, -1, fmt) == 1.0 - 2.0**-8
    assert S.step(0.0, 1, fmt) == float(ml_dtypes.finfo(ml_dtypes.bfloat16).smallest_subnormal)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("kind", S.GAP_KINDS)
def test_straddle_gives_adjacent_values_either_side_of_each_threshold(fmt, kind):
    thr = S.gap_threshold(kind, fmt)
    for anchor in (0.0, 1.0, -3.0, float(S.step(fmt.exp_overflow, 7, fmt))):
        lo, hi = S.straddle(anchor, thr, fmt)
        assert Fraction(lo) - Fraction(anchor) < Fraction(thr) < Fraction(hi) - Fraction(anchor)
        assert S.step(lo, 1, fmt) == hi or Fraction(float(S.step(lo, 1, fmt))) - Fraction(anchor) == Fraction(thr)
        assert_exact(np.array([lo, hi]), fmt)
    assert S.straddle(-fmt.max, fmt.exp_underflow, fmt) is None  # nothing below -max


def test_thresholds_come_from_the_format():
    # float16 / bfloat16 / float32 / float64: exp overflows past log(max) and rounds to 0
    # below log(smallest_subnormal / 2). bfloat16's range is float32's, its subnormals are not.
    expected = {"float16": (11.09, -17.33), "bfloat16": (88.72, -92.88), "float32": (88.72, -103.97),
                "float64": (709.78, -745.13)}
    for fmt in FORMATS:
        over, under = expected[fmt.name]
        assert abs(S.gap_threshold("overflow", fmt) - over) < 0.01
        assert abs(S.gap_threshold("underflow", fmt) - under) < 0.01


# --- transforms, one at a time -----------------------------------------------------------


@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_base_logits_are_finite_and_exact(data, fmt):
    z, _ = small_inputs(fmt, data)
    assert np.isfinite(z).all()
    assert_exact(z, fmt)


@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_near_ties_are_within_the_stated_ulps_of_the_row_max(data, fmt):
    z, target = small_inputs(fmt, data)
    out = data.draw(S.with_near_ties(fmt, z, target))
    assert_exact(out.values, fmt)
    changed = (out.values != z) & out.rows[:, None]
    assert not ((out.values != z) & ~out.rows[:, None]).any()
    anchor = S.ordinals(z.max(axis=1), fmt)
    distance = np.abs(S.ordinals(out.values, fmt) - anchor[:, None])
    assert (distance[changed] <= S.NEAR_ULPS).all()
    assert (out.values.max(axis=1) >= z.max(axis=1))[out.rows].all()  # the anchor stays
    if out.piece == "near_ties.all":
        assert (distance[out.rows] <= S.NEAR_ULPS).all()


@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_subnormals_are_subnormal_in_the_dtype(data, fmt):
    z, target = small_inputs(fmt, data)
    out = data.draw(S.with_subnormals(fmt, z, target))
    assert_exact(out.values, fmt)
    changed = out.values != z
    assert not (changed & ~out.rows[:, None]).any()
    magnitude = np.abs(out.values[changed])
    assert ((magnitude > 0) & (magnitude < 2.0**fmt.min_exponent)).all()
    assert changed.any() or (np.abs(z[out.rows]) < 2.0**fmt.min_exponent).any()


@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_near_max_values_are_within_the_stated_ulps_of_max(data, fmt):
    z, target = small_inputs(fmt, data)
    out = data.draw(S.with_near_max(fmt, z, target))
    assert_exact(out.values, fmt)
    changed = out.values != z
    assert not (changed & ~out.rows[:, None]).any()
    top = S.ordinals(fmt.max, fmt)
    assert (top - np.abs(S.ordinals(out.values[changed], fmt)) <= S.NEAR_ULPS).all()
    assert np.isfinite(out.values).all()


def crosses_within(x: float, k: int, thr: Fraction, anchor: float, fmt) -> bool:
    """x lies strictly on one side of anchor + thr, and k steps of the dtype take it to
    anchor + thr or past it (float64 can hold anchor + thr itself)."""
    d = Fraction(x) - Fraction(anchor)
    if d < thr:
        return Fraction(float(S.step(x, k, fmt))) - Fraction(anchor) >= thr
    return d > thr and Fraction(float(S.step(x, -k, fmt))) - Fraction(anchor) <= thr


@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_exp_threshold_gaps_straddle_the_dtypes_thresholds(data, fmt):
    z, target = small_inputs(fmt, data)
    out = data.draw(S.with_exp_threshold_gap(fmt, z, target))
    assert_exact(out.values, fmt)
    kind = out.piece.split(".")[1]
    thr = Fraction(S.gap_threshold(kind, fmt))
    k = S.NEAR_ULPS + 1
    for i in np.flatnonzero(out.rows):
        row = out.values[i]
        anchor = 0.0 if kind in ("overflow", "underflow") else float(row.max())
        near = [x for x in row if crosses_within(float(x), k, thr, anchor, fmt)]
        below = [x for x in near if Fraction(float(x)) - Fraction(anchor) < thr]
        above = [x for x in near if Fraction(float(x)) - Fraction(anchor) > thr]
        note(f"row {i}: {row.tolist()} anchor {anchor} below {below} above {above}")
        if kind in ("overflow", "underflow") or row.size >= 3:
            assert below and above
        else:
            assert below or above
    untouched = ~out.rows
    assert np.array_equal(out.values[untouched], z[untouched])


@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_masks_keep_every_row_defined(data, fmt):
    z, target = small_inputs(fmt, data)
    out = data.draw(S.with_masks(fmt, z, target))
    masked = np.isneginf(out.values)
    assert not masked[~out.rows].any()
    assert (~masked).any(axis=1).all()
    rows = np.flatnonzero(out.rows)
    at_target = masked[rows, target[rows]]
    if out.piece == "mask.target":
        assert at_target.all()
    if out.piece == "mask.non_target":
        assert not at_target.any()
    if out.piece == "mask.all_but_one":
        assert ((~masked[rows]).sum(axis=1) == 1).all()


# --- whole cases ------------------------------------------------------------------------


@given(case=S.cases())
def test_cases_are_exact_valid_and_the_reference_accepts_them(case):
    fmt = dtypes.get(case.dtype)
    note(f"{case.case_id} {case.regime} {case.note}")
    assert case.source == "search" and case.regime.startswith("search:")
    assert set(S.pieces(case)) <= ALL_PIECES
    assert case.logits.dtype == fmt.numpy_dtype
    # exact in the dtype: widening to float64 and rounding back gives identical bits
    assert np.array_equal(bits(dtypes.exact(dtypes.widen(case.logits), case.dtype)), bits(case.logits))
    assert not np.isnan(case.logits.astype(np.float64)).any() and not (case.logits.astype(np.float64) == np.inf).any()
    assert live_row_ok(case).all()
    shape = S.drawn_shape(case)
    assert math.prod(shape[:-1]) == case.shape[0] and shape[-1] == case.shape[1]
    assert case.logits.size <= S.MAX_ELEMENTS
    if case.label_kind == "soft":
        y = case.soft_labels
        assert (y.sum(axis=1) == 1.0).all()
        assert (y.astype(fmt.numpy_dtype).astype(np.float64) == y).all() and ((y * 256) % 1 == 0).all()
        assert (y.argmax(axis=1) == case.target).all() or (y.max(axis=1) == y[np.arange(len(y)), case.target]).all()
    Case(**{f: getattr(case, f) for f in Case.__dataclass_fields__})  # validates again
    ref = reference.loss_and_grad(case)
    assert ref.defined.all()
    with np.errstate(over="ignore"):  # float64 cases: extended-precision losses past float64's max
        loss, grad = np.asarray(ref.loss, np.float64), np.asarray(ref.grad, np.float64)
    assert not np.isnan(loss).any() and not np.isnan(grad).any()
    assert (loss >= 0).all()


def test_reference_smoothing_zero_with_a_mask():
    # Found by the strategies (fixed): eps = 0 puts no weight on the masked class, so the
    # loss is the index loss log(1 + e) - 0 = 1.3133, not 0 * inf = NaN.
    logits = dtypes.exact([[0.0, -np.inf, 1.0]], "float32")
    case = Case("manual", "manual", "float32", logits, np.array([0]), label_kind="smoothing", smoothing=0.0)
    assert abs(float(reference.loss_and_grad(case).loss[0]) - math.log1p(math.e)) < 1e-12


def test_reference_float64_top_binade_row():
    # Found by the strategies (fixed): z - max z is representable (-1.5e308), but TwoSum's
    # intermediate s - a rounded past float64's max and its error term was inf - inf = NaN.
    # The target leads by more than 2.7e306: the true loss is exp(-2.7e306) ~ 0.
    logits = np.array([[1.7976931348623157e308, 1.7704845759176028e308, 2.511697548661497e307]])
    case = Case("manual", "manual", "float64", logits, np.array([0]))
    ref = reference.loss_and_grad(case)
    assert ref.loss[0] == 0.0 and np.isfinite(np.asarray(ref.grad, np.float64)).all()


def test_every_named_piece_is_reachable():
    seen = Counter()

    @settings(max_examples=300)
    @given(case=st.booleans().flatmap(lambda undefined: S.cases(allow_undefined=undefined)))
    def draw(case):
        seen.update(S.pieces(case))
        seen.update([f"dtype.{case.dtype}", f"labels.{case.label_kind}", f"ndim.{len(S.drawn_shape(case))}"])
        seen.update(["big"] if case.shape[1] >= S.BIG_CLASSES else ["small"])

    draw()
    wanted = ALL_PIECES | {f"dtype.{d}" for d in dtypes.DTYPE_NAMES} | {f"labels.{k}" for k in LABEL_KINDS}
    wanted |= {"ndim.2", "ndim.3", "big", "small"}
    assert wanted - set(seen) == set()
    assert seen["big"] < seen["small"] / 3  # big vocabularies stay rare


@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_row_logits_is_one_exact_row_with_a_live_class(data, fmt):
    v = data.draw(st.sampled_from([2, 5, 1000]))
    row, t, pieces = data.draw(S.row_logits(fmt, v))
    assert row.shape == (v,) and 0 <= t < v and pieces[0] in S.SPREADS
    assert_exact(row, fmt)
    assert not np.isneginf(row).all() and not np.isnan(row).any()


def test_undefined_rows_only_when_asked():
    case = find(S.cases(allow_undefined=True), lambda c: any(p.startswith("undefined.") for p in S.pieces(c)))
    assert not reference.loss_and_grad(case).defined.all()


@settings(max_examples=100)
@given(case=S.cases(shape_pool=None, max_elements=1 << 16))
def test_arbitrary_shapes_stay_within_max_elements(case):
    assert case.logits.size <= 1 << 16 and 2 <= case.shape[1] <= 1 << 16
    assert len(S.drawn_shape(case)) in (2, 3) and case.shape[0] <= S.MAX_ROWS


def test_arbitrary_shapes_reach_3d_and_big_vocabularies():
    three_d = find(S.shapes(pool=None), lambda s: len(s) == 3)
    big = find(S.shapes(pool=None), lambda s: s[-1] >= 200_000)
    assert three_d == (1, 1, 2) and math.prod(big) <= S.MAX_ELEMENTS


@given(case=S.cases(dtype="bfloat16", label_kinds=["soft", "smoothing"], shape_pool=[(3, 7), (2, 2, 5)]))
def test_arguments_fix_dtype_label_kinds_and_shapes(case):
    assert case.dtype == "bfloat16" and case.label_kind in ("soft", "smoothing")
    assert S.drawn_shape(case) in ((3, 7), (2, 2, 5))


def test_bad_arguments_are_usage_errors():
    for strategy in (S.cases(dtype="float8"), S.cases(label_kinds=["hard"]), S.cases(shape_pool=[(2, 1)]),
                     S.cases(transforms=["wobble"])):
        with pytest.raises(UsageError):
            find(strategy, lambda c: True)


# --- shrinking ---------------------------------------------------------------------------


def test_the_simplest_case_is_one_row_of_two_zero_logits():
    case = find(S.cases(), lambda c: True)
    assert case.shape == (1, 2) and case.dtype == "float16" and case.label_kind == "index"
    assert case.regime == "search:raw" and case.target.tolist() == [0]
    assert case.logits.astype(np.float64).tolist() == [[0.0, 0.0]] and case.ignored is None


def test_a_masked_target_shrinks_to_the_smallest_case_that_has_one():
    case = find(S.cases(), lambda c: "mask.target" in S.pieces(c))
    assert case.shape == (1, 2) and case.regime == "search:raw+mask.target"
    assert case.logits.astype(np.float64).tolist() == [[-np.inf, 0.0]]
