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


def _burn_in_a_child_then_stable(case, device):
    """As inductor compiles: the CPU is spent by a process the adapter starts and waits for."""
    import subprocess
    import sys

    burn = f"import time\nend = time.process_time() + {BURN_SECONDS}\nwhile time.process_time() < end: pass\n"
    subprocess.run([sys.executable, "-S", "-c", burn], check=True)
    return stable(case, device)


BURN_CHILD = Adapter("cputest.numpy_burn_child", "numpy", _burn_in_a_child_then_stable,
                     "test only: numpy.stable after a child process burns 0.2 CPU seconds")
