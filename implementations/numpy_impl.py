"""numpy adapters: the textbook formula and the max-shift log-sum-exp.

numpy has no autodiff, so the gradient is each implementation's own softmax - y, computed
in the tested dtype (ml_dtypes gives bfloat16 its own ufunc loops, so bfloat16 arithmetic
really is bfloat16). Smoothed labels are formed in the tested dtype, as a user would.
"""

from __future__ import annotations

import numpy as np

from harness.adapters import Adapter, Framework, Output, Prepared, register, register_framework
from harness.numerics.cases import Case


class Numpy(Framework):
    """numpy's glue: the defaults (exact copies, nothing to sync, no autodiff, so no plain
    user functions)."""

    name = "numpy"
    package = "numpy"


FRAMEWORK = register_framework(Numpy())


def labels_in(case: Case, dtype) -> np.ndarray:
    """The dense label matrix in the tested dtype, built the way user code would build it."""
    return case.target_distribution().astype(dtype)


def drop_ignored(case: Case, loss: np.ndarray, grad: np.ndarray) -> Output:
    """Zero the ignored rows, as a user multiplying by a padding mask would."""
    if case.has_ignored:
        loss = np.where(case.ignored, np.zeros((), loss.dtype), loss)
        grad = np.where(case.ignored[:, None], np.zeros((), grad.dtype), grad)
    return Output(loss, grad)


def naive_math(z: np.ndarray, y: np.ndarray, with_grad: bool = True):
    """The formula exactly as written: p = exp(z) / sum(exp(z)); L = -sum(y log p)."""
    with np.errstate(all="ignore"):
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        loss = -(y * np.log(p)).sum(axis=1)
        return loss, (p - y if with_grad else None)


def stable_math(z: np.ndarray, y: np.ndarray, with_grad: bool = True):
    """Max-shift log-sum-exp: log p = (z - m) - log(sum(exp(z - m)))."""
    with np.errstate(all="ignore"):
        shifted = z - z.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        log_p = shifted - np.log(s)
        terms = y * log_p
        terms[y == 0] = 0  # a masked class (log p = -inf) with no label weight adds nothing
        loss = -terms.sum(axis=1)
        return loss, (e / s - y if with_grad else None)


def naive(case: Case, device: str) -> Output:
    return drop_ignored(case, *naive_math(case.logits, labels_in(case, case.logits.dtype)))


def stable(case: Case, device: str) -> Output:
    return drop_ignored(case, *stable_math(case.logits, labels_in(case, case.logits.dtype)))


def onehot_in(case: Case, dtype) -> np.ndarray:
    """One-hot rows of the class indices built in `dtype` directly (the bench's batches are
    large; `labels_in` goes through float64). Equal to `labels_in` for index labels."""
    y = np.zeros(case.shape, dtype=dtype)
    y[np.arange(case.shape[0]), case.target] = 1
    return y


def preparer(math):
    """`Adapter.prepare` for a numpy formula: labels built once, loss only or loss and grad;
    numpy computes eagerly on the CPU, so there is nothing to synchronise."""

    def prepare(case: Case, device: str) -> Prepared:
        z = case.logits
        y = onehot_in(case, z.dtype) if case.label_kind in ("index", "onehot") else labels_in(case, z.dtype)
        return Prepared(forward=lambda: math(z, y, with_grad=False), forward_backward=lambda: math(z, y))

    return prepare


register(
    Adapter("numpy.naive", "numpy", naive, "exp, sum, divide, log - the textbook formula", supports_ignore=True,
            prepare=preparer(naive_math))
)
register(
    Adapter("numpy.stable", "numpy", stable, "max-shift log-sum-exp, softmax - y", supports_ignore=True,
            prepare=preparer(stable_math))
)
