"""The compiled loops (numba) of judging (`fused`) and of the reference's exp
(`reference.exp_extended`, at the end), imported only by `fused.kernels()`.

They live at module level, not in a function: numba's cache keys a function by the pickle
of its closure, and a closure holding another compiled function pickles differently in
every process, so every process compiled them all again (3-10 s each, and a new cache
file each time). Called functions are found as this module's globals instead.

Read `fused`'s docstring first: what each judging loop computes is `metrics`' numpy code.
"""

import functools
import math

import numba
import numpy as np

_PW_BLOCKSIZE = 128
_MAXF = float(np.finfo(np.float64).max)

jit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")


@jit(inline="always")
def element(ck, t, lo, u, allowance, allowance_att, tiny, is_inf, finite_overflow, ftz):
    """One element of `metrics.element_errors`: (abs, ulps, ratio, ratio_att, nonfinite, flushed)."""
    d = abs((ck - t) - lo)  # lo = 0.0 for a float64 truth: x - 0.0 == x
    agree = (is_inf and ck == t) or (np.isinf(ck) and finite_overflow and ((ck > 0) == (t > 0)))
    nonfinite = (not np.isfinite(ck) and not agree and not is_inf) or np.isnan(ck)
    if agree:
        d = 0.0
    elif not np.isfinite(d):
        d = np.inf
    missed_inf = is_inf and not agree
    ulps = d / u
    zero = d == 0
    ratio = 0.0 if zero else d / allowance
    ratio_att = 0.0 if zero else d / allowance_att
    if missed_inf:
        ratio = np.inf
        ratio_att = np.inf
    flushed = ck == 0 and tiny
    if ftz and flushed:
        ratio = 0.0
        ratio_att = 0.0
    return d, ulps, ratio, ratio_att, nonfinite, flushed


@jit(inline="always")
def block_squares(a, lo, n):
    """numpy's pairwise sum of a[lo:lo+n] ** 2 for n <= _PW_BLOCKSIZE: a leaf of the tree."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i] * a[i]
        return res
    r0 = a[lo] * a[lo]
    r1 = a[lo + 1] * a[lo + 1]
    r2 = a[lo + 2] * a[lo + 2]
    r3 = a[lo + 3] * a[lo + 3]
    r4 = a[lo + 4] * a[lo + 4]
    r5 = a[lo + 5] * a[lo + 5]
    r6 = a[lo + 6] * a[lo + 6]
    r7 = a[lo + 7] * a[lo + 7]
    i = 8
    m = n - n % 8
    while i < m:
        j = lo + i
        r0 += a[j] * a[j]
        r1 += a[j + 1] * a[j + 1]
        r2 += a[j + 2] * a[j + 2]
        r3 += a[j + 3] * a[j + 3]
        r4 += a[j + 4] * a[j + 4]
        r5 += a[j + 5] * a[j + 5]
        r6 += a[j + 6] * a[j + 6]
        r7 += a[j + 7] * a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i] * a[lo + i]
        i += 1
    return res


@jit
def sum_squares(a):
    """`float(np.square(a).sum())` for a contiguous float64 `a`, in numpy's order (one
    pairwise sum over the whole array: numpy coalesces a contiguous array's axes).

    numpy's `pairwise_sum` (loops_utils.h) halves n > _PW_BLOCKSIZE at a multiple of 8
    and adds the halves' sums; this walks the same tree with a stack of its own, post
    order, so every node is the same left + right: the same double. (Not recursive:
    numba cannot load a recursive function from its cache, and compiled it again in
    every process, 3 s each.)"""
    n = a.size
    if n <= _PW_BLOCKSIZE:
        return 0.0 + block_squares(a, 0, n)
    los = np.empty(128, np.int64)  # the tree is at most 64 deep
    ns = np.empty(128, np.int64)
    visits = np.zeros(128, np.int64)  # children pushed so far
    values = np.empty(128)
    los[0], ns[0], top, nv = 0, n, 1, 0
    while top:
        k = top - 1
        lo, m = los[k], ns[k]
        if m <= _PW_BLOCKSIZE:
            values[nv] = block_squares(a, lo, m)
            nv += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if visits[k] == 2:  # both halves summed: left + right
            values[nv - 2] = values[nv - 2] + values[nv - 1]
            nv -= 1
            top -= 1
            continue
        left = visits[k] == 0
        visits[k] += 1
        los[top], ns[top], visits[top] = (lo, half, 0) if left else (lo + half, m - half, 0)
        top += 1
    return 0.0 + values[0]


@jit
def reduce_full(c, hi, lo, has_lo, u, allowance, allowance_att, tiny, is_inf, finite_overflow, ftz, scratch):
    """One block's `Reduction.add` inputs (flat arrays of one chunk): (argmax of the
    ratio, the ratio there, n_bad, n_lossy, max ratio_att, n_nonfinite, n_flushed, max
    abs, max rel, max ulps, sum of abs**2), maxima NaN-propagating as numpy's `max`,
    the argmax numpy's (the first NaN, else the first largest)."""
    n = c.size
    arg, rmax = 0, -np.inf
    n_bad = n_lossy = n_nonfinite = n_flushed = 0
    att_max = abs_max = rel_max = ulps_max = -np.inf
    nan_r = nan_att = nan_rel = nan_ulps = False  # NaN seen: numpy's max is NaN then
    for k in range(n):  # plain comparisons, NaN noted apart: the loop stays branch-light
        ck = np.float64(c[k])
        t = hi[k]
        d, ulps, r, ra, nonfinite, flushed = element(ck, t, lo[k] if has_lo else 0.0, u[k], allowance[k],
                                                     allowance_att[k], tiny[k], is_inf[k], finite_overflow[k], ftz)
        scratch[k] = d
        if r > rmax:  # the first largest (NaN is never larger)
            arg, rmax = k, r
        nan_r |= r != r
        if ra > 1:
            if r > 1:
                n_bad += 1
            else:
                n_lossy += 1
        n_nonfinite += nonfinite
        n_flushed += flushed
        rel = 0.0 if d == 0 else d / abs(t)
        att_max = ra if ra > att_max else att_max
        nan_att |= ra != ra
        abs_max = d if d > abs_max else abs_max  # d is never NaN
        rel_max = rel if rel > rel_max else rel_max
        nan_rel |= rel != rel
        ulps_max = ulps if ulps > ulps_max else ulps_max
        nan_ulps |= ulps != ulps
    if nan_r:  # numpy's argmax: the first NaN
        for k in range(n):
            r = element(np.float64(c[k]), hi[k], lo[k] if has_lo else 0.0, u[k], allowance[k], allowance_att[k],
                        tiny[k], is_inf[k], finite_overflow[k], ftz)[2]
            if r != r:
                arg, rmax = k, r
                break
    att_max = np.nan if nan_att else att_max
    rel_max = np.nan if nan_rel else rel_max
    ulps_max = np.nan if nan_ulps else ulps_max
    err_sq = sum_squares(scratch[:n])
    return arg, rmax, n_bad, n_lossy, att_max, n_nonfinite, n_flushed, abs_max, rel_max, ulps_max, err_sq


