"""Deliberately slow adapters, for tests only: `numpy.stable` after a pause, so a Ray unit
of work is still running when a test kills its node or its driver, and so a worker's
answers to one case take longer together than one adapter's timeout."""

import functools
import time

from harness.adapters import Adapter, register
from implementations.numpy_impl import stable

PAUSE = 0.3  # seconds per case
LONG_PAUSE = 1.0  # seconds per case: a killed node's unit must still be running when the kill lands


def _slow_stable(case, device, pause):
    time.sleep(pause)
    return stable(case, device)


SLOW = register(Adapter("slowtest.numpy_stable", "numpy", functools.partial(_slow_stable, pause=PAUSE),
                        "test only: numpy.stable after a pause"))
SLOWER = register(Adapter("slowtest.numpy_stable_1s", "numpy", functools.partial(_slow_stable, pause=LONG_PAUSE),
                          "test only: numpy.stable after a pause of a second"))
SLOWER_TOO = register(Adapter("slowtest.numpy_stable_1s_too", "numpy", functools.partial(_slow_stable, pause=LONG_PAUSE),
                              "test only: numpy.stable after a pause of a second (a second one, for the worker's timeouts)"))
