"""An adapter that spends a known amount of CPU, for the run's CPU accounting test:
`numpy.stable` after BURN CPU seconds of busy work in its own process."""

import time

from harness.adapters import Adapter
from implementations.numpy_impl import stable

BURN_SECONDS = 0.2  # CPU seconds per call


def _burn_then_stable(case, device):
    end = time.process_time() + BURN_SECONDS
    while time.process_time() < end:
        pass
    return stable(case, device)


BURN = Adapter("cputest.numpy_burn", "numpy", _burn_then_stable, "test only: numpy.stable after 0.2 CPU seconds")