#: `reduce_block` works in tiles of this many elements (its ratio buffers stay in L1).
TILE = 512


@jit(inline="always")
def _max_bits(a, m, top):
    for i in range(m):
        top = max(top, a[i])
    return top


@jit
def reduce_block(c, hi, lo, has_lo, u, allowance, allowance_att, tiny, is_inf, finite_overflow, ftz, scratch,
                 plain):
    """`reduce_full`, first tried on the assumption that holds for most blocks (`plain`: no
    inf, NaN or tiny truth): then an element is special only if its difference is not
    finite, and the masks and flushes of `element` are no-ops; any special element sends
    the block to `reduce_full`.

    Vectorised (~3x faster than one loop doing it all): each tile's ratios go to buffers
    in a loop with no branch, and their maxima are taken over their bits as integers,
    which order non-negative floats as the floats do (a NaN or a negative value sends the
    block to `reduce_full`); the argmax is the first element holding the largest ratio,
    as numpy's."""
    if not plain:
        return reduce_full(c, hi, lo, has_lo, u, allowance, allowance_att, tiny, is_inf, finite_overflow, ftz,
                           scratch)
    n = c.size
    rs, ras, rels, ulpss = np.empty(TILE), np.empty(TILE), np.empty(TILE), np.empty(TILE)  # one tile's
    bits = (rs.view(np.int64), ras.view(np.int64), rels.view(np.int64), ulpss.view(np.int64))
    best = np.zeros(5, np.int64)  # the largest ratio, ratio_att, rel, ulps, abs (their bits)
    arg = 0
    n_bad = n_lossy = 0
    odd = False  # a difference not finite, a ratio NaN or negative
    for start in range(0, n, TILE):
        m = min(TILE, n - start)
        end = start + m  # the tile's views: indices the compiler knows are in bounds
        cc, tt, ll, uu, aa, bb, dd = (c[start:end], hi[start:end], lo[start:end] if has_lo else lo, u[start:end],
                                      allowance[start:end], allowance_att[start:end], scratch[start:end])
        for i in range(m):
            t = tt[i]
            d = abs((np.float64(cc[i]) - t) - (ll[i] if has_lo else 0.0))
            dd[i] = d
            zero = d == 0
            r = 0.0 if zero else d / aa[i]
            ra = 0.0 if zero else d / bb[i]
            ulps = d / uu[i]
            odd |= (not d < np.inf) | (not r >= 0) | (not ra >= 0) | (not ulps >= 0)
            rs[i] = r
            ras[i] = ra
            rels[i] = 0.0 if zero else d / abs(t)
            ulpss[i] = ulps
            outside = ra > 1
            n_bad += outside & (r > 1)
            n_lossy += outside & (r <= 1)
        if odd:
            break
        r_bits = bits[0]
        top = r_bits[0]
        for i in range(1, m):
            top = max(top, r_bits[i])
        if top > best[0] or start == 0:  # the first largest: only a larger tile's moves it
            best[0] = top
            for i in range(m):
                if r_bits[i] == top:
                    arg = start + i
                    break
        best[1] = _max_bits(bits[1], m, best[1])
        best[2] = _max_bits(bits[2], m, best[2])
        best[3] = _max_bits(bits[3], m, best[3])
        best[4] = _max_bits(dd.view(np.int64), m, best[4])
    if odd:
        return reduce_full(c, hi, lo, has_lo, u, allowance, allowance_att, tiny, is_inf, finite_overflow, ftz,
                           scratch)
    value = best.view(np.float64)
    err_sq = sum_squares(scratch[:n])
    return arg, value[0], n_bad, n_lossy, value[1], 0, 0, value[4], value[2], value[3], err_sq


