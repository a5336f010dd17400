"""Error metrics: how far an adapter's loss and gradient are from the reference.

Errors are recorded raw (absolute, relative, ulps, non-finite counts) and judged once,
against `tolerances.TABLE`. ulps are Zimmermann-style: ulp taken at the *true* value in
the tested dtype, 2**(e - p + 1) for |x| in [2**e, 2**(e+1)), floored at the smallest
subnormal, and extended past the largest finite value as if the exponent were unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dtypes, tolerances
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
    ratio: np.ndarray  # abs / allowance: > 1 is outside the tolerance
    nonfinite: np.ndarray  # computed NaN/inf where the true value is finite (or NaN at all)


def element_errors(computed, truth, scale, dtype: str) -> ElementErrors:
    """Errors of `computed` against `truth` (same shape), judged with `scale` (condition)."""
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
    return ElementErrors(diff, ulps, ratio, nonfinite)


def _where(flat_index: int, shape) -> str:
    return ",".join(str(int(i)) for i in np.unravel_index(flat_index, shape))


def evaluate(ref: Reference, loss, grad, dtype: str) -> dict:
    """The metric columns (see `columns`) and status of one adapter result on one case."""
    rows = ref.defined
    out: dict = {"n_rows_undefined": int((~rows).sum())}
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
    lt, gt = ref.loss[rows], ref.grad[rows]
    le = element_errors(loss[rows], lt, ref.loss_scale[rows], dtype)
    ge = element_errors(grad[rows], gt, ref.grad_scale[rows], dtype)
    row_ids = np.flatnonzero(rows)

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rel = np.where(le.abs == 0, 0.0, le.abs / np.abs(np.asarray(lt, np.float64)))
        g64 = np.asarray(gt, np.float64)
        norm_true = np.linalg.norm(g64)
        norm_err = np.sqrt(np.sum(ge.abs.astype(np.float64) ** 2)) if np.isfinite(ge.abs).all() else np.inf
        grad_rel = 0.0 if norm_err == 0 else norm_err / norm_true
    li, gi = int(np.argmax(le.ratio)), int(np.argmax(ge.ratio))
    out.update(
        loss_abs_err=float(le.abs.max()),
        loss_rel_err=float(rel.max()),
        loss_ulps=float(le.ulps.max()),
        loss_tol_ratio=float(le.ratio.max()),
        loss_worst_row=int(row_ids[li]),
        grad_abs_err=float(ge.abs.max()),
        grad_rel_norm=float(grad_rel),
        grad_ulps=float(ge.ulps.max()),
        grad_tol_ratio=float(ge.ratio.max()),
        grad_worst=f"{row_ids[np.unravel_index(gi, ge.abs.shape)[0]]},{np.unravel_index(gi, ge.abs.shape)[1]}",
        n_loss_nonfinite=int(le.nonfinite.sum()),
        n_grad_nonfinite=int(ge.nonfinite.sum()),
        n_loss_bad=int((le.ratio > 1).sum()),
        n_grad_bad=int((ge.ratio > 1).sum()),
    )
    if le.nonfinite.any() or ge.nonfinite.any():
        out["status"] = "nonfinite"
        out["message"] = (
            f"{out['n_loss_nonfinite']} of {le.abs.size} losses and {out['n_grad_nonfinite']} of "
            f"{ge.abs.size} gradient elements non-finite where the truth is finite"
        )
    elif (le.ratio > 1).any() or (ge.ratio > 1).any():
        out["status"] = "inaccurate"
        out["message"] = (
            f"{out['n_loss_bad']} of {le.abs.size} losses (worst row {out['loss_worst_row']}, "
            f"{out['loss_tol_ratio']:.3g}x tolerance) and {out['n_grad_bad']} of {ge.abs.size} gradient "
            f"elements (worst [{out['grad_worst']}], {out['grad_tol_ratio']:.3g}x) outside tolerance"
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
