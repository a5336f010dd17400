"""Hypothesis strategies for softmax-CE cases: the searchable counterpart of `harness.inputs.regimes`.

Small `@st.composite` pieces, each named after what it returns, composed into `cases()`
(the style of data-apis/array-api-tests' strategies). Unlike a conformance suite these
never hide subnormals, values near the dtype's max or values past exp's range: those are
what we search for. Every bound comes from `harness.numerics.dtypes.FloatFormat`.

    base_logits = raw values of the dtype, or spread (elements | normal | uniform) x scale + offset
    logits      = base_logits, then optional transforms in a fixed order:
                  with_near_ties, with_subnormals, with_near_max, with_exp_threshold_gap,
                  with_masks (last, so a mask is never overwritten)
    cases       = dtype, shape, labels, logits, ignored rows [, undefined rows] -> Case

Logits are built in float64 and rounded once to the tested dtype (`dtypes.exact`), and every
transform writes values that are already exact in that dtype (it steps through the dtype's
representable numbers, see `ordinals`), so what a transform promises (k ulps apart, straddles
a threshold) holds for the case's exact inputs. bfloat16 is drawn as float32 or float64 and
rounded with `dtypes.exact`: exact by construction.

Which pieces a case used is in its `regime`: "search:" + "+".join(pieces), e.g.
"search:normal+offset+exp_gap.underflow+mask.target"; `pieces(case)` splits it. The `note`
holds the details: "scale=3 offset=-88.72". A 3-D shape (N, T, V) is stored
as N*T rows with `Case.batch_shape` = (N, T); adapters get the (N, T, V) tensor back.

Shrinking: sizes are drawn first and every choice shrinks toward the simplest input: the
first shape of the pool (1 x 2), float16, index labels with target 0, the "raw" spread
(hypothesis-drawn values, shrinking to 0; else scale 1 and offset 0), no transform, no
ignored rows; inside a transform, all rows, the first kind, 0 extra ulps, class 0 or the
column next to the anchor. Seeded numpy draws (the normal/uniform spreads, random mask
patterns, soft labels) shrink only through their seed, toward 0.

Needs hypothesis (the `test` extra); `import harness` does not import this module.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from fractions import Fraction
from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness.numerics import dtypes
from harness.numerics.cases import LABEL_KINDS, Case, dyadic_soft_labels
from harness.numerics.dtypes import DTYPE_NAMES, FloatFormat, from_ordinals, ordinals, step  # noqa: F401 (S.ordinals)
from harness.errors import UsageError

#: Largest N * V of a drawn case (memory: the reference holds a few float64 and extended
#: copies of the logits).
MAX_ELEMENTS = 1 << 21
#: Largest class count (256k) and the size from which a class count counts as "big" (rare).
MAX_CLASSES = 1 << 18
BIG_CLASSES = 8192
#: Largest number of rows (N, or N * T for 3-D shapes) an arbitrary shape draws.
MAX_ROWS = 256
#: Near ties and threshold straddles are at most this many representable values apart.
NEAR_ULPS = 3
#: A big shape or class count is drawn about once in this many draws.
RARE_ONE_IN = 8

#: Default shapes, few-valued so that compiled adapters (jax.jit, torch.compile, XLA)
#: compile once per shape. Common ones first (the first is the shrink target), big ones rare.
SHAPE_POOL: tuple[tuple[int, ...], ...] = (
    (1, 2),
    (4, 3),
    (8, 10),
    (64, 10),
    (2, 3, 50),
    (16, 100),
    (2, 4, 257),
    (8, 1000),
    (4, 32000),
    (2, 4, 32000),
    (2, 131072),
    (1, 262144),
)

#: Class counts worth hitting on purpose: tiny ones, powers of two and their neighbours
#: (SIMD lanes, tiles, warps, blocks), real vocabularies (GPT-2, Llama 3, Qwen).
NOTABLE_CLASSES = (2, 3, 7, 8, 9, 10, 16, 17, 31, 32, 33, 100, 127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025, 4096)
NOTABLE_BIG_CLASSES = (8192, 32000, 32768, 32769, 50257, 65536, 128256, 131072, 151936, 262144)

SPREADS = ("raw", "elements", "normal", "uniform")
TRANSFORMS = ("near_ties", "subnormals", "near_max", "exp_gap", "mask")
NEAR_TIE_KINDS = ("some", "all")
SUBNORMAL_KINDS = ("some", "row")
NEAR_MAX_KINDS = ("some", "row")
GAP_KINDS = ("overflow", "underflow", "gap", "gap_normal")
MASK_KINDS = ("non_target", "target", "all_but_one", "position")
IGNORED_KINDS = ("ignored", "ignored.padding")
UNDEFINED_KINDS = ("posinf", "nan", "neginf_row", "posinf_target")

#: Every piece name a case's regime can contain (sub-kinds dotted), by what draws it.
PIECES: dict[str, tuple[str, ...]] = {
    "spread": SPREADS,
    "offset": ("offset",),
    "near_ties": tuple(f"near_ties.{k}" for k in NEAR_TIE_KINDS),
    "subnormals": tuple(f"subnormals.{k}" for k in SUBNORMAL_KINDS),
    "near_max": tuple(f"near_max.{k}" for k in NEAR_MAX_KINDS),
    "exp_gap": tuple(f"exp_gap.{k}" for k in GAP_KINDS),
    "mask": tuple(f"mask.{k}" for k in MASK_KINDS),
    "ignored": IGNORED_KINDS,
    "undefined": tuple(f"undefined.{k}" for k in UNDEFINED_KINDS),
}


class Logits(NamedTuple):
    """float64 logits (N, V), every value exact in the tested dtype, and how they were made."""

    values: np.ndarray
    pieces: tuple[str, ...]
    note: str


class Applied(NamedTuple):
    """What a transform returns: the new logits, its piece name and the rows it changed."""

    values: np.ndarray
    piece: str
    rows: np.ndarray  # (N,) bool


class Labels(NamedTuple):
    """A label kind and its labels, as `Case` takes them."""

    kind: str
    target: np.ndarray  # (N,) int64
    soft: np.ndarray | None
    smoothing: float


# --- the dtype's representable numbers, in order: `dtypes.ordinals`, `from_ordinals`, `step`


def straddle(anchor: float, threshold: float, fmt: FloatFormat) -> tuple[float, float] | None:
    """(lo, hi): the dtype's values either side of `anchor + threshold`, exactly: lo is the
    largest value with lo - anchor < threshold, hi the smallest with hi - anchor > threshold
    (adjacent, or two apart where anchor + threshold is itself a value of the dtype).
    None where no such lo exists (anchor + threshold below -max)."""
    a, t = Fraction(anchor), Fraction(threshold)
    hi = float(dtypes.widen(dtypes.exact(np.clip(anchor + threshold, -fmt.max, fmt.max), fmt.name)))
    while Fraction(hi) - a > t and hi > -fmt.max:
        hi = float(step(hi, -1, fmt))
    while Fraction(hi) - a <= t:
        hi = float(step(hi, 1, fmt))  # terminates: anchor itself is above (threshold < 0) or max is
    lo = hi
    while Fraction(lo) - a >= t:
        if lo == -fmt.max:
            return None
        lo = float(step(lo, -1, fmt))
    return lo, hi


def _finish(values: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Clip to the finite range and round once to the dtype; float64 result."""
    with np.errstate(invalid="ignore"):
        clipped = np.clip(values, -fmt.max, fmt.max)
    return dtypes.widen(dtypes.exact(clipped, fmt.name))


