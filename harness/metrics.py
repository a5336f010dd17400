"""Error metrics: how far an adapter's loss and gradient are from the reference.

Errors are recorded raw (absolute, relative, ulps, non-finite counts) and judged once,
against two bounds: the attainable one (`bounds`, a careful implementation's) and the
textbook one (`tolerances.TABLE`). An element within the attainable bound is ok; outside
it but within the textbook bound, lossy; outside both, inaccurate. ulps are Zimmermann-style: ulp taken at the *true* value in
the tested dtype, 2**(e - p + 1) for |x| in [2**e, 2**(e+1)), floored at the smallest
subnormal, and extended past the largest finite value as if the exponent were unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import bounds, dtypes, tolerances
from .reference import Reference


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


def _overflows(truth, dtype: str) -> np.ndarray:
    """True values that round to +-inf in the tested dtype (beyond max + ulp(max) / 2)."""
    fmt = dtypes.get(dtype)
    limit = fmt.max + 2.0 ** (np.frexp(fmt.max)[1] - 1 - fmt.mantissa_bits) / 2
    return np.abs(np.asarray(truth, np.float64)) >= limit


@dataclass
class ElementErrors:
    """Errors of one quantity (loss or gradient), elementwise, for the defined rows."""

    abs: np.ndarray  # |computed - true|; inf where finiteness disagrees
    ulps: np.ndarray  # abs / ulp(true)
    ratio: np.ndarray  # abs / textbook allowance: > 1 is outside the textbook bound
    ratio_att: np.ndarray  # abs / attainable allowance: > 1 is outside the attainable bound
    nonfinite: np.ndarray  # computed NaN/inf where the true value is finite (or NaN at all)
    flushed: np.ndarray  # subnormal true value returned as exactly 0 (flush to zero)


def element_errors(computed, truth, scale, dtype: str, scale_att=None) -> ElementErrors:
    """Errors of `computed` against `truth` (same shape), judged with the textbook `scale`
    and the attainable `scale_att` (None: the textbook bound stands for both)."""
    work = truth.dtype
    c = np.asarray(computed).astype(work)
    t = truth
    tol = tolerances.get(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(c - t)
        same_inf = np.isinf(t) & (c == t)
        rounded_overflow = np.isinf(c) & np.isfinite(t) & _overflows(t, dtype) & (np.sign(c) == np.sign(t))
        agree = same_inf | rounded_overflow
        nonfinite = ~np.isfinite(c) & ~agree & ~np.isinf(t) | np.isnan(c)
        diff = np.where(agree, 0.0, np.where(np.isfinite(diff), diff, np.inf)).astype(np.float64)
        u = ulp(np.where(np.isinf(t), 0, t), dtype)
        ulps = diff / u
        allowance = tol.ulps * u + tol.cond * dtypes.get(dtype).unit_roundoff * scale
        ratio = np.where(diff == 0, 0.0, diff / allowance)
        # A finite answer where the truth is +-inf: the allowance (its scale) is inf as well,
        # and inf / inf must not read as NaN, which compares as within.
        ratio = np.where(np.isinf(t) & ~agree, np.inf, ratio)
        if scale_att is None:
            ratio_att = ratio
        else:
            att = bounds.get(dtype)
            allowance_att = att.ulps * u + att.cond * att.unit_roundoff * scale_att
            ratio_att = np.where(diff == 0, 0.0, diff / allowance_att)
            ratio_att = np.where(np.isinf(t) & ~agree, np.inf, ratio_att)
        smallest_normal = 2.0 ** dtypes.get(dtype).min_exponent
        flushed = (c == 0) & (t != 0) & (np.abs(t) < smallest_normal)
        if tol.allow_flush_to_zero:
            ratio = np.where(flushed, 0.0, ratio)
            ratio_att = np.where(flushed, 0.0, ratio_att)
    return ElementErrors(diff, ulps, ratio, ratio_att, nonfinite, flushed)


def grades(e: ElementErrors) -> tuple[np.ndarray, np.ndarray]:
    """(inaccurate, lossy) masks: outside both bounds; outside the attainable one only."""
    outside_att = e.ratio_att > 1
    bad = outside_att & (e.ratio > 1)
    return bad, outside_att & ~bad


#: Gradient rows are judged in chunks of about this many elements (memory and speed: the
#: temporaries stay small enough for the allocator to reuse).
CHUNK_ELEMENTS = 1 << 18


@dataclass
class GradSummary:
    """Reductions of the gradient's ElementErrors over all defined rows."""

    abs_max: float = 0.0
    ulps_max: float = 0.0
    ratio_max: float = 0.0
    ratio_att_max: float = 0.0
    worst: tuple[int, int] = (0, 0)
    n_nonfinite: int = 0
    n_bad: int = 0
    n_lossy: int = 0
    n_flushed: int = 0
    n: int = 0
    err_sq: float = 0.0  # sum of squared errors (inf if any error is)
    true_sq: float = 0.0

    def add(self, e: ElementErrors, truth, row_ids) -> None:
        i = int(np.argmax(e.ratio))
        if e.ratio.flat[i] > self.ratio_max or self.n == 0:
            r, c = np.unravel_index(i, e.ratio.shape)
            self.ratio_max, self.worst = float(e.ratio.flat[i]), (int(row_ids[r]), int(c))
        self.abs_max = max(self.abs_max, float(e.abs.max()))
        self.ulps_max = max(self.ulps_max, float(e.ulps.max()))
        self.n_nonfinite += int(e.nonfinite.sum())
        bad, lossy = grades(e)
        self.n_bad += int(bad.sum())
        self.n_lossy += int(lossy.sum())
        self.ratio_att_max = max(self.ratio_att_max, float(e.ratio_att.max()))
        self.n_flushed += int(e.flushed.sum())
        self.n += e.abs.size
        with np.errstate(over="ignore"):
            self.err_sq += float(np.square(e.abs).sum())
            self.true_sq += float(np.square(np.asarray(truth, np.float64)).sum())


