"""Liger-Kernel's fused Triton cross-entropy (`liger_kernel.transformers.functional.liger_cross_entropy`).

CUDA only: the kernel is Triton, so the adapter declares devices=("cuda",) and a CPU run
gets an `unsupported` row saying so. Liger needs triton and a GPU build of torch, so it is an
extra (`pip install 'cestab[liger]'`) and absent where it is not installed.

How the kernel works matters for reading its numbers (liger_kernel/ops/cross_entropy.py):
the forward pass computes the gradient as well, when the logits require grad, and writes it
*into the logits' own storage* (no second N x V buffer); backward then only scales it. With
reduction="none" (per-row losses, what the accuracy run compares) that scaling is a torch
multiply `grad * grad_output[:, None]`, an extra pass that the mean/sum reductions skip when
grad_output is 1. So forward here already does the gradient's work, and forward_backward
adds one elementwise pass: measured as the accuracy run calls it, not at Liger's best.

The input being overwritten also means a batch's logits are gone after one forward: the
accuracy run builds fresh logits for each call; the bench's repeated calls then read the
previous call's gradient as logits (finite values in [-1, 1]; the time does not depend on
them). Everything else - exact bfloat16 transfer, index targets with ignore_index -100,
label_smoothing, autograd of the summed losses - is torch_impl's.
"""

from __future__ import annotations

import functools
from dataclasses import replace

from harness.adapters import Adapter, Framework, Output, Prepared, Unsupported, register, register_framework
from harness.numerics.cases import Case
from implementations import torch_impl


@functools.cache
def _liger_cross_entropy():
    from liger_kernel.transformers.functional import liger_cross_entropy

    return liger_cross_entropy


def cross_entropy_fn(case: Case, device: str) -> tuple:
    """(loss_fn, target): liger_cross_entropy(reduction="none") on int64 class indices."""
    if device != "cuda":
        raise Unsupported("liger.cross_entropy is a Triton kernel: cuda only")
    ce = _liger_cross_entropy()

    def loss_fn(z, t):
        return ce(z, t, ignore_index=torch_impl.IGNORE_INDEX, reduction="none", label_smoothing=case.smoothing)

    return loss_fn, torch_impl.index_target(case, device)


def compute(case: Case, device: str) -> Output:
    return torch_impl.eager(cross_entropy_fn)(case, device)


def prepare(case: Case, device: str) -> Prepared:
    """torch_impl's eager timing; the first call of each dtype JIT-compiles the Triton kernel."""
    return replace(torch_impl.eager_preparer(cross_entropy_fn)(case, device), compiles_on_first_call=True)


register(
    Adapter(
        "liger.cross_entropy",
        "liger",
        compute,
        "Liger-Kernel's fused Triton cross-entropy, reduction='none', ignore_index/label_smoothing",
        dtypes=("float16", "bfloat16", "float32"),  # a training kernel; float64 is not its domain
        label_kinds=("index", "smoothing"),
        devices=("cuda",),
        supports_ignore=True,
        prepare=prepare,
    )
)


class Liger(torch_impl.Torch):
    """Liger-Kernel's glue: torch's, but the package it needs is liger_kernel; the worker
    imports torch at start (liger itself loads on first use: Triton needs a GPU)."""

    name = "liger"
    package = "liger_kernel"

    def warm_up(self) -> None:
        torch_impl.FRAMEWORK.warm_up()

    def wrap_function(self, fn, adapter_id: str) -> Adapter:
        return Framework.wrap_function(self, fn, adapter_id)


FRAMEWORK = register_framework(Liger())
