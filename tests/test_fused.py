"""The compiled judge (`numerics.fused`) against the numpy code it fuses (`metrics`), which
stays the definition: the same columns and row verdicts bit for bit, on every regime's
truth and on answers that are exact, off by an ulp or by 100%, non-finite, huge, zero."""

import os

import numpy as np
import pytest

from harness.inputs import regimes
from harness.numerics import dtypes, fused, metrics, reference
from harness.run import rowsearch

SKIP = {"empty_batch", "invalid_labels", "all_ignored"}


def _answers(ref, case, rng):
    """(perturbation, loss, grad): answers at several distances from the truth, in the case's dtype."""
    eps = float(dtypes.get(case.dtype).unit_roundoff)
    # 5-8: beside non-finite answers (one block judged by both of the kernel's loops), or
    # flushed ones: exact answers, then answers a few ulps off (lossy and inaccurate ones)
    for trial, sd in enumerate([0, 1e-16, 1e-7, 1e-3, 1.0, 0, 0, 4 * eps, 4 * eps]):
        loss = ref.loss.astype(np.float64) * (1 + rng.normal(0, sd, ref.loss.shape))
        grad = ref.grad.astype(np.float64) * (1 + rng.normal(0, sd, ref.grad.shape))
        if trial in (5, 7):  # non-finite, zero and huge answers
            grad.flat[rng.integers(0, grad.size, 20)] = rng.choice([np.inf, -np.inf, np.nan, 0.0, 1e300, -1e308], 20)
            loss.flat[rng.integers(0, loss.size, 5)] = rng.choice([np.inf, -np.inf, np.nan, 0.0, 1.7e308], 5)
        if trial in (6, 8):  # flushed: every tiny gradient element returned as 0
            grad[np.abs(grad) < 1e-30] = 0.0
        if case.dtype != "float64":
            with np.errstate(over="ignore"):  # 1e300 in float32: inf, as an overflowing answer
                loss, grad = loss.astype(case.logits.dtype), grad.astype(case.logits.dtype)
        yield trial, loss, grad


def _cases():
    for dtype in ["float16", "bfloat16", "float32", "float64"]:
        for name in [r for r in regimes.REGIMES if r not in SKIP]:
            for kind in ["index", "soft"]:
                for shape in [(64, 10), (8, 1000)]:
                    yield regimes.make_case(name, dtype, shape, kind, 0)


def _fresh(ref):
    """The reference without its memo (each path computes its own truth terms)."""
    return reference.Reference(ref.loss, ref.grad, ref.defined, ref.loss_scale, ref.grad_scale, ref.precision,
                               ref.loss_scale_att, ref.grad_scale_att)


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and np.isnan(a) and np.isnan(b))


def test_numba_is_there_so_the_comparisons_below_are_not_numpy_against_numpy():
    assert fused.kernels() is not None


def _numpy_and_fused(monkeypatch, judge, seed: int, defined_only: bool = False):
    """(case id, trial, numpy's answer, the kernels') of `judge(ref, loss, grad, dtype)` on
    every case and answer, each path with a reference of its own (no shared truth terms)."""
    kernels = fused.kernels()
    assert kernels is not None
    rng = np.random.default_rng(seed)
    for case in _cases():
        ref = reference.loss_and_grad(case)
        if defined_only and not ref.defined.any():
            continue
        for trial, loss, grad in _answers(ref, case, rng):
            monkeypatch.setattr(fused, "kernels", lambda: None)
            want = judge(_fresh(ref), loss, grad, case.dtype)
            monkeypatch.setattr(fused, "kernels", lambda: kernels)
            yield case.case_id, trial, want, judge(_fresh(ref), loss, grad, case.dtype)


def test_fused_measure_gives_the_numpy_columns_bit_for_bit(monkeypatch):
    checked = 0
    for case_id, trial, want, got in _numpy_and_fused(monkeypatch, metrics.measure, seed=0, defined_only=True):
        diff = {k: (want[k], got[k]) for k in want if not _same(want[k], got[k])}
        assert not diff, (case_id, trial, diff)
        checked += 1
    assert checked > 1000


def test_fused_row_scores_give_the_numpy_verdicts_bit_for_bit(monkeypatch):
    checked = 0
    for case_id, trial, want, got in _numpy_and_fused(monkeypatch, rowsearch.judge_rows, seed=1):
        for field in ("score", "nonfinite", "loss_worse"):
            assert np.array_equal(getattr(want, field), getattr(got, field)), (case_id, trial, field)
        checked += 1
    assert checked > 1000


def _special_truths(dtype: str, rng) -> np.ndarray:
    """float64 truths at every edge `truth_terms` handles for `dtype`: zeros of both signs,
    float64 and `dtype` subnormals and their normal floor, powers of two and their
    neighbours, the overflow limit and its neighbours, float64's extremes, inf, NaN."""
    fmt = dtypes.get(dtype)
    limit = metrics._overflow_limit(dtype)
    edges = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 2.0 ** fmt.min_exponent, 2.0 ** (fmt.min_exponent - fmt.mantissa_bits),
             1.0, 2.0, 0.5, fmt.max, limit, 1.7976931348623157e308, np.inf, np.nan, 1e-30, 3.0e-39]
    with np.errstate(over="ignore"):
        edges += [np.nextafter(e, np.inf) for e in edges[2:12]] + [np.nextafter(e, 0.0) for e in edges[2:12]]
    values = np.array(edges + list(rng.normal(size=200) * 10.0 ** rng.integers(-320, 308, 200)))
    return np.concatenate([values, -values])


