"""Tested dtypes, named by strings everywhere ("bfloat16"), and their floating-point facts.

numpy has no bfloat16; `ml_dtypes.bfloat16` is the exact IEEE-style stand-in that JAX
also uses, so a bfloat16 case is an ordinary numpy array of that dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from harness.errors import UsageError

DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class FloatFormat:
    """The facts of one binary floating-point format that the metrics and regimes need."""

    name: str
    numpy_dtype: np.dtype
    mantissa_bits: int  # explicit fraction bits (p - 1)
    min_exponent: int  # exponent of the smallest normal number: 2**min_exponent
    max: float
    smallest_subnormal: float

    @property
    def unit_roundoff(self) -> float:
        """u = 2**-p: the largest relative error of round-to-nearest."""
        return 2.0 ** -(self.mantissa_bits + 1)

    @property
    def exp_overflow(self) -> float:
        """The x above which exp(x) is not finite in this format."""
        return float(np.log(self.max))

    @property
    def exp_underflow(self) -> float:
        """The x below which exp(x) rounds to zero (below half the smallest subnormal)."""
        return float(np.log(self.smallest_subnormal) - np.log(2.0))


def _format(name: str, dtype) -> FloatFormat:
    info = ml_dtypes.finfo(dtype)
    return FloatFormat(
        name=name,
        numpy_dtype=np.dtype(dtype),
        mantissa_bits=int(info.nmant),
        min_exponent=int(info.minexp),
        max=float(info.max),
        smallest_subnormal=float(info.smallest_subnormal),
    )


FORMATS: dict[str, FloatFormat] = {
    "float16": _format("float16", np.float16),
    "bfloat16": _format("bfloat16", ml_dtypes.bfloat16),
    "float32": _format("float32", np.float32),
    "float64": _format("float64", np.float64),
}


def get(name: str) -> FloatFormat:
    """The format called `name`, or a UsageError naming the valid choices."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown dtype {name!r}; choose from {', '.join(DTYPE_NAMES)}") from None


def exact(values, name: str) -> np.ndarray:
    """Round `values` to the tested dtype (round to nearest even): the case's exact inputs."""
    return np.asarray(values, dtype=np.float64).astype(get(name).numpy_dtype)


def widen(values: np.ndarray) -> np.ndarray:
    """float64 copy of exact values in a narrower dtype (exact: every such value is a float64)."""
    return np.asarray(values).astype(np.float64)


# --- the dtype's representable numbers, in order (the search's and the strategies' steps)

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def ordinals(values, fmt: FloatFormat) -> np.ndarray:
    """Signed position of each value among the dtype's finite floats (int64): neighbours
    differ by 1, +0 and -0 are both 0. `|ordinals(a) - ordinals(b)|` counts ulps of the
    tested dtype between a and b (ulps of the smaller binade across a power of two)."""
    exact_values = exact(values, fmt.name)
    a = np.ascontiguousarray(exact_values).reshape(-1)
    bits = 8 * a.itemsize
    u = a.view(_UINT[a.itemsize]).astype(np.uint64)
    magnitude = (u & np.uint64((1 << (bits - 1)) - 1)).astype(np.int64)
    return np.where((u >> np.uint64(bits - 1)) == 1, -magnitude, magnitude).reshape(exact_values.shape)


def from_ordinals(ords, fmt: FloatFormat) -> np.ndarray:
    """float64 values at these positions (`ordinals`' inverse), saturating at +-max."""
    top = int(ordinals(fmt.max, fmt))
    o = np.clip(np.asarray(ords, dtype=np.int64), -top, top)
    size = fmt.numpy_dtype.itemsize
    bits = np.abs(o).astype(np.uint64) | ((o < 0).astype(np.uint64) << np.uint64(8 * size - 1))
    flat = bits.reshape(-1).astype(_UINT[size]).view(fmt.numpy_dtype)
    return widen(flat).reshape(o.shape)


def step(values, k, fmt: FloatFormat) -> np.ndarray:
    """`values` moved k representable numbers of the dtype up (k < 0: down), within +-max."""
    return from_ordinals(ordinals(values, fmt) + np.asarray(k, dtype=np.int64), fmt)