def _g(x: float) -> str:
    return f"{x:.4g}"


def _rarely(draw, common, rare, one_in: int = RARE_ONE_IN):
    """Draw from `rare` about once in `one_in` draws, else from `common` (the shrink target)."""
    return draw(rare if draw(st.integers(0, one_in - 1)) == one_in - 1 else common)


# --- sizes -----------------------------------------------------------------------------


def dtype_names() -> st.SearchStrategy[str]:
    """A tested dtype name, float16 first."""
    return st.sampled_from(DTYPE_NAMES)


@st.composite
def class_counts(draw, max_classes: int = MAX_CLASSES) -> int:
    """V from 2 to `max_classes` (256k): notable counts or any; big ones (>= 8192) rare."""
    if max_classes < 2:
        raise UsageError(f"max_classes must be at least 2, got {max_classes}")
    small_top = min(max_classes, BIG_CLASSES - 1)
    common = st.one_of(st.sampled_from([v for v in NOTABLE_CLASSES if v <= small_top]), st.integers(2, small_top))
    if max_classes < BIG_CLASSES:
        return draw(common)
    rare = st.one_of(
        st.sampled_from([v for v in NOTABLE_BIG_CLASSES if v <= max_classes]), st.integers(BIG_CLASSES, max_classes)
    )
    return _rarely(draw, common, rare)