def _assert_same_terms(got, want) -> None:
    """Two `TruthTerms`, field by field, bit for bit (the truth itself is the input both got)."""
    for field in ("truth", "is_inf", "finite_overflow", "u", "allowance", "allowance_att", "tiny", "hi", "lo"):
        a, b = getattr(got, field), getattr(want, field)
        assert (a is None) == (b is None), field
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), field
    assert (got.all_finite, got.any_tiny) == (want.all_finite, want.any_tiny)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_fused_truth_terms_are_numpys_bit_for_bit_at_every_edge(dtype):
    assert fused.kernels() is not None
    rng = np.random.default_rng(7)
    truth = _special_truths(dtype, rng)
    scales = [np.abs(rng.normal(size=truth.size)) * 10.0 ** rng.integers(-300, 300, truth.size),
              np.where(np.arange(truth.size) % 3 == 0, np.inf, 0.0)]
    for scale in scales:
        for scale_att in (None, scale[::-1].copy()):
            for shape in [(truth.size,), (2, truth.size // 2)]:
                t, s = truth.reshape(shape), scale.reshape(shape)
                sa = None if scale_att is None else scale_att.reshape(shape)
                _assert_same_terms(metrics.truth_terms(t, s, dtype, sa), metrics.truth_terms_numpy(t, s, dtype, sa))


def _extended_truths(dtype: str, rng) -> np.ndarray:
    """Extended-precision truths (float64 cases' references) at the edges of their float64
    pieces: the float64 edges nudged up and down by a few extended ulps, and powers of two
    (the normal floor and 1 among them) just below, which round *up* to the power of two:
    their ulp is the binade's below hi's."""
    X = reference.EXTENDED
    base = _special_truths(dtype, rng).astype(X)
    powers = np.array([2.0 ** k for k in range(-1022, 1024, 7)] + [2.0 ** -1022, 1.0, 2.0 ** dtypes.get(dtype).min_exponent], X)
    below = powers * (1 - X(2) ** -60)
    with np.errstate(invalid="ignore", over="ignore"):
        nudged = [base * (1 + X(2) ** -58), base * (1 - X(2) ** -58)]
    values = np.concatenate([base, below, *nudged, powers * (1 + X(2) ** -60)])
    return np.concatenate([values, -values])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_fused_truth_terms_of_an_extended_truth_are_numpys_bit_for_bit(dtype, monkeypatch):
    """The float64 cases' truth is extended precision: its terms are computed on its float64
    pieces, and the elements whose ulp those pieces get wrong (just below a power of two)
    from the definition. Bit for bit against the definition, the kernel seen doing the work."""
    if reference.EXTENDED is np.float64:
        pytest.skip("no extended precision here: float64 truths only")
    real = fused.kernels()
    assert real is not None
    seen = []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def truth_terms(self, t, *rest):
            seen.append(t.size)
            return real.truth_terms(t, *rest)

    monkeypatch.setattr(fused, "kernels", lambda: Spy())
    rng = np.random.default_rng(11)
    truth = _extended_truths(dtype, rng)
    finite = np.isfinite(truth) & (np.abs(truth) < 1e308)
    pieces = metrics._pieces(truth)
    splits = truth[pieces[2]]  # every element with float64 pieces: the fused route
    assert splits.size > 1000 and ((pieces[0] != truth) & pieces[2] & finite).sum() > 500  # not float64 values
    scale = np.abs(rng.normal(size=splits.size)) * 10.0 ** rng.integers(-300, 300, splits.size)
    for t, fused_route in [(splits, True), (truth, False)]:  # the whole: past float64's range somewhere
        s = np.resize(scale, t.size)
        for sa in (None, s[::-1].copy()):
            seen.clear()
            got, want = metrics.truth_terms(t, s, dtype, sa), metrics.truth_terms_numpy(t, s, dtype, sa)
            assert seen == ([t.size] if fused_route else [])
            _assert_same_terms(got, want)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 8193, 20000, 131072, 300001])
def test_fused_sum_of_squares_is_numpys_pairwise_sum(n):
    x = np.random.default_rng(n).normal(size=n) * 1e3
    assert fused.kernels().sum_squares(x) == float(np.square(x).sum())


