"""Error metrics: how far an adapter's loss and gradient are from the reference.

Errors are recorded raw (absolute, relative, ulps, non-finite counts) and set against two
bounds (the ratio columns): the attainable one (`bounds`, a careful implementation's) and
the textbook one (`tolerances.TABLE`). `grades` says which elements are outside which; the
status they imply is decided by the judge (`run.judge`), the one place a status is decided. ulps are Zimmermann-style: ulp taken at the *true* value in
the tested dtype, 2**(e - p + 1) for |x| in [2**e, 2**(e+1)), floored at the smallest
subnormal, and extended past the largest finite value as if the exponent were unbounded.

This module's numpy code is the definition; `fused` computes the same blocks in one
compiled pass (`reduce_errors` uses it when no list of worst elements is asked for).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from harness.numerics import bounds, dtypes, fused, samebits, tolerances
from harness.numerics.reference import EXTENDED, Reference


def ulp(x, dtype: str) -> np.ndarray:
    """ulp of the tested dtype at |x| (float64 result; x may be extended precision)."""
    fmt = dtypes.get(dtype)
    x = np.abs(np.asarray(x))
    finite = np.isfinite(x)
    exponent = np.frexp(np.where(finite, x, 0))[1].astype(np.int64) - 1  # |x| in [2**e, 2**(e+1))
    exponent = np.where(x == 0, fmt.min_exponent, exponent)  # zero: the subnormal floor
    floor = fmt.min_exponent - fmt.mantissa_bits
    out = np.ldexp(1.0, np.maximum(exponent - fmt.mantissa_bits, floor))
    return np.where(finite, out, np.nan)


def _overflow_limit(dtype: str) -> float:
    """Where values start to round to +-inf in the tested dtype: max + ulp(max) / 2."""
    fmt = dtypes.get(dtype)
    with np.errstate(over="ignore"):  # float64's: inf
        return fmt.max + 2.0 ** (np.frexp(fmt.max)[1] - 1 - fmt.mantissa_bits) / 2


def _overflows(truth, dtype: str) -> np.ndarray:
    """True values that round to +-inf in the tested dtype."""
    return np.abs(np.asarray(truth, np.float64)) >= _overflow_limit(dtype)


@dataclass
class ElementErrors:
    """Errors of one quantity (loss or gradient), elementwise, for the defined rows."""

    abs: np.ndarray  # |computed - true|; inf where finiteness disagrees
    ulps: np.ndarray  # abs / ulp(true)
    ratio: np.ndarray  # abs / textbook allowance: > 1 is outside the textbook bound
    ratio_att: np.ndarray  # abs / attainable allowance: > 1 is outside the attainable bound
    nonfinite: np.ndarray  # computed NaN/inf where the true value is finite (or NaN at all)
    flushed: np.ndarray  # subnormal true value returned as exactly 0 (flush to zero)


@dataclass
class TruthTerms:
    """What `element_errors` needs of the truth alone. Every adapter of a case is judged
    against the same truth, so these are computed once per (reference, quantity, dtype,
    rows) (`terms_for`) rather than once per adapter: half of judging's time went here."""

    truth: np.ndarray
    is_inf: np.ndarray  # the truth is +-inf
    finite_overflow: np.ndarray  # finite, but rounds to +-inf in the tested dtype
    u: np.ndarray  # ulp of the tested dtype at the truth (0 where it is infinite)
    allowance: np.ndarray  # the textbook bound (`tolerances`)
    allowance_att: np.ndarray | None  # the attainable bound (`bounds`); None: the textbook one
    tiny: np.ndarray  # nonzero and below the smallest normal (a flush to zero may be allowed)
    # The truth as float64 pieces (`_split`): hi, the truth rounded to float64, and lo, the
    # rest exactly (None when the truth is float64 already). An extended-precision truth
    # (float64 cases) is then subtracted in float64 as (c - hi) - lo, the same double as
    # |c - truth| rounded once wherever c is within a factor of 2 of the truth (c - hi is
    # exact there, Sterbenz), and within an ulp of it elsewhere: x87 arithmetic, which numpy
    # does not vectorise, made float64 cases the largest part of judging. hi None: no such
    # pair exists for some element; the truth's own precision is used.
    hi: np.ndarray | None = None
    lo: np.ndarray | None = None
    all_finite: bool = False  # no inf or NaN in the truth: the common case skips their masks
    any_tiny: bool = True  # some element is `tiny`
    true_sq: float | None = None  # sum of hi ** 2 (numpy's), made by the first adapter judged
    special_rows: np.ndarray | None = None  # `fused.special_rows`, made by the first adapter judged


