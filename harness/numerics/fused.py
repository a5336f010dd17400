"""Judging in one compiled pass per adapter: what `metrics.element_errors` followed by
`metrics.Reduction.add` (or `rowsearch.judge_rows`) computes, fused element by element.

Why: the numpy code makes ~40 passes over temporaries of the whole block for each adapter
(the difference, its masks, ulps, two ratios, their maxima and counts), ~30 ns per
element on these machines: judging cost several times what the implementations under test
spend computing the same elements. One compiled loop reads each element once.

The numpy code in `metrics` stays the definition: these kernels follow it expression by
expression (the same IEEE operations in the same order, numpy's NaN rules for max and
argmax, numpy's pairwise summation for the sum of squares), and tests/test_fused.py checks
that they give the same numbers bit for bit on normal, non-finite, overflowing,
subnormal and flushed elements. Where numba is not installed, or the truth has no float64
pieces (`TruthTerms.hi` None), the callers use the numpy code.

Compiled once per machine (numba's cache, keyed by the CPU), on first use.
"""

from __future__ import annotations

import functools
import types

import numpy as np

_PW_BLOCKSIZE = 128
_MAXF = float(np.finfo(np.float64).max)


@functools.cache
def kernels():
    """The compiled kernels (a namespace), or None where numba is missing."""
    import sys

    # numba imports scipy to check its version (numba/__init__.py) and for BLAS when its CPU
    # target starts (numba/np/arraymath.py), neither of which these loops use; scipy is one
    # of the frameworks under test, which the parent never loads (tests/test_imports.py).
    hidden = "scipy" not in sys.modules
    if hidden:
        sys.modules["scipy"] = None  # `import scipy` raises ImportError, which numba allows
    try:
        import numba

        out = _compile(numba)
        out.sum_squares(np.zeros(1))  # starts the CPU target
    except ImportError:
        return None
    finally:
        if hidden:
            del sys.modules["scipy"]
    return out


