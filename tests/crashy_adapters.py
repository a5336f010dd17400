"""Deliberately failing adapters, for tests only: they prove a run survives its adapters.

Each behaves like `numpy.stable` except on the `large_offset` regime, where it segfaults,
aborts, is SIGKILLed (what the kernel's out-of-memory killer does), hangs, or raises
MemoryError. Their worker restarts after each death; the real numpy adapters' rows, and
these adapters' rows on other regimes, must come through intact.
"""

import ctypes
import os
import signal
import time

import numpy as np

from harness.adapters import Adapter, register
from implementations.numpy_impl import stable


def _misbehave_on_large_offset(action):
    def compute(case, device):
        if case.regime == "large_offset":
            action()
        return stable(case, device)

    return compute


def _segfault():
    ctypes.string_at(0)


def _oom_kill():
    os.kill(os.getpid(), signal.SIGKILL)


def _hang():
    time.sleep(3600)


def _memory_error():
    np.empty((10**7, 10**7))  # 800 TB: numpy refuses with MemoryError


CRASHY = {
    "crashtest.segfault": _segfault,
    "crashtest.abort": os.abort,
    "crashtest.oom_kill": _oom_kill,
    "crashtest.hang": _hang,
    "crashtest.memory_error": _memory_error,
}

for _id, _action in CRASHY.items():
    register(Adapter(_id, "numpy", _misbehave_on_large_offset(_action), "test only: misbehaves on large_offset"))


def parent_death_signal(adapter, case, device) -> int:
    """A worker task (`WorkerPool.run(..., task="crashy_adapters:parent_death_signal")`):
    the signal this worker gets when its driver dies (PR_GET_PDEATHSIG; 0: none)."""
    value = ctypes.c_int(0)
    PR_GET_PDEATHSIG = 2
    ctypes.CDLL(None, use_errno=True).prctl(PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0)
    return value.value