def truth_terms(truth, scale, dtype: str, scale_att=None) -> TruthTerms:
    """The truth-only terms of `element_errors` for one block of the truth: with float64
    scales, in one compiled pass where numba is there (`fused`, the same numbers), anything
    else by the numpy definition (`truth_terms_numpy`).

    An extended-precision truth (float64 cases) goes through the same pass on its float64
    pieces: hi carries every term but one - the ulp is the truth's, and hi rounded up to a
    power of two (|hi| > |t|, lo of the other sign) is one binade above t, so those elements
    (and the allowances and tiny flag read from their ulp) are taken from the definition.
    numpy does not vectorise x87 arithmetic: the definition costs ~10x more per element."""
    scales = (scale,) if scale_att is None else (scale, scale_att)
    kernels = None
    if isinstance(truth, np.ndarray) and all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in scales):
        kernels = fused.kernels() if truth.dtype in (np.float64, EXTENDED) else None
    if kernels is None:
        return truth_terms_numpy(truth, scale, dtype, scale_att)
    hi, lo = truth, None
    if truth.dtype != np.float64:
        hi, lo, exact = _pieces(truth)
        if not exact.all():  # past float64's range, or a rest below its subnormals
            return truth_terms_numpy(truth, scale, dtype, scale_att)
    tol, att, fmt = tolerances.get(dtype), bounds.get(dtype), dtypes.get(dtype)
    n, shape = hi.size, hi.shape
    u, allowance, allowance_att = np.empty(n), np.empty(n), np.empty(n if scale_att is not None else 0)
    is_inf, tiny, finite_overflow = np.empty(n, bool), np.empty(n, bool), np.empty(n, bool)
    flat_att = fused.EMPTY if scale_att is None else fused.flat(scale_att)
    all_finite, any_tiny = kernels.truth_terms(
        fused.flat(hi), fused.flat(scale), flat_att, scale_att is not None, float(tol.ulps),
        tol.cond * fmt.unit_roundoff, float(att.ulps), att.cond * att.unit_roundoff, fmt.min_exponent,
        fmt.mantissa_bits, 2.0 ** fmt.min_exponent, _overflow_limit(dtype), u, allowance, allowance_att, is_inf, tiny,
        finite_overflow)
    terms = TruthTerms(truth, is_inf.reshape(shape), finite_overflow.reshape(shape), u.reshape(shape),
                       allowance.reshape(shape), None if scale_att is None else allowance_att.reshape(shape),
                       tiny.reshape(shape), hi, lo, bool(all_finite), bool(any_tiny))
    if lo is not None:
        below = np.flatnonzero((np.abs(np.frexp(hi)[0]) == 0.5) & (lo != 0) & (np.signbit(lo) != np.signbit(hi)))
        if below.size:
            at = np.unravel_index(below, shape)
            sub = truth_terms_numpy(truth[at], scale[at], dtype, None if scale_att is None else scale_att[at])
            for name in ("u", "allowance", "allowance_att", "tiny"):
                if getattr(sub, name) is not None:
                    getattr(terms, name)[at] = getattr(sub, name)
            terms.any_tiny = bool(terms.tiny.any())
    return terms


