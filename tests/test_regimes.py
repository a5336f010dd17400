"""The regimes produce what their names promise, exactly and reproducibly."""

import numpy as np
import pytest

from harness.numerics import dtypes
from harness.numerics import reference
from harness.inputs import regimes
from harness.numerics.cases import LABEL_KINDS
from harness.errors import UsageError


def logits64(case):
    return case.logits.astype(np.float64)


@pytest.mark.parametrize("dtype", dtypes.DTYPE_NAMES)
def test_every_regime_builds_exact_cases_of_every_kind(dtype):
    for name in regimes.REGIMES:
        for kind in LABEL_KINDS:
            if regimes.REGIMES[name].invalid:
                continue  # breaks the labels on purpose: see test_invalid_labels_...
            case = regimes.make_case(name, dtype, (8, 16), kind, seed=0)
            assert case.logits.dtype == dtypes.get(dtype).numpy_dtype
            y = case.target_distribution()
            np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-15)
            if kind == "soft":  # exact in the tested dtype and summing to exactly 1
                assert (y.astype(case.logits.dtype).astype(np.float64) == y).all()
                assert (y.sum(axis=1) == 1.0).all()


def test_same_seed_same_case_and_different_seed_different_case():
    a = regimes.make_case("typical", "float32", (4, 10), "index", seed=5)
    b = regimes.make_case("typical", "float32", (4, 10), "index", seed=5)
    c = regimes.make_case("typical", "float32", (4, 10), "index", seed=6)
    assert np.array_equal(a.logits, b.logits) and np.array_equal(a.target, b.target)
    assert not np.array_equal(a.logits, c.logits)


@pytest.mark.parametrize("dtype", dtypes.DTYPE_NAMES)
def test_large_offset_overflows_or_underflows_exp(dtype):
    case = regimes.make_case("large_offset", dtype, (64, 10), "index", seed=0)
    fmt = dtypes.get(dtype)
    z = logits64(case)
    row_max = np.abs(z).max(axis=1)
    assert (row_max > fmt.exp_overflow).all()
    assert (z.max(axis=1) > fmt.exp_overflow).any() and (z.max(axis=1) < fmt.exp_underflow).any()


@pytest.mark.parametrize("dtype", dtypes.DTYPE_NAMES)
def test_exp_range_spread_crosses_both_thresholds(dtype):
    fmt = dtypes.get(dtype)
    z = logits64(regimes.make_case("exp_range_spread", dtype, (4, 1000), "index", seed=0))
    assert (z.max(axis=1) > fmt.exp_overflow).all()
    assert ((z - z.max(axis=1, keepdims=True)).min(axis=1) < fmt.exp_underflow).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dominant_target_has_losses_below_1e30(dtype):
    case = regimes.make_case("dominant_target", dtype, (64, 10), "index", seed=0)
    ref = reference.loss_and_grad(case)
    loss = np.asarray(ref.loss, np.float64)
    assert (loss < 1e-30).any() and (loss < 1.0).all()
    z = logits64(case)
    assert (z.argmax(axis=1) == case.target).all()


def test_dominant_other_has_huge_losses():
    case = regimes.make_case("dominant_other", "float16", (64, 10), "index", seed=0)
    loss = np.asarray(reference.loss_and_grad(case).loss)
    assert loss.max() > 1000 and np.isfinite(loss).all()


@pytest.mark.parametrize("dtype", dtypes.DTYPE_NAMES)
def test_near_ties_are_within_a_few_ulps(dtype):
    case = regimes.make_case("near_ties", dtype, (16, 50), "index", seed=0)
    z = logits64(case)
    spread = z.max(axis=1) - z.min(axis=1)
    from harness.numerics.metrics import ulp

    assert (spread <= 7 * ulp(np.abs(z).max(axis=1), dtype)).all()
    assert (spread > 0).any()