@jit
def row_scores(loss, lhi, llo, has_llo, lu, lallow, ltiny, linf, lfov, grad, ghi, glo, has_glo, gu, gallow,
               gtiny, ginf, gfov, gspecial, ftz, defined, broken, score, nonfinite_rows, loss_worse):
    """`rowsearch.judge_rows` on the textbook bound: per row the larger of the loss's
    ratio and the row's largest gradient ratio (NaN as inf, inf as float64's max, as
    `np.nan_to_num(ratio, nan=inf)`), BROKEN where anything is non-finite. `gspecial`:
    the rows whose truth has an inf or a tiny element (`special_rows`)."""
    n = loss.size
    v = grad.size // n if n else 0
    rs = np.empty(v)  # one row's gradient ratios; their largest is taken over their bits
    r_bits = rs.view(np.int64)
    box = np.zeros(1, np.int64)
    box_value = box.view(np.float64)
    for i in range(n):
        _, _, lr, _, lnf, _ = element(np.float64(loss[i]), lhi[i], llo[i] if has_llo else 0.0, lu[i], lallow[i],
                                      lallow[i], ltiny[i], linf[i], lfov[i], ftz)
        lr = np.inf if np.isnan(lr) else (_MAXF if lr == np.inf else lr)
        gr = 0.0
        gnf = False
        special = gspecial[i]  # an inf or tiny truth in the row: every element's masks matter
        if not special:  # else: a finite difference everywhere makes `element` plain division
            # The row's views (indices the compiler knows are in bounds: the loop is
            # vectorised), and the largest ratio over the ratios' bits as integers, which
            # order non-negative floats as the floats do and put negative ones below 0.0
            # (where gr starts); NaN and inf are `special`.
            lo_, hi_ = i * v, i * v + v
            gg, tt, ll, aa = grad[lo_:hi_], ghi[lo_:hi_], glo[lo_:hi_] if has_glo else glo, gallow[lo_:hi_]
            odd = False
            for j in range(v):
                d = abs((np.float64(gg[j]) - tt[j]) - (ll[j] if has_glo else 0.0))
                r = 0.0 if d == 0 else d / aa[j]
                odd |= (not d < np.inf) | (not r < np.inf)  # NaN or inf: nan_to_num's rules, below
                rs[j] = r
            special = odd
            if not special:
                box[0] = _max_bits(r_bits, v, 0)
                gr = box_value[0]
        if special:
            gr = 0.0
            for j in range(i * v, i * v + v):
                _, _, r, _, nf, _ = element(np.float64(grad[j]), ghi[j], glo[j] if has_glo else 0.0, gu[j],
                                            gallow[j], gallow[j], gtiny[j], ginf[j], gfov[j], ftz)
                r = np.inf if np.isnan(r) else (_MAXF if r == np.inf else r)
                if r > gr:
                    gr = r
                gnf = gnf or nf
        nf = lnf or gnf
        s = max(lr, gr)
        if nf or not np.isfinite(s):
            s = broken
        else:
            s = min(s, broken / 2)
        score[i] = s if defined[i] else -1.0
        nonfinite_rows[i] = nf and defined[i]
        loss_worse[i] = lr >= gr or lnf