def _big(shape) -> bool:
    return shape[-1] >= BIG_CLASSES


@st.composite
def shapes(draw, pool=SHAPE_POOL, max_elements: int = MAX_ELEMENTS) -> tuple[int, ...]:
    """(N, V) or (N, T, V). From `pool` (default: few shapes, big ones rare), or any shape
    with N * T * V <= max_elements when `pool` is None."""
    if pool is not None:
        fits = [tuple(s) for s in pool if math.prod(s) <= max_elements]
        bad = [s for s in fits if len(s) not in (2, 3) or s[-1] < 2 or min(s) < 1]
        if not fits or bad:
            raise UsageError(f"shape pool needs (N, V) or (N, T, V) shapes, V >= 2, within {max_elements} elements")
        common, rare = [s for s in fits if not _big(s)], [s for s in fits if _big(s)]
        if not common or not rare:
            return draw(st.sampled_from(fits))
        return _rarely(draw, st.sampled_from(common), st.sampled_from(rare))
    v = draw(class_counts(min(MAX_CLASSES, max_elements)))
    budget = max(1, min(MAX_ROWS, max_elements // v))
    if draw(st.booleans()):
        n = draw(st.integers(1, min(16, budget)))
        return (n, draw(st.integers(1, max(1, budget // n))), v)
    return (draw(st.integers(1, budget)), v)


@st.composite
def row_selections(draw, n: int) -> np.ndarray:
    """Which rows a transform touches: all rows (the shrink target) or a non-empty subset."""
    if n == 1 or not draw(st.booleans()):
        return np.ones(n, dtype=bool)
    rows = draw(hnp.arrays(np.bool_, n, elements=st.booleans()))
    if not rows.any():
        rows[0] = True
    return rows


def seeds() -> st.SearchStrategy[int]:
    """A seed for numpy's PCG64, for bulk randomness hypothesis need not drive."""
    return st.integers(0, 2**32 - 1)


@st.composite
def positions(draw, v: int) -> int:
    """A class index: any, or one where chunked/vectorised reductions break (first, last,
    middle, powers of two and their neighbours)."""
    notable = {0, 1, v // 2, v - 2, v - 1}
    k = 1
    while k <= v:
        notable |= {k - 1, k, k + 1}
        k *= 2
    return draw(st.one_of(st.integers(0, v - 1), st.sampled_from(sorted(p for p in notable if 0 <= p < v))))


def distinct_positions(v: int, min_size: int = 1, max_size: int = 4) -> st.SearchStrategy[list[int]]:
    return st.lists(positions(v), min_size=min_size, max_size=min(max_size, v), unique=True)


# --- base logits: spread x scale + offset -------------------------------------------


def spreads() -> st.SearchStrategy[str]:
    """How the base values are spread: "raw", any finite value of the dtype drawn by
    hypothesis, subnormals and +-max included (no scale, no offset; first, as it draws the
    fewest choices: the shrink target, all zeros); "elements", hypothesis-drawn in [-1, 1];
    seeded standard "normal" or "uniform" [-1, 1]."""
    return st.sampled_from(SPREADS)


@st.composite
def scales(draw, fmt: FloatFormat) -> float:
    """How wide the logits spread: 1 (shrink target), notable widths (exp's thresholds,
    sqrt(max), max), any power of two from the smallest subnormal to max, or any float."""
    notable = [1.0, 3.0, 0.0, 0.1, 10.0, fmt.exp_overflow, -fmt.exp_underflow, 2 * fmt.exp_overflow,
               math.sqrt(fmt.max), fmt.max / 4, fmt.max]
    smallest = fmt.min_exponent - fmt.mantissa_bits
    largest = math.frexp(fmt.max)[1] - 1
    return draw(st.one_of(
        st.sampled_from(notable),
        st.integers(smallest, largest).map(lambda e: math.ldexp(1.0, e)),
        st.floats(0.0, fmt.max, allow_nan=False, allow_infinity=False),
    ))


@st.composite
def offsets(draw, fmt: FloatFormat) -> float:
    """A shift shared by a whole case (softmax is shift-invariant; exp is not): 0 (shrink
    target), +- exp's thresholds and twice them, +- sqrt(max), max/4, max/2, or any float."""
    magnitudes = [fmt.exp_overflow, 2 * fmt.exp_overflow, -fmt.exp_underflow, math.sqrt(fmt.max), fmt.max / 4, fmt.max / 2]
    notable = [s * m for m in magnitudes for s in (1.0, -1.0)]
    return draw(st.one_of(
        st.just(0.0),
        st.sampled_from(notable),
        st.floats(-fmt.max, fmt.max, allow_nan=False, allow_infinity=False),
    ))


def _float_width(fmt: FloatFormat) -> int:
    return {"float16": 16, "float32": 32, "float64": 64}.get(fmt.name, 32)  # bfloat16: float32, rounded


@st.composite
def raw_values(draw, fmt: FloatFormat, shape: tuple[int, ...]) -> np.ndarray:
    """Any finite values of the dtype (subnormals, +-max, +-0), float64; shrinks to zeros."""
    width = _float_width(fmt)
    elements = st.floats(-fmt.max, fmt.max, allow_nan=False, allow_infinity=False, width=width)
    drawn = draw(hnp.arrays(np.dtype(f"float{width}"), shape, elements=elements))
    return _finish(drawn.astype(np.float64), fmt)


@st.composite
def unit_values(draw, spread: str, shape: tuple[int, ...]) -> np.ndarray:
    """float64 values of unit spread: "elements" in [-1, 1] (hypothesis), "normal", "uniform"."""
    if spread == "elements":
        return draw(hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0)))
    rng = np.random.default_rng(draw(seeds()))
    if spread == "normal":
        return rng.standard_normal(shape)
    if spread == "uniform":
        return rng.uniform(-1.0, 1.0, shape)
    raise UsageError(f"unknown spread {spread!r}")


@st.composite
def base_logits(draw, fmt: FloatFormat, n: int, v: int) -> Logits:
    """offset + scale * (values of one spread), clipped to +-max, rounded to the dtype."""
    spread = draw(spreads())
    if spread == "raw":
        return Logits(draw(raw_values(fmt, (n, v))), ("raw",), "")
    unit = draw(unit_values(spread, (n, v)))
    scale = draw(scales(fmt))
    offset = draw(offsets(fmt))
    with np.errstate(over="ignore", invalid="ignore"):
        z = offset + scale * unit
    pieces = (spread, "offset") if offset != 0.0 else (spread,)
    return Logits(_finish(z, fmt), pieces, f"scale={_g(scale)} offset={_g(offset)}")


# --- transforms: (fmt, z, target) -> Applied ---------------------------------------


@st.composite
def with_near_ties(draw, fmt: FloatFormat, z: np.ndarray, target: np.ndarray, ulps: int = NEAR_ULPS) -> Applied:
    """Classes within `ulps` representable values of the row's max (the anchor, left as is):
    "some": up to 8 columns next to the anchor (optionally the target too); "all": the
    whole row, like the near_ties regime. Width 0 (the shrink target) gives exact ties."""
    n, v = z.shape
    kind = draw(st.sampled_from(NEAR_TIE_KINDS))
    rows = draw(row_selections(n))
    width = draw(st.integers(0, ulps))
    sel = np.flatnonzero(rows)
    anchor_col = z[sel].argmax(axis=1)
    anchor = z[sel, anchor_col]
    out = z.copy()
    if kind == "all":
        rng = np.random.default_rng(draw(seeds()))
        ties = step(np.repeat(anchor[:, None], v, axis=1), rng.integers(-width, width + 1, (sel.size, v)), fmt)
        ties[np.arange(sel.size), anchor_col] = anchor
        out[sel] = ties
        return Applied(out, "near_ties.all", rows)
    shifts = draw(st.lists(st.integers(1, v - 1), min_size=1, max_size=min(8, v - 1), unique=True))
    ks = draw(st.lists(st.integers(-width, width), min_size=len(shifts), max_size=len(shifts)))
    cols = [(anchor_col + s) % v for s in shifts]
    if draw(st.booleans()):  # tie the target with the max too
        cols.append(target[sel])
        ks.append(draw(st.integers(-width, width)))
    for c, k in zip(cols, ks):
        keep = c != anchor_col
        out[sel[keep], c[keep]] = step(anchor[keep], k, fmt)
    return Applied(out, "near_ties.some", rows)


@st.composite
def subnormal_values(draw, fmt: FloatFormat) -> float:
    """A subnormal of the dtype: +-k * smallest_subnormal, k shrinking to 1."""
    k = draw(st.integers(1, 2**fmt.mantissa_bits - 1))
    return (-1.0 if draw(st.booleans()) else 1.0) * k * fmt.smallest_subnormal


def random_signs(rng: np.random.Generator, shape) -> np.ndarray:
    """+-1.0 with equal odds, from a seeded generator (whole-row transforms)."""
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


@st.composite
def with_subnormals(draw, fmt: FloatFormat, z: np.ndarray, target: np.ndarray) -> Applied:
    """Subnormal logits (flush-to-zero, denormals-are-zero): "some" columns (hypothesis
    values), or whole rows of random subnormals ("row")."""
    n, v = z.shape
    kind = draw(st.sampled_from(SUBNORMAL_KINDS))
    rows = draw(row_selections(n))
    out = z.copy()
    if kind == "some":
        cols = draw(distinct_positions(v))
        values = [draw(subnormal_values(fmt)) for _ in cols]
        out[np.ix_(rows, cols)] = values
    else:
        rng = np.random.default_rng(draw(seeds()))
        k = rng.integers(1, 2**fmt.mantissa_bits, (int(rows.sum()), v))
        out[rows] = random_signs(rng, k.shape) * k * fmt.smallest_subnormal
    return Applied(out, f"subnormals.{kind}", rows)


@st.composite
def with_near_max(draw, fmt: FloatFormat, z: np.ndarray, target: np.ndarray, ulps: int = NEAR_ULPS) -> Applied:
    """Values within `ulps` representable values of +-max: "some" columns (sign and
    distance drawn), or whole rows of them ("row": z - max z overflows in the dtype)."""
    n, v = z.shape
    kind = draw(st.sampled_from(NEAR_MAX_KINDS))
    rows = draw(row_selections(n))
    out = z.copy()
    if kind == "some":
        cols = draw(distinct_positions(v))
        for c in cols:
            sign = -1.0 if draw(st.booleans()) else 1.0
            out[rows, c] = sign * float(step(fmt.max, -draw(st.integers(0, ulps)), fmt))
    else:
        rng = np.random.default_rng(draw(seeds()))
        shape = (int(rows.sum()), v)
        out[rows] = random_signs(rng, shape) * step(fmt.max, -rng.integers(0, ulps + 1, shape), fmt)
    return Applied(out, f"near_max.{kind}", rows)


def gap_threshold(kind: str, fmt: FloatFormat) -> float:
    """The threshold a gap kind straddles: exp's overflow ("overflow"), its underflow to 0
    ("underflow", "gap": of z - max z), or its leaving the normal range ("gap_normal")."""
    return {
        "overflow": fmt.exp_overflow,
        "underflow": fmt.exp_underflow,
        "gap": fmt.exp_underflow,
        "gap_normal": fmt.min_exponent * math.log(2.0),
    }[kind]


@st.composite
def with_exp_threshold_gap(draw, fmt: FloatFormat, z: np.ndarray, target: np.ndarray, ulps: int = NEAR_ULPS) -> Applied:
    """Values just either side of one of exp's thresholds, in the tested dtype.

    "overflow" / "underflow": two columns at the dtype's nearest values below and above
    exp_overflow / exp_underflow, moved up to `ulps` further out (naive exp without the max
    shift overflows / underflows). "gap" / "gap_normal": relative to the row's max (or the
    target, first raised to the max): z_j - max straddles exp_underflow (p_j becomes 0) /
    log of the smallest normal (p_j becomes subnormal). With 2 classes only one side fits.
    Rows whose max is too close to -max for the gap are left alone (not in `rows`).
    """
    n, v = z.shape
    kind = draw(st.sampled_from(GAP_KINDS))
    rows = draw(row_selections(n)).copy()
    further = [draw(st.integers(0, ulps)), draw(st.integers(0, ulps))]
    thr = gap_threshold(kind, fmt)
    out = z.copy()
    if kind in ("overflow", "underflow"):
        lo, hi = straddle(0.0, thr, fmt)
        cols = draw(distinct_positions(v, min_size=2, max_size=2))
        out[rows, cols[0]] = step(lo, -further[0], fmt)
        out[rows, cols[1]] = step(hi, further[1], fmt)
        return Applied(out, f"exp_gap.{kind}", rows)
    lead_target = draw(st.booleans())
    shifts = draw(st.lists(st.integers(1, v - 1), min_size=min(2, v - 1), max_size=min(2, v - 1), unique=True))
    side = draw(st.booleans())  # with 2 classes: below (False) or above (True)
    for i in np.flatnonzero(rows):
        row = out[i]
        anchor_col = int(target[i]) if lead_target else int(row.argmax())
        row[anchor_col] = anchor = row.max()
        pair = straddle(float(anchor), thr, fmt)
        if pair is None:
            rows[i] = False
            continue
        lo = float(step(pair[0], -further[0], fmt))
        hi = min(float(step(pair[1], further[1], fmt)), float(anchor))
        values = [lo, hi] if len(shifts) == 2 else [hi if side else lo]
        for s, value in zip(shifts, values):
            row[(anchor_col + s) % v] = value
    return Applied(out, f"exp_gap.{kind}", rows)


@st.composite
def with_masks(draw, fmt: FloatFormat, z: np.ndarray, target: np.ndarray) -> Applied:
    """-inf masks that keep every row defined (at least one finite logit):
    "non_target": a fraction of the non-target classes (all of them: only the target left);
    "target": the target itself (loss +inf, gradient -1 there);
    "all_but_one": every class but one (the target, or a drawn position);
    "position": 1 to 4 drawn positions, the same in every row (target included if hit).
    Expects finite `z` (masks come last among the transforms)."""
    n, v = z.shape
    kind = draw(st.sampled_from(MASK_KINDS))
    rows = draw(row_selections(n))
    sel = np.flatnonzero(rows)
    out = z.copy()
    if kind == "non_target":
        fraction = draw(st.sampled_from((1.0, 0.5, 0.1, 0.9)))
        rng = np.random.default_rng(draw(seeds()))
        mask = rng.random((sel.size, v)) < fraction
        mask[np.arange(sel.size), target[sel]] = False
        block = out[sel]
        block[mask] = -np.inf
        out[sel] = block
    elif kind == "target":
        out[sel, target[sel]] = -np.inf
    elif kind == "all_but_one":
        live = target[sel] if draw(st.booleans()) else np.full(sel.size, draw(positions(v)))
        keep = out[sel, live]
        out[sel] = -np.inf
        out[sel, live] = keep
    else:
        cols = draw(distinct_positions(v, max_size=min(4, v - 1)))
        out[np.ix_(rows, cols)] = -np.inf
    return Applied(out, f"mask.{kind}", rows)


TRANSFORM_STRATEGIES = {
    "near_ties": with_near_ties,
    "subnormals": with_subnormals,
    "near_max": with_near_max,
    "exp_gap": with_exp_threshold_gap,
    "mask": with_masks,
}


@st.composite
def logits(draw, fmt: FloatFormat, n: int, v: int, target: np.ndarray, transforms=TRANSFORMS) -> Logits:
    """Base logits, then each transform in `transforms` (applied in TRANSFORMS' order) or
    not; every row stays defined (finite values, masks leave a live class)."""
    unknown = set(transforms) - set(TRANSFORMS)
    if unknown:
        raise UsageError(f"unknown transforms {sorted(unknown)}; choose from {', '.join(TRANSFORMS)}")
    base = draw(base_logits(fmt, n, v))
    z, pieces = base.values, list(base.pieces)
    for name in TRANSFORMS:
        if name in transforms and draw(st.booleans()):
            applied = draw(TRANSFORM_STRATEGIES[name](fmt, z, target))
            z = applied.values
            pieces.append(applied.piece)
    return Logits(z, tuple(pieces), base.note)


@st.composite
def row_logits(draw, fmt: FloatFormat, v: int, transforms=TRANSFORMS) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """One row: (float64 logits (V,), target class, pieces)."""
    t = draw(st.integers(0, v - 1))
    drawn = draw(logits(fmt, 1, v, np.array([t]), transforms))
    return drawn.values[0], t, drawn.pieces


# --- labels, ignored and undefined rows ----------------------------------------------


def targets(n: int, v: int) -> st.SearchStrategy[np.ndarray]:
    """One class per row, int64, shrinking to class 0."""
    return hnp.arrays(np.int64, n, elements=st.integers(0, v - 1))


def smoothings() -> st.SearchStrategy[float]:
    """Label smoothing eps in [0, 1): 0 (shrink target), the usual 0.1, or any."""
    return st.one_of(st.sampled_from((0.0, 0.1, 0.2, 0.5, 0.9)), st.floats(0.0, 1.0, exclude_max=True))


@st.composite
def soft_labels(draw, n: int, v: int, target: np.ndarray) -> np.ndarray:
    """Dyadic soft labels (multiples of 1/256, rows sum to exactly 1, exact in every dtype)
    on 1 to 8 classes, the target with the largest weight (`cases.dyadic_soft_labels`)."""
    support = draw(st.integers(1, min(8, v)))
    return dyadic_soft_labels(np.random.default_rng(draw(seeds())), n, v, target, support=support)


@st.composite
def labels(draw, n: int, v: int, kinds=LABEL_KINDS) -> Labels:
    """A label kind from `kinds` and its labels: targets, soft labels or smoothing eps."""
    kind = draw(st.sampled_from(tuple(kinds)))
    target = draw(targets(n, v))
    soft = draw(soft_labels(n, v, target)) if kind == "soft" else None
    eps = draw(smoothings()) if kind == "smoothing" else 0.0
    return Labels(kind, target, soft, eps)


@st.composite
def ignored_rows(draw, n: int) -> tuple[np.ndarray, bool]:
    """(rows to ignore, non-empty; whether they are all -inf padding)."""
    rows = draw(hnp.arrays(np.bool_, n, elements=st.booleans()))
    if not rows.any():
        rows[0] = True
    return rows, draw(st.booleans())


@st.composite
def with_undefined(draw, fmt: FloatFormat, z: np.ndarray, target: np.ndarray) -> Applied:
    """Rows with no finite truth (opt-in): +inf somewhere, NaN, all -inf, +inf at the target."""
    n, v = z.shape
    kind = draw(st.sampled_from(UNDEFINED_KINDS))
    rows = draw(row_selections(n))
    sel = np.flatnonzero(rows)
    out = z.copy()
    if kind == "neginf_row":
        out[sel] = -np.inf
    else:
        col = target[sel] if kind == "posinf_target" else draw(positions(v))
        out[sel, col] = np.nan if kind == "nan" else np.inf
    return Applied(out, f"undefined.{kind}", rows)


# --- cases -------------------------------------------------------------------------------


def pieces(case: Case) -> tuple[str, ...]:
    """The pieces a search case was drawn from (its regime, split)."""
    prefix = "search:"
    return tuple(case.regime[len(prefix):].split("+")) if case.regime.startswith(prefix) else ()


def drawn_shape(case: Case) -> tuple[int, ...]:
    """The shape a case's logits were drawn with: (N, V) or (N, T, V)."""
    return case.nd_shape


def _case_id(dtype: str, shape, kind: str, z: np.ndarray, labels_: Labels, ignored) -> str:
    crc = zlib.crc32(z.tobytes())
    for part in (labels_.target, labels_.soft, ignored, np.float64(labels_.smoothing)):
        if part is not None:
            crc = zlib.crc32(np.ascontiguousarray(part).tobytes(), crc)
    return f"search/{dtype}/{'x'.join(map(str, shape))}/{kind}/{crc:08x}"


@st.composite
def cases(
    draw,
    dtype: str | None = None,
    label_kinds=None,
    max_elements: int = MAX_ELEMENTS,
    shape_pool=SHAPE_POOL,
    transforms=TRANSFORMS,
    allow_ignored: bool = True,
    allow_undefined: bool = False,
) -> Case:
    """A validated `Case` (source "search", regime "search:<pieces>").

    `dtype`: fix the dtype (default: any). `label_kinds`: the kinds to draw from (default
    all). `shape_pool`: the shapes to draw from; None for any shape within `max_elements`.
    `transforms`: which logit transforms may be drawn. `allow_undefined`: also draw rows
    with no finite truth (+inf, NaN, all -inf); off by default, as the reference does not
    judge them. Ignored rows may be all -inf (padding) either way.
    """
    if dtype is not None:
        dtypes.get(dtype)
    kinds = tuple(label_kinds or LABEL_KINDS)
    for k in kinds:
        if k not in LABEL_KINDS:
            raise UsageError(f"unknown label kind {k!r}; choose from {', '.join(LABEL_KINDS)}")
    name = dtype if dtype is not None else draw(dtype_names())
    fmt = dtypes.get(name)
    shape = draw(shapes(shape_pool, max_elements))
    n, v = math.prod(shape[:-1]), shape[-1]
    lab = draw(labels(n, v, kinds))
    drawn = draw(logits(fmt, n, v, lab.target, transforms))
    z, parts = drawn.values, list(drawn.pieces)
    ignored = None
    if allow_ignored and draw(st.booleans()):
        ignored, padding = draw(ignored_rows(n))
        if padding:
            z = z.copy()
            z[ignored] = -np.inf
        parts.append("ignored.padding" if padding else "ignored")
    if allow_undefined and draw(st.booleans()):
        applied = draw(with_undefined(fmt, z, lab.target))
        z = applied.values
        parts.append(applied.piece)
    exact = dtypes.exact(z, name)
    note = drawn.note
    return Case(
        case_id=_case_id(name, shape, lab.kind, exact, lab, ignored),
        regime="search:" + "+".join(parts),
        dtype=name,
        logits=exact,
        target=lab.target.astype(np.int64),
        label_kind=lab.kind,
        soft_labels=lab.soft,
        smoothing=lab.smoothing,
        ignored=ignored,
        seed=0,  # no regime seed rebuilds a search case; its logits are the record
        source="search",
        note=note,
        batch_shape=tuple(shape[:-1]) if len(shape) == 3 else (),
    )


# ------------------------------------------------------------------ hypothesis itself


@contextlib.contextmanager
def without_local_constants():
    """Hypothesis draws without the constants of the loaded local modules.

    Hypothesis (since 6.13x) takes some of its values from the constants in the source of
    every loaded module outside site-packages: cestab's own, a user's adapters. The search's
    pool (`rowsearch.hypothesis_pool`) then changed whenever a module was imported (a cestab
    version that changes nothing numerical, a plug-in, a module loaded lazily between two
    pools), and the whole search with it; so did the test suite's examples, with the modules
    earlier tests happened to import (tests/conftest.py draws without them too). Inside,
    hypothesis keeps its own interesting values (0, +-1, the floats' edges) and sees no
    local module's. Private API: with a hypothesis that has none of it, nothing is changed
    (and tests/test_rowsearch.py's test of this fails)."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - hypothesis without that module
        providers = None
    get, cache = getattr(providers, "_get_local_constants", None), getattr(providers, "CONSTANTS_CACHE", None)
    if get is None or not hasattr(cache, "cache") or not hasattr(providers, "Constants"):
        yield
        return
    providers._get_local_constants = providers.Constants  # an empty set of constants
    cache.cache.clear()  # its entries were made with the local modules' constants
    try:
        yield
    finally:
        providers._get_local_constants = get
        cache.cache.clear()  # and these without
