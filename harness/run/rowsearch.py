"""Row-batched worst-case search: candidates are rows, thousands per adapter call.

Softmax cross-entropy is row-wise: a row's loss and gradient depend on that row only
(tests/test_rowsearch.py checks it for every adapter). So one adapter call on an (N, V)
batch judges N candidates, and the reference is computed once per batch for every adapter
that sees it. The old search (`search.py`) spent one adapter call, one IPC round trip,
one reference and often one fresh compilation per candidate; this one spends them per
batch of up to a few thousand rows.

Per dtype, the search keeps a few fixed class counts V (`Budget.classes`) and one row
count N per V (`Budget.rows`), so jitted adapters (jax.jit, XLA, torch.compile) see a
handful of shapes; a batch that has fewer candidates than N is filled with pad rows
(zeros, target 0) whose results are dropped. Each generation builds, per dtype x V x
label kind, one batch per family (rows with ignored rows for adapters that can ignore
rows, plain rows for the others):

- fresh rows: drawn from a pool of row blocks that the hypothesis strategies of
  `inputs.strategies` generate once per dtype x V (their spreads, scales, offsets, near
  ties, subnormals, values near max, exp's thresholds, -inf masks, ignored and padding
  rows; kept between runs, `cached_pool`), each lightly mutated;
- children of the worst rows found so far for every adapter that sees the batch
  (hill climbing on the per-row tolerance ratio): scaled, shifted, pushed toward the
  dtype's limits, tied with the max, masked with -inf, the target swapped, ignored.

Every row gets a score: its largest tolerance ratio over loss and gradient (`score`);
NaN/inf where the truth is finite ranks highest (`BROKEN`). Per adapter x dtype the worst
row of each *failure kind* (status x quantity x feature, the feature read from the row
itself: `features`) is kept. After the last generation the winners, and only they, are
shrunk (delta debugging toward fewer classes and simpler values, keeping the failure
kind), re-run on their own through the ordinary path (`runner.rows_for_case`), and become
results rows with source "search" and a case file under RUN_DIR/worst/ that `cestab
repro` replays. A whole batch that raises, crashes or hangs is bisected with pad rows to
the row that does it.

The workers compute ahead: the dtypes take turns, batch by batch, and the search hands LAG
batches of each dtype to the executor's lanes before it judges that dtype's oldest; batch i
of a dtype is bred from what the search knew after judging its batches up to i - LAG - 1,
whether the answers come at once (in process, Ray) or later (lanes). The winners of
different workers are shrunk at the same time (`findings`).

Everything is seeded (numpy's PCG64 from the run's seed, hypothesis's seed, and hypothesis
kept from the constants of whatever modules are loaded: `strategies.without_local_constants`),
so a seed gives the same search on any machine where the adapters give the same numbers.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import math
import os
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from harness.numerics import dtypes, fused, metrics, reference, statuses, tolerances
from harness.numerics.cases import LABEL_KINDS, Case, dyadic_soft_labels_rows
from harness.store import casefile

BROKEN = 1e12  # the score of a non-finite result (a crash or error of a whole batch too)


@dataclass(frozen=True)
class Budget:
    classes: tuple[int, ...]  # the class counts V searched (fixed: few compiled shapes)
    batch_elements: int  # rows per batch: about this many elements, N a power of two
    max_rows: int  # at most this many rows per batch
    generations: int  # batches per dtype x V x label kind x family
    pool_blocks: int  # hypothesis examples per dtype x V (each a block of rows)
    block_elements: int  # elements per hypothesis block (rows = this / V, 1 to 64)
    shrink_calls: int  # adapter calls the shrinking of one finding may spend
    findings: int  # failure kinds reported per adapter x dtype (the worst first)
    smoothings: tuple[float, ...] = (0.1,)  # eps of smoothed labels (one per batch, cycled)
    parents: int = 6  # worst rows per adapter that get children in the next batch

    def rows(self, v: int) -> int:
        n = max(1, min(self.max_rows, self.batch_elements // v))
        return 1 << (n.bit_length() - 1)  # a power of two: one shape per V


BUDGETS = {
    # quick: part of the default run; 3 class counts, 3 generations
    "quick": Budget(classes=(2, 32, 1000), batch_elements=1 << 17, max_rows=1024, generations=3, pool_blocks=12,
                    block_elements=2048, shrink_calls=4, findings=3),
    "standard": Budget(classes=(2, 7, 32, 257, 1000, 4096), batch_elements=1 << 17, max_rows=2048, generations=6,
                       pool_blocks=24, block_elements=4096, shrink_calls=6, findings=4, smoothings=(0.1, 0.5)),
    "deep": Budget(classes=(2, 3, 17, 32, 129, 1000, 4096, 32000), batch_elements=1 << 18, max_rows=4096,
                   generations=12, pool_blocks=40, block_elements=8192, shrink_calls=8, findings=6,
                   smoothings=(0.1, 0.5, 0.9)),
}


def score_row_dict(row: dict) -> float:
    """The score of a results row (as the old search's `score`): for the findings' rows."""
    status = statuses.get(row["status"])
    if status.broke or status.name == "nonfinite":
        return BROKEN
    if status.measured:
        ratio = max(row.get("loss_tol_ratio") or 0.0, row.get("grad_tol_ratio") or 0.0)
        return min(float(ratio), BROKEN / 2) if math.isfinite(ratio) else BROKEN
    return -1.0


# ------------------------------------------------------------------ rows


@dataclass
class Rows:
    """Candidate rows of one V, struct of arrays: float64 logits exact in the dtype (-inf
    masks allowed), targets, soft labels (for the "soft" kind; None otherwise), ignored
    flags, and the pieces each row was made from (strategies' names, then mutations).

    The names are an array of str objects, not a list: a batch's rows are taken, joined
    and renamed by the thousand (`mutate`), in numpy's loops rather than Python's."""

    z: np.ndarray  # (n, V)
    target: np.ndarray  # (n,) int64
    ignored: np.ndarray  # (n,) bool
    pieces: np.ndarray  # (n,) object: str (a list of str is converted)
    soft: np.ndarray | None = None  # (n, V)

    def __post_init__(self):
        if not (isinstance(self.pieces, np.ndarray) and self.pieces.dtype == object):
            pieces = np.empty(len(self.pieces), dtype=object)
            pieces[:] = [str(p) for p in self.pieces]
            self.pieces = pieces

    def __len__(self) -> int:
        return len(self.target)

    def take(self, idx) -> "Rows":
        idx = np.asarray(idx, dtype=np.int64)
        return Rows(self.z[idx], self.target[idx], self.ignored[idx], self.pieces[idx],
                    None if self.soft is None else self.soft[idx])

    @staticmethod
    def concat(parts: list["Rows"]) -> "Rows":
        parts = [p for p in parts if len(p)] or parts[:1]
        soft = None if parts[0].soft is None else np.concatenate([p.soft for p in parts])
        return Rows(np.concatenate([p.z for p in parts]), np.concatenate([p.target for p in parts]),
                    np.concatenate([p.ignored for p in parts]), np.concatenate([p.pieces for p in parts]), soft)


def pad_rows(n: int, v: int, soft: bool) -> Rows:
    """Benign rows that fill a batch to its fixed N: zeros, target 0 (loss log V)."""
    z = np.zeros((n, v))
    target = np.zeros(n, dtype=np.int64)
    s = None
    if soft:
        s = np.zeros((n, v))
        s[:, 0] = 1.0
    return Rows(z, target, np.zeros(n, dtype=bool), np.full(n, "pad", dtype=object), s)


# ------------------------------------------------------------------ fresh rows from hypothesis


def hypothesis_pool(fmt, v: int, budget: Budget, seed: int) -> Rows:
    """Row blocks drawn by the hypothesis strategies (`inputs.strategies`), seeded: their
    spreads, transforms and ignored/padding rows, each row tagged with the pieces that
    touched it. Labels: targets as drawn; soft labels are attached per batch."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from harness.inputs import strategies as S

    n_rows = max(4, min(64, budget.block_elements // v))
    blocks: list[Rows] = []

    @hypothesis_seed(seed)
    @settings(max_examples=budget.pool_blocks, phases=[Phase.generate], database=None, deadline=None,
              derandomize=False, print_blob=False, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def draw_block(data):
        target = data.draw(S.targets(n_rows, v))
        base = data.draw(S.base_logits(fmt, n_rows, v))
        z = base.values
        pieces = [list(base.pieces) for _ in range(n_rows)]
        for name in S.TRANSFORMS:
            if data.draw(st.booleans()):
                applied = data.draw(S.TRANSFORM_STRATEGIES[name](fmt, z, target))
                z = applied.values
                for i in np.flatnonzero(applied.rows):
                    pieces[i].append(applied.piece)
        ignored = np.zeros(n_rows, dtype=bool)
        if data.draw(st.booleans()):
            ignored, padding = data.draw(S.ignored_rows(n_rows))
            if padding:
                z = z.copy()
                z[ignored] = -np.inf
            for i in np.flatnonzero(ignored):
                pieces[i].append("ignored.padding" if padding else "ignored")
        blocks.append(Rows(z, target.astype(np.int64), ignored, ["+".join(p) for p in pieces]))

    with S.without_local_constants():
        draw_block()
    return Rows.concat(blocks)


def cached_pool(fmt, v: int, budget: Budget, seed: int) -> Rows:
    """`hypothesis_pool`, kept between runs in a private folder of this user and this CPU
    (`compilecache.private_dir`): drawing the 12 pools of a default run took 1.7 CPU
    seconds, as much as all its numpy adapters' compute, for the very same rows each time.

    The file is named by everything the rows depend on: the arguments, the sources of this
    module and of the strategies, and the versions of hypothesis, numpy and ml_dtypes (the
    folder is per CPU: numpy's exp may round differently on another). It holds plain arrays
    (`np.load` with allow_pickle=False); one that is missing, unreadable or not of the
    expected shapes is drawn again and written anew (atomically: another run may be reading)."""
    from harness.adapters.compilecache import private_dir

    folder = private_dir("search-pools")
    if folder is None:
        return hypothesis_pool(fmt, v, budget, seed)
    key = f"{_sources_digest()} {fmt.name} {v} {budget.pool_blocks} {budget.block_elements} {seed}"
    path = os.path.join(folder, hashlib.sha256(key.encode()).hexdigest()[:24] + ".npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            z, target, ignored, pieces = f["z"], f["target"], f["ignored"], f["pieces"]
        n = len(target)
        if (z.shape == (n, v) and z.dtype == np.float64 and target.dtype == np.int64 and ignored.shape == (n,)
                and ignored.dtype == bool and pieces.shape == (n,) and pieces.dtype.kind == "U" and n
                and ((target >= 0) & (target < v)).all()):
            return Rows(z, target, ignored, pieces.astype(object))
    except Exception:  # missing, torn, not an npz, other arrays: whatever it is, draw them again
        pass
    rows = hypothesis_pool(fmt, v, budget, seed)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")
    except OSError:
        return rows
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, z=rows.z, target=rows.target, ignored=rows.ignored, pieces=rows.pieces.astype(str))
        os.replace(tmp, path)
    except OSError:  # a full disk: the next run draws them again
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return rows


@functools.cache
def _sources_digest() -> str:
    """What the pools' rows depend on beyond `hypothesis_pool`'s arguments: the code that
    draws them and the libraries' versions."""
    from importlib.metadata import version
    from importlib.util import find_spec

    # Named, not imported: a run whose pools are all here never imports hypothesis (0.9 s).
    strategies = find_spec("harness.inputs.strategies").origin
    h = hashlib.sha256()
    for source in (strategies, dtypes.__file__, __file__):
        h.update(Path(source).read_bytes())
    h.update(" ".join(version(p) for p in ("hypothesis", "numpy", "ml_dtypes")).encode())
    return h.hexdigest()


# ------------------------------------------------------------------ mutation

#: Mutations, drawn uniformly: near ties twice as often (the commonest structure that a
#: random row never has and many kernels mishandle).
MUTATIONS = ("scale", "offset", "limits", "tie", "tie", "lead", "lead_pair", "mask", "mask_target", "swap_target",
             "subnormal", "ignore", "spread_max")


def _finish(z: np.ndarray, fmt) -> np.ndarray:
    """Clip finite values to +-max and round to the dtype; -inf masks stay."""
    neg_inf = z == -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.clip(np.nan_to_num(z, nan=0.0, posinf=fmt.max, neginf=-fmt.max), -fmt.max, fmt.max)
    out = dtypes.widen(dtypes.exact(out, fmt.name))
    out[neg_inf] = -np.inf
    return out


def mutate(rows: Rows, rng: np.random.Generator, fmt, allow_ignore: bool, n_children: int) -> Rows:
    """`n_children` children of `rows` (parents picked in turn), one mutation each, a second
    for 40% of them. Vectorised: the children that drew the same mutation get it at once
    (the search makes thousands of rows per batch; a Python loop per row would cost more
    than the adapters)."""
    if not len(rows) or n_children <= 0:
        return rows.take([])
    kids = rows.take(np.arange(n_children) % len(rows))
    z, target, ignored = kids.z.copy(), kids.target.copy(), kids.ignored.copy()
    soft = None if kids.soft is None else kids.soft.copy()
    done = np.full((2, n_children), -1)  # each round's mutation (its index in MUTATIONS), -1: none
    for round_ in range(2):
        chosen = rng.integers(len(MUTATIONS), size=n_children)
        active = np.ones(n_children, bool) if round_ == 0 else rng.random(n_children) < 0.4
        for k, name in enumerate(MUTATIONS):
            sel = np.flatnonzero(active & (chosen == k))
            if sel.size and (name != "ignore" or allow_ignore):
                with np.errstate(over="ignore", invalid="ignore"):  # float64 rows near max: clamped below
                    soft = _MUTATORS[name](z, target, ignored, soft, sel, rng, fmt)
                done[round_, sel] = k
        _clamp(z, fmt)
    names = kids.pieces + _MUTATION_SUFFIXES[done[0] + 1, done[1] + 1]  # "<pieces>+mut.<first>[.<second>]"
    z = _finish(z, fmt)  # rounded to the dtype once, every row at a time
    dead = ~ignored & ~np.isfinite(z).any(axis=1)
    z[dead, target[dead]] = 0.0  # a valid row keeps a live class
    return Rows(z, target, ignored, names, soft)


def _mutation_suffixes() -> np.ndarray:
    """[first + 1, second + 1] -> what `mutate` appends to a row's pieces for the mutations
    it got (indices into MUTATIONS, -1 for none): "+mut.<first>[.<second>]", or ""."""
    names = [None, *MUTATIONS]
    out = np.empty((len(names), len(names)), dtype=object)
    for i, first in enumerate(names):
        for j, second in enumerate(names):
            done = [n for n in (first, second) if n is not None]
            out[i, j] = "+" + ".".join(["mut", *done]) if done else ""
    return out


def _clamp(z: np.ndarray, fmt) -> None:
    """In place: NaN to 0, +inf and finite values past max to +-max; -inf masks stay."""
    z[np.isnan(z)] = 0.0
    z[z == np.inf] = fmt.max
    with np.errstate(invalid="ignore"):
        z[(z < -fmt.max) & np.isfinite(z)] = -fmt.max
        z[z > fmt.max] = fmt.max


def _row_max(z: np.ndarray) -> np.ndarray:
    """Largest finite logit per row (0 for a row with none)."""
    finite = np.isfinite(z)
    m = np.where(finite, z, -np.inf).max(axis=1)
    return np.where(np.isfinite(m), m, 0.0)


def _cols(rng, sel, v: int, k: int = 1) -> np.ndarray:
    """k random columns for each selected row: (len(sel), k)."""
    return rng.integers(0, v, size=(sel.size, k))


def _set(z, sel, cols, values) -> None:
    r = np.repeat(sel[:, None], cols.shape[1], axis=1)
    z[r, cols] = values


def _m_scale(z, target, ignored, soft, sel, rng, fmt):
    m = _row_max(z[sel])[:, None]
    factor = rng.choice([2.0, 4.0, 0.5, 16.0, 1024.0, 2.0**-8, 2.0**20, 2.0**40], size=(sel.size, 1))
    block = z[sel]
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = m + (block - m) * factor
    z[sel] = np.where(np.isfinite(block), scaled, block)
    return soft


def _m_offset(z, target, ignored, soft, sel, rng, fmt):
    mags = np.array([fmt.exp_overflow, -fmt.exp_underflow, math.sqrt(fmt.max), fmt.max / 4, fmt.max / 2])
    shift = np.where(rng.random(sel.size) < 0.7, rng.choice(mags, sel.size),
                     10.0 ** rng.uniform(-3, math.log10(fmt.max), sel.size)) * rng.choice([-1.0, 1.0], sel.size)
    block = z[sel]
    with np.errstate(over="ignore", invalid="ignore"):
        z[sel] = np.where(np.isfinite(block), block + shift[:, None], block)
    return soft


def _m_limits(z, target, ignored, soft, sel, rng, fmt):
    cols = _cols(rng, sel, z.shape[1], 2)
    one = rng.random(sel.size) < 0.5  # one column, or two
    cols[one, 1] = cols[one, 0]
    signs = rng.choice([-1.0, 1.0], size=cols.shape)
    values = signs * dtypes.step(np.full(cols.shape, fmt.max), -rng.integers(0, 4, cols.shape), fmt)
    _set(z, sel, cols, values)
    return soft


def _m_spread_max(z, target, ignored, soft, sel, rng, fmt):
    """The max and the min apart by more than the dtype's max: z - max z overflows."""
    v = z.shape[1]
    a = rng.integers(0, v, sel.size)
    b = (a + 1 + rng.integers(0, max(v - 1, 1), sel.size)) % v
    big = fmt.max * rng.uniform(0.5, 1.0, (sel.size, 2))
    z[sel, a] = big[:, 0]
    z[sel, b] = -big[:, 1]
    return soft


def _tied_values(m, rng, fmt):
    """Values 0-3 ulps below m, or below it by a gap from 2**-24 to 2**-4 (relative past 1)."""
    ulps = dtypes.step(m, -rng.integers(0, 4, m.shape), fmt)
    gap = m - 2.0 ** rng.uniform(-24, -4, m.shape) * np.maximum(1.0, np.abs(m))
    return np.where(rng.random(m.shape) < 0.5, ulps, gap)


def _m_tie(z, target, ignored, soft, sel, rng, fmt):
    """One column (60%) or up to four tied with the row's max (the target among them 30%)."""
    v = z.shape[1]
    if v < 2:
        return soft
    block = z[sel]
    m = _row_max(block)
    a = np.where(np.isfinite(block), block, -np.inf).argmax(axis=1)
    k = np.where(rng.random(sel.size) < 0.6, 1, rng.integers(2, 5, sel.size))
    cols = (a[:, None] + 1 + rng.integers(0, v - 1, (sel.size, 4))) % v
    use_t = (rng.random(sel.size) < 0.3) & (target[sel] != a)
    cols[use_t, 0] = target[sel][use_t]
    values = _tied_values(np.repeat(m[:, None], 4, axis=1), rng, fmt)
    keep = np.arange(4)[None, :] < k[:, None]
    r = np.repeat(sel[:, None], 4, axis=1)
    z[r[keep], cols[keep]] = values[keep]
    return soft


def _lead(z, target, sel, rng, fmt, pair: bool):
    """One class (the target, the max or any) leads the rest by a gap; with `pair`, a
    second one nearly tied with it (a confident two-way prediction)."""
    v = z.shape[1]
    block = z[sel]
    m = _row_max(block)
    choice = rng.integers(0, 3, sel.size)
    c = np.where(choice == 0, target[sel], np.where(choice == 1, np.where(np.isfinite(block), block, -np.inf).argmax(axis=1),
                                                     rng.integers(0, v, sel.size)))
    lead = np.minimum(fmt.max, m + 2.0 ** rng.uniform(-4, 7, sel.size) * np.maximum(1.0, np.abs(m) * 2.0**-8))
    z[sel, c] = lead
    if pair and v > 1:
        d = (c + 1 + rng.integers(0, v - 1, sel.size)) % v
        z[sel, d] = _tied_values(lead, rng, fmt)


def _m_lead(z, target, ignored, soft, sel, rng, fmt):
    _lead(z, target, sel, rng, fmt, pair=False)
    return soft


def _m_lead_pair(z, target, ignored, soft, sel, rng, fmt):
    _lead(z, target, sel, rng, fmt, pair=True)
    return soft


def _m_mask(z, target, ignored, soft, sel, rng, fmt):
    """-inf on a fraction (5%, 50% or all) of the non-target classes."""
    frac = rng.choice([0.05, 0.5, 1.0], size=(sel.size, 1))
    mask = rng.random((sel.size, z.shape[1])) < frac
    mask[np.arange(sel.size), target[sel]] = False
    block = z[sel]
    block[mask] = -np.inf
    z[sel] = block
    return soft


def _m_mask_target(z, target, ignored, soft, sel, rng, fmt):
    z[sel, target[sel]] = -np.inf
    return soft


def _m_swap_target(z, target, ignored, soft, sel, rng, fmt):
    """The target moved to the row's max, its min, or anywhere (soft labels move with it)."""
    block = np.where(np.isfinite(z[sel]), z[sel], np.nan)
    choice = rng.integers(0, 3, sel.size)
    with np.errstate(invalid="ignore"):
        hi = np.nan_to_num(block, nan=-np.inf).argmax(axis=1)
        lo = np.nan_to_num(block, nan=np.inf).argmin(axis=1)
    new = np.where(choice == 0, hi, np.where(choice == 1, lo, rng.integers(0, z.shape[1], sel.size)))
    if soft is not None:
        old = target[sel]
        a, b = soft[sel, old].copy(), soft[sel, new].copy()
        soft[sel, new], soft[sel, old] = a, b
    target[sel] = new
    return soft


def _m_subnormal(z, target, ignored, soft, sel, rng, fmt):
    cols = _cols(rng, sel, z.shape[1], 2)
    values = rng.choice([-1.0, 1.0], cols.shape) * rng.integers(1, 2**fmt.mantissa_bits, cols.shape) * fmt.smallest_subnormal
    _set(z, sel, cols, values)
    return soft


def _m_ignore(z, target, ignored, soft, sel, rng, fmt):
    """Flip ignored; half the newly ignored rows become all -inf padding."""
    ignored[sel] = ~ignored[sel]
    pad = sel[ignored[sel] & (rng.random(sel.size) < 0.5)]
    z[pad] = -np.inf
    return soft


_MUTATORS = {
    "scale": _m_scale, "offset": _m_offset, "limits": _m_limits, "tie": _m_tie, "lead": _m_lead,
    "lead_pair": _m_lead_pair, "mask": _m_mask, "mask_target": _m_mask_target, "swap_target": _m_swap_target,
    "subnormal": _m_subnormal, "ignore": _m_ignore, "spread_max": _m_spread_max,
}
_MUTATION_SUFFIXES = _mutation_suffixes()


# ------------------------------------------------------------------ judging rows


def features(z: np.ndarray, target: np.ndarray, ignored: np.ndarray, fmt) -> list[str]:
    """What each row of z (n, V) is, read from its values (the third part of a failure kind):
    the first that applies of padding, ignored, masked target, spread beyond max (z - max z
    overflows), near +-max, a near tie at the top, an offset past exp's overflow,
    subnormals, other -inf masks, a spread past exp's underflow, or plain. Every row at once
    (`_absorb` reads the ~20 worst rows of every adapter of every batch, those not read for
    an earlier adapter of the batch: `kinds_of`; one call a row cost 15 us each);
    tests/test_rowsearch.py holds the same tests written for one row."""
    n = len(z)
    if n == 0:
        return []
    rows = np.arange(n)
    finite = np.isfinite(z)
    any_finite = finite.any(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        m = np.where(finite, z, -np.inf).max(axis=1)
        lo = np.where(finite, z, np.inf).min(axis=1)
        spread = m - lo
        big = np.where(finite, np.abs(z), 0.0).max(axis=1)
        if z.shape[1] >= 2:
            top2 = np.partition(np.where(finite, z, -np.inf), -2, axis=1)[:, -2:]
            gap = top2[:, 1] - top2[:, 0]
            near_tie = (finite.sum(axis=1) >= 2) & (gap <= 2.0**-10 * np.maximum(1.0, np.abs(top2[:, 1])))
        else:
            near_tie = np.zeros(n, bool)
        subnormal = (finite & (z != 0) & (np.abs(z) < 2.0**fmt.min_exponent)).any(axis=1)
    conditions = [
        (ignored & ~any_finite, "ignored.padding"),
        (ignored, "ignored"),
        (z[rows, target] == -np.inf, "mask.target"),
        (spread > fmt.max, "spread_overflow"),
        (big >= fmt.max / 2, "near_max"),
        (near_tie, "near_tie"),
        (np.abs(m) > fmt.exp_overflow, "large_offset"),
        (subnormal, "subnormal"),
        (~finite.all(axis=1), "mask"),
        (spread > -fmt.exp_underflow, "exp_range"),
    ]
    return [str(f) for f in np.select([c for c, _ in conditions], [name for _, name in conditions], "plain")]


@dataclass
class RowVerdicts:
    """Per-row outcome of one adapter on one batch."""

    score: np.ndarray  # (N,) BROKEN for non-finite; the largest tolerance ratio; -1 undefined
    nonfinite: np.ndarray  # (N,) bool
    loss_worse: np.ndarray  # (N,) bool: the loss is the worse quantity

    @classmethod
    def empty(cls, n: int) -> "RowVerdicts":
        return cls(np.empty(n), np.empty(n, bool), np.empty(n, bool))


def judge_rows(ref: reference.Reference, loss, grad, dtype: str) -> RowVerdicts | None:
    """Every row's score against the batch's reference; None when the output shapes are wrong.
    Once per distinct answer (`metrics.once_per_answer`): adapters of a batch that return the
    same bits share the verdicts."""
    if np.shape(loss) != ref.loss.shape or np.shape(grad) != ref.grad.shape:
        return None
    return metrics.once_per_answer(ref, ("rows", dtype), loss, grad, lambda lo, gr: _judge_rows(ref, lo, gr, dtype))


def _judge_rows(ref: reference.Reference, loss, grad, dtype: str) -> RowVerdicts:
    lt, gt = metrics.terms_for(ref, "loss", dtype, textbook=True), metrics.terms_for(ref, "grad", dtype, textbook=True)
    kernels = fused.kernels()
    if kernels is None:
        return _scores_numpy(lt, gt, loss, grad, ref.defined, dtype)
    if lt.hi is not None and gt.hi is not None:  # the same numbers in one pass
        return _scores_fused(kernels, lt, gt, loss, grad, ref.defined, dtype)
    # An extended-precision truth (float64 batches) that some rows cannot hold as float64
    # pieces (a loss past float64's range, a rest below its smallest subnormal): those rows
    # in numpy at the truth's precision, the others as a splittable batch's rows are.
    split = split_rows(ref, dtype)
    out = RowVerdicts.empty(len(ref.defined))
    loss, grad = np.asarray(loss), np.asarray(grad)
    for ids, (lt_part, gt_part), judge in ((split.pieces, split.pieces_terms, functools.partial(_scores_fused, kernels)),
                                           (split.rest, split.rest_terms, _scores_numpy)):
        if ids.size:
            part = judge(lt_part, gt_part, loss[ids], grad[ids], ref.defined[ids], dtype)
            out.score[ids], out.nonfinite[ids], out.loss_worse[ids] = part.score, part.nonfinite, part.loss_worse
    return out


def _scores_fused(kernels, lt, gt, loss, grad, defined, dtype: str) -> RowVerdicts:
    """Every row's verdict in one compiled pass (`fused_kernels.row_scores`), for float64 terms."""
    out = RowVerdicts.empty(len(defined))
    kernels.row_scores(fused.flat(loss), *fused.terms_args(lt, attainable=False), fused.flat(grad),
                       *fused.terms_args(gt, attainable=False), fused.special_rows(gt),
                       tolerances.get(dtype).allow_flush_to_zero, np.ascontiguousarray(defined), BROKEN, out.score,
                       out.nonfinite, out.loss_worse)
    return out


def _scores_numpy(lt, gt, loss, grad, defined, dtype: str) -> RowVerdicts:
    """Every row's verdict by `metrics.element_errors` (the definition)."""
    le = metrics.element_errors(np.asarray(loss), None, None, dtype, terms=lt)
    ge = metrics.element_errors(np.asarray(grad), None, None, dtype, terms=gt)
    lr = np.nan_to_num(le.ratio, nan=np.inf)
    gr = np.nan_to_num(ge.ratio, nan=np.inf).max(axis=1, initial=0.0)
    nonfinite = le.nonfinite | ge.nonfinite.any(axis=1)
    score = np.maximum(lr, gr)
    score = np.where(nonfinite | ~np.isfinite(score), BROKEN, np.minimum(score, BROKEN / 2))
    score = np.where(defined, score, -1.0)
    return RowVerdicts(score, nonfinite & defined, (lr >= gr) | le.nonfinite)


@dataclass(frozen=True)
class SplitRows:
    """The rows of an extended-precision truth that float64 pieces hold exactly (`pieces`)
    and the others (`rest`), each with its (loss, gradient) truth terms for the score."""

    pieces: np.ndarray
    pieces_terms: tuple
    rest: np.ndarray
    rest_terms: tuple


def split_rows(ref: reference.Reference, dtype: str) -> SplitRows:
    """`SplitRows` of a batch's reference, made once and kept on it for every adapter."""
    key = ("split rows", dtype)
    if key not in ref.memo:
        exact = metrics.exactly_split(ref.grad).all(axis=1) & metrics.exactly_split(ref.loss)
        parts = []
        for ids in (np.flatnonzero(exact), np.flatnonzero(~exact)):
            parts += [ids, tuple(metrics.truth_terms(getattr(ref, name)[ids], getattr(ref, name + "_scale")[ids], dtype)
                                 for name in ("loss", "grad"))]
        ref.memo[key] = SplitRows(*parts)
    return ref.memo[key]


def kinds_of(verdicts: RowVerdicts, idx: np.ndarray, rows: Rows, fmt, known: np.ndarray | None = None) -> list[str]:
    """status/quantity/feature of rows `idx`: their failure kinds. `known` (optional, one
    per row of `rows`, None where not yet read) keeps the features read so far: a batch's
    worst rows are mostly the same rows for each of its adapters."""
    idx = np.asarray(idx, dtype=np.int64)
    score = verdicts.score[idx]
    status = np.where(verdicts.nonfinite[idx], "nonfinite", np.where(score > 1, "inaccurate", "ok"))
    quantity = np.where(verdicts.loss_worse[idx], "loss", "grad")
    if known is None:
        feats = features(rows.z[idx], rows.target[idx], rows.ignored[idx], fmt)
    else:
        new = idx[np.equal(known[idx], None)]
        if new.size:
            known[new] = features(rows.z[new], rows.target[new], rows.ignored[new], fmt)
        feats = known[idx]
    return [f"{s}/{q}/{f}" for s, q, f in zip(status, quantity, feats)]


# ------------------------------------------------------------------ the search


@dataclass
class Winner:
    """The worst row of one failure kind for one adapter x dtype, with its batch's setting."""

    kind: str
    score: float
    rows: Rows  # one row; or, for a whole batch that broke, the batch's rows
    v: int
    label_kind: str
    smoothing: float
    status: str = ""  # the attempt status when a whole batch broke (error, crash, timeout)
    message: str = ""


@dataclass
class Batch:
    """One batch of the search: its rows (pad rows after the first n_real) and setting."""

    rows: Rows
    n_real: int
    fmt: dtypes.FloatFormat
    v: int
    kind: str
    eps: float
    fam: str  # "ignore" or "plain"
    case: Case
    features: np.ndarray = field(init=False, repr=False)  # (n,) object: each row's `features`, None until read (`kinds_of`)

    def __post_init__(self):
        self.features = np.full(len(self.rows), None, dtype=object)


@dataclass
class PairState:
    """What the search knows about one adapter x dtype."""

    winners: dict[str, Winner] = field(default_factory=dict)
    elite: dict[tuple[int, str], tuple[np.ndarray, Rows]] = field(default_factory=dict)  # (V, kind) -> scores, rows
    rows_evaluated: int = 0
    calls: int = 0


@dataclass
class Finding:
    adapter: str
    dtype: str
    kind: str
    score: float
    case: Case
    row: dict
    path: Path | None = None


#: Threads of the parent that compute the search's references and judge its batches, while
#: the main thread makes the next batches and folds verdicts in: one thread judging left the
#: workers waiting for it (a quarter of a deep search's cores idle).
JUDGES = 2
#: Batches with the workers beyond the one being judged: the workers compute the next
#: batches while this process computes a batch's reference and judges it. Batch i of a
#: dtype is made from what the search knew after judging its batches up to i - LAG - 1,
#: whatever the executor (one that cannot compute ahead computes it at once), so the search
#: is the same locally, in lanes and on a Ray cluster (one dtype per unit).
LAG = 3


class _Computed:
    """The answers of an executor that has no lanes, computed when asked (`RowSearch.submit`)."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def result(self) -> list:
        return self.pairs


class RowSearch:
    """One search over adapters x dtypes. `evaluate(case, adapters) -> [(adapter, Attempt)]`
    runs adapters (isolated, frameworks in parallel); `submit(case, adapters)`, where the
    executor has lanes, hands them a batch and returns at once (`.result()` waits for the
    same pairs); `phases` (optional) records where the time went."""

    def __init__(self, adapter_list, dtype_names, budget: Budget, evaluate, seed: int = 0, device: str = "cpu",
                 label_kinds=None, phases=None, submit=None, group=None):
        self.adapters = [a for a in adapter_list if device in a.devices]
        self.dtypes = [d for d in dtype_names if any(d in a.dtypes for a in self.adapters)]
        self.budget, self.evaluate, self.seed, self.device = budget, evaluate, seed, device
        self.submit = submit or (lambda case, adapters: _Computed(self.evaluate(case, adapters)))
        self.group = group or (lambda adapter_id, dtype: adapter_id)  # (adapter id, dtype) -> the worker that runs it
        self.kinds = tuple(k for k in LABEL_KINDS if not label_kinds or k in label_kinds)
        self.phases = phases
        self.state: dict[tuple[str, str], PairState] = {}
        self.plain_only: set[tuple[str, str, str]] = set()  # (adapter, dtype, kind): refused ignored rows
        self.dead: set[tuple[str, str, str]] = set()  # (adapter, dtype, kind): unsupported
        self.batches = 0
        self._lock = threading.Lock()
        self._helpers: ThreadPoolExecutor | None = None  # the judging threads, while `run` runs
        self._pools: dict[tuple[str, int], Rows] = {}  # (dtype, V) -> hypothesis rows

    # -- bookkeeping

    def _timed(self, name):
        return self.phases.timed(name) if self.phases is not None else contextlib.nullcontext()

    def pair(self, adapter_id: str, dtype: str) -> PairState:
        return self.state.setdefault((adapter_id, dtype), PairState())

    def _rng(self, *key) -> np.random.Generator:
        words = [self.seed] + [zlib.crc32(str(k).encode()) for k in key]
        return np.random.default_rng(words)

    def family(self, adapter, dtype: str, kind: str) -> str | None:
        """Which batch family an adapter sees for (dtype, kind): "ignore", "plain" or None."""
        if dtype not in adapter.dtypes or kind not in adapter.label_kinds or (adapter.id, dtype, kind) in self.dead:
            return None
        if adapter.supports_ignore and (adapter.id, dtype, kind) not in self.plain_only:
            return "ignore"
        return "plain"

    # -- batches

    def make_case(self, rows: Rows, dtype: str, kind: str, eps: float, tag: str) -> Case:
        fmt = dtypes.get(dtype)
        exact = dtypes.exact(rows.z, fmt.name)
        soft = rows.soft if kind == "soft" else None
        ignored = rows.ignored.copy() if rows.ignored.any() else None
        crc = zlib.crc32(np.ascontiguousarray(exact).tobytes())
        for part in (rows.target, soft, ignored, np.float64(eps)):
            if part is not None:
                crc = zlib.crc32(np.ascontiguousarray(part).tobytes(), crc)
        n, v = rows.z.shape
        return Case(case_id=f"search/{dtype}/{n}x{v}/{kind}/{crc:08x}", regime=tag, dtype=dtype, logits=exact,
                    target=rows.target.astype(np.int64), label_kind=kind, soft_labels=soft,
                    smoothing=eps if kind == "smoothing" else 0.0, ignored=ignored, seed=0, source="search")

    def with_labels(self, rows: Rows, kind: str, rng) -> Rows:
        """Rows with soft labels where the kind needs them (kept if a parent had them)."""
        if kind != "soft" or rows.soft is not None:
            return rows
        n, v = rows.z.shape
        support = int(rng.integers(1, min(8, v) + 1))
        return replace(rows, soft=dyadic_soft_labels_rows(rng, n, v, rows.target, support=support))

    def run_batch(self, rows: Rows, n_real: int, dtype: str, kind: str, eps: float, adapters) -> list:
        """Evaluate a padded batch on `adapters`; returns [(adapter, attempt, verdicts)], the
        verdicts of the n_real real rows only. The reference and the judging are of those
        rows alone (rows are independent): a shrinking step's 64 candidates are padded to
        the batch's 128-1024 rows for the adapters' compiled shapes, not for the truth."""
        case = self.make_case(rows, dtype, kind, eps, "search:batch")
        real = case if n_real == len(rows) else self.make_case(rows.take(np.arange(n_real)), dtype, kind, eps,
                                                                "search:batch")
        with self._timed("reference"):
            ref = reference.loss_and_grad(real, attainable=False)
        return self.judge_batch(case, n_real, _Computed(self.evaluate(case, adapters)), ref)

    def judge_batch(self, case: Case, n_real: int, answers, ref) -> list:
        """[(adapter, attempt, verdicts)] of a batch whose `answers` the workers give, against
        `ref`, its reference (of all its rows, or of the n_real real ones: `run_batch`)."""
        t0 = time.perf_counter()
        attempts = answers.result()
        if self.phases is not None:
            self.phases.add("dispatch", time.perf_counter() - t0)
        with self._lock:  # findings' threads judge batches at once
            self.batches += 1
        helpers = self._helpers
        if helpers is None:
            return [self._judge_one(ref, case.dtype, len(case.target), n_real, adapter, attempt)
                    for adapter, attempt in attempts]
        futures = [helpers.submit(self._judge_one, ref, case.dtype, len(case.target), n_real, adapter, attempt, beside=True)
                   for adapter, attempt in attempts]
        with self._timed("waiting"):  # on the judging threads
            return [future.result() for future in futures]

    def _judge_one(self, ref, dtype: str, n_rows: int, n_real: int, adapter, attempt, beside: bool = False):
        """(adapter, attempt, verdicts): one adapter's rows scored against the batch's reference
        (of its n_rows rows, or of the n_real real ones)."""
        with self._beside(beside), self._timed("metrics"):
            verdicts = None
            if attempt.status == "ran":
                loss, grad = attempt.output.loss, attempt.output.grad
                if len(ref.defined) < n_rows:  # the reference of the real rows alone (`run_batch`)
                    whole = np.shape(loss) == (n_rows,) and np.shape(grad)[:1] == (n_rows,)
                    loss, grad = (loss[:n_real], grad[:n_real]) if whole else (None, None)  # None: wrong shapes
                verdicts = judge_rows(ref, loss, grad, dtype)
                if verdicts is not None:
                    verdicts.score[n_real:] = -1.0  # pad rows: dropped
            return adapter, attempt, verdicts

    def _beside(self, beside: bool = True):
        return self.phases.beside() if beside and self.phases is not None else contextlib.nullcontext()

    def _reference(self, case: Case):
        """A batch's reference, with the truth-only terms its adapters' scores share (made
        here once, not by two judging threads at the same time)."""
        with self._beside(), self._timed("reference"):
            ref = reference.loss_and_grad(case, attainable=False)
        with self._beside(), self._timed("metrics"):
            terms = [metrics.terms_for(ref, name, case.dtype, textbook=True) for name in ("loss", "grad")]
            if fused.kernels() is not None and any(t.hi is None for t in terms):
                split_rows(ref, case.dtype)
        return ref

    # -- the loop

    def run(self) -> None:
        """Every generation's batches, LAG of each dtype's with the workers at once; JUDGES
        threads compute their references and judge them while this one makes the next
        batches and folds in the verdicts (each dtype's in its batch order: the search is a
        serial one's)."""
        with ThreadPoolExecutor(max_workers=JUDGES, thread_name_prefix="cestab-search-judge") as helpers:
            self._helpers = helpers
            try:
                self._run()
            finally:
                self._helpers = None

    def _run(self) -> None:
        # A dtype's batches are made from its own pairs' state only, so the dtypes take
        # turns, batch by batch, each with LAG batches of its own with the workers: a
        # framework whose dtypes have workers of their own (`Framework.worker_shards`)
        # computes two dtypes' batches at once. Dtype after dtype, one torch worker at a
        # time compiled the search's shapes while the other frameworks waited for it (68 of
        # a search's 96 s). Each dtype's batches, and what they are made from, are the same
        # in either order.
        asked = {dtype: collections.deque() for dtype in self.dtypes}  # (batch, its reference's future, answers)
        fmts = {dtype: dtypes.get(dtype) for dtype in self.dtypes}
        for g in range(self.budget.generations):
            eps = self.budget.smoothings[g % len(self.budget.smoothings)]
            for v in self.budget.classes:
                for kind in self.kinds:
                    for fam in ("ignore", "plain"):
                        for dtype, fmt in fmts.items():
                            adapters = [a for a in self.adapters if self.family(a, dtype, kind) == fam]
                            if adapters:
                                batch = self._batch(g, fmt, v, kind, eps, fam, adapters, self._pool(fmt, v))
                                ref = self._helpers.submit(self._reference, batch.case)
                                asked[dtype].append((batch, ref, self.submit(batch.case, adapters)))
                            while len(asked[dtype]) > LAG:
                                self._absorb_batch(*asked[dtype].popleft())
        for dtype in self.dtypes:
            while asked[dtype]:
                self._absorb_batch(*asked[dtype].popleft())

    def _pool(self, fmt, v: int) -> Rows:
        """The hypothesis rows of one dtype x V, drawn once (the first batch that needs them)."""
        key = (fmt.name, v)
        if key not in self._pools:
            with self._timed("generation"):
                self._pools[key] = cached_pool(fmt, v, self.budget, self.seed + zlib.crc32(f"{fmt.name}/{v}".encode()))
        return self._pools[key]

    def _batch(self, g, fmt, v, kind, eps, fam, adapters, pool: Rows) -> "Batch":
        """One generation's padded batch of rows for (dtype, V, kind, family): fresh rows
        from the pool and children of the worst rows its adapters have shown so far."""
        dtype = fmt.name
        n = self.budget.rows(v)
        rng = self._rng("gen", g, dtype, v, kind, fam)
        with self._timed("generation"):
            parents = []
            for a in adapters:
                st = self.pair(a.id, dtype)
                if (v, kind) in st.elite:
                    parents.append(st.elite[(v, kind)][1])
                    for w in st.winners.values():
                        if w.v == v and w.label_kind == kind and len(w.rows) == 1:
                            parents.append(w.rows)
            allow_ignore = fam == "ignore"
            parts = []
            if parents:
                par = Rows.concat(parents)
                par = self.with_labels(par, kind, rng)
                parts.append(mutate(par, rng, fmt, allow_ignore, n // 2))
            fresh_n = n - sum(len(p) for p in parts)
            pick = rng.integers(0, len(pool), fresh_n)
            fresh = pool.take(pick)
            if not allow_ignore:
                keep = ~fresh.ignored
                fresh = fresh.take(np.flatnonzero(keep))
            fresh = self.with_labels(fresh, kind, rng)
            half = len(fresh) // 2  # half as drawn, half mutated once
            parts.append(fresh.take(np.arange(half)))
            parts.append(mutate(fresh.take(np.arange(half, len(fresh))), rng, fmt, allow_ignore, len(fresh) - half))
            rows = Rows.concat([self.with_labels(p, kind, rng) for p in parts])
            rows = self._valid(rows, allow_ignore)
            n_real = len(rows)
            if n_real < n:
                rows = Rows.concat([rows, pad_rows(n - n_real, v, rows.soft is not None)])
            case = self.make_case(rows, dtype, kind, eps, "search:batch")
        return Batch(rows, n_real, fmt, v, kind, eps, fam, case)

    def _absorb_batch(self, batch: "Batch", ref, answers) -> None:
        """Judge a batch's answers against its reference (a judging thread's future) and
        fold each adapter's rows into its pair's state."""
        with self._timed("waiting"):  # on the judging thread computing the reference
            ref = ref.result()
        for adapter, attempt, verdicts in self.judge_batch(batch.case, batch.n_real, answers, ref):
            st = self.pair(adapter.id, batch.fmt.name)
            st.calls += 1
            self._absorb(adapter, st, attempt, verdicts, batch)

    def _valid(self, rows: Rows, allow_ignore: bool) -> Rows:
        """No row without a finite logit unless ignored; no ignored rows in a plain batch."""
        if not allow_ignore:
            rows.ignored[:] = False
        dead = ~np.isfinite(rows.z).any(axis=1) & ~rows.ignored
        rows.z[dead, rows.target[dead]] = 0.0
        return rows

    def _absorb(self, adapter, st: PairState, attempt, verdicts, batch: Batch) -> None:
        rows, n_real, fmt, v, kind, eps, fam = batch.rows, batch.n_real, batch.fmt, batch.v, batch.kind, batch.eps, batch.fam
        dtype = fmt.name
        if attempt.status == "unsupported":
            if fam == "ignore":
                self.plain_only.add((adapter.id, dtype, kind))
            else:
                self.dead.add((adapter.id, dtype, kind))
            return
        if verdicts is None:  # the whole batch raised, crashed, hung, or gave wrong shapes
            status = attempt.status if attempt.status != "ran" else "error"
            key = f"{status}/batch/{v}.{kind}"
            if key not in st.winners:
                message = attempt.message or "output shapes differ from the input's"
                st.winners[key] = Winner(key, BROKEN, rows.take(np.arange(n_real)), v, kind, eps, status, message)
            return
        st.rows_evaluated += n_real
        with self._timed("metrics"):
            scores = verdicts.score[:n_real]
            order = np.argsort(-scores, kind="stable")
            head = order[: 4 * self.budget.findings + 8]
            head = head[scores[head] > 0]
            for i, key in zip(head, kinds_of(verdicts, head, rows, fmt, batch.features)):
                s = float(scores[i])
                if not key.startswith("ok/") or not st.winners:
                    old = st.winners.get(key)
                    if old is None or s > old.score:
                        st.winners[key] = Winner(key, s, rows.take([i]), v, kind, eps)
            top = order[: self.budget.parents]
            prev = st.elite.get((v, kind))
            cand_scores, cand_rows = scores[top], rows.take(top)
            if prev is not None:
                cand_scores = np.concatenate([prev[0], cand_scores])
                cand_rows = Rows.concat([prev[1], cand_rows])
            best = np.argsort(-cand_scores, kind="stable")[: self.budget.parents]
            st.elite[(v, kind)] = (cand_scores[best], cand_rows.take(best))

    # -- findings

    def ranked(self, st: PairState) -> list[Winner]:
        """The winners to report: failure kinds (worst first), else the best row seen."""
        failing = [w for w in st.winners.values() if not w.kind.startswith("ok/")]
        pool = failing or list(st.winners.values())
        return sorted(pool, key=lambda w: (-w.score, w.kind))[: self.budget.findings]

    def still(self, adapter, dtype: str, w: Winner, rows: Rows, v: int, threshold: float) -> tuple[float, Rows] | None:
        """Evaluate candidate rows (padded to the batch shape of v) on one adapter; the best
        one that keeps the winner's failure kind at or above `threshold`."""
        fmt = dtypes.get(dtype)
        n = self.budget.rows(v)
        rows = rows.take(np.arange(min(len(rows), n)))
        n_real = len(rows)
        if n_real < n:
            rows = Rows.concat([rows, pad_rows(n - n_real, v, rows.soft is not None)])
        [(_, attempt, verdicts)] = self.run_batch(rows, n_real, dtype, w.label_kind, w.smoothing, [adapter])
        if verdicts is None:
            return None
        best = None
        above = np.flatnonzero(verdicts.score[:n_real] >= threshold)
        for i, kind in zip(above, kinds_of(verdicts, above, rows, fmt)):
            s = float(verdicts.score[i])
            if kind == w.kind and (best is None or s > best[0]):
                best = (s, rows.take([i]))
        return best

    def shrink(self, adapter, dtype: str, w: Winner) -> Winner:
        """Fewer classes, then simpler values, keeping the failure kind (delta debugging,
        each step one padded batch of candidate rows); a broken batch is bisected first."""
        fmt = dtypes.get(dtype)
        calls = self.budget.shrink_calls
        if w.status:  # a whole batch broke: bisect with pad rows (the batch shape stays)
            return self._bisect(adapter, dtype, w, calls)
        threshold = w.score / 2 if w.score < BROKEN else BROKEN
        rng = self._rng("shrink", adapter.id, dtype, w.kind)
        for v2 in sorted(c for c in self.budget.classes if c < w.v):
            if calls <= 0:
                break
            cands = fewer_classes(w.rows, v2, rng, min(self.budget.rows(v2), 64))
            calls -= 1
            got = self.still(adapter, dtype, w, cands, v2, threshold)
            if got is not None:
                w = replace(w, score=got[0], rows=got[1], v=v2)
                break
        if calls > 0:
            got = self.still(adapter, dtype, w, simpler_values(w.rows, fmt, rng, min(self.budget.rows(w.v), 64)), w.v, threshold)
            if got is not None and simplicity(got[1], fmt) < simplicity(w.rows, fmt):
                w = replace(w, score=got[0], rows=got[1])
        return w

    def _bisect(self, adapter, dtype: str, w: Winner, calls: int) -> Winner:
        rows = w.rows
        n = self.budget.rows(w.v)
        while len(rows) > 1 and calls > 0:
            half = rows.take(np.arange(len(rows) // 2))
            padded = Rows.concat([half, pad_rows(n - len(half), w.v, half.soft is not None)])
            [(_, attempt, verdicts)] = self.run_batch(padded, len(half), dtype, w.label_kind, w.smoothing, [adapter])
            calls -= 1
            if attempt.status == w.status:
                rows = half
            else:
                rows = rows.take(np.arange(len(rows) // 2, len(rows)))
        return replace(w, rows=rows)

    def findings(self, run_case, skip=frozenset(), apart: bool = False) -> list[Finding]:
        """Shrink each pair's winners and run each on its own (`run_case(case, adapter) ->
        results row`); the worst first per adapter x dtype, pairs in sorted order. `skip`:
        (adapter, dtype) pairs already reported (a resumed run). `apart`: the executor's
        workers are processes of their own that it lets compute `--jobs` at a time
        (`ParallelPool`); then each worker's pairs (`group`) are shrunk in a thread of their
        own, in order, so every worker sees the calls of a serial run. (An in-process executor
        would run two frameworks in one process at once.)"""
        pairs = [(key, st) for key, st in sorted(self.state.items()) if key not in skip]
        if not apart:
            return [f for key, st in pairs for f in self._pair_findings(key, st, run_case)]
        groups: dict[str, list] = {}
        for key, st in pairs:
            groups.setdefault(self.group(*key), []).append((key, st))

        def one_group(items):
            beside = self.phases.beside() if self.phases is not None else contextlib.nullcontext()
            with beside:
                return {key: self._pair_findings(key, st, run_case) for key, st in items}

        found: dict = {}
        with ThreadPoolExecutor(max_workers=max(1, len(groups)), thread_name_prefix="cestab-findings") as pool:
            futures = [pool.submit(one_group, items) for items in sorted(groups.values(), key=len, reverse=True)]
            with self._timed("dispatch"):  # the threads wait on the workers; what they judge is `beside`
                for future in futures:
                    found.update(future.result())
        return [f for key, _ in pairs for f in found[key]]

    def _pair_findings(self, key, st: PairState, run_case) -> list[Finding]:
        adapter_id, dtype = key
        adapter = next(a for a in self.adapters if a.id == adapter_id)
        out = []
        for w in self.ranked(st):
            w = self.shrink(adapter, dtype, w)
            rows = w.rows
            note = f"failure kind {w.kind}; batch score {w.score:.3g}; {rows.pieces[0] if len(rows) == 1 else 'batch'}"
            regime = "search:" + _regime_pieces(rows)
            if len(rows) == 1:
                # the row, then one pad row (zeros): two rows, not one, because torch.compile
                # (dynamic=True) specialises N == 1 and would compile again for every finding
                rows = Rows.concat([rows, pad_rows(1, w.v, rows.soft is not None)])
                note += "; row 1 is a pad row"
            case = self.make_case(rows, dtype, w.label_kind, w.smoothing, regime)
            case = replace(case, note=note)
            row = run_case(case, adapter)
            if len(w.rows) == 1 and score_row_dict(row) < min(1.0, w.score / 2) and not w.status:
                # alone it does not fail (the row depends on its batch-mates?): keep the padded batch
                padded = Rows.concat([w.rows, pad_rows(self.budget.rows(w.v) - 1, w.v, w.rows.soft is not None)])
                case = replace(self.make_case(padded, dtype, w.label_kind, w.smoothing, case.regime), note=note)
                row = run_case(case, adapter)
            out.append(Finding(adapter_id, dtype, w.kind, score_row_dict(row), case, row))
        return out

    def stats(self) -> dict:
        """Rows and calls per adapter x dtype: how much was searched."""
        return {f"{a}|{d}": {"rows": st.rows_evaluated, "calls": st.calls} for (a, d), st in sorted(self.state.items())}


def _regime_pieces(rows: Rows) -> str:
    if len(rows) != 1:
        return "batch"
    return rows.pieces[0].replace(" ", "")


def fewer_classes(rows: Rows, v2: int, rng, n: int) -> Rows:
    """Candidate rows with v2 of the row's classes: the target and the top values always,
    then the rest by value, by -inf first, or at random (the feature may live anywhere)."""
    z, t = rows.z[0], int(rows.target[0])
    v = z.size
    order_desc = np.argsort(-np.where(np.isfinite(z), z, -np.inf), kind="stable")
    masked = np.flatnonzero(z == -np.inf)
    top = int(order_desc[0])
    rest = order_desc[order_desc != t]
    head = np.array([t] if top == t else [t, top])
    out_z, out_t, out_soft, names = [], [], [], []
    for k in range(n):  # each candidate's classes in order of preference, each class once
        if k == 0:
            keep = np.concatenate([[t], rest])
        elif k == 1:
            keep = np.concatenate([head, masked, rest])
            keep = keep[np.sort(np.unique(keep, return_index=True)[1])]  # first comings only
        elif k == 2:
            keep = np.concatenate([[t], rest[::-1]])
        else:
            perm = rng.permutation(v)
            keep = np.concatenate([head, perm[(perm != t) & (perm != top)]])
        cols_sorted = np.sort(keep[:v2])
        target = int(np.searchsorted(cols_sorted, t))
        out_z.append(z[cols_sorted])
        out_t.append(target)
        if rows.soft is not None:
            s = rows.soft[0][cols_sorted]
            s[target] += 1.0 - s.sum()  # keep the labels a distribution
            out_soft.append(s)
        names.append(rows.pieces[0] + f"+shrunk.V{v2}")
    soft = np.array(out_soft) if rows.soft is not None else None
    return Rows(np.array(out_z), np.array(out_t, dtype=np.int64), np.repeat(rows.ignored[:1], n), names, soft)


def simpler_values(rows: Rows, fmt, rng, n: int) -> Rows:
    """Candidates with simpler values: the non-top, non-target finite logits set to the
    row's minimum, or to 0, or rounded to 1-3 significant bits; a few columns at a time."""
    z, t = rows.z[0], int(rows.target[0])
    finite = np.isfinite(z)
    top = int(np.argmax(np.where(finite, z, -np.inf)))
    free = np.flatnonzero(finite & (np.arange(z.size) != t) & (np.arange(z.size) != top))
    out = []
    for k in range(n):
        c = z.copy()
        cols = free if k < 6 else rng.choice(free, size=max(1, free.size // 2), replace=False) if free.size else free
        how = k % 3
        if how == 0 and free.size:
            c[cols] = z[finite].min()
        elif how == 1:
            c[cols] = 0.0
        else:
            bits = 1 + k % 3
            mant, exp = np.frexp(c[cols])
            with np.errstate(over="ignore"):  # rounding up past max: clipped by _finish
                c[cols] = np.ldexp(np.round(mant * 2**bits) / 2**bits, exp)
        out.append(_finish(c, fmt))
    return Rows(np.array(out), np.repeat(rows.target[:1], n), np.repeat(rows.ignored[:1], n),
                [rows.pieces[0] + "+shrunk.values"] * n, None if rows.soft is None else np.repeat(rows.soft[:1], n, axis=0))


def simplicity(rows: Rows, fmt) -> tuple[int, int]:
    """Smaller is simpler: distinct values, then total significant bits."""
    z = rows.z[0]
    f = z[np.isfinite(z)]
    mant = np.frexp(f)[0]
    bits = sum(len(format(int(abs(m) * 2**53), "b").rstrip("0")) for m in mant)
    return (len(np.unique(z)), bits)


def save_finding(finding: Finding, folder: Path, rank: int) -> Path:
    """worst-<adapter>-<dtype>.npz for a pair's worst finding, -<rank>.npz for the others."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "" if rank == 0 else f"-{rank + 1}"
    path = folder / f"worst-{finding.adapter.replace(':', '-')}-{finding.dtype}{suffix}.npz"
    meta = {"adapter": finding.adapter, "score": finding.score, "status": finding.row["status"],
            "message": finding.row.get("message") or "", "failure_kind": finding.kind}
    casefile.save(finding.case, path, meta)
    finding.path = path
    return path
