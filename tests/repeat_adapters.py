"""Adapters that repeat each other's answers, for tests only (`workers.SentAnswers`).

`repeat.first` and `repeat.same` return the very same bits (numpy.stable's); `repeat.nudged`
the same loss and a gradient whose first element differs in its last bit, which must not
pass for a repeat. (Defined here, not as numpy.stable itself: an adapter's worker is the
module of its function, and these must share one.)"""

import dataclasses

import numpy as np

from harness.adapters import Adapter, register
from implementations.numpy_impl import stable


def _first(case, device):
    return stable(case, device)


def _same(case, device):
    return stable(case, device)


def _nudged(case, device):
    out = stable(case, device)
    grad = np.array(out.grad)
    grad.reshape(-1)[:1].view(f"u{grad.dtype.itemsize}")[0] ^= 1  # the last bit of the first element
    return dataclasses.replace(out, grad=grad)


REPEATS = ("repeat.first", "repeat.same", "repeat.nudged")
register(Adapter("repeat.first", "numpy", _first, "test only: numpy.stable"))
register(Adapter("repeat.same", "numpy", _same, "test only: numpy.stable again, the same bits"))
register(Adapter("repeat.nudged", "numpy", _nudged, "test only: numpy.stable with the last bit of one gradient element flipped"))