def test_fused_block_keeps_numpys_nan_rules_for_max_and_argmax():
    """A NaN allowance (no case makes one today) gives NaN ratios: numpy's argmax takes the
    first NaN, its max propagates NaN; the kernel must too."""
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(6, 50))
    computed = (truth * (1 + rng.normal(0, 1e-6, truth.shape))).astype(np.float32)
    scale = np.abs(truth) + 1
    scale[2, 7] = scale[4, 1] = np.nan
    terms = metrics.truth_terms(truth, scale, "float32", scale_att=scale * 0.5)
    want = metrics.Reduction("grad")
    want.add(metrics.element_errors(computed, None, None, "float32", terms=terms), computed, truth, lambda k: (k,))
    got = metrics.Reduction("grad")
    got.fold(metrics._fused_block(fused.kernels(), computed, terms, "float32"), lambda k: (k,))
    assert np.isnan(want.ratio_max) and want.argmax == (2 * 50 + 7,)
    assert all(_same(getattr(want, f), getattr(got, f)) for f in vars(want)), (vars(want), vars(got))


def test_fused_block_takes_the_first_largest_ratio_across_its_tiles_and_leaves_negative_ones_to_the_full_loop():
    """`reduce_block` takes maxima tile by tile (`fused_kernels.TILE`) over the ratios' bits:
    the argmax is still numpy's (the first of equal largest ratios, in an earlier tile
    than a later equal one). Negative allowances (no case makes one; the bits of negative
    floats order backwards) go to the loop that compares floats: numpy's max is then the
    least negative ratio."""
    tile = fused.kernels().TILE
    n = 3 * tile + 5
    truth = np.linspace(1.0, 2.0, n)
    tied = truth.copy()
    for k in (tile + 7, 2 * tile + 3, 3 * tile + 1):  # the same largest error in three tiles
        tied[k] = truth[k] + 2.0**-20
    tied[5] = truth[5] + 2.0**-22  # a smaller one in the first tile
    off = truth + np.linspace(2.0**-30, 2.0**-20, n)  # every element off, by different amounts
    for computed, scale, largest in ((tied, 3.0, (tile + 7,)), (off, -1e9, (0,))):
        terms = metrics.truth_terms(truth, np.full(n, scale), "float32", scale_att=np.full(n, scale / 2))
        want = metrics.Reduction("grad")
        want.add(metrics.element_errors(computed, None, None, "float32", terms=terms), computed, truth, lambda k: (k,))
        got = metrics.Reduction("grad")
        got.fold(metrics._fused_block(fused.kernels(), computed, terms, "float32"), lambda k: (k,))
        assert want.argmax == largest and (want.ratio_max > 0) == (scale > 0), vars(want)
        assert all(_same(getattr(want, f), getattr(got, f)) for f in vars(want)), (vars(want), vars(got))


def test_a_second_process_loads_the_kernels_from_numbas_cache_without_compiling():
    """numba keys a cached function by the pickle of its closure: kernels defined in a
    function, calling one another through it, missed the cache and compiled again in every
    process (3-10 s each, a new cache file each time). Here a fresh process that uses every
    kernel must find them all in the cache the previous one left."""
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from harness.inputs.regimes import make_case\n"
        "from harness.numerics import metrics, reference\n"
        "from harness.run import rowsearch\n"
        "case = make_case('typical', 'float64', (16, 100), 'index', 0)\n"
        "ref = reference.loss_and_grad(case)\n"
        "loss, grad = np.asarray(ref.loss, np.float64), np.asarray(ref.grad, np.float64)\n"
        "metrics.measure(ref, loss, grad, 'float64')\n"
        "rowsearch.judge_rows(ref, loss, grad, 'float64')\n"
    )
    env = dict(os.environ, NUMBA_DEBUG_CACHE="1")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    loaded = [line for line in runs[1].stdout.splitlines() if "data loaded" in line]
    saved = [line for line in runs[1].stdout.splitlines() if "saved" in line]
    assert saved == [], runs[1].stdout
    assert all(any(name in line for line in loaded) for name in ("reduce_block", "row_scores", "sum_squares")), runs[1].stdout


def test_a_run_after_the_warm_up_compiles_no_kernel(tmp_path):
    """`make setup` compiles the kernels (`python -m harness.run.warmup`) so that a first
    run loads them instead of compiling them on the parent's threads. That holds only if
    the warm-up calls the very signatures a run calls: in a numba cache of their own, a
    run (regimes of a narrow dtype and float64, every label kind, the search) after the
    warm-up must save nothing new, and load the reference's and the judge's kernels."""
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), NUMBA_DEBUG_CACHE="1",
               CESTAB_CACHE_DIR=str(tmp_path / "cestab"))
    warm = subprocess.run([sys.executable, "-m", "harness.run.warmup"], capture_output=True, text=True, env=env)
    assert warm.returncode == 0, warm.stderr
    assert any("reference_rows" in line and "saved" in line for line in warm.stdout.splitlines()), warm.stdout
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--adapters", "numpy.naive,numpy.stable",
                          "--dtypes", "bfloat16,float64", "--regimes", "typical,neg_inf_mask", "--no-corpus",
                          "--out", str(tmp_path / "runs")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    saved = [line for line in run.stdout.splitlines() if "saved" in line]
    loaded = [line for line in run.stdout.splitlines() if "data loaded" in line]
    assert saved == [], saved
    assert all(any(name in line for line in loaded) for name in ("reference_rows", "reduce_block", "row_scores",
                                                                    "truth_terms", "exp_pair")), loaded
