"""Planted regressions, for tests of the CI gate only (`cestab check`).

Each is `numpy.stable` made slightly worse, under an id of its own; the gate compares it
with a baseline of the honest `numpy.stable` through `--compare-as ID=numpy.stable`:

- `regressiontest.grad_ulps`: every gradient element moved up by GRAD_ULPS ulps of its own
  dtype (the kind of change a new kernel with a sloppier exp would make);
- `regressiontest.nan_near_ties`: identical to numpy.stable except on the `near_ties`
  regime, where its first row's loss is NaN.
"""

import numpy as np

from harness.numerics import dtypes
from harness.adapters import Adapter, Output
from implementations.numpy_impl import stable

GRAD_ULPS = 8


def _grad_ulps(case, device):
    out = stable(case, device)
    eps = 2 * dtypes.get(case.dtype).unit_roundoff
    wide = out.grad.astype(np.float64)
    return Output(out.loss, (wide + GRAD_ULPS * eps * np.abs(wide)).astype(out.grad.dtype))


def _nan_near_ties(case, device):
    out = stable(case, device)
    if case.regime != "near_ties" or len(out.loss) == 0:
        return out
    loss = out.loss.copy()
    loss[0] = np.nan
    return Output(loss, out.grad)


GRAD = Adapter("regressiontest.grad_ulps", "numpy", _grad_ulps, "test only: numpy.stable, gradient off by 8 ulps", supports_ignore=True)
NAN = Adapter("regressiontest.nan_near_ties", "numpy", _nan_near_ties, "test only: numpy.stable, NaN on near_ties", supports_ignore=True)
