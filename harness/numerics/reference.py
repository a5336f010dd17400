"""The truth: per-row loss and gradient p - y for the case's exact inputs.

Every error the harness reports is measured against this module, so it uses only
cancellation-free forms (Blanchard, Higham & Higham, IMA J. Numer. Anal. 41, 2021):

    m = max z,  a = first argmax,  d_j = z_j - m <= 0 (kept as an exact pair hi + lo),
    T = sum_{j != a} exp(d_j),  S = 1 + T,  log S = log1p(T),
    l_j = -log p_j = log S - d_j          (a sum of two non-negative terms)
    loss = sum_j y_j l_j                  (a sum of non-negative terms: no cancellation)
    p_j = exp(d_j) / S,  and where y_t = 1:  p_t - 1 = -S_{-t} / S,
    S_{-t} = T if t == a else 1 + (T - exp(d_t))   (no 1 - p_t with p_t close to 1).

Precision. For float16/bfloat16/float32 cases with integer or one-hot labels exp runs in
float64 (max 0.7 ulp here) - except for classes more than 708 below the max, whose float64
exp would be subnormal (absolute errors of 2**-1075 that add up over many classes), which
run in extended precision -, everything after it (sums, log1p, the division) in x87 extended precision (64-bit
significand), and the result is rounded once to float64: within 2 float64 ulps of the
exact value (tested against mpmath at 50 digits). For float64 cases the whole path runs
in extended precision and the result is *kept* in extended precision, 11 bits more than
the tested dtype; soft-label and smoothing cases run exp in extended precision too (that
exp is a double-double one rounded to extended precision, `exp_extended`). Where
`np.longdouble` is no wider than float64 (e.g. on aarch64 macOS)
the float64 reference is still used and `PRECISION` says so (and the subnormal terms keep
float64's absolute error, up to V * 2**-1075). Extended precision's own exp is subnormal
below d = -11355: those terms (and results under float64's smallest normal) are within
float64's absolute subnormal floor, not 2 ulps.

That numpy code is the definition. Where numba is installed, float16/bfloat16/float32
cases run the same forms in one compiled loop instead (`_rows_compiled`,
`fused_kernels.reference_rows`, which derives its error): double-double arithmetic where
the numpy code uses x87 (which numpy does not vectorise: ~80 ns an element with integer
labels, ~270 with soft ones, most of a default run's reference time), and a double-double
exp for soft labels and smoothing. Integer and one-hot labels keep a float64 exp (the C
library's, within 0.51 ulp): within 1.52 float64 ulps. Soft labels
and smoothing: within 0.51 ulps, and the cancellation below shrinks to 2**-76 max(p_j, y_j).
Classes more than 708 (680 for the double-double exp) below the max stay out of the
loop's T where the others add up to 2**-850 or more (2**-100 of T), and their own p is
scaled into float64's subnormals; a row of only such classes (issue 12's) is the numpy
code's.

Where p_j is close to a fractional y_j (soft labels, smoothing) the subtraction p_j - y_j
is ill-conditioned for *every* algorithm: there the reference's error is bounded by about
2**-63 * max(p_j, y_j), 2**-40 below a float32 ulp of the same quantity, and may exceed
2 float64 ulps of the (tiny) difference itself.

Non-finite inputs (the README's conventions): -inf on a non-target class is a mask (zero probability,
zero gradient); -inf where y > 0 gives loss +inf and gradient -y there; a row with +inf
or NaN, or with every logit -inf, is undefined: loss and gradient are NaN, `defined` False.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from harness.numerics import bounds, fused
from harness.numerics.cases import Case

EXTENDED = np.longdouble if np.finfo(np.longdouble).nmant >= 63 else np.float64
PRECISION = "x87-extended" if EXTENDED is not np.float64 else "float64"
#: exp(d) is a subnormal float64 below this: such terms run in extended precision.
SUBNORMAL_EXP = float(np.log(np.finfo(np.float64).tiny))  # -708.396...

#: Rows are processed in chunks of about this many elements: it bounds memory (extended
#: temporaries are 16 bytes each) and keeps temporaries small enough to be reused by the
#: allocator instead of being mapped and faulted in afresh (3x faster at 4096 x 32000).
CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True, eq=False)
class Reference:
    """The truth for one case, plus the condition scales the tolerance needs.

    Arrays are float64 for float16/bfloat16/float32 cases and extended precision for
    float64 cases. `loss_scale` and `grad_scale` are what a backward-stable implementation's
    error is proportional to (see `tolerances`).
    """

    loss: np.ndarray  # (N,)
    grad: np.ndarray  # (N, V)
    defined: np.ndarray  # (N,) bool: False where the input has no finite truth
    loss_scale: np.ndarray  # (N,)
    grad_scale: np.ndarray  # (N, V)
    precision: str
    # The attainable bound's scales (`bounds`); None on a hand-built Reference, which is then
    # graded by the textbook bound alone.
    loss_scale_att: np.ndarray | None = None  # (N,)
    grad_scale_att: np.ndarray | None = None  # (N, V)
    # What judging needs of this truth alone, kept for the next adapter (`metrics.terms_for`).
    memo: dict = field(default_factory=dict, repr=False, compare=False)


def two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knuth's TwoSum: s + err == a + b exactly (float64, round to nearest)."""
    with np.errstate(invalid="ignore", over="ignore"):  # -inf masks; -max - max for float64
        s = a + b
        bb = s - a
        err = (a - (s - bb)) + (b - bb)
    return s, err


