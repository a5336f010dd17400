"""scipy.special.log_softmax, with the gradient exp(log_softmax) - y in the tested dtype."""

from __future__ import annotations

import numpy as np

from harness.adapters import Adapter, Output, register
from harness.cases import Case
from implementations.numpy_impl import drop_ignored


def log_softmax(case: Case, device: str) -> Output:
    from scipy.special import log_softmax as scipy_log_softmax

    z = case.logits
    y = case.target_distribution().astype(z.dtype)
    with np.errstate(all="ignore"):
        log_p = scipy_log_softmax(z, axis=1)
        terms = y * log_p
        terms[y == 0] = 0  # a masked class (log p = -inf) with no label weight adds nothing
        loss = -terms.sum(axis=1)
        grad = np.exp(log_p) - y
    return drop_ignored(case, loss, grad)


register(
    Adapter("scipy.log_softmax", "scipy", log_softmax, "scipy.special.log_softmax, grad exp(log p) - y", supports_ignore=True)
)
