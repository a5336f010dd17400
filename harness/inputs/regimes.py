"""Named, seeded regimes: families of logits where softmax-CE implementations break.

A regime draws float64 logits and a target class per row; `build_cases` then rounds the
logits to the tested dtype (the case's exact inputs) and attaches labels of each kind.
Thresholds come from the dtype (`FloatFormat.exp_overflow` / `exp_underflow`), so
"past exp's range" means the same thing in float16 (11.09 / -17.3) as in float64
(709.8 / -745.1). The same seed gives the same cases on every machine (numpy's PCG64).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from harness.numerics import dtypes
from harness.numerics.cases import LABEL_KINDS, Case, dyadic_soft_labels
from harness.numerics.dtypes import FloatFormat
from harness.errors import UsageError

Draw = Callable[[np.random.Generator, FloatFormat, int, int], tuple]


@dataclass(frozen=True)
class Regime:
    name: str
    description: str
    draw: Draw  # (rng, format, n, v) -> (float64 logits (n, v), int64 targets (n,)[, ignored (n,)])
    finite: bool = True  # False: rows deliberately have no finite truth
    invalid: bool = False  # True: the labels break the API contract (see `_invalid_labels`)
    #: False: the regime tests a behaviour that does not depend on the batch's size (an
    #: empty batch, labels that break the API's contract), so it runs on the first shape
    #: asked for only. Every extra shape would cost a compilation per jit adapter x dtype x
    #: label kind and tell nothing new; and an implementation that aborts the process on
    #: an invalid label (torch.compile's bounds check does) costs a fresh worker each time.
    every_shape: bool = True
    #: True: inputs that training or inference produces (a model's logits, padding with
    #: finite logits, a confident model); False: adversarial inputs (offsets at the edge of
    #: the dtype's range, all -inf rows, masked targets) that test robustness, not the
    #: everyday answer. The report shows the two apart, so a verdict on what a reader's
    #: model produces is not drowned by edge cases (and an edge case is not hidden).
    realistic: bool = True
    #: Why the regime is realistic or adversarial, in one line (the report prints it).
    why: str = ""


def _targets(rng, n, v):
    return rng.integers(0, v, size=n)


def _typical(rng, fmt, n, v):
    return rng.normal(0.0, 3.0, (n, v)), _targets(rng, n, v)


def _large_offset(rng, fmt, n, v):
    # A shared offset changes nothing mathematically; it overflows exp (positive) or
    # underflows every exp to zero (negative) unless the implementation shifts by the max.
    choices = np.array([2.0 * fmt.exp_overflow, np.sqrt(fmt.max), fmt.max / 4])
    offset = rng.choice(choices, size=(n, 1)) * rng.choice([-1.0, 1.0], size=(n, 1))
    return offset + rng.normal(0.0, 3.0, (n, v)), _targets(rng, n, v)


def _exp_range_spread(rng, fmt, n, v):
    # Logits spread 1.5x past both of exp's thresholds of the tested dtype.
    z = rng.uniform(1.5 * fmt.exp_underflow, 1.5 * fmt.exp_overflow, (n, v))
    return z, _targets(rng, n, v)


def _dominant_target(rng, fmt, n, v):
    # The target leads by a gap up to 1.2x past exp's underflow: true loss ~ V e^-gap,
    # down to below the smallest subnormal. Naive lse - z_t cancels to 0 long before.
    z = rng.normal(0.0, 1.0, (n, v))
    t = _targets(rng, n, v)
    gap = rng.uniform(5.0, 1.2 * -fmt.exp_underflow, n)
    z[np.arange(n), t] = z.max(axis=1) + gap
    return z, t


def _dominant_other(rng, fmt, n, v):
    # Another class leads by a gap up to half the dtype's max: true loss ~ gap, huge.
    z = rng.normal(0.0, 1.0, (n, v))
    t = _targets(rng, n, v)
    other = (t + 1 + rng.integers(0, max(v - 1, 1), n)) % v
    gap = np.exp(rng.uniform(np.log(10.0), np.log(fmt.max / 2), n))
    z[np.arange(n), other] = z.max(axis=1) + gap
    return z, t


def _near_ties(rng, fmt, n, v):
    # Every logit within 3 ulps (of the tested dtype) of a shared base value.
    base = rng.normal(0.0, 1.0, (n, 1)) * 10.0 ** rng.uniform(-3, 3, (n, 1))
    base = dtypes.widen(dtypes.exact(base, fmt.name))
    exponent = np.frexp(base)[1] - 1
    ulp = np.ldexp(1.0, np.maximum(exponent - fmt.mantissa_bits, fmt.min_exponent - fmt.mantissa_bits))
    return base + ulp * rng.integers(-3, 4, (n, v)), _targets(rng, n, v)


def _neg_inf_mask(rng, fmt, n, v):
    # -inf masks on non-target classes (10% .. all but the target); in every 4th row the
    # target itself is masked: a defined row with loss +inf and gradient -1 there.
    z = rng.normal(0.0, 3.0, (n, v))
    t = _targets(rng, n, v)
    fraction = rng.choice([0.1, 0.5, 0.9, 1.0], size=(n, 1))
    mask = rng.random((n, v)) < fraction
    mask[np.arange(n), t] = False
    z[mask] = -np.inf
    target_masked = np.arange(n) % 4 == 3
    if v > 1:
        z[target_masked, t[target_masked]] = -np.inf
        keep = (t[target_masked] + 1) % v  # keep the row defined: one live class
        z[np.flatnonzero(target_masked), keep] = 0.0
    return z, t


def _nonfinite(rng, fmt, n, v):
    # Rows with no finite truth, cycling through +inf, NaN, all -inf, +inf at the target.
    z = rng.normal(0.0, 3.0, (n, v))
    t = _targets(rng, n, v)
    col = rng.integers(0, v, n)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            z[i, col[i]] = np.inf
        elif kind == 1:
            z[i, col[i]] = np.nan
        elif kind == 2:
            z[i] = -np.inf
        else:
            z[i, t[i]] = np.inf
    return z, t


def _ignored_rows(rng, fmt, n, v):
    # Every third row ignored (ignore_index / padding); the first of them is all -inf, as
    # padding positions often are: it must count for nothing, not poison the batch with NaN.
    z = rng.normal(0.0, 3.0, (n, v))
    ignored = np.arange(n) % 3 == 1
    if ignored.any():
        z[np.flatnonzero(ignored)[0]] = -np.inf
    return z, _targets(rng, n, v), ignored


def _ignored_finite(rng, fmt, n, v):
    # Every third row ignored (ignore_index padding) with ordinary finite logits there, as a
    # language model's padded positions have: the padding must count for nothing. The same
    # as `ignored_rows` without its all -inf row, so the two tell ignore_index apart from -inf.
    z = rng.normal(0.0, 3.0, (n, v))
    return z, _targets(rng, n, v), np.arange(n) % 3 == 1


def _all_ignored(rng, fmt, n, v):
    # Every row ignored (a batch of pure padding): every loss 0, every gradient 0.
    z = rng.normal(0.0, 3.0, (n, v))
    z[0] = -np.inf
    return z, _targets(rng, n, v), np.ones(n, dtype=bool)


def _empty_batch(rng, fmt, n, v):
    # No rows at all (a last, empty micro-batch): the right answer is empty outputs.
    return np.zeros((0, v)), np.zeros(0, dtype=np.int64)


def _invalid_labels(rng, fmt, n, v):
    # Typical logits; the labels are made invalid in `make_case`, per label kind.
    return rng.normal(0.0, 3.0, (n, v)), _targets(rng, n, v)


def invalidate(target: np.ndarray, soft: np.ndarray | None, v: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Break the labels: class V and -1 for integer labels, sums 0.5 / 2 / 0 for soft ones.

    No input has a truth then: raising is right (`rejected`), a number is `silent`.
    """
    target = target.copy()
    if soft is not None:
        soft = soft.copy()
        scale = np.array([0.5, 2.0, 0.0])[np.arange(len(soft)) % 3]
        soft *= scale[:, None]  # still exact: powers of two times multiples of 1/256
        return target, soft, "soft labels summing to 0.5, 2 or 0"
    target[0::2] = v
    target[1::2] = -1
    return target, soft, "class V (out of range) and -1"