def exp_extended(d_hi: np.ndarray, d_lo: np.ndarray) -> np.ndarray:
    """exp(d_hi + d_lo) in extended precision, for a TwoSum pair d_hi <= 0 (-inf: 0).

    Computed as a double-double (`fused_kernels.exp_pair`, within 2**-78.5) and rounded once
    to extended precision (2**-64): ~35 ns an element with the rounding, where numpy's long
    double exp (x87 `expl`, which numpy does not vectorise) and the product with 1 + d_lo
    cost ~90 and round twice. Where numba is missing, and for d below `EXP_PAIR_FLOOR`
    (the pair's low part would be subnormal), that expl path is used."""
    kernels = fused.kernels() if EXTENDED is not np.float64 else None
    if kernels is None:
        return expl(d_hi, d_lo)
    hi, lo = np.empty(d_hi.shape), np.empty(d_hi.shape)
    left = kernels.exp_pair_into(fused.flat(d_hi), fused.flat(d_lo), hi.reshape(-1), lo.reshape(-1))
    e = hi.astype(EXTENDED)
    e += lo
    if left:  # the elements the kernel left (as NaN)
        deep = np.isnan(hi)
        e[deep] = expl(d_hi[deep], d_lo[deep])
    return e


#: Below this d, exp(d) is under half of extended precision's smallest subnormal: it rounds
#: to 0 (-11399.5 for x87 extended; -745.1 where extended is float64).
EXP_UNDERFLOW = float(np.log(np.finfo(EXTENDED).smallest_subnormal) - np.log(EXTENDED(2)))


def expl(d_hi: np.ndarray, d_lo: np.ndarray) -> np.ndarray:
    """exp(d_hi + d_lo) by numpy's long double exp (x87 `expl`), times 1 + d_lo.

    Terms below `EXP_UNDERFLOW` are set to the 0 expl returns for them without calling it:
    glibc's expl takes ~200 ns on an argument that underflows (~37 ns otherwise), and a
    search's row pushed to the dtype's limits has almost every class there (d = -131008
    in float16)."""
    live = d_hi >= EXP_UNDERFLOW
    if live.all():
        return np.exp(d_hi.astype(EXTENDED)) * (1 + d_lo.astype(EXTENDED))
    out = np.zeros(d_hi.shape, EXTENDED)
    out[live] = np.exp(d_hi[live].astype(EXTENDED)) * (1 + d_lo[live].astype(EXTENDED))
    return out


