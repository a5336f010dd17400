"""The attainable bound: how close to the truth a *careful* implementation gets, element by element.

cestab grades every element (a row's loss, one gradient component) against two bounds,
both of the form

    |computed - true| <= ulps * ulp(true) + cond * u_w * scale

with `ulp` in the tested dtype, `u_w` the unit roundoff of the precision the model computes
in, and `scale` a per-element coefficient the reference computes from the exact inputs:

- the *textbook* bound (`tolerances.TABLE`, `Reference.loss_scale` / `grad_scale`): the
  max-shift algorithm in the tested dtype, log(sum), p - y by subtraction. Its scale has an
  absolute floor of about log2(V) for the loss and for p_t - 1, so a true loss of 1e-30
  returned as 0, or p_t - 1 = -1e-3 returned as 0, is within it.
- the *attainable* bound (this module, `Reference.loss_scale_att` / `grad_scale_att`): the
  careful algorithm below. Its scale is the componentwise condition of each element, with no
  absolute floor: a true 1e-30 must come back near 1e-30.

Status (`metrics`): `ok` within the attainable bound; `lossy` outside it but within the
textbook bound ("stable, but loses relative accuracy where a careful implementation does
not"); `inaccurate` outside both.

The careful model (the inputs are exact in the tested dtype; only rounding inside counts)
------------------------------------------------------------------------------------------
Per row, with a = the argmax, t = the target, c = E + D:

    m = max z                                   exact
    d_k = fl(z_k - m)                            d_k (1 + δ), |δ| <= u            (d_a = 0 exactly)
    e_k = fl(exp(d_k))                           e^{d_k} (1 + ε_k), |ε_k| <= u (|d_k| + E); e_a = 1
    T   = fl(sum_{k != a} e_k)                   sum e_k (1 + ε_k)(1 + θ_k), |θ_k| <= u D
    S   = fl(1 + T)
    loss  l_t = fl(fl(log1p(T)) - d_t)           two non-negative terms: no cancellation
    p_j = fl(e_j / S)                            j with y_j = 0
    p_t - 1 = -fl(S_{-t} / S),  S_{-t} = T if t == a else fl(1 + fl(T - e_t))   (no 1 - p_t)

E = 5: exp and log1p within 2.5 ulps = 5u (numpy's SIMD float32 exp measured 2.4 ulps,
log1p 1.7; glibc and Sleef u10 are within 1). The `|d_k| u` in ε_k is not the library's
fault: the rounding of d_k moves exp's argument by up to u |d_k|, which exp turns into a
relative error u |d_k| (100 ulps of p_k at d_k = -100 in float32; no code computing in the
dtype avoids it). D = 2 + log2 V: the depth of a blocked pairwise sum (numpy's, torch's).
float16/bfloat16: every step above in float32 (u_w = float32's u), then one rounding of each
result to the output dtype (<= half an ulp at the computed value, <= 1 ulp at the true one).

Derivation (first order in u; W = sum_{k != a} p_k (|d_k| + c) + (V - 1) η / (2u), the
condition of log S; η is the work dtype's smallest subnormal: an e_k in the subnormal range
errs by up to η/2 absolutely, beyond its relative ε_k, so T by up to (V - 1) η / 2 more):

- |T - T_true| <= u sum_{k != a} e_k (|d_k| + E + D) = u S W; |S - S_true| <= u S (W + 1).
- loss (index/one-hot): log1p's argument errs by u S W, which log1p turns into
  T/(1+T) * u S W / T = u W; log1p itself (2.5 ulps) adds <= E u log S; d_t adds u |d_t|;
  the final addition u l_t. With log S + |d_t| = l_t:  scale = W + E log S + (l - log S) + l.
  Soft and smoothed labels add sum_j y_j (log S - d_j): each -d_j, product and the V-term sum
  of non-negative terms adds (D + 2) sum_j y_j |d_j| = (D + 2)(l - log S), and smoothing's
  labels eps/V, rounded once, add u l. (One-hot labels' zeros add exactly: one-hot is index.)
- gradient, y_j = 0 (p_j = e_j / S): relative error ε_j + σ + u, σ = S's relative error:
  scale_j = p_j (|d_j| + E + W + 2) for j != a, and p_a (W + 2) at the argmax (e_a = 1 exactly).
- gradient at the target, q = 1 - p_t = S_{-t} / S:
  t == a: T errs by u S W, the division by S and its rounding add q (W + 2):
          scale_t = W + q (W + 2);
  t != a: S_{-t} also takes e_t's error u e_t (|d_t| + E) and the roundings of T - e_t
          (<= u (T - e_t)) and 1 + (.) (u S_{-t}), each <= u S q; in all u S (W + p_t(|d_t| + E) + 2q):
          scale_t = W + p_t (|d_t| + E) + 2 q + q (W + 2).
- fractional labels: a soft y_j in (0, 1) (exact in every dtype, multiples of 1/256) adds the
  rounding of p_j - y_j: + |g_j|. Smoothing's labels are formed from eps in the working
  precision: + |g_j| + y_j.

These are the componentwise condition numbers of l and of g_j (up to the constants E and D):
well conditioned everywhere except p_j close to a fractional y_j, where |g_j| is tiny and the
y_j term dominates, as it must for every algorithm.

cond = 1: the scale already carries the constants; the tests (`tests/test_bounds.py`) show
`numpy.careful` (this model written out) and `torch.careful` within the bound over every
regime, and the bound *tight*: their worst ratio above 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.numerics import dtypes

#: exp and log1p error, in units of u (2.5 ulps).
E = 5.0


@dataclass(frozen=True)
class Bound:
    ulps: float  # allowed error in ulps of the true value (the final rounding, subnormal floors)
    cond: float  # multiplier of u_w * scale
    work: str  # the precision the model computes in (its unit roundoff is u_w)

    @property
    def unit_roundoff(self) -> float:
        return dtypes.get(self.work).unit_roundoff


#: float16/bfloat16: float32 work, one rounding to the output (<= 1 ulp at the true value).
#: float32/float64: work in the dtype; 2 ulps cover subnormal e_k and p_k, each rounded once
#: at the subnormal floor (the relative model above stops there).
ATTAINABLE: dict[str, Bound] = {
    "float16": Bound(ulps=1, cond=1, work="float32"),
    "bfloat16": Bound(ulps=1, cond=1, work="float32"),
    "float32": Bound(ulps=2, cond=1, work="float32"),
    "float64": Bound(ulps=2, cond=1, work="float64"),
}


def get(dtype: str) -> Bound:
    dtypes.get(dtype)  # validates the name
    return ATTAINABLE[dtype]


def depth(v: int) -> float:
    """D = 2 + log2 V: the error depth of a blocked pairwise sum of V terms."""
    return 2.0 + float(np.log2(max(v, 2)))


def subnormal_floor(dtype: str) -> float:
    """η / (2 u_w): half the work dtype's smallest subnormal, in units of its u."""
    work = dtypes.get(get(dtype).work)
    return 2.0 ** (work.min_exponent - work.mantissa_bits) / (2 * work.unit_roundoff)


