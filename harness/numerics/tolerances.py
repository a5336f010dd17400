"""The tolerance table: how far from the truth an element may be in each dtype.

An element (a row's loss, or one gradient component) is within tolerance when

    |computed - true| <= ulps * ulp(true) + cond * u * scale

with `u` the unit roundoff and `ulp` taken in the *tested* dtype, and `scale` the
condition scale the reference computes for that element:

- loss: loss + 2 + log2(V). A backward-stable implementation in the tested dtype rounds
  z - m, sums V exponentials and takes a log; each step errs by u relative to the
  quantities it touches, which add up to this scale, not to the (possibly 1e-30) loss.
  Soft and smoothed labels also sum V terms y_j log p_j, which adds (2 + log2(V)) * loss
  (without it numpy.stable's own smoothed loss was 1.19x this bound at V = 1000 in float64).
- gradient: p_j (2 + log2(V) + |z_j - m|) + |g_j|. exp amplifies the rounding of z_j - m
  by |z_j - m| (up to 104 in float32: 100 ulps of p_j that no float32 code can avoid),
  the sum adds log2(V), and the final p - y rounds once.

This is the *textbook* bound: what the max-shift algorithm in the tested dtype loses. A
stable max-shift loss of 0 for a true 1e-30 is within it (its absolute error is far below
u * scale). The *attainable* bound in `bounds` is what a careful implementation keeps, with
no such absolute floor; the status is `ok` within that, `lossy` outside it but within this
table, and `inaccurate` outside both: worse than even the textbook algorithm in this dtype.

Flush to zero: XLA and TensorFlow's CPU kernels (and many GPU kernels) flush subnormal
results to zero for speed. A true value below the smallest normal number returned as exactly
0 is counted in `n_flushed` and not judged: its absolute error is below 2**-126 in float32,
invisible next to any normal gradient, and a documented mode rather than an algorithmic
fault. Set `allow_flush_to_zero=False` for a dtype to judge it like any other error.

Reasoning per dtype:
- float16 / bfloat16: frameworks usually compute in float32 and round once, so
  ulps = 2 leaves room for that final rounding plus one ulp of the float32 work; cond = 2.
- float32 / float64: computed in their own precision with vectorised exp/log of about
  1 ulp and blocked sums: ulps = 4 and cond = 4.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.numerics import dtypes


@dataclass(frozen=True)
class Tolerance:
    ulps: float  # allowed error in ulps of the true value (covers rounding of the result)
    cond: float  # allowed error in units of u * condition scale (covers the computation)
    allow_flush_to_zero: bool = True  # a subnormal truth returned as 0 is counted, not judged


TABLE: dict[str, Tolerance] = {
    "float16": Tolerance(ulps=2, cond=2),
    "bfloat16": Tolerance(ulps=2, cond=2),
    "float32": Tolerance(ulps=4, cond=4),
    "float64": Tolerance(ulps=4, cond=4),
}


def get(dtype: str) -> Tolerance:
    dtypes.get(dtype)  # validates the name
    return TABLE[dtype]