REGIMES: dict[str, Regime] = {
    r.name: r
    for r in (
        Regime("typical", "N(0, 3) logits", _typical,
               why="a trained model's logits"),
        Regime("large_offset", "a shared offset of +-2x exp overflow, sqrt(max) or max/4", _large_offset,
               realistic=False, why="shared offsets at the edge of the dtype's range (up to 1e38 in float32)"),
        Regime("exp_range_spread", "logits spread 1.5x past exp's overflow and underflow", _exp_range_spread,
               why="logit ranges a low-precision model reaches (about +-130 in bfloat16 and +-17 in float16)"),
        Regime("dominant_target", "target leads by up to 1.2x exp's underflow: loss tiny", _dominant_target,
               why="a confident, correct model late in training"),
        Regime("dominant_other", "another class leads by up to max/2: loss huge", _dominant_other,
               realistic=False, why="gaps up to half the dtype's largest value"),
        Regime("near_ties", "all logits within 3 ulps of a shared base", _near_ties,
               why="an untrained or saturated model: nearly equal logits"),
        Regime("neg_inf_mask", "-inf masks on non-targets, sometimes on the target", _neg_inf_mask,
               realistic=False, why="every fourth row masks its own target (loss +inf)"),
        Regime("ignored_finite", "every third row ignored, finite logits there (padding)", _ignored_finite,
               why="ignore_index padding with the model's finite logits at padded positions"),
        Regime("ignored_rows", "every third row ignored, one of them all -inf padding", _ignored_rows,
               realistic=False, why="an all -inf padding row (-inf padding): ignored, but no finite logit"),
        Regime("all_ignored", "every row ignored, one of them all -inf", _all_ignored,
               realistic=False, why="a batch of pure padding with an all -inf row"),
        Regime("empty_batch", "no rows at all (on the first shape only)", _empty_batch, every_shape=False,
               why="a last, empty micro-batch"),
        Regime("invalid_labels", "labels out of range, negative, or soft labels not summing to 1 (first shape only)",
               _invalid_labels, invalid=True, every_shape=False, realistic=False,
               why="labels that break the API contract (no truth)"),
        Regime("nonfinite", "+inf, NaN or all -inf rows: no finite truth", _nonfinite, finite=False,
               realistic=False, why="+inf, NaN and all -inf rows (no finite truth)"),
    )
}