def _compile(numba):
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

    @jit
    def pairwise_squares(a, lo, n):
        """numpy's pairwise sum of a[lo:lo+n] ** 2 (loops_utils.h: `pairwise_sum`)."""
        if n < 8:
            res = 0.0
            for i in range(lo, lo + n):
                res += a[i] * a[i]
            return res
        if n <= _PW_BLOCKSIZE:
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
        n2 = n // 2
        n2 -= n2 % 8
        return pairwise_squares(a, lo, n2) + pairwise_squares(a, lo + n2, n - n2)

    @jit
    def sum_squares(a):
        """`float(np.square(a).sum())` for a contiguous float64 `a`, in numpy's order (one
        pairwise sum over the whole array: numpy coalesces a contiguous array's axes)."""
        return 0.0 + pairwise_squares(a, 0, a.size)

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

    @jit
    def reduce_block(c, hi, lo, has_lo, u, allowance, allowance_att, tiny, is_inf, finite_overflow, ftz, scratch,
                     plain):
        """`reduce_full`, first tried on the assumption that holds for most blocks (`plain`: no
        inf, NaN or tiny truth): then an element is special only if its difference is not
        finite, and the masks and flushes of `element` are no-ops; any special element sends
        the block to `reduce_full`."""
        if not plain:
            return reduce_full(c, hi, lo, has_lo, u, allowance, allowance_att, tiny, is_inf, finite_overflow, ftz,
                               scratch)
        n = c.size
        arg, rmax = 0, -np.inf
        n_bad = n_lossy = 0
        att_max = abs_max = rel_max = ulps_max = -np.inf
        special = False
        nan = False  # a NaN allowance (a NaN scale) makes NaN ratios: numpy's rules, in reduce_full
        for k in range(n):
            t = hi[k]
            d = abs((np.float64(c[k]) - t) - (lo[k] if has_lo else 0.0))
            special |= not d < np.inf
            scratch[k] = d
            ulps = d / u[k]
            r = 0.0 if d == 0 else d / allowance[k]
            ra = 0.0 if d == 0 else d / allowance_att[k]
            rel = 0.0 if d == 0 else d / abs(t)
            nan |= (r != r) | (ra != ra) | (ulps != ulps)
            if r > rmax:
                arg, rmax = k, r
            if ra > 1:
                if r > 1:
                    n_bad += 1
                else:
                    n_lossy += 1
            att_max = ra if ra > att_max else att_max
            abs_max = d if d > abs_max else abs_max
            rel_max = rel if rel > rel_max else rel_max
            ulps_max = ulps if ulps > ulps_max else ulps_max
        if special or nan:
            return reduce_full(c, hi, lo, has_lo, u, allowance, allowance_att, tiny, is_inf, finite_overflow, ftz,
                               scratch)
        err_sq = sum_squares(scratch[:n])
        return arg, rmax, n_bad, n_lossy, att_max, 0, 0, abs_max, rel_max, ulps_max, err_sq

    @jit
    def row_scores(loss, lhi, llo, has_llo, lu, lallow, ltiny, linf, lfov, grad, ghi, glo, has_glo, gu, gallow,
                   gtiny, ginf, gfov, gspecial, ftz, defined, broken, score, nonfinite_rows, loss_worse):
        """`rowsearch.judge_rows` on the textbook bound: per row the larger of the loss's
        ratio and the row's largest gradient ratio (NaN as inf, inf as float64's max, as
        `np.nan_to_num(ratio, nan=inf)`), BROKEN where anything is non-finite. `gspecial`:
        the rows whose truth has an inf or a tiny element (`special_rows`)."""
        n = loss.size
        v = grad.size // n if n else 0
        for i in range(n):
            _, _, lr, _, lnf, _ = element(np.float64(loss[i]), lhi[i], llo[i] if has_llo else 0.0, lu[i], lallow[i],
                                          lallow[i], ltiny[i], linf[i], lfov[i], ftz)
            lr = np.inf if np.isnan(lr) else (_MAXF if lr == np.inf else lr)
            gr = 0.0
            gnf = False
            special = gspecial[i]  # an inf or tiny truth in the row: every element's masks matter
            if not special:  # else: a finite difference everywhere makes `element` plain division
                for j in range(i * v, i * v + v):
                    d = abs((np.float64(grad[j]) - ghi[j]) - (glo[j] if has_glo else 0.0))
                    special |= not d < np.inf
                    r = 0.0 if d == 0 else d / gallow[j]
                    special |= not r < np.inf  # NaN or inf: nan_to_num's rules, below
                    gr = r if r > gr else gr
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

    return types.SimpleNamespace(reduce_block=reduce_block, row_scores=row_scores, sum_squares=sum_squares)


_EMPTY = np.zeros(0)


def flat(c) -> np.ndarray:
    """A computed block as a flat float64 array (converted exactly, as `element_errors`
    does: one signature per kernel, one compilation)."""
    return np.ascontiguousarray(c, dtype=np.float64).reshape(-1)


def terms_args(terms, attainable: bool = True) -> tuple:
    """A `TruthTerms`' arrays as the kernels take them (flat; lo filled in where absent):
    `reduce_block`'s with the attainable allowance (the textbook one where there is none),
    `row_scores`'s (`attainable` False) without it."""
    lo = _EMPTY if terms.lo is None else terms.lo.reshape(-1)
    att = terms.allowance if terms.allowance_att is None else terms.allowance_att
    allowances = (terms.allowance.reshape(-1), att.reshape(-1)) if attainable else (terms.allowance.reshape(-1),)
    return (terms.hi.reshape(-1), lo, terms.lo is not None, terms.u.reshape(-1), *allowances, terms.tiny.reshape(-1),
            terms.is_inf.reshape(-1), terms.finite_overflow.reshape(-1))


def special_rows(terms) -> np.ndarray:
    """Rows of a (N, V) truth with an inf or a tiny element (kept on `terms`: every adapter's
    scores read them): the rows where `row_scores` needs `element`'s masks."""
    if terms.special_rows is None:
        terms.special_rows = np.ascontiguousarray(terms.is_inf.any(axis=1) | terms.tiny.any(axis=1))
    return terms.special_rows