def undefined_rows(z: np.ndarray) -> np.ndarray:
    """Rows with +inf or NaN anywhere, or with every logit -inf: no finite truth exists."""
    bad = np.isnan(z) | (z == np.inf)
    return bad.any(axis=1) | (z == -np.inf).all(axis=1)


def loss_and_grad(case: Case, attainable: bool = True, compiled: bool = True) -> Reference:
    """Loss per row and gradient of the summed loss, for `case`'s exact inputs. `attainable`
    False: without the attainable bound's scales (the search scores rows by the textbook
    bound alone; those scales were a fifth of its reference's time). `compiled` False:
    float16/bfloat16/float32 cases by numpy's code (`_rows`, the definition) even where
    the compiled loop (`_rows_compiled`) is there."""
    n, v = case.shape
    if case.invalid:  # invalid labels: no truth to compute (see runner: rejected or silent)
        nan = np.full((n, v), np.nan)
        return Reference(np.full(n, np.nan), nan, np.zeros(n, bool), np.zeros(n), nan, "none")
    # Soft labels and smoothing subtract p_j - y_j with fractional y_j: exp in extended
    # precision there buys 11 bits against that cancellation (3.5x slower exp).
    extended_exp = case.dtype == "float64" or case.label_kind in ("soft", "smoothing")
    out_dtype = EXTENDED if case.dtype == "float64" else np.float64
    loss = np.empty(n, dtype=out_dtype)
    grad = np.empty((n, v), dtype=out_dtype)
    loss_scale = np.empty(n)
    grad_scale = np.empty((n, v))
    loss_scale_att = np.empty(n) if attainable else None
    grad_scale_att = np.empty((n, v)) if attainable else None
    defined = np.empty(n, dtype=bool)
    kernels = fused.kernels() if compiled and case.dtype != "float64" else None
    step = max(1, CHUNK_ELEMENTS // max(v, 1))
    for lo in range(0, n, step):
        rows = slice(lo, min(n, lo + step))
        z = np.asarray(case.logits[rows]).astype(np.float64)
        defined[rows] = ~undefined_rows(z)
        with np.errstate(over="ignore"):  # float64 views of extended values past float64's max
            parts = (_rows if kernels is None else functools.partial(_rows_compiled, kernels))(
                z,
                case.target[rows],
                case.label_kind,
                None if case.soft_labels is None else np.asarray(case.soft_labels[rows], np.float64),
                case.smoothing,
                defined[rows],
                extended_exp,
                bounds.subnormal_floor(case.dtype),
                attainable,
            )
        loss[rows], grad[rows], loss_scale[rows], grad_scale[rows] = parts[:4]
        if attainable:
            loss_scale_att[rows], grad_scale_att[rows] = parts[4:]
    if case.has_ignored:  # ignored rows count for nothing, whatever their logits
        ign = case.ignored
        loss[ign], grad[ign], loss_scale[ign], grad_scale[ign], defined[ign] = 0, 0, 0, 0, True
        if attainable:
            loss_scale_att[ign], grad_scale_att[ign] = 0, 0
    return Reference(loss, grad, defined, loss_scale, grad_scale, PRECISION if case.dtype == "float64" else "float64",
                     loss_scale_att, grad_scale_att)


def _rows(z, target, kind, soft, eps, defined, extended_exp, floor, attainable=True):
    X = EXTENDED
    n, v = z.shape
    rows = np.arange(n)
    all_defined = defined.all()
    if not all_defined:
        z = np.where(defined[:, None], z, 0.0)  # undefined rows: compute on zeros, NaN later
    m = z.max(axis=1)
    a = z.argmax(axis=1)
    if np.abs(z).max(initial=0.0) >= 2.0**1022:
        # TwoSum's intermediates would overflow in the top binade: halve (exact for normal
        # numbers; a subnormal's lost last bit moves exp(z - m) ~ 0 by nothing), then double.
        d_hi, d_lo = two_sum(z / 2, -m[:, None] / 2)
        d_hi, d_lo = d_hi * 2, d_lo * 2
    else:
        d_hi, d_lo = two_sum(z, -m[:, None])
    live = np.isfinite(d_hi)  # False on -inf masks (and on -max - max in float64)
    masked = not live.all()
    if masked:
        d_lo[~live] = 0.0
    if extended_exp:
        e = exp_extended(d_hi, d_lo)
    else:
        e_hi = np.exp(d_hi)
        e_hi += e_hi * d_lo
        e = e_hi.astype(X)
        # Below SUBNORMAL_EXP float64's exp is subnormal: each term is off by up to 2**-1075,
        # which adds up over many classes (1,812 ulps of a true 3.55e-307 loss at V = 32000).
        deep = d_hi < SUBNORMAL_EXP
        if deep.any():
            e[deep] = expl(d_hi[deep], d_lo[deep])
    e[rows, a] = 0
    T = e.sum(axis=1)
    e[rows, a] = 1
    S = 1 + T
    log_s = np.log1p(T)

    def d_at(cols):
        """d = z - m in extended precision at (rows, cols): exact for narrow dtypes."""
        if extended_exp:  # float64: z - m may overflow float64 (-max - max), never extended
            return z[rows, cols].astype(X) - m.astype(X)
        return d_hi[rows, cols].astype(X) + d_lo[rows, cols].astype(X)

    def d_full():
        if extended_exp:
            return z.astype(X) - m.astype(X)[:, None]
        return d_hi.astype(X) + d_lo.astype(X)

    e_t = e[rows, target]
    s_minus_t = np.where(target == a, T, 1 + (T - e_t))
    p_t_minus_1 = -s_minus_t / S
    e /= S[:, None]
    p = e  # p_j = e_j / S, in place
    p64 = p.astype(np.float64)

    # The attainable bound's scales (`bounds`), from p before p_t becomes p_t - 1 below.
    w = grad_scale_att = loss_scale_att = None
    if attainable:
        w = bounds.softmax_condition(p64, d_hi, live, a, floor)
        grad_scale_att = bounds.grad_scale(p64, d_hi, live, a, target, w, kind, _dense_labels(kind, soft, eps, target, v))

    # Condition scales (float64 is plenty): what a backward-stable implementation's error
    # is proportional to. Gradient: p_j times the exp condition |d_j| and the summation depth.
    depth = bounds.depth(v)
    grad_scale = depth - d_hi
    if masked:
        grad_scale[~live] = 0.0
    grad_scale *= p64

    if kind in ("index", "onehot"):
        loss = log_s - d_at(target)
        grad = p64 if not extended_exp else p
        grad[rows, target] = p_t_minus_1
    elif kind == "smoothing":
        # loss = (1 - eps) l_t + eps/V sum_j l_j, every term non-negative.
        loss = (1 - X(eps)) * (log_s - d_at(target))
        if eps:  # eps = 0 puts no weight on masked classes: no 0 * inf
            loss += X(eps) * (v * log_s - d_full().sum(axis=1)) / v
        grad = p - X(eps) / v
        grad[rows, target] = p_t_minus_1 + X(eps) * (v - 1) / v
    else:  # soft
        y = soft.astype(X)
        neg_d = -d_full()
        neg_d[y == 0] = 0  # -inf masks with y == 0 contribute 0, not 0 * inf
        loss = log_s + (y * neg_d).sum(axis=1)
        grad = p - y
        ones = soft[rows, target] == 1.0
        grad[rows[ones], target[ones]] = p_t_minus_1[ones]

    # Condition scales, continued: plus |g_j| for the final subtraction; loss: its own
    # size plus the summation depth.
    loss_scale = _loss_scale(loss, kind, depth)
    grad_scale += np.abs(grad if grad.dtype == np.float64 else grad.astype(np.float64))

    if attainable:
        loss_scale_att = bounds.loss_scale(w, log_s, loss, kind, v)

    if not all_defined:
        loss = np.where(defined, loss, np.nan)
        grad = np.where(defined[:, None], grad, np.nan)
    return loss, grad, loss_scale, grad_scale, loss_scale_att, grad_scale_att


def _dense_labels(kind, soft, eps, target, v):
    """The (N, V) float64 label matrix of soft and smoothing labels (None for the others)."""
    if kind == "soft":
        return soft
    if kind != "smoothing":
        return None
    y = np.full((len(target), v), eps / v)
    y[np.arange(len(target)), target] = 1 - eps + eps / v
    return y


def _loss_scale(loss, kind, depth):
    """The loss's textbook condition scale: its own size plus the summation depth (and
    depth * loss more for soft and smoothing labels: sum_j y_j log p_j over V classes)."""
    loss_scale = np.asarray(loss, np.float64) + depth
    if kind in ("soft", "smoothing"):
        loss_scale += depth * np.asarray(loss, np.float64)
    return loss_scale


#: `fused_kernels.reference_rows`' label kinds.
_KIND_CODES = {"index": 0, "onehot": 0, "smoothing": 1, "soft": 2}
_NO_ROWS = np.zeros((0, 0))


def _rows_compiled(kernels, z, target, kind, soft, eps, defined, extended_exp, floor, attainable=True):
    """`_rows` for float16/bfloat16/float32 rows in one compiled loop (`fused_kernels.
    reference_rows`: the same forms, in double-double after exp, each value rounded once
    to float64; its error is derived there): 1.4x (integer labels) to 3x (soft labels)
    faster than numpy's x87 passes, the textbook scales included. Rows the loop leaves
    (every class but the max more than 708, or 680 for the double-double exp, below it)
    are numpy's (`_rows`), row by row. The attainable scales are `bounds`' numpy code on
    the loop's p and d."""
    n, v = z.shape
    all_defined = defined.all()
    zc = np.ascontiguousarray(z if all_defined else np.where(defined[:, None], z, 0.0), dtype=np.float64)
    target = np.ascontiguousarray(target, dtype=np.int64)
    soft_in = np.ascontiguousarray(soft, dtype=np.float64) if kind == "soft" else _NO_ROWS
    depth = bounds.depth(v)
    loss, log_s, grad, grad_scale = np.empty(n), np.empty(n), np.empty((n, v)), np.empty((n, v))
    p, d = (np.empty((n, v)), np.empty((n, v))) if attainable else (_NO_ROWS, _NO_ROWS)
    a, fallback = np.empty(n, dtype=np.int64), np.empty(n, dtype=bool)
    floor_d = kernels.EXP_PAIR_FLOOR if extended_exp else SUBNORMAL_EXP  # where the loop's exp stops
    kernels.reference_rows_into(zc, target, _KIND_CODES[kind], soft_in, float(eps), depth, attainable, loss,
                                log_s, grad, grad_scale, p, d, a, fallback, floor_d)
    back = np.flatnonzero(fallback)
    if back.size:  # values the loop left unwritten, which the numpy rows below replace
        loss[back], log_s[back], grad[back], grad_scale[back] = 0.0, 0.0, 0.0, 0.0
        if attainable:
            p[back], d[back] = 0.0, 0.0
    loss_scale = _loss_scale(loss, kind, depth)
    loss_scale_att = grad_scale_att = None
    if attainable:
        live = d != -np.inf
        w = bounds.softmax_condition(p, d, live, a, floor)
        grad_scale_att = bounds.grad_scale(p, d, live, a, target, w, kind, _dense_labels(kind, soft, eps, target, v))
        loss_scale_att = bounds.loss_scale(w, log_s, loss, kind, v)
    if back.size:
        parts = _rows(z[back], target[back], kind, None if soft is None else soft[back], eps, defined[back],
                      extended_exp, floor, attainable)
        for out, part in zip((loss, grad, loss_scale, grad_scale, loss_scale_att, grad_scale_att), parts):
            if out is not None:
                out[back] = part
    if not all_defined:
        loss[~defined] = np.nan
        grad[~defined] = np.nan
    return loss, grad, loss_scale, grad_scale, loss_scale_att, grad_scale_att