#: (rows, classes): from 2 classes to a 32000-token vocabulary; rows shrink as V grows.
DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((256, 2), (64, 10), (16, 1000), (4, 32000))
#: The opt-in accuracy shape at a language model's vocabulary (Llama 3's 128256 classes), so
#: accuracy is measured at the sizes the GPU bench times: `cestab run --shapes
#: 256x2,64x10,16x1000,4x32000,2x128256` (not a default: each case costs a reference of
#: 2 x 128256 extended-precision exponentials per dtype x label kind x regime).
LARGE_VOCAB_SHAPE: tuple[int, int] = (2, 128256)
SMOOTHING = 0.1


#: Search findings: inputs a search shrank towards the largest error (adversarial by construction).
SEARCH_WHY = "inputs a search drove towards the largest error"


def get(name: str) -> Regime:
    try:
        return REGIMES[name]
    except KeyError:
        raise UsageError(f"unknown regime {name!r}; choose from {', '.join(REGIMES)}") from None


def case_seed(seed: int, *key) -> np.random.Generator:
    """A generator for one case, independent of every other case and of the dtype."""
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, key)).encode())])


def make_case(regime: str, dtype: str, shape: tuple[int, ...], label_kind: str, seed: int) -> Case:
    """One case of `regime`, deterministic in its arguments. `shape` is (N, V), or (N, T, V):
    the regime draws N*T rows and the case keeps (N, T) as its batch shape."""
    reg, fmt = get(regime), dtypes.get(dtype)
    shape = tuple(int(d) for d in shape)
    n, v = math.prod(shape[:-1]), shape[-1]
    rng = case_seed(seed, regime, *shape, label_kind)
    z, t, *rest = reg.draw(rng, fmt, n, v)
    ignored = rest[0] if rest else None
    batch_shape = shape[:-1] if len(shape) == 3 and len(z) == n else ()
    n = len(z)  # an empty batch has no rows, whatever was asked
    soft = None
    if label_kind == "soft":
        soft = dyadic_soft_labels(rng, n, v, target=t)
    invalid = ""
    if reg.invalid:
        t, soft, invalid = invalidate(t, soft, v)
    return Case(
        case_id=f"{regime}/{dtype}/{'x'.join(map(str, (*batch_shape, v) if batch_shape else (n, v)))}/{label_kind}/s{seed}",
        regime=regime,
        dtype=dtype,
        logits=dtypes.exact(z, dtype),
        target=t.astype(np.int64),
        label_kind=label_kind,
        soft_labels=soft,
        smoothing=SMOOTHING if label_kind == "smoothing" else 0.0,
        ignored=ignored,
        invalid=invalid,
        seed=seed,
        batch_shape=batch_shape,
    )


def build_cases(regimes=None, dtype_names=None, shapes=None, label_kinds=None, seed: int = 0) -> list[Case]:
    """The cross product of regimes x dtypes x shapes x label kinds, validated."""
    return [make_case(*args) for args in plan(regimes, dtype_names, shapes, label_kinds, seed)]


def plan(regimes=None, dtype_names=None, shapes=None, label_kinds=None, seed: int = 0) -> list[tuple]:
    """The `make_case` arguments of `build_cases`, validated, without drawing any case: a run
    draws each case when it comes to it, so only one case's memory is held at a time."""
    regimes = list(regimes or REGIMES)
    dtype_names = list(dtype_names or dtypes.DTYPE_NAMES)
    shapes = list(shapes or DEFAULT_SHAPES)
    label_kinds = list(label_kinds or LABEL_KINDS)
    for r in regimes:
        get(r)
    for d in dtype_names:
        dtypes.get(d)
    for k in label_kinds:
        if k not in LABEL_KINDS:
            raise UsageError(f"unknown label kind {k!r}; choose from {', '.join(LABEL_KINDS)}")
    for shape in shapes:
        if len(shape) not in (2, 3) or min(shape[:-1]) < 1 or shape[-1] < 2:
            raise UsageError(f"bad shape {'x'.join(map(str, shape))}: need NxV or NxTxV, at least 1 row and 2 classes")
    return [
        (r, d, tuple(s), k, seed)
        for r in regimes
        for d in dtype_names
        for s in (shapes if get(r).every_shape else shapes[:1])
        for k in label_kinds
        # Invalid labels reach an API only as integers (index) or as a dense matrix (soft):
        # one-hot and smoothed rows are built from the integers outside the API.
        if not (get(r).invalid and k in ("onehot", "smoothing"))
    ]