#: 2**k for every float64 power of two, at k + 1074: an ulp in one load (`truth_terms`).
_EXP2 = np.ldexp(1.0, np.arange(-1074, 1024))


@jit
def truth_terms(t, scale, scale_att, has_att, tol_ulps, tol_cr, att_ulps, att_cr, min_exponent, mantissa_bits,
                tiny_below, overflow_at, u, allowance, allowance_att, is_inf, tiny, finite_overflow):
    """`metrics.truth_terms` of a float64 truth (flat arrays; the outputs filled in):
    the ulp, both allowances and the masks in one pass. Returns (all finite, any tiny).

    `metrics.ulp` is 2**(e - p + 1) at |x| in [2**e, 2**(e+1)), floored: e is read from
    the exponent bits and the power of two from a table (math.frexp and math.ldexp, calls
    into libm, were two-thirds of the pass)."""
    floor = min_exponent - mantissa_bits
    all_finite = True
    any_tiny = False
    bits = t.view(np.int64)
    for k in range(t.size):
        x = t[k]
        biased = (bits[k] >> 52) & 0x7FF
        finite = biased != 0x7FF
        inf = not finite and (bits[k] & 0xFFFFFFFFFFFFF) == 0
        if finite or inf:  # an infinite truth's ulp is zero's
            # zero, float64 subnormals (e < -1022 <= min_exponent) and inf: the floor
            e = biased - 1023 if 0 < biased < 0x7FF else min_exponent
            uk = _EXP2[max(e - mantissa_bits, floor) + 1074]
        else:
            uk = np.nan
        u[k] = uk
        allowance[k] = tol_ulps * uk + tol_cr * scale[k]
        if has_att:
            allowance_att[k] = att_ulps * uk + att_cr * scale_att[k]
        is_inf[k] = inf
        small = x != 0 and abs(x) < tiny_below
        tiny[k] = small
        any_tiny |= small
        all_finite &= finite
        finite_overflow[k] = finite and abs(x) >= overflow_at
    return all_finite, any_tiny


# ------------------------------------------------------------------ the reference's exp
#
# `reference` needs exp(d) for d = d_hi + d_lo <= 0 to better than float64 (float64 cases,
# soft labels, smoothing). x87's expl through numpy costs ~76 ns an element (numpy does
# not vectorise long double); this double-double exp costs a few, and is more accurate:
# its result hi + lo is within 2**-78.5 of exp(d) relative (derivation in `exp_pair`), so
# rounding it once to extended precision (2**-64) leaves a correctly rounded value or
# its neighbour, where expl followed by the product with 1 + d_lo rounds twice.


def _table():
    """ln(2)/256 in three float64 pieces (L1 of 32 bits and L2 of 35, so k * L1 and
    k * L2 are exact for |k| < 2**18) and 2**(j/256), j < 256, as double-doubles; from
    Python's decimal at 60 digits (its exp and ln are correctly rounded)."""
    from decimal import Decimal, localcontext

    def bits(x: float, b: int) -> float:
        m, e = math.frexp(x)
        return math.ldexp(round(math.ldexp(m, b)), e - b)

    with localcontext() as ctx:
        ctx.prec = 60
        ln2 = Decimal(2).ln()
        step = ln2 / 256
        l1 = bits(float(step), 32)
        l2 = bits(float(step - Decimal(l1)), 35)
        l3 = float(step - Decimal(l1) - Decimal(l2))
        hi, lo = np.empty(256), np.empty(256)
        for j in range(256):
            t = (step * j).exp()
            hi[j] = float(t)
            lo[j] = float(t - Decimal(hi[j]))
    return float(256 / ln2), l1, l2, l3, hi, lo


INV_STEP, L1, L2, L3, T_HI, T_LO = _table()
POW2 = np.ldexp(1.0, -np.arange(1024))  # 2**-s: a multiplication, not a call to ldexp
#: Below this d the pair's low part would be subnormal (relative precision lost): callers
#: compute those elements another way (`reference`: in extended precision).
EXP_PAIR_FLOOR = -680.0


@jit(inline="always")
def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@jit(inline="always")
def _split(a):
    c = 134217729.0 * a  # 2**27 + 1 (Dekker): a == hi + lo, each of 26 bits or fewer
    hi = c - (c - a)
    return hi, a - hi