def softmax_condition(p: np.ndarray, d: np.ndarray, live: np.ndarray, a: np.ndarray, floor: float) -> np.ndarray:
    """W per row: sum_{k != a} p_k (|d_k| + c) + (V - 1) floor, the first-order error of
    log S (units of u).

    `p` (N, V) float64 probabilities, `d` (N, V) float64 z - m (-inf on masks), `live` the
    finite d, `a` the argmax per row, `floor` = `subnormal_floor(dtype)`."""
    n, v = p.shape
    c = E + depth(v)
    all_live = live.all()  # no -inf mask: the same numbers with half the passes
    terms = np.abs(d if all_live else np.where(live, d, 0.0))
    terms += c
    terms *= p
    if not all_live:
        terms[~live] = 0.0
    terms[np.arange(n), a] = 0.0
    return terms.sum(axis=1) + (v - 1) * floor


def grad_scale(p, d, live, a, target, w, kind: str, y=None) -> np.ndarray:
    """The attainable gradient scale (N, V), see the module docstring.

    `p` float64 probabilities (unmodified: p_t, not p_t - 1), `w` from `softmax_condition`,
    `y` the (N, V) float64 label matrix for soft and smoothing labels (None for index/one-hot).
    """
    n, v = p.shape
    rows = np.arange(n)
    all_live = live.all()  # no -inf mask: the same numbers with fewer passes
    abs_d = np.abs(d if all_live else np.where(live, d, 0.0))
    scale = abs_d + E
    scale += w[:, None]
    scale += 2.0
    scale *= p
    scale[rows, a] = p[rows, a] * (w + 2.0)  # e_a = 1 exactly
    if not all_live:
        scale[~live] = 0.0
    # The target in the careful form -S_{-t} / S (a label weight of exactly 1; smoothing's
    # target too, before its label is added back).
    if kind == "soft":
        careful = y[rows, target] == 1.0
    else:
        careful = np.ones(n, dtype=bool)
    r, t = rows[careful], target[careful]
    p_t = p[r, t]
    q = 1.0 - p_t  # float64 is plenty for a scale
    w_r = w[careful]
    at_max = t == a[careful]
    off = np.where(at_max, 0.0, p_t * (abs_d[r, t] + E) + 2.0 * q)
    scale[r, t] = w_r + off + q * (w_r + 2.0)
    if kind in ("soft", "smoothing"):
        g = p - y
        g[r, t] = -q + (1.0 - y[r, t])  # p_t - y_t = (p_t - 1) + eps (V - 1) / V for smoothing
        fractional = (y > 0) & (y < 1)
        extra = np.where(fractional, np.abs(g), 0.0)
        if kind == "smoothing":  # the rounded label: eps / V, or eps (V - 1) / V added to -q
            added = y.copy()
            added[r, t] = 1.0 - y[r, t]
            extra = extra + np.where(fractional, added, 0.0)
        scale = scale + extra
    return scale


def loss_scale(w, log_s, loss, kind: str, v: int) -> np.ndarray:
    """The attainable loss scale (N,), see the module docstring. `log_s` log S and `loss` the
    true loss per row, float64."""
    log_s = np.asarray(log_s, np.float64)
    loss = np.asarray(loss, np.float64)
    with np.errstate(invalid="ignore"):
        rest = np.maximum(loss - log_s, 0.0)  # sum_j y_j |d_j|, the label-weighted distances
    per_distance = 1.0 if kind in ("index", "onehot") else depth(v) + 2.0
    out = w + E * log_s + per_distance * rest + loss
    if kind == "smoothing":
        out = out + loss
    return out
