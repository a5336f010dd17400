"""torch.careful: a softmax cross-entropy for PyTorch that keeps the attainable accuracy.

A drop-in for `F.cross_entropy(logits, target, ignore_index=..., reduction=...)` with (N, V)
logits and int64 class indices (copy this file; it needs only torch):

    from implementations.torch_careful import careful_cross_entropy
    loss = careful_cross_entropy(logits, target, ignore_index=-100, reduction="mean")

Forward and backward are the careful forms of `harness.numerics.bounds` (its algorithm model):

    d = z - max z;  T = sum_{k != argmax} exp(d_k);  loss = log1p(T) - d_t
    grad_j = exp(d_j) / (1 + T);  grad_t = -S_{-t} / (1 + T),  S_{-t} = T if t is the argmax
                                                               else 1 + (T - exp(d_t))

so a true loss of 1e-30 comes back as 1e-30, not 0, and the target's gradient p_t - 1 keeps
its relative accuracy when p_t is close to 1 (where F.cross_entropy's bfloat16 backward,
exp(log_softmax) - 1, keeps only the absolute accuracy of bfloat16's log-probabilities).
float16 and bfloat16 compute in float32 and round each output once. The forward keeps
exp(d) (in the working precision) and T for the backward, one N x V buffer like
F.cross_entropy's saved log-softmax (twice its bytes for bfloat16/float16 inputs), and the
backward turns that buffer into the gradient in place: one backward per forward.
"""

from __future__ import annotations

import functools

import numpy as np

from harness.adapters import Adapter, Output, register
from harness.numerics.cases import Case
from implementations import torch_impl

IGNORE_INDEX = -100


@functools.cache
def _function():
    """The autograd.Function class, built on first use (torch is imported lazily)."""
    torch = torch_impl._torch()

    class CarefulCrossEntropy(torch.autograd.Function):
        """Per-row losses (N,) of (N, V) logits and int64 targets; ignored rows give 0."""

        @staticmethod
        def forward(ctx, logits, target, ignore_index: int):
            work = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
            z = logits.to(work)  # no copy in float32/float64
            m, a = z.max(dim=1, keepdim=True)
            e = torch.sub(z, m).exp_()  # the one N x V buffer, kept for backward
            e.scatter_(1, a, 0.0)
            T = e.sum(dim=1)
            e.scatter_(1, a, 1.0)
            keep = target != ignore_index
            t = torch.where(keep, target, torch.zeros_like(target)).unsqueeze(1)
            loss = torch.log1p(T) - (z.gather(1, t) - m).squeeze(1)
            loss = torch.where(keep, loss, torch.zeros_like(loss))
            ctx.save_for_backward(e, T, a, t, keep)
            ctx.out_dtype = logits.dtype
            ctx.consumed = False
            return loss.to(logits.dtype)

        @staticmethod
        def backward(ctx, grad_output):
            # The gradient is formed in place in the saved exp buffer (no second N x V
            # buffer, as fused kernels do), so a second backward through the same graph
            # (retain_graph=True) cannot reuse it.
            if ctx.consumed:
                raise RuntimeError("careful_cross_entropy: backward reuses its saved buffer; run forward again")
            ctx.consumed = True
            e, T, a, t, keep = ctx.saved_tensors
            S = 1 + T
            e_t = e.gather(1, t).squeeze(1)
            s_minus_t = torch.where(t.squeeze(1) == a.squeeze(1), T, 1 + (T - e_t))
            grad = e.div_(S.unsqueeze(1))
            grad.scatter_(1, t, (-s_minus_t / S).unsqueeze(1))
            grad.mul_(grad_output.to(grad.dtype).unsqueeze(1))
            # zero ignored rows by index, not a multiplied mask: an all -inf padding row is NaN above
            dropped = ~keep
            if bool(dropped.any()):
                grad[dropped] = 0
            return grad.to(ctx.out_dtype), None, None

    return CarefulCrossEntropy


def careful_cross_entropy(logits, target, ignore_index: int = IGNORE_INDEX, reduction: str = "mean"):
    """F.cross_entropy's interface for (N, V) logits and class indices: reduction "none"
    (per-row losses, 0 on ignored rows), "sum", or "mean" (over the rows not ignored)."""
    rows = _function().apply(logits, target, ignore_index)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if reduction == "mean":
        return rows.sum() / (target != ignore_index).sum()
    raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


def cross_entropy_fn(case: Case, device: str) -> tuple:
    """(loss_fn, target) for torch_impl's eager runner and bench: rows of (N*T, V)."""

    def loss_fn(z, t):
        return careful_cross_entropy(z, t, ignore_index=IGNORE_INDEX, reduction="none")

    target = case.target.astype(np.int64)
    if case.has_ignored:
        target[case.ignored] = IGNORE_INDEX
    return loss_fn, torch_impl.to_torch(target, device)


def _rows(case: Case, device: str):
    """The case's logits as (N*T, V) rows, a leaf tensor autograd differentiates."""
    return torch_impl.to_torch(case.logits, device).requires_grad_()


def compute(case: Case, device: str) -> Output:
    loss_fn, target = cross_entropy_fn(case, device)
    loss, grad = torch_impl.loss_and_grad(loss_fn, _rows(case, device), target)
    return Output(torch_impl.to_numpy(loss), torch_impl.to_numpy(grad))


def prepare(case: Case, device: str):
    """torch_impl's eager timing of the same loss function (as torch.cross_entropy's)."""
    return torch_impl.eager_preparer(cross_entropy_fn)(case.rows(), device)


register(
    Adapter(
        "torch.careful",
        "torch",
        compute,
        "careful_cross_entropy: autograd.Function with log1p(sum without the max), -S_-t/S; float32 work for 16-bit",
        label_kinds=("index",),
        devices=torch_impl.DEVICES,
        supports_ignore=True,
        prepare=prepare,
    ),
    source="implementations.torch_impl",
)