@jit(inline="always")
def _two_prod(a, b):
    """p + e == a * b exactly (Dekker; no FMA, which numba does not promise)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@jit
def exp_pair(d_hi, d_lo, out_hi, out_lo, inv_step, l1, l2, l3, t_hi, t_lo, pow2, floor):
    """exp(d_hi + d_lo) as out_hi + out_lo, elementwise over flat arrays, for d_hi <= 0
    (-inf gives 0) with |d_lo| <= ulp(d_hi) / 2 (a TwoSum pair). Elements below `floor`
    (and NaN, and any above 0) are left as NaN for the caller. Returns how many were left.

    Error (relative, u = 2**-53), d = k ln2/256 + r:
    - k = nearest integer to d * 256/ln2, |k| <= 680 * 369.4 < 2**18, |r| <= ln2/512 (1 + 2**-40)
      = 2**-9.53;
    - r = ((d_hi - k L1) - k L2) + (d_lo - k L3): d_hi - k L1 is exact (Sterbenz), k L1 and
      k L2 are exact, the rest is TwoSum'd; error <= u |d_lo - k L3| + |k| |ln2/256 - L1 - L2 - L3|
      + the rounding of k L3 <= 2**-96;
    - exp(r) = 1 + r + r**2/2 + q, r**2 exact (TwoProduct), q = r**3/6 + ... + r**6/720 in
      float64 (Estrin; |q| <= 2**-31.2, its error <= 4u |q| <= 2**-82), summed in double-double
      (each rounding below 2**-100); the terms left out, r**7/7! (1 + r) <= 2**-79.0, dominate;
    - times 2**(j/256) (a double-double within 2**-106) by TwoProduct: <= 2**-103;
    - times 2**((k - j)/256), exact: the high part stays >= exp(floor) >= 2**-981, a normal
      number, and the low part's subnormal rounding is <= 2**-1075 / 2**-981 = 2**-94.
    Total below 2**-78.5; tests/test_reference.py holds it to that against mpmath, and
    finds it within a factor of 2 of it (at |r| near its largest)."""
    left = 0
    for i in range(d_hi.size):
        x = d_hi[i]
        if x == -np.inf:
            out_hi[i] = 0.0
            out_lo[i] = 0.0
            continue
        if not floor <= x <= 0.0:
            out_hi[i] = np.nan
            out_lo[i] = np.nan
            left += 1
            continue
        out_hi[i], out_lo[i] = _exp_one(x, d_lo[i], inv_step, l1, l2, l3, t_hi, t_lo, pow2)
    return left


@jit(inline="always")
def _exp_one(x, x_lo, inv_step, l1, l2, l3, t_hi, t_lo, pow2):
    """One element of `exp_pair` (floor <= x <= 0): exp(x + x_lo) as (hi, lo)."""
    hi, lo, s = _exp_parts(x, x_lo, inv_step, l1, l2, l3, t_hi, t_lo)
    scale = pow2[s]
    return hi * scale, lo * scale


@jit(inline="always")
def _exp_parts(x, x_lo, inv_step, l1, l2, l3, t_hi, t_lo):
    """exp(x + x_lo) = (hi + lo) * 2**-s, hi near [1, 2): `exp_pair`'s steps but
    its last (the scaling). Also below its floor, down to x = -745.2 (where exp is half
    float64's smallest subnormal): there k * L2 may round (|k| < 2**19), 2**-74 of r at most."""
    kf = math.floor(x * inv_step + 0.5)
    s, e = _two_sum(x - kf * l1, -(kf * l2))
    rh, rl = _two_sum(s, e + (x_lo - kf * l3))
    r2 = rh * rh
    q = r2 * rh * ((1 / 6 + rh * (1 / 24)) + r2 * (1 / 120 + rh * (1 / 720)))  # Estrin: a short chain
    sh, sl = _two_prod(rh, rh)
    u, ue = _two_sum(rh, 0.5 * sh)
    w = ue + (0.5 * sl + q)
    u2 = u + w  # |w| <= |u| / 100: FastTwoSum
    ue2 = w - (u2 - u)
    h, hl = _two_sum(1.0, u2)
    hl += ue2
    hl += h * rl  # exp(rh + rl) = exp(rh) (1 + rl), rl <= 2**-60
    k = int(kf)
    j = k & 255
    ph, pl = _two_prod(h, t_hi[j])
    pl += h * t_lo[j] + hl * t_hi[j]
    hi = ph + pl
    lo = pl - (hi - ph)
    return hi, lo, (j - k) >> 8  # 2**((k - j)/256) = 2**-s, k <= j


def exp_pair_into(d_hi, d_lo, out_hi, out_lo) -> int:
    """`exp_pair` with this module's tables and floor (flat float64 arrays)."""
    return exp_pair(d_hi, d_lo, out_hi, out_lo, INV_STEP, L1, L2, L3, T_HI, T_LO, POW2, EXP_PAIR_FLOOR)


# ------------------------------------------------------------------ the reference's rows
#
# `reference` for float16/bfloat16/float32 cases: the same cancellation-free forms as its
# numpy code (`reference._rows`, the definition), every step after exp in double-double
# arithmetic (pairs hi + lo of float64) and each result rounded once to float64. numpy runs those
# steps in x87 extended precision, which it does not vectorise (~80 ns an element for
# integer labels, ~270 for soft ones); this loop reads each element three times.
# The derivation of its error is `reference_rows`'.

INDEX, SMOOTHING, SOFT = 0, 1, 2  # `reference_rows`' label kinds (one-hot is INDEX)
#: Below this T (the sum of the non-max terms) log1p(T) is its series, above it a Newton step.
SERIES_BELOW = 2.0**-20
#: A row whose sum of the terms above the floor is at least this leaves the terms below it
#: out of T (V of them add less than 2**31 exp(-680) < 2**-950: 2**-100 of T).
DEEP_NEGLIGIBLE = 2.0**-850
#: exp(d) below half float64's smallest subnormal (2**-1075.1): p rounds to 0.
EXP_ZERO = -745.2


@jit(inline="always")
def _fast_two_sum(a, b):
    """s + e == a + b exactly, for |a| >= |b| (or a == 0)."""
    s = a + b
    return s, b - (s - a)


@jit(inline="always")
def _dd_add(ah, al, bh, bl):
    """(ah + al) + (bh + bl) as a normalised pair (relative error below 2**-104 for terms of
    one sign)."""
    s, e = _two_sum(ah, bh)
    return _fast_two_sum(s, e + (al + bl))


@jit(inline="always")
def _dd_mul(ah, al, bh, bl):
    """(ah + al) * (bh + bl) as a normalised pair (relative error below 2**-102)."""
    p, e = _two_prod(ah, bh)
    return _fast_two_sum(p, e + (ah * bl + al * bh))


@jit(inline="always")
def _dd_div(ah, al, bh, bl):
    """(ah + al) / (bh + bl) as a normalised pair, bh > 0 (relative error below 2**-100):
    one correction of the float64 quotient by its exact remainder."""
    q = ah / bh
    p, e = _two_prod(q, bh)
    r = ((ah - p) - e + al - q * bl) / bh
    return _fast_two_sum(q, r)


@jit(inline="always")
def _log1p_dd(th, tl, inv_step, l1, l2, l3, t_hi, t_lo, pow2):
    """log1p(th + tl) for 0 <= th + tl <= 2**60 as a pair, within 2**-78 of it absolutely
    and 2**-57 relatively (`reference_rows`)."""
    if th == 0.0:
        return 0.0, 0.0
    if th < SERIES_BELOW:  # T - T**2/2 + T**3/3: the next term is below 2**-60 T
        sh, sl = _two_prod(th, th)
        sl += 2.0 * th * tl
        cube = sh * th / 3.0
        h, l = _dd_add(th, tl, -0.5 * sh, -0.5 * sl)
        return _dd_add(h, l, cube, 0.0)
    y = math.log1p(th)
    eh, el = _exp_one(-y, 0.0, inv_step, l1, l2, l3, t_hi, t_lo, pow2)  # exp(-y), -y >= -42
    sh, sl = _two_sum(1.0, th)
    sl += tl
    ph, pl = _dd_mul(sh, sl, eh, el)  # S exp(-y) = 1 + delta, |delta| ~ 2**-52
    delta = (ph - 1.0) + pl  # ph - 1 exact (Sterbenz)
    return _fast_two_sum(y, delta - 0.5 * delta * delta)


@jit
def reference_rows(z, target, kind, soft, eps, depth, keep, loss, log_s, grad, grad_scale, p_out, d_out, argmax,
                   fallback, inv_step, l1, l2, l3, t_hi, t_lo, pow2, floor):
    """`reference._rows` for float16/bfloat16/float32 rows z (N, V) float64, finite or -inf
    (undefined rows zeroed by the caller), labels `target` (N,), `kind` INDEX, SMOOTHING
    (`eps`) or SOFT (`soft` (N, V)). Writes loss, log S (rounded to float64), the gradient
    and its textbook scale, and where `keep`: p (N, V, before p_t - 1) and d = z - max
    (hi parts) for the attainable scales. Classes more than -`floor` below the max (where
    the float64 exp, or the double-double exp's low part, would be subnormal) stay out of
    T where the rest of it is DEEP_NEGLIGIBLE or more; their p is (e 2**s / S) 2**-s,
    rounded once. Rows it leaves are flagged in `fallback` (T below that with such classes:
    every class but the max that far below; or logits past 2**1000): the caller computes
    those with numpy.

    Error, per row, with u = 2**-53 and the pair operations' own errors (below 2**-100
    relatively, negligible against those below):
    - d_j = z_j - m exactly as a TwoSum pair (|z| < 2**1000: nothing overflows);
    - e_j = exp(d_j) within 2**-78.5 relatively (`exp_pair`) for SMOOTHING and SOFT; e_a = 1
      exactly. INDEX takes the C library's float64 exp (glibc's: within 0.51 ulp, ~3x faster)
      times 1 + d_lo: its error, up to 2**-52.9 relatively, passes through every step
      below to the results, which are then within 1.02 + 0.5 ulps (an error of 0.51 ulp of
      e_j is up to 1.02 ulps of p_j, in a binade of its own), as numpy's code's 2;
    - T = sum_{j != a} e_j, accumulated in double-double: within 2**-78.5 T plus V rounding
      errors of the low parts (V 2**-106 T): within 2**-78 T for V < 2**27;
    - log S = log1p(T): for T < 2**-20 the series T - T**2/2 + T**3/3 (left out: T**4/4 <
      2**-60 T), else y = log1p(T_hi) (float64, any error below 2**-40 relatively), then one
      Newton step y + log(S e^-y) with S e^-y = 1 + delta formed in double-double:
      log(1 + delta) = delta - delta**2/2 (left out: delta**3/3 < 2**-119), with e^-y's
      2**-78.5 and S's 2**-78 -> within 2**-77 absolutely, 2**-57 relatively (log S >= 2**-21);
    - the loss is a sum of non-negative pairs (log S, -d_t, y_j (-d_j)): within 2**-57
      relatively before its one rounding;
    - p_j = e_j / S and p_t - 1 = -S_-t / S, S_-t = T or 1 + (T - e_t) (T >= e_t, every
      value >= 0; the subtraction's error 2**-104 T <= 2**-104 V S_-t): within 2**-76
      relatively; the soft and smoothing labels' p_j - y_j, a pair minus a float64 (or a
      pair), carry that error times max(p_j, y_j) (the cancellation no algorithm escapes).
    So for SMOOTHING and SOFT each value is within 2**-56 of its float64 rounding's argument:
    the rounding, half an ulp, dominates, and every value is within 0.51 float64 ulps of the
    exact one (but where the label cancellation above makes the exact value small).
    tests/test_reference.py holds both to these bounds against mpmath."""
    n, v = z.shape
    e_hi = np.empty(v)
    e_lo = np.empty(v)
    dh = np.empty(v)
    dl = np.empty(v)
    deep = np.empty(v, np.bool_)
    shift = np.empty(v, np.int64)
    for i in range(n):
        fallback[i] = False
        m = -np.inf
        a = 0
        big = 0.0
        for j in range(v):
            x = z[i, j]
            if x > m:
                m, a = x, j
            if x != -np.inf and abs(x) > big:
                big = abs(x)
        argmax[i] = a
        if big >= 2.0**1000 or m == -np.inf:
            fallback[i] = True
            continue
        # d, e and T = the sum of e over j != a, in double-double
        th = tl = 0.0
        any_deep = False
        for j in range(v):
            x = z[i, j]
            deep[j] = False
            if x == -np.inf:
                dh[j], dl[j], e_hi[j], e_lo[j] = -np.inf, 0.0, 0.0, 0.0
                continue
            d, dlo = _two_sum(x, -m)
            dh[j], dl[j] = d, dlo
            if j == a:
                e_hi[j], e_lo[j] = 1.0, 0.0
                continue
            if d < floor:  # out of T if the rest is large enough; its p scaled by 2**-shift
                deep[j] = any_deep = True
                if d < EXP_ZERO:
                    e_hi[j], e_lo[j], shift[j] = 0.0, 0.0, 0
                else:
                    e_hi[j], e_lo[j], shift[j] = _exp_parts(d, dlo, inv_step, l1, l2, l3, t_hi, t_lo)
                continue
            if kind == INDEX:  # the C library's exp, within an ulp, times 1 + d_lo
                eh = math.exp(d)
                eh, el = _fast_two_sum(eh, eh * dlo)
            else:
                eh, el = _exp_one(d, dlo, inv_step, l1, l2, l3, t_hi, t_lo, pow2)
            e_hi[j], e_lo[j] = eh, el
            th, s_err = _two_sum(th, eh)
            tl += s_err + el
        if any_deep and th < DEEP_NEGLIGIBLE:
            fallback[i] = True
            continue
        th, tl = _fast_two_sum(th, tl)
        sh, sl = _dd_add(1.0, 0.0, th, tl)
        lh, ll = _log1p_dd(th, tl, inv_step, l1, l2, l3, t_hi, t_lo, pow2)
        log_s[i] = lh + ll
        t = target[i]
        # p_t - 1 = -S_-t / S
        if t == a:
            mh, ml = th, tl
        elif deep[t]:
            mh, ml = _dd_add(1.0, 0.0, th, tl)
        else:
            mh, ml = _dd_add(th, tl, -e_hi[t], -e_lo[t])
            mh, ml = _dd_add(1.0, 0.0, mh, ml)
        qh, ql = _dd_div(mh, ml, sh, sl)
        pt1h, pt1l = -qh, -ql
        # the loss
        if kind == SOFT:
            ah, al = lh, ll
            for j in range(v):
                y = soft[i, j]
                if y != 0.0:
                    if dh[j] == -np.inf:
                        ah = np.inf
                        break
                    ph, pl = _two_prod(y, -dh[j])
                    ah, al = _dd_add(ah, al, ph, pl - y * dl[j])
            loss[i] = ah + al  # an inf loss: ah inf, al finite
        else:
            if dh[t] == -np.inf:
                loss[i] = np.inf
            else:
                ah, al = _dd_add(lh, ll, -dh[t], -dl[t])  # l_t = log S - d_t
                if kind == SMOOTHING and eps != 0.0:
                    ch, cl = _two_sum(1.0, -eps)
                    ah, al = _dd_mul(ah, al, ch, cl)  # (1 - eps) l_t
                    bh, bl = _two_prod(lh, float(v))  # sum_j l_j = V log S - sum_j d_j
                    bl += ll * v
                    for j in range(v):
                        if dh[j] == -np.inf:
                            bh = np.inf
                            break
                        bh, bl = _dd_add(bh, bl, -dh[j], -dl[j])
                    if bh == np.inf:
                        ah = np.inf
                    else:
                        bh, bl = _dd_div(bh, bl, float(v), 0.0)
                        bh, bl = _dd_mul(bh, bl, eps, 0.0)  # eps / V sum_j l_j
                        ah, al = _dd_add(ah, al, bh, bl)
                loss[i] = ah + al
        # p, the gradient and its textbook scale
        if kind == SMOOTHING:
            yh, yl = _dd_div(eps, 0.0, float(v), 0.0)  # eps / V
            ch, cl = _two_prod(eps, float(v - 1))
            ch, cl = _dd_div(ch, cl, float(v), 0.0)  # eps (V - 1) / V
        for j in range(v):
            if dh[j] == -np.inf:
                ph = pl = 0.0
            elif deep[j]:  # (e / S) 2**-shift: one rounding, into the subnormals below 2**-1022
                qh, ql = _dd_div(e_hi[j], e_lo[j], sh, sl)
                ph, pl = math.ldexp(qh, -shift[j]), 0.0
            else:
                ph, pl = _dd_div(e_hi[j], e_lo[j], sh, sl)
            if kind == INDEX:
                g = ph
            elif kind == SMOOTHING:
                gh, gl = _dd_add(ph, pl, -yh, -yl)
                g = gh + gl
            else:
                gh, gl = _two_sum(ph, -soft[i, j])
                g = gh + (gl + pl)
            if j == t:
                if kind == INDEX:
                    g = pt1h + pt1l
                elif kind == SMOOTHING:
                    gh, gl = _dd_add(pt1h, pt1l, ch, cl)
                    g = gh + gl
                elif soft[i, j] == 1.0:
                    g = pt1h + pt1l
            grad[i, j] = g
            scale = 0.0 if dh[j] == -np.inf else (depth - dh[j]) * ph
            grad_scale[i, j] = scale + abs(g)
            if keep:
                p_out[i, j] = ph
                d_out[i, j] = dh[j]
    return 0


def reference_rows_into(z, target, kind, soft, eps, depth, keep, loss, log_s, grad, grad_scale, p_out, d_out, argmax,
                        fallback, floor) -> None:
    """`reference_rows` with this module's exp tables."""
    reference_rows(z, target, kind, soft, eps, depth, keep, loss, log_s, grad, grad_scale, p_out, d_out, argmax,
                   fallback, INV_STEP, L1, L2, L3, T_HI, T_LO, POW2, floor)
