"""An independent oracle for the reference: mpmath at 50 significant digits, row by row.

It shares no code with `harness.numerics.reference`: in arbitrary precision, for each class j,
R_j = sum_{k != j} exp(z_k - z_j), -log p_j = log1p(R_j) and p_j = 1 / (1 + R_j).
Slow (microseconds per exp), so it is for small cases and single large rows.
"""

from __future__ import annotations

import mpmath
import numpy as np

DIGITS = 50


def _row(z: list, y: list):
    """(loss, grad) of one defined row as mpf values; z may hold -inf (a mask).

    R_j = sum_{k != j} exp(z_k - z_j) is formed as (total - e_j) * exp(m - z_j), except for
    the one class that may hold at least half the total, whose rest is summed explicitly:
    so no subtraction ever loses more than one bit, and a row costs O(V) exps.
    """
    v = len(z)
    live = [k for k in range(v) if z[k] != -mpmath.inf]
    m = max(z[k] for k in live)
    e = [mpmath.exp(z[k] - m) if z[k] != -mpmath.inf else mpmath.mpf(0) for k in range(v)]
    total = mpmath.fsum(e)
    neglogp, p, rest = [], [], []
    for j in range(v):
        if z[j] == -mpmath.inf:
            neglogp.append(mpmath.inf)
            p.append(mpmath.mpf(0))
            rest.append(mpmath.inf)
            continue
        others = total - e[j] if 2 * e[j] < total else mpmath.fsum(e[k] for k in live if k != j)
        r = others * mpmath.exp(m - z[j])
        neglogp.append(mpmath.log1p(r))
        p.append(1 / (1 + r))
        rest.append(r)
    loss = mpmath.fsum(y[j] * neglogp[j] for j in range(v) if y[j] != 0)
    grad = []
    for j in range(v):
        if y[j] == 1:  # p_j - 1 = -R_j / (1 + R_j), formed without cancellation
            grad.append(mpmath.mpf(-1) if rest[j] == mpmath.inf else -rest[j] / (1 + rest[j]))
        else:
            grad.append(p[j] - y[j])
    return loss, grad


def labels(case, row: int) -> list:
    """The exact label vector of one row (eps/V exact in mpmath, not rounded to float64)."""
    v = case.shape[1]
    if case.label_kind == "soft":
        return [mpmath.mpf(float(x)) for x in case.soft_labels[row]]
    eps = mpmath.mpf(case.smoothing)
    y = [eps / v] * v
    y[int(case.target[row])] = 1 - eps + eps / v
    return y


def loss_and_grad(case):
    """Per-row (loss, grad) as mpf values; None for undefined rows (NaN, +inf, all -inf)."""
    z64 = np.asarray(case.logits).astype(np.float64)
    with mpmath.workdps(DIGITS):
        out = []
        for i, zrow in enumerate(z64):
            if case.ignored is not None and case.ignored[i]:  # counts for nothing
                out.append((mpmath.mpf(0), [mpmath.mpf(0)] * len(zrow)))
                continue
            if np.isnan(zrow).any() or (zrow == np.inf).any() or (zrow == -np.inf).all():
                out.append(None)
                continue
            zs = [mpmath.mpf(float(x)) for x in zrow]  # exact: every float64 is an mpf
            out.append(_row(zs, labels(case, i)))
        return out


def ulps_off(computed, truth, ulp_of) -> float:
    """|computed - truth| in units of ulp_of(truth), all in mpmath."""
    if truth in (mpmath.inf, -mpmath.inf):
        return 0.0 if computed == truth else float("inf")
    diff = abs(mpf(computed) - truth)
    return float(diff / mpmath.mpf(ulp_of(float(truth))))


def mpf(x) -> mpmath.mpf:
    """Exact mpf of a float64 or extended-precision value (float() would round the latter)."""
    x = np.longdouble(x)
    if not np.isfinite(x):
        return mpmath.mpf(float(x))
    mant, exp = np.frexp(x)
    return mpmath.mpf(int(np.ldexp(mant, 64))) * mpmath.mpf(2) ** (int(exp) - 64)
