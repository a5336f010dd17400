"""numpy adapters: the textbook formula and the max-shift log-sum-exp.

numpy has no autodiff, so the gradient is each implementation's own softmax - y, computed
in the tested dtype (ml_dtypes gives bfloat16 its own ufunc loops, so bfloat16 arithmetic
really is bfloat16). Smoothed labels are formed in the tested dtype, as a user would.
"""

from __future__ import annotations

import numpy as np

from harness.adapters import Adapter, Output, register
from harness.cases import Case


def labels_in(case: Case, dtype) -> np.ndarray:
    """The dense label matrix in the tested dtype, built the way user code would build it."""
    return case.target_distribution().astype(dtype)


def drop_ignored(case: Case, loss: np.ndarray, grad: np.ndarray) -> Output:
    """Zero the ignored rows, as a user multiplying by a padding mask would."""
    if case.has_ignored:
        loss = np.where(case.ignored, np.zeros((), loss.dtype), loss)
        grad = np.where(case.ignored[:, None], np.zeros((), grad.dtype), grad)
    return Output(loss, grad)


def naive(case: Case, device: str) -> Output:
    """The formula exactly as written: p = exp(z) / sum(exp(z)); L = -sum(y log p)."""
    z = case.logits
    y = labels_in(case, z.dtype)
    with np.errstate(all="ignore"):
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        loss = -(y * np.log(p)).sum(axis=1)
        grad = p - y
    return drop_ignored(case, loss, grad)


def stable(case: Case, device: str) -> Output:
    """Max-shift log-sum-exp: log p = (z - m) - log(sum(exp(z - m)))."""
    z = case.logits
    y = labels_in(case, z.dtype)
    with np.errstate(all="ignore"):
        shifted = z - z.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        log_p = shifted - np.log(s)
        terms = y * log_p
        terms[y == 0] = 0  # a masked class (log p = -inf) with no label weight adds nothing
        loss = -terms.sum(axis=1)
        grad = e / s - y
    return drop_ignored(case, loss, grad)


register(Adapter("numpy.naive", "numpy", naive, "exp, sum, divide, log - the textbook formula", supports_ignore=True))
register(Adapter("numpy.stable", "numpy", stable, "max-shift log-sum-exp, softmax - y", supports_ignore=True))
