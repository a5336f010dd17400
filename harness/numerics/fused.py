"""Judging in one compiled pass per adapter: what `metrics.element_errors` followed by
`metrics.Reduction.add` (or `rowsearch.judge_rows`) computes, fused element by element.

Why: the numpy code makes ~40 passes over temporaries of the whole block for each adapter
(the difference, its masks, ulps, two ratios, their maxima and counts), ~30 ns per
element on these machines: judging cost several times what the implementations under test
spend computing the same elements. One compiled loop reads each element once.
(`fused_kernels.truth_terms` does the same for `metrics.truth_terms`, once per truth:
~15 numpy passes became one.)

The numpy code in `metrics` stays the definition: these kernels follow it expression by
expression (the same IEEE operations in the same order, numpy's NaN rules for max and
argmax, numpy's pairwise summation for the sum of squares), and tests/test_fused.py checks
that they give the same numbers bit for bit on normal, non-finite, overflowing,
subnormal and flushed elements. Where numba is not installed, or the truth has no float64
pieces (`TruthTerms.hi` None), the callers use the numpy code.

Compiled once per checkout and machine (numba's cache, keyed by the CPU): by `make setup`
(`run.warmup`), else on first use; the loops are in `fused_kernels`, which only `kernels()`
imports (numba is not imported before it is used).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def kernels():
    """The compiled kernels (`fused_kernels`), or None where numba is missing."""
    import sys

    # numba imports scipy to check its version (numba/__init__.py) and for BLAS when its CPU
    # target starts (numba/np/arraymath.py), neither of which these loops use; scipy is one
    # of the frameworks under test, which the parent never loads (tests/test_imports.py).
    hidden = "scipy" not in sys.modules
    if hidden:
        sys.modules["scipy"] = None  # `import scipy` raises ImportError, which numba allows
    try:
        from harness.numerics import fused_kernels as out

        out.sum_squares(np.zeros(1))  # starts the CPU target
    except ImportError:
        return None
    finally:
        if hidden:
            del sys.modules["scipy"]
    return out


EMPTY = np.zeros(0)  # an absent optional array


def flat(c) -> np.ndarray:
    """A block (an answer, a truth, a scale) as a flat float64 array (converted exactly, as
    `element_errors` does: one signature per kernel, one compilation)."""
    return np.ascontiguousarray(c, dtype=np.float64).reshape(-1)


def terms_args(terms, attainable: bool = True) -> tuple:
    """A `TruthTerms`' arrays as the kernels take them (flat; lo filled in where absent):
    `reduce_block`'s with the attainable allowance (the textbook one where there is none),
    `row_scores`'s (`attainable` False) without it."""
    lo = EMPTY if terms.lo is None else terms.lo.reshape(-1)
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
