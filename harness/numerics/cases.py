"""`Case`: one batch of logits and labels, exact in the tested dtype, plus where it came from.

A case is the unit every adapter sees and every result row points back to; it is
immutable so that the reference computed once per case can be shared by all adapters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from harness.numerics import dtypes
from harness.errors import UsageError

#: Label kinds. "index": integer class per row; "onehot": the same as a dense 0/1 matrix;
#: "soft": a dense distribution (rows sum to exactly 1, values exact in every tested dtype);
#: "smoothing": integer class plus label smoothing eps, y = (1 - eps) * onehot + eps / V
#: (PyTorch's, optax's and Keras's convention).
LABEL_KINDS = ("index", "onehot", "soft", "smoothing")


@dataclass(frozen=True, eq=False)
class Case:
    """One batch: `logits` (N, V) in the tested dtype and its labels.

    `target` always holds one class index per row (for "soft" labels, the class with the
    largest weight); `soft_labels` is set only for kind "soft". Rows flagged in `ignored`
    count for nothing: loss 0 and gradient 0 whatever their logits (PyTorch's ignore_index,
    padding tokens); their `target` still holds a valid class for APIs without ignoring.
    A case with `invalid` set (labels out of range or negative, soft labels not summing to
    1) has no truth: the right behaviour is an error, a number is a silent failure.

    `batch_shape` is the batch as the user holds it when that is not a plain (N,): (N, T)
    for a sequence model's (N, T, V) logits. Rows are stored flattened (N*T, V), so the
    reference and the metrics need not care; adapters hand the framework the (N, T, V)
    tensor (`Case.nd_shape`, `Case.unflatten`), because frameworks take other code paths
    for it (PyTorch's cross_entropy wants the classes in dimension 1: (N, V, T)).
    """

    case_id: str
    regime: str
    dtype: str
    logits: np.ndarray
    target: np.ndarray
    label_kind: str = "index"
    soft_labels: np.ndarray | None = None
    smoothing: float = 0.0
    ignored: np.ndarray | None = None  # (N,) bool: rows to leave out (ignore_index / padding)
    invalid: str = ""  # why the labels break every API's contract; then there is no truth
    seed: int = 0
    source: str = "regime"
    note: str = field(default="", compare=False)
    batch_shape: tuple[int, ...] = ()  # () for (N, V); (N, T) for (N, T, V) logits

    def __post_init__(self):
        fmt = dtypes.get(self.dtype)
        if self.logits.ndim != 2:
            raise UsageError(f"case {self.case_id}: logits must be 2-D (N, V), got shape {self.logits.shape}")
        if self.logits.dtype != fmt.numpy_dtype:
            raise UsageError(f"case {self.case_id}: logits are {self.logits.dtype}, expected {self.dtype}")
        if self.label_kind not in LABEL_KINDS:
            raise UsageError(f"unknown label kind {self.label_kind!r}; choose from {', '.join(LABEL_KINDS)}")
        n, v = self.logits.shape
        if self.target.shape != (n,) or not np.issubdtype(self.target.dtype, np.integer):
            raise UsageError(f"case {self.case_id}: target must be {n} integers, got {self.target.dtype} {self.target.shape}")
        if n and not self.invalid and (self.target.min() < 0 or self.target.max() >= v):
            raise UsageError(f"case {self.case_id}: target class out of range [0, {v})")
        if (self.label_kind == "soft") != (self.soft_labels is not None):
            raise UsageError(f"case {self.case_id}: soft_labels go with label kind 'soft' only")
        if not 0.0 <= self.smoothing < 1.0 or (self.smoothing and self.label_kind != "smoothing"):
            raise UsageError(f"case {self.case_id}: smoothing must be in [0, 1) and only with kind 'smoothing'")

        if self.ignored is not None and (self.ignored.shape != (n,) or self.ignored.dtype != bool):
            raise UsageError(f"case {self.case_id}: ignored must be {n} booleans")
        if self.batch_shape and (len(self.batch_shape) < 2 or int(np.prod(self.batch_shape)) != n):
            raise UsageError(f"case {self.case_id}: batch shape {self.batch_shape} does not hold {n} rows")

    @property
    def has_ignored(self) -> bool:
        return self.ignored is not None and bool(self.ignored.any())

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.logits.shape)

    @property
    def nd_shape(self) -> tuple[int, ...]:
        """The logits' shape as the user holds them: (N, V) or (N, T, V)."""
        return (*self.batch_shape, self.shape[1]) if self.batch_shape else self.shape

    def rows(self) -> "Case":
        """The same case as a plain (N*T, V) batch."""
        return dataclasses.replace(self, batch_shape=()) if self.batch_shape else self

    def unflatten(self, a: np.ndarray) -> np.ndarray:
        """A per-row (N*T,) or per-element (N*T, V) array in the user's layout: (N, T[, V])."""
        if not self.batch_shape:
            return a
        return a.reshape(self.batch_shape + a.shape[1:])

    def target_distribution(self) -> np.ndarray:
        """Dense label matrix y (N, V) in float64; rows sum to 1 (up to the rounding of eps/V)."""
        n, v = self.shape
        if self.label_kind == "soft":
            return np.asarray(self.soft_labels, dtype=np.float64)
        y = np.zeros((n, v))
        y[np.arange(n), self.target] = 1.0
        if self.label_kind == "smoothing":
            y = y * (1.0 - self.smoothing) + self.smoothing / v
        return y


def dyadic_soft_labels(rng: np.random.Generator, n: int, v: int, target: np.ndarray, support: int = 4) -> np.ndarray:
    """Soft labels on `support` classes (the row's target among them), multiples of 1/256
    summing to exactly 1, the target with the largest weight.

    Every such value is exact in float16, bfloat16, float32 and float64, so no framework
    re-rounds them and the reference needs no correction for a sum that is not 1.
    """
    y = np.zeros((n, v))
    k = min(support, v)
    for row in range(n):
        t = int(target[row])
        others = rng.choice(v - 1, size=k - 1, replace=False)
        cuts = sorted(rng.choice(_CUTS, size=k - 1, replace=False).tolist()) if k > 1 else []
        # the weights are the gaps between the cuts, largest first (the target's); a few
        # numbers a row, so in Python: numpy's small-array calls cost ~25 us a row
        counts = sorted((b - a for a, b in zip([0, *cuts], [*cuts, 256])), reverse=True)
        y[row, t] = counts[0] / 256.0
        for cls, count in zip(others.tolist(), counts[1:]):
            y[row, cls + (cls >= t)] = count / 256.0  # skip the target
    return y


_CUTS = np.arange(1, 256)  # where a row's 256ths may be cut (`dyadic_soft_labels`)


def dyadic_soft_labels_rows(rng: np.random.Generator, n: int, v: int, target: np.ndarray, support: int = 4) -> np.ndarray:
    """`dyadic_soft_labels`' distribution, drawn for all rows at once (other draws from
    `rng`, so other labels): the worst-case search labels thousands of rows per batch, where
    the per-row loop cost ~25 us a row. The regimes keep the per-row function: their cases
    (the gate's baseline) are a function of its draws."""
    y = np.zeros((n, v))
    k = min(support, v)
    rows = np.arange(n)[:, None]
    target = np.asarray(target)
    # k - 1 distinct other classes per row, in random order: the smallest of v - 1 uniform keys
    others = _smallest_keys(rng.random((n, v - 1)), k - 1)
    others = others + (others >= target[:, None])  # skip the target
    # k - 1 distinct cuts in 1..255 per row, sorted: the weights are the gaps between them
    cuts = np.sort(_smallest_keys(rng.random((n, 255)), k - 1) + 1, axis=1)
    bounds = np.concatenate([np.zeros((n, 1), int), cuts, np.full((n, 1), 256)], axis=1)
    counts = -np.sort(-np.diff(bounds, axis=1), axis=1)  # largest first: the target's
    y[rows, np.concatenate([target[:, None], others], axis=1)] = counts / 256.0
    return y


def _smallest_keys(keys: np.ndarray, m: int) -> np.ndarray:
    """Per row, the columns of the m smallest keys, smallest first (a uniform random
    m-subset, in random order, when the keys are uniform)."""
    if m == 0:
        return np.zeros((len(keys), 0), int)
    cols = np.argpartition(keys, m - 1, axis=1)[:, :m]
    return np.take_along_axis(cols, np.argsort(np.take_along_axis(keys, cols, axis=1), axis=1), axis=1)