def test_masks_cover_non_targets_and_sometimes_the_target():
    case = regimes.make_case("neg_inf_mask", "float32", (8, 100), "index", seed=0)
    z = logits64(case)
    rows = np.arange(8)
    assert np.isneginf(z).any(axis=1).all()
    target_masked = np.isneginf(z[rows, case.target])
    assert target_masked.any() and not target_masked.all()
    ref = reference.loss_and_grad(case)
    assert ref.defined.all()
    assert (ref.loss[target_masked] == np.inf).all() and np.isfinite(ref.loss[~target_masked]).all()


def test_nonfinite_rows_are_all_undefined():
    case = regimes.make_case("nonfinite", "float32", (8, 10), "index", seed=0)
    assert not reference.loss_and_grad(case).defined.any()


def test_default_shapes_span_2_to_32000_classes():
    classes = [v for _, v in regimes.DEFAULT_SHAPES]
    assert min(classes) == 2 and max(classes) >= 32000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(regimes=["nope"]), "unknown regime 'nope'"),
        (dict(dtype_names=["float8"]), "unknown dtype 'float8'"),
        (dict(label_kinds=["hard"]), "unknown label kind 'hard'"),
        (dict(shapes=[(4, 1)]), "bad shape 4x1"),
    ],
)
def test_bad_selection_is_a_usage_error(kwargs, message):
    with pytest.raises(UsageError, match=message):
        regimes.build_cases(**kwargs)


def test_ignored_rows_count_for_nothing_even_when_all_minus_inf():
    case = regimes.make_case("ignored_rows", "float32", (6, 10), "index", seed=0)
    assert case.ignored.tolist() == [False, True, False, False, True, False]
    assert np.isneginf(case.logits[1].astype(np.float64)).all()
    ref = reference.loss_and_grad(case)
    assert ref.defined.all()
    assert (ref.loss[case.ignored] == 0).all() and (ref.grad[case.ignored] == 0).all()
    assert (ref.loss[~case.ignored] > 0).all()


def test_invalid_labels_break_the_contract_and_have_no_truth():
    index = regimes.make_case("invalid_labels", "float32", (4, 10), "index", seed=0)
    assert index.invalid and index.target.tolist() == [10, -1, 10, -1]
    soft = regimes.make_case("invalid_labels", "float32", (3, 10), "soft", seed=0)
    assert soft.soft_labels.sum(axis=1).tolist() == [0.5, 2.0, 0.0]
    ref = reference.loss_and_grad(index)
    assert not ref.defined.any() and np.isnan(ref.loss).all()
    kinds = {c.label_kind for c in regimes.build_cases(["invalid_labels"], ["float32"], [(2, 3)])}
    assert kinds == {"index", "soft"}


def test_empty_batch_and_all_ignored_are_valid_degenerate_inputs():
    empty = regimes.make_case("empty_batch", "float16", (4, 10), "index", seed=0)
    assert empty.shape == (0, 10) and empty.case_id == "empty_batch/float16/0x10/index/s0"
    ref = reference.loss_and_grad(empty)
    assert ref.loss.shape == (0,) and ref.grad.shape == (0, 10)
    ignored = regimes.make_case("all_ignored", "float32", (4, 10), "index", seed=0)
    ref = reference.loss_and_grad(ignored)
    assert ignored.ignored.all() and ref.defined.all() and (ref.loss == 0).all() and (ref.grad == 0).all()


def test_ignored_finite_is_ignored_rows_padding_without_the_all_minus_inf_row():
    """The report tells ignore_index (finite padding, realistic) from -inf padding (adversarial)."""
    finite = regimes.make_case("ignored_finite", "float32", (6, 10), "index", seed=0)
    inf = regimes.make_case("ignored_rows", "float32", (6, 10), "index", seed=0)
    assert np.isfinite(finite.logits).all()
    assert (finite.ignored == inf.ignored).all() and finite.ignored.sum() == 2
    assert np.isneginf(inf.logits[np.flatnonzero(inf.ignored)[0]]).all()
    assert regimes.REGIMES["ignored_finite"].realistic and not regimes.REGIMES["ignored_rows"].realistic
    assert all(r.why for r in regimes.REGIMES.values())  # every declaration says why
