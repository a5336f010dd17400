"""Answers that are one answer: the same dtype, shape and bytes.

Implementations often return the very same bits (jax.jit and eager JAX, optax and its
integer-label form, torch's two log-softmax paths): 41 % of a default run's answers. Two
places use that: a worker sends such a repeat as the earlier adapter's id instead of its
arrays (`adapters.workers.SentAnswers`), and the judge judges it once
(`metrics.once_per_answer`). Both keep earlier answers in an `AnswerIndex`.
"""

from __future__ import annotations

import numpy as np


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (so -0.0 is not 0.0, and NaNs compare by payload)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.itemsize not in (1, 2, 4, 8):
        return a.tobytes() == b.tobytes()
    as_int = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(as_int), b.view(as_int)))


class AnswerIndex:
    """A value (never None) kept per (loss, gradient) answer, found again by an answer of the
    very same bits; at most `limit` bytes of answers are kept (a user's 4096 x 32000 batch is not held
    twice: comparing is cheap, holding a GB is not).

    Answers are looked up by their loss's bits (a dict key: the losses are N numbers), so a
    new answer is compared with the gradients of earlier answers of the same loss only, not
    with every earlier answer (~10 us each, for the ~24 answers of each case and batch)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.nbytes = 0  # of the answers kept
        self.by_loss: dict = {}  # (dtype, shape, loss bytes) -> [(gradient, value)]

    @staticmethod
    def _key(loss: np.ndarray) -> tuple:
        return loss.dtype.str, loss.shape, loss.tobytes()

    def find(self, loss: np.ndarray, grad: np.ndarray):
        """The value kept for an answer of these very bits, or None."""
        for kept, value in self.by_loss.get(self._key(loss), ()):
            if same_bits(kept, grad):
                return value
        return None

    def add(self, loss: np.ndarray, grad: np.ndarray, value) -> None:
        """Keep `value` for this answer if it fits. `grad` is kept as given: a caller whose
        arrays may still change passes a copy."""
        size = loss.nbytes + grad.nbytes
        if self.nbytes + size <= self.limit:
            self.by_loss.setdefault(self._key(loss), []).append((grad, value))
            self.nbytes += size

    def __len__(self) -> int:
        """How many answers are kept."""
        return sum(len(kept) for kept in self.by_loss.values())
