"""`cestab probe`: every adapter on a user's own batch, for the engineer whose run just hit NaN.

Files are untrusted: `np.load(allow_pickle=False)` only, so a pickled file is refused, not
executed. Logits may be (N, V) or (N, T, V) (flattened to rows); labels are integer classes
of shape (N,) or (N, T), where -100 (PyTorch's ignore_index) marks ignored rows, or dense
label rows (N, V) that are exact in the dtype and sum to exactly 1.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

from harness.numerics import dtypes
from harness.numerics.cases import Case
from harness.errors import UsageError

IGNORE_INDEX = -100
_DTYPE_OF = {np.dtype(np.float16): "float16", np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def load_array(path: str | Path, what: str) -> np.ndarray:
    """The one array in a .npy file, or in a .npz archive holding exactly one (or `what`)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not (magic == b"\x93NUMPY" or magic.startswith(b"PK\x03\x04")):  # np.load would try pickle
        raise UsageError(f"{what} file {path} is not a readable .npy/.npz file")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise UsageError(f"{what} file {path} holds pickled objects; save plain arrays (np.save)") from None
        raise UsageError(f"{what} file {path} is not a readable .npy/.npz file: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{what} file {path} is not a readable .npy/.npz file: {exc}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = data.files
            name = what if what in names else (names[0] if len(names) == 1 else None)
            if name is None:
                raise UsageError(f"{path} holds {len(names)} arrays ({', '.join(names)}); name one '{what}' or keep one")
            try:
                return data[name]
            except ValueError:
                raise UsageError(f"{what} array in {path} holds pickled objects; save plain arrays") from None
    return data


def _logits_dtype(logits: np.ndarray, dtype: str | None) -> tuple[np.ndarray, str]:
    if logits.dtype.kind == "V" and logits.dtype.itemsize == 2 and dtype in (None, "bfloat16"):
        return logits.view(ml_dtypes.bfloat16), "bfloat16"  # bfloat16 saved by numpy as raw 2 bytes
    if logits.dtype == ml_dtypes.bfloat16:
        found = "bfloat16"
    elif logits.dtype in _DTYPE_OF:
        found = _DTYPE_OF[logits.dtype]
    else:
        raise UsageError(f"logits must be float16, bfloat16, float32 or float64, got {logits.dtype}")
    if dtype is None or dtype == found:
        return logits, found
    return dtypes.exact(logits.astype(np.float64), dtype), dtype


def batch(logits_path, labels_path, dtype: str | None = None) -> Case:
    """A validated Case from the user's files; UsageError naming the problem otherwise."""
    if dtype is not None:
        dtypes.get(dtype)
    logits, dtype = _logits_dtype(load_array(logits_path, "logits"), dtype)
    labels = load_array(labels_path, "labels")
    if logits.ndim not in (2, 3) or logits.shape[-1] < 2 or logits.size == 0:
        raise UsageError(f"logits must be (N, V) or (N, T, V) with V >= 2 and N > 0, got shape {logits.shape}")
    v = logits.shape[-1]
    rows = logits.reshape(-1, v)
    batch_shape = tuple(logits.shape[:-1]) if logits.ndim == 3 else ()
    if labels.dtype.kind in "iu":
        if labels.shape != logits.shape[:-1]:
            raise UsageError(f"labels shape {labels.shape} does not match logits {logits.shape} (expected {logits.shape[:-1]})")
        target = labels.reshape(-1).astype(np.int64)
        ignored = target == IGNORE_INDEX
        bad = ~ignored & ((target < 0) | (target >= v))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UsageError(f"label {int(target[i])} at row {i} is out of range [0, {v}) ({int(bad.sum())} such rows)")
        target = np.where(ignored, 0, target)
        return Case("user/batch", "user", dtype, rows, target, ignored=ignored if ignored.any() else None, source="user",
                    note=f"{logits_path} {labels_path}", batch_shape=batch_shape)
    if labels.dtype.kind == "f":
        if labels.shape != rows.shape:
            raise UsageError(f"dense labels shape {labels.shape} does not match logits rows {rows.shape}")
        y = labels.astype(np.float64)
        if (y < 0).any() or (y.sum(axis=1) != 1.0).any():
            raise UsageError("dense labels must be non-negative and sum to exactly 1 per row")
        if not (y.astype(rows.dtype).astype(np.float64) == y).all():
            raise UsageError(f"dense labels are not exact in {dtype}; round them to {dtype} first")
        return Case("user/batch", "user", dtype, rows, y.argmax(axis=1), label_kind="soft", soft_labels=y, source="user",
                    note=f"{logits_path} {labels_path}", batch_shape=batch_shape)
    raise UsageError(f"labels must be integer classes or float probabilities, got {labels.dtype}")
