"""Adapters whose timing hook fails, for tests only: a bench must survive them.

Each computes like `numpy.stable` (so an accuracy run sees nothing wrong) but its
`prepare` segfaults or hangs; the bench's other workers' rows must come through intact.
"""

import ctypes
import time

from harness.adapters import Adapter, register
from implementations.numpy_impl import stable


def _compute(case, device):
    # defined here, not `stable` itself: a worker loads an adapter from its compute's module
    return stable(case, device)


def _segfault(case, device):
    ctypes.string_at(0)


def _hang(case, device):
    time.sleep(3600)


BENCH_CRASHY = {"crashtest.bench_segfault": _segfault, "crashtest.bench_hang": _hang}

for _id, _prepare in BENCH_CRASHY.items():
    register(Adapter(_id, "numpy", _compute, "test only: its timing hook misbehaves", prepare=_prepare))
