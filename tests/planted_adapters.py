"""A planted bug only a search reaches, for tests only (tests/test_rowsearch.py).

`planted.lone_near_tie` is `numpy.stable` except on rows of more than 500 classes whose two
largest logits differ, by less than 2**-10, while the third is at least 1 below them (a
lone near tie at the top, as a blocked max-reduction that mishandles a tie across blocks
might produce): there its loss is 1.5 times the truth plus 1. No regime builds such a row
(`near_ties` puts *every* logit within 3 ulps of the max; random logits are almost never
that close at the top with a gap below; tests/test_rowsearch.py checks every regime case),
so only a search that pushes rows toward ties finds it.
"""

import numpy as np

from harness.adapters import Adapter, Output, register
from implementations.numpy_impl import stable

ID = "planted.lone_near_tie"
MIN_CLASSES = 500
GAP = 2.0**-10


def lone_near_tie(z: np.ndarray) -> np.ndarray:
    """Rows (bool) where the bug fires."""
    z = np.asarray(z, np.float64)
    if z.shape[1] <= MIN_CLASSES:
        return np.zeros(z.shape[0], bool)
    top = -np.sort(-np.where(np.isfinite(z), z, -np.inf), axis=1)[:, :3]
    with np.errstate(invalid="ignore"):
        gap12, gap13 = top[:, 0] - top[:, 1], top[:, 0] - top[:, 2]
        return (gap12 > 0) & (gap12 < GAP) & (gap13 >= 1) & np.isfinite(top[:, 1])


def _compute(case, device):
    out = stable(case, device)
    hit = lone_near_tie(case.logits)
    loss = np.where(hit, out.loss * 1.5 + 1, out.loss).astype(out.loss.dtype)
    return Output(loss, out.grad)


register(Adapter(ID, "numpy", _compute, "test only: numpy.stable, loss 1.5x + 1 on a lone near tie at the top of V > 500",
                 label_kinds=("index",)))
