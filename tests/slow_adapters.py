"""A deliberately slow adapter, for the Ray executor's tests only: `numpy.stable` after a
pause, so a unit of work is still running when a test kills its node or its driver."""

import time

from harness.adapters import Adapter, register
from implementations.numpy_impl import stable

PAUSE = 0.3  # seconds per case


def _slow_stable(case, device):
    time.sleep(PAUSE)
    return stable(case, device)


SLOW = register(Adapter("slowtest.numpy_stable", "numpy", _slow_stable, "test only: numpy.stable after a pause"))
