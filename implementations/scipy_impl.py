"""scipy.special.log_softmax, with the gradient exp(log_softmax) - y in the tested dtype."""

from __future__ import annotations

import numpy as np

from harness.adapters import Adapter, Framework, Output, register, register_framework
from harness.numerics.cases import Case
from implementations.numpy_impl import drop_ignored, preparer


class Scipy(Framework):
    """scipy's glue: numpy's defaults; the package it needs is scipy."""

    name = "scipy"
    package = "scipy"


FRAMEWORK = register_framework(Scipy())


def log_softmax_math(z: np.ndarray, y: np.ndarray, with_grad: bool = True):
    from scipy.special import log_softmax as scipy_log_softmax

    with np.errstate(all="ignore"):
        log_p = scipy_log_softmax(z, axis=1)
        terms = y * log_p
        terms[y == 0] = 0  # a masked class (log p = -inf) with no label weight adds nothing
        loss = -terms.sum(axis=1)
        return loss, (np.exp(log_p) - y if with_grad else None)


def log_softmax(case: Case, device: str) -> Output:
    z = case.logits
    return drop_ignored(case, *log_softmax_math(z, case.target_distribution().astype(z.dtype)))


register(
    Adapter("scipy.log_softmax", "scipy", log_softmax, "scipy.special.log_softmax, grad exp(log p) - y", supports_ignore=True,
            prepare=preparer(log_softmax_math))
)
