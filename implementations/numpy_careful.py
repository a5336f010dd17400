"""numpy.careful: the attainable bound's algorithm model (`harness.numerics.bounds`), written out.

The row of every report that says what a careful implementation attains (as CORE-MATH's row
does in Zimmermann's accuracy tables). Each step is the model's, in this order:

    m = max z, a = argmax; d = z - m; e = exp(d); T = sum_{k != a} e_k   (e_a = 1 left out)
    loss = log1p(T) - d_t                       index / one-hot: two non-negative terms
         = log1p(T) + sum_j y_j (-d_j)          soft / smoothing: non-negative terms only
    p_j = e_j / (1 + T)
    p_t - 1 = -S_{-t} / S,  S_{-t} = T if t == a else 1 + (T - e_t)   (never 1 - p_t)

float32 and float64 compute in their own dtype; float16 and bfloat16 compute in float32 and
round each result once to the tested dtype, as frameworks' kernels do. Smoothed labels are
formed from eps in the working precision. No autodiff: the gradient is the formula.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from harness.adapters import Adapter, Output, Prepared, register
from harness.numerics.cases import Case
from implementations.numpy_impl import drop_ignored

NARROW = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def work_dtype(dtype) -> np.dtype:
    """float32 for float16/bfloat16, else the dtype itself."""
    return np.dtype(np.float32) if np.dtype(dtype) in NARROW else np.dtype(dtype)


def careful_math(z: np.ndarray, target: np.ndarray, y: np.ndarray | None = None, label_one=None, back=None,
                 with_grad: bool = True):
    """(loss, grad) of the careful model, rounded to z's dtype.

    `target` the class per row (the label-1 class, or a soft row's largest weight); `y` the
    dense labels in the working precision for soft/smoothing (None: index/one-hot);
    `label_one` the rows whose target weight is exactly 1 (default: all when y is None);
    `back` what smoothing adds to p_t - 1 at the target, eps (V - 1) / V, formed from eps
    (1 - y_t would carry y_t's rounding, u, into a difference of size eps).
    """
    out = z.dtype
    w = work_dtype(out)
    n = z.shape[0]
    rows = np.arange(n)
    with np.errstate(all="ignore"):
        zw = z.astype(w)
        a = zw.argmax(axis=1)
        m = zw[rows, a]
        d = zw - m[:, None]
        e = np.exp(d)
        e[rows, a] = 0
        T = e.sum(axis=1)
        log_s = np.log1p(T)
        e[rows, a] = 1
        if y is None:
            loss = log_s - d[rows, target]
        else:  # -d_j = m - z_j halved (exact): past float's max only where the true loss is
            terms = y * (m[:, None] / 2 - zw / 2)
            terms[y == 0] = 0  # a masked class (d = -inf) with no label weight adds nothing
            loss = log_s + 2 * terms.sum(axis=1)
        if not with_grad:
            return loss.astype(out), None
        S = 1 + T
        grad = e / S[:, None]
        if y is not None:
            grad -= y
        ones = rows if label_one is None else rows[label_one]
        t = target[ones]
        e_t = e[ones, t]
        s_minus_t = np.where(t == a[ones], T[ones], 1 + (T[ones] - e_t))
        g_t = -s_minus_t / S[ones]
        if back is not None:  # smoothing: p_t - y_t = (p_t - 1) + eps (V - 1) / V
            g_t = g_t + back
        grad[ones, t] = g_t
        return loss.astype(out), grad.astype(out)


def labels_for(case: Case):
    """(y, label_one, back) for `careful_math`: dense labels in the working precision for soft
    and smoothing (smoothing from eps itself, not from labels rounded to a narrow dtype)."""
    w = work_dtype(case.logits.dtype)
    if case.label_kind in ("index", "onehot"):
        return None, None, None
    if case.label_kind == "smoothing":
        n, v = case.shape
        eps = case.smoothing
        y = np.full((n, v), eps / v, dtype=w)
        y[np.arange(n), case.target] = w.type(1 - eps + eps / v)
        return y, np.ones(n, dtype=bool), w.type(eps * (v - 1) / v)
    y = np.asarray(case.soft_labels, np.float64).astype(w)  # multiples of 1/256: exact
    return y, y[np.arange(case.shape[0]), case.target] == 1, None


def careful(case: Case, device: str) -> Output:
    return drop_ignored(case, *careful_math(case.logits, case.target, *labels_for(case)))


def prepare(case: Case, device: str) -> Prepared:
    """Labels formed once; numpy computes eagerly on the CPU, nothing to synchronise."""
    z, target = case.logits, case.target
    labels = labels_for(case)
    return Prepared(forward=lambda: careful_math(z, target, *labels, with_grad=False),
                    forward_backward=lambda: careful_math(z, target, *labels))


register(
    Adapter("numpy.careful", "numpy", careful,
            "the attainable bound's model: log1p(sum without the max), -S_-t/S; float16/bfloat16 via float32",
            supports_ignore=True, prepare=prepare),
    source="implementations.numpy_impl",
)
