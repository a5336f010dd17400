"""A whole framework in one file: what adding MLX or PaddlePaddle to cestab takes.

`toy` is a pure-numpy "framework" with an array type of its own (`ToyArray`), so the glue
(`Toy`, a `harness.adapters.Framework`) has real conversions to do. Nothing else in cestab
is edited for it: `--adapter toy_framework` (or an entry point in the group
`cestab.adapters`) makes `toy.stable` run, bench and gate like the built-in adapters
(tests/test_toy_framework.py).
"""

from __future__ import annotations

import numpy as np

from harness.adapters import Adapter, Framework, Output, Prepared, register, register_framework
from harness.numerics.cases import Case


class ToyArray:
    """The toy's array: a private copy of the values, in the dtype they came in."""

    def __init__(self, values: np.ndarray):
        self._values = np.array(values, copy=True)

    def values(self) -> np.ndarray:
        return self._values


class Toy(Framework):
    name = "toy"
    package = "numpy"  # all the toy needs
    refusals = ("toy cannot",)

    def to_native(self, a: np.ndarray, device: str) -> ToyArray:
        if device != "cpu":
            raise RuntimeError(f"toy cannot run on {device}")
        return ToyArray(a)

    def to_numpy(self, x: ToyArray) -> np.ndarray:
        return np.array(x.values(), copy=True)


FRAMEWORK = register_framework(Toy())


def stable_ce(z: ToyArray, target: ToyArray) -> tuple[ToyArray, ToyArray]:
    """Max-shift log-sum-exp in float32 (float64 for float64 inputs), rounded once to the
    input dtype: per-row loss and the gradient of their sum, p - onehot."""
    zv = z.values()
    work = np.float64 if zv.dtype == np.float64 else np.float32
    w = zv.astype(work)
    shifted = w - w.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1)
    rows = np.arange(w.shape[0])
    t = target.values()
    loss = np.log(s) - shifted[rows, t]
    grad = e / s[:, None]
    grad[rows, t] -= 1
    return ToyArray(loss.astype(zv.dtype)), ToyArray(grad.astype(zv.dtype))


def _inputs(case: Case, device: str) -> tuple[ToyArray, ToyArray]:
    with FRAMEWORK.refusals_as_unsupported():
        return FRAMEWORK.to_native(case.logits, device), FRAMEWORK.to_native(case.target.astype(np.int64), device)


def compute(case: Case, device: str) -> Output:
    loss, grad = stable_ce(*_inputs(case, device))
    return Output(FRAMEWORK.to_numpy(loss), FRAMEWORK.to_numpy(grad))


def prepare(case: Case, device: str) -> Prepared:
    z, t = _inputs(case, device)
    return Prepared(forward=lambda: stable_ce(z, t)[0], forward_backward=lambda: stable_ce(z, t))


register(Adapter("toy.stable", "toy", compute, "a one-file toy framework: max-shift log-sum-exp",
                 label_kinds=("index",), prepare=prepare))