def grad_summary(ref: Reference, grad: np.ndarray, dtype: str) -> GradSummary:
    row_ids = np.flatnonzero(ref.defined)
    step = max(1, CHUNK_ELEMENTS // max(grad.shape[1], 1))
    out = GradSummary()
    for lo in range(0, len(row_ids), step):
        ids = row_ids[lo : lo + step]
        att = None if ref.grad_scale_att is None else ref.grad_scale_att[ids]
        e = element_errors(grad[ids], ref.grad[ids], ref.grad_scale[ids], dtype, att)
        out.add(e, ref.grad[ids], ids)
    return out


def evaluate(ref: Reference, loss, grad, dtype: str) -> dict:
    """The metric columns (see `columns`) and status of one adapter result on one case."""
    rows = ref.defined
    out: dict = {"n_rows_undefined": int((~rows).sum())}
    if rows.size == 0:  # an empty batch: the right answer is empty outputs
        ok = np.shape(loss) == ref.loss.shape and np.shape(grad) == ref.grad.shape
        out["status"] = "ok" if ok else "error"
        out["message"] = "empty batch" + ("" if ok else f": output shapes {np.shape(loss)}, {np.shape(grad)}")
        return out
    if not rows.any():
        out["status"] = "undefined"
        out["message"] = "no finite truth; computed " + describe_nonfinite(loss, grad)
        return out
    loss = np.asarray(loss)
    grad = np.asarray(grad)
    if loss.shape != ref.loss.shape or grad.shape != ref.grad.shape:
        out["status"] = "error"
        out["message"] = f"output shapes loss {loss.shape}, grad {grad.shape}; expected {ref.loss.shape}, {ref.grad.shape}"
        return out
    lt = ref.loss[rows]
    le = element_errors(loss[rows], lt, ref.loss_scale[rows], dtype,
                        None if ref.loss_scale_att is None else ref.loss_scale_att[rows])
    loss_bad, loss_lossy = grades(le)
    g = grad_summary(ref, grad, dtype)
    row_ids = np.flatnonzero(rows)

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rel = np.where(le.abs == 0, 0.0, le.abs / np.abs(np.asarray(lt, np.float64)))
        grad_rel = 0.0 if g.err_sq == 0 else float(np.sqrt(g.err_sq) / np.sqrt(g.true_sq))
    li = int(np.argmax(le.ratio))
    out.update(
        loss_abs_err=float(le.abs.max()),
        loss_rel_err=float(rel.max()),
        loss_ulps=float(le.ulps.max()),
        loss_tol_ratio=float(le.ratio.max()),
        loss_att_ratio=float(le.ratio_att.max()),
        loss_worst_row=int(row_ids[li]),
        grad_abs_err=g.abs_max,
        grad_rel_norm=grad_rel,
        grad_ulps=g.ulps_max,
        grad_tol_ratio=g.ratio_max,
        grad_att_ratio=g.ratio_att_max,
        grad_worst=f"{g.worst[0]},{g.worst[1]}",
        n_loss_nonfinite=int(le.nonfinite.sum()),
        n_grad_nonfinite=g.n_nonfinite,
        n_loss_bad=int(loss_bad.sum()),
        n_grad_bad=g.n_bad,
        n_loss_lossy=int(loss_lossy.sum()),
        n_grad_lossy=g.n_lossy,
        n_flushed=int(le.flushed.sum()) + g.n_flushed,
    )
    if out["n_loss_nonfinite"] or g.n_nonfinite:
        out["status"] = "nonfinite"
        out["message"] = (
            f"{out['n_loss_nonfinite']} of {le.abs.size} losses and {g.n_nonfinite} of "
            f"{g.n} gradient elements non-finite where the truth is finite"
        )
    elif out["n_loss_bad"] or g.n_bad:
        out["status"] = "inaccurate"
        out["message"] = (
            f"{out['n_loss_bad']} of {le.abs.size} losses (worst row {out['loss_worst_row']}, "
            f"{out['loss_tol_ratio']:.3g}x tolerance) and {g.n_bad} of {g.n} gradient "
            f"elements (worst [{out['grad_worst']}], {g.ratio_max:.3g}x) outside tolerance"
        )
    elif out["n_loss_lossy"] or g.n_lossy:
        out["status"] = "lossy"
        out["message"] = (
            f"{out['n_loss_lossy']} of {le.abs.size} losses ({out['loss_att_ratio']:.3g}x) and {g.n_lossy} of "
            f"{g.n} gradient elements ({g.ratio_att_max:.3g}x) outside the attainable bound, within the textbook one"
        )
    else:
        out["status"] = "ok"
        out["message"] = ""
    return out


def describe_nonfinite(loss, grad) -> str:
    """'loss: 3 nan, 1 inf, 0 finite; grad: ...' - what an implementation did on undefined input."""
    parts = []
    for name, arr in (("loss", loss), ("grad", grad)):
        a = np.asarray(arr, dtype=np.float64)
        parts.append(f"{name}: {int(np.isnan(a).sum())} nan, {int(np.isinf(a).sum())} inf, {int(np.isfinite(a).sum())} finite")
    return "; ".join(parts)