def truth_terms_numpy(truth, scale, dtype: str, scale_att=None) -> TruthTerms:
    """`truth_terms` in numpy: the definition (and the path of an extended-precision truth)."""
    t = truth
    tol = tolerances.get(dtype)
    fmt = dtypes.get(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        is_inf = np.isinf(t)
        u = ulp(np.where(is_inf, 0, t), dtype)
        allowance = tol.ulps * u + tol.cond * fmt.unit_roundoff * scale
        allowance_att = None
        if scale_att is not None:
            att = bounds.get(dtype)
            allowance_att = att.ulps * u + att.cond * att.unit_roundoff * scale_att
        tiny = (t != 0) & (np.abs(t) < 2.0 ** fmt.min_exponent)
        hi, lo = _split(t)
        return TruthTerms(t, is_inf, np.isfinite(t) & _overflows(t, dtype), u, allowance, allowance_att, tiny,
                          hi, lo, bool(np.isfinite(t).all()), bool(tiny.any()))


def _split(t) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(hi, lo), float64 arrays with hi + lo == t exactly (lo None for a float64 t); (None,
    None) where some element has no such pair (`exactly_split`)."""
    t = np.asarray(t)
    if t.dtype == np.float64:
        return t, None
    hi, lo, exact = _pieces(t)
    if not exact.all():
        return None, None
    return hi, lo


def exactly_split(t) -> np.ndarray:
    """Per element: does a float64 pair hi + lo hold t exactly? Not past float64's range,
    nor where the rest falls below its smallest subnormal; non-finite elements stay as
    they are. Always for a float64 t."""
    t = np.asarray(t)
    if t.dtype == np.float64:
        return np.ones(t.shape, bool)
    return _pieces(t)[2]


def _pieces(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hi (t rounded to float64), lo (the rest, rounded to float64), and where hi + lo == t."""
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        hi = t.astype(np.float64)
        finite = np.isfinite(t)
        lo = np.where(finite, t - hi, 0).astype(np.float64)
        exact = ((hi.astype(t.dtype) + lo == t) | ~finite) & (np.isfinite(hi) == finite)
    return hi, lo, exact


def element_errors(computed, truth, scale, dtype: str, scale_att=None, terms: TruthTerms | None = None) -> ElementErrors:
    """Errors of `computed` against `truth` (same shape), judged with the textbook `scale`
    and the attainable `scale_att` (None: the textbook bound stands for both). `terms`:
    `truth_terms` of the same truth, when the caller has them (then truth and scales are
    not read)."""
    terms = terms if terms is not None else truth_terms(truth, scale, dtype, scale_att)
    tol = tolerances.get(dtype)
    c = np.asarray(computed)
    with np.errstate(invalid="ignore", over="ignore"):
        if terms.hi is not None:  # float64 arithmetic (see TruthTerms.hi)
            t = terms.hi
            c = c.astype(np.float64)
            diff = np.abs(c - t) if terms.lo is None else np.abs((c - t) - terms.lo)
        else:
            t = terms.truth
            c = c.astype(t.dtype)
            diff = np.abs(c - t)
        c_finite = np.isfinite(c)
        if terms.all_finite and c_finite.all():  # the common case: no inf or NaN on either side
            nonfinite = np.zeros(c.shape, bool)
            diff = diff.astype(np.float64, copy=False)  # inf where a float64 difference overflows
            missed_inf = None
        else:
            same_inf = terms.is_inf & (c == t)
            c_inf = np.isinf(c)
            rounded_overflow = c_inf & terms.finite_overflow & (np.sign(c) == np.sign(t))
            agree = same_inf | rounded_overflow
            c_nan = np.isnan(c)
            nonfinite = ~c_finite & ~agree & ~terms.is_inf | c_nan
            diff = np.where(agree, 0.0, np.where(np.isfinite(diff), diff, np.inf)).astype(np.float64)
            # A finite answer where the truth is +-inf: the allowance (its scale) is inf as well,
            # and inf / inf must not read as NaN, which compares as within.
            missed_inf = terms.is_inf & ~agree
        ulps = diff / terms.u
        zero = diff == 0
        ratio = np.where(zero, 0.0, diff / terms.allowance)
        if missed_inf is not None:
            ratio = np.where(missed_inf, np.inf, ratio)
        if terms.allowance_att is None:
            ratio_att = ratio
        else:
            ratio_att = np.where(zero, 0.0, diff / terms.allowance_att)
            if missed_inf is not None:
                ratio_att = np.where(missed_inf, np.inf, ratio_att)
        flushed = (c == 0) & terms.tiny if terms.any_tiny else np.zeros(c.shape, bool)
        if tol.allow_flush_to_zero and terms.any_tiny:
            ratio = np.where(flushed, 0.0, ratio)
            ratio_att = np.where(flushed, 0.0, ratio_att)
    return ElementErrors(diff, ulps, ratio, ratio_att, nonfinite, flushed)


def terms_for(ref: Reference, name: str, dtype: str, ids=None, textbook: bool = False) -> TruthTerms:
    """`truth_terms` of the reference's loss ("loss") or gradient ("grad") on rows `ids`
    (None: all; else a run of `reduce_errors`'s chunks), computed once and kept on the
    reference for the next adapter. `textbook`: the textbook bound alone (the search's score)."""
    rows = None if ids is None else (int(ids[0]), int(ids[-1]), len(ids)) if len(ids) else ()
    key = (name, dtype, rows, textbook)
    memo = ref.memo
    if key not in memo:
        if name == "loss":
            truth, scale, scale_att = ref.loss, ref.loss_scale, ref.loss_scale_att
        else:
            truth, scale, scale_att = ref.grad, ref.grad_scale, ref.grad_scale_att
        if textbook:
            scale_att = None
        if ids is not None:
            at = _rows_at(ids)
            truth, scale = truth[at], scale[at]
            scale_att = None if scale_att is None else scale_att[at]
        memo[key] = truth_terms(truth, scale, dtype, scale_att)
    return memo[key]


def _rows_at(ids: np.ndarray):
    """Rows `ids` (increasing) as an index: a slice where they are a run (every row defined,
    the common case), so that taking them is a view, not a copy of the block."""
    if len(ids) and int(ids[-1]) - int(ids[0]) + 1 == len(ids):
        return slice(int(ids[0]), int(ids[-1]) + 1)
    return ids


def grades(e: ElementErrors) -> tuple[np.ndarray, np.ndarray]:
    """(inaccurate, lossy) masks: outside both bounds; outside the attainable one only."""
    outside_att = e.ratio_att > 1
    bad = outside_att & (e.ratio > 1)
    return bad, outside_att & ~bad


#: Rows are reduced in chunks of about this many elements (memory and speed: the
#: temporaries stay small enough for the allocator to reuse).
CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class Element:
    """One element outside the tolerance: where, what it is, how far."""

    index: tuple[int, ...]  # (row,) for the loss, (row, class) for the gradient
    computed: float
    true: float
    abs: float
    ulps: float
    ratio: float  # abs / textbook allowance: > 1 is outside the textbook bound
    ratio_att: float  # abs / attainable allowance (`bounds`): > 1 is worse than a careful implementation


class Block(NamedTuple):
    """One block of elements reduced: what `Reduction.fold` folds in. Maxima are numpy's
    (NaN propagates), the argmax numpy's (the first NaN, else the first largest)."""

    argmax: int  # flat index in the block of the largest ratio
    ratio_max: float
    n: int
    n_bad: int
    n_lossy: int
    ratio_att_max: float
    n_nonfinite: int
    n_flushed: int
    abs_max: float
    rel_max: float
    ulps_max: float
    err_sq: float  # sum of squared errors, numpy's pairwise sum
    true_sq: float


@dataclass
class Reduction:
    """One quantity's (loss or gradient) ElementErrors reduced over the rows with a finite
    truth, folded in chunk by chunk: the results table's columns (`measure`) and the
    mismatch report (`testing.mismatch`) are both read from it, so they cannot disagree."""

    name: str
    top: int = 0  # how many of the worst elements outside the tolerance to keep
    n: int = 0
    n_bad: int = 0  # elements outside both bounds (non-finite ones included)
    n_lossy: int = 0  # elements outside the attainable bound only
    n_nonfinite: int = 0
    n_flushed: int = 0
    abs_max: float = 0.0
    rel_max: float = 0.0
    ulps_max: float = 0.0
    ratio_max: float = 0.0
    ratio_att_max: float = 0.0
    argmax: tuple[int, ...] = ()  # where the largest ratio is (the first such element)
    err_sq: float = 0.0  # sum of squared errors (inf if any error is)
    true_sq: float = 0.0
    worst: list[Element] = field(default_factory=list)  # up to `top`, worst first

    def add(self, e: ElementErrors, computed, truth, index_of) -> None:
        """Fold in one block of element errors; `index_of(flat) -> index` in the case."""
        if e.abs.size == 0:
            return
        ratio = e.ratio.reshape(-1)
        i = int(np.argmax(ratio))
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            t = np.asarray(truth, np.float64)  # an extended-precision truth may pass float64's range
            rel = np.where(e.abs == 0, 0.0, e.abs / np.abs(t))
            err_sq, true_sq = float(np.square(e.abs).sum()), float(np.square(t).sum())
        bad, lossy = grades(e)
        self.fold(Block(i, float(ratio[i]), e.abs.size, int(bad.sum()), int(lossy.sum()), float(e.ratio_att.max()),
                        int(e.nonfinite.sum()), int(e.flushed.sum()), float(e.abs.max()), float(rel.max()),
                        float(e.ulps.max()), err_sq, true_sq), index_of)
        if self.top:
            ratio_att = e.ratio_att.reshape(-1)
            outside = np.flatnonzero(ratio_att > 1)  # outside the attainable bound: lossy or worse
            # NaN/inf first (their ratio is inf), then by ratio; lexsort is stable: index order.
            order = outside[np.lexsort((-ratio_att[outside], -ratio[outside]))][: self.top]
            c, tt = np.asarray(computed).reshape(-1), t.reshape(-1)
            self.worst += [Element(index_of(int(k)), float(c[k]), float(tt[k]), float(e.abs.flat[k]),
                                   float(e.ulps.flat[k]), float(ratio[k]), float(ratio_att[k])) for k in order]
            self.worst.sort(key=lambda el: (-el.ratio, -el.ratio_att))
            del self.worst[self.top:]

    def fold(self, b: "Block", index_of) -> None:
        """Fold in one block's summary (from `add`, or from the compiled pass, `fused`)."""
        if b.ratio_max > self.ratio_max or self.n == 0:
            self.ratio_max, self.argmax = b.ratio_max, index_of(b.argmax)
        self.err_sq += b.err_sq
        self.true_sq += b.true_sq
        self.n += b.n
        self.n_bad += b.n_bad
        self.n_lossy += b.n_lossy
        self.ratio_att_max = max(self.ratio_att_max, b.ratio_att_max)
        self.n_nonfinite += b.n_nonfinite
        self.n_flushed += b.n_flushed
        self.abs_max = max(self.abs_max, b.abs_max)
        self.rel_max = float(np.maximum(self.rel_max, b.rel_max))  # NaN (inf/inf) propagates
        self.ulps_max = max(self.ulps_max, b.ulps_max)

    @property
    def rel_norm(self) -> float:
        """||error|| / ||truth|| over the quantity (0 when there is no error)."""
        return 0.0 if self.err_sq == 0 else float(np.sqrt(self.err_sq) / np.sqrt(self.true_sq))


def reduce_errors(ref: Reference, computed, name: str, dtype: str, top: int = 0) -> Reduction:
    """The loss ("loss") or gradient ("grad") of one result against the reference, reduced
    over the rows with a finite truth in chunks of about CHUNK_ELEMENTS elements."""
    rows = np.flatnonzero(ref.defined)
    computed = np.asarray(computed)
    if name == "loss":
        truth, scale, scale_att = ref.loss, ref.loss_scale, ref.loss_scale_att
    else:
        truth, scale, scale_att = ref.grad, ref.grad_scale, ref.grad_scale_att
    width = computed.shape[1] if computed.ndim == 2 else 1
    step = max(1, CHUNK_ELEMENTS // width)
    out = Reduction(name, top)
    kernels = fused.kernels() if top == 0 else None  # the worst elements' list: numpy's code
    for lo in range(0, rows.size, step):
        ids = rows[lo : lo + step]
        terms = terms_for(ref, name, dtype, ids)
        if name == "loss":
            index_of = lambda k, ids=ids: (int(ids[k]),)  # noqa: E731
        else:
            index_of = lambda k, ids=ids: (int(ids[k // width]), k % width)  # noqa: E731
        block = computed[_rows_at(ids)]
        if kernels is not None and terms.hi is not None and ids.size:
            out.fold(_fused_block(kernels, block, terms, dtype), index_of)
            continue
        e = element_errors(block, None, None, dtype, terms=terms)
        out.add(e, block, terms.truth if terms.hi is None else terms.hi, index_of)  # add() reads the truth as float64
    return out


def _fused_block(kernels, computed, terms: TruthTerms, dtype: str) -> Block:
    """`add(element_errors(...))`'s Block in one compiled pass (`fused`)."""
    c = fused.flat(computed)
    if terms.true_sq is None:
        with np.errstate(over="ignore"):
            terms.true_sq = float(np.square(terms.hi).sum())
    r = kernels.reduce_block(c, *fused.terms_args(terms), tolerances.get(dtype).allow_flush_to_zero, np.empty(c.size),
                             terms.all_finite and not terms.any_tiny)
    arg, rmax, n_bad, n_lossy, att, n_nf, n_fl, abs_max, rel_max, ulps_max, err_sq = r
    return Block(int(arg), float(rmax), c.size, int(n_bad), int(n_lossy), float(att), int(n_nf), int(n_fl),
                 float(abs_max), float(rel_max), float(ulps_max), float(err_sq), terms.true_sq)


#: Answers kept per reference to recognise a repeat (`once_per_answer`), at most this many
#: bytes of them (a user's 4096 x 32000 case keeps none: comparing is cheap, holding a GB is not).
ANSWERS_KEPT_BYTES = 64 << 20


def once_per_answer(ref: Reference, key, loss, grad, compute):
    """`compute(loss, grad)`, or what it gave for an answer of the very same bits (dtype,
    shape and bytes) already judged against this reference under `key`.

    What the judge makes of an answer is a function of the reference and the answer's bits
    alone, and different implementations often return the same bits (jax.jit and eager JAX,
    optax and its integer-label form, torch's two log-softmax paths): 41 % of a default
    run's rows, and many of the search's batches. Those are judged once. `compute` must
    return a fresh object the caller may change; a repeat gets a copy (`_fresh`)."""
    judged = ref.memo.setdefault(("answers", key), samebits.AnswerIndex(ANSWERS_KEPT_BYTES))
    loss, grad = np.asarray(loss), np.asarray(grad)
    result = judged.find(loss, grad)
    if result is not None:
        return _fresh(result)
    result = compute(loss, grad)
    judged.add(loss, grad.copy(), _fresh(result))  # a caller may change its arrays
    return result


def _fresh(result):
    """A copy of a judged result that shares nothing a caller may change. A dict (`measure`'s
    columns) holds numbers and strings, which nobody changes, or arrays: copied one level
    deep (`copy.deepcopy` of those 21 columns was a third of judging a small case);
    anything else is deep-copied."""
    if isinstance(result, dict):
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in result.items()}
    return copy.deepcopy(result)


def measure(ref: Reference, loss, grad, dtype: str) -> dict:
    """The error columns (see `columns`) of one result on the rows with a finite truth
    (once per distinct answer: `once_per_answer`).

    Call it only when some row has a finite truth and the output shapes match the
    reference's (the judge, `run.judge`, checks both first); it decides no status.
    """
    return once_per_answer(ref, ("measure", dtype), loss, grad, lambda lo, gr: _measure(ref, lo, gr, dtype))


def _measure(ref: Reference, loss, grad, dtype: str) -> dict:
    lq = reduce_errors(ref, loss, "loss", dtype)
    g = reduce_errors(ref, grad, "grad", dtype)
    return dict(
        loss_abs_err=lq.abs_max,
        loss_rel_err=lq.rel_max,
        loss_ulps=lq.ulps_max,
        loss_tol_ratio=lq.ratio_max,
        loss_att_ratio=lq.ratio_att_max,
        loss_worst_row=lq.argmax[0],
        grad_abs_err=g.abs_max,
        grad_rel_norm=g.rel_norm,
        grad_ulps=g.ulps_max,
        grad_tol_ratio=g.ratio_max,
        grad_att_ratio=g.ratio_att_max,
        grad_worst=f"{g.argmax[0]},{g.argmax[1]}",
        n_loss_nonfinite=lq.n_nonfinite,
        n_grad_nonfinite=g.n_nonfinite,
        n_loss_bad=lq.n_bad,
        n_grad_bad=g.n_bad,
        n_loss_lossy=lq.n_lossy,
        n_grad_lossy=g.n_lossy,
        n_flushed=lq.n_flushed + g.n_flushed,
        n_loss=lq.n,
        n_grad=g.n,
    )


def describe_nonfinite(loss, grad) -> str:
    """'loss: 3 nan, 1 inf, 0 finite; grad: ...' - what an implementation did on undefined input."""
    parts = []
    for name, arr in (("loss", loss), ("grad", grad)):
        a = np.asarray(arr, dtype=np.float64)
        parts.append(f"{name}: {int(np.isnan(a).sum())} nan, {int(np.isinf(a).sum())} inf, {int(np.isfinite(a).sum())} finite")
    return "; ".join(parts)
