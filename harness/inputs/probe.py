"""`cestab probe`: every adapter on a user's own batch, for the engineer whose run just hit NaN.

Files are untrusted: `np.load(allow_pickle=False)` only, so a pickled file is refused, not
executed. Logits may be (N, V) or (N, T, V) (flattened to rows); labels are integer classes
of shape (N,) or (N, T), where -100 (PyTorch's ignore_index) marks ignored rows, or dense
label rows (N, V) that are exact in the dtype and sum to exactly 1. One example saved on its
own (`np.save('z.npy', logits[0])`, 1-D (V,)) is read as one row, with a note saying so:
that is what a user saving the one failing example means.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np

from harness.numerics import dtypes
from harness.numerics.cases import Case
from harness.errors import UsageError
from harness.store import memory, validate

IGNORE_INDEX = -100
_DTYPE_OF = {np.dtype(np.float16): "float16", np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def load_array(path: str | Path, what: str, extra_per_element: int = 0) -> np.ndarray:
    """The one array in a .npy file, or in a .npz archive holding exactly one (or `what`);
    its header checked and bounded before the data is read (`validate.load_array`)."""
    return validate.load_array(path, what, extra_per_element)[0]


def _logits_dtype(logits: np.ndarray, dtype: str | None) -> tuple[np.ndarray, str]:
    if logits.dtype.kind == "V" and logits.dtype.itemsize == 2 and not logits.dtype.fields:
        logits = logits.view(ml_dtypes.bfloat16)  # bfloat16 saved by numpy as raw 2 bytes
    if logits.dtype == ml_dtypes.bfloat16:
        found = "bfloat16"
    elif logits.dtype in _DTYPE_OF:
        found = _DTYPE_OF[logits.dtype]
    else:
        raise UsageError(f"logits must be float16, bfloat16, float32 or float64, got {_dtype_name(logits.dtype)}")
    if dtype is None or dtype == found:
        return logits, found
    wide = logits.astype(np.float64)
    with np.errstate(over="ignore"):  # overflow is reported below, not as numpy's RuntimeWarning
        rounded = dtypes.exact(wide, dtype)
    overflow = np.isfinite(wide) & ~np.isfinite(rounded)
    if overflow.any():
        i = np.unravel_index(int(np.flatnonzero(overflow)[0]), wide.shape)
        raise UsageError(f"logit {wide[i]:g} at {tuple(int(k) for k in i)} is beyond {dtype}'s range "
                         f"(largest {dtypes.get(dtype).max:g}) and would become inf; {int(overflow.sum())} such logits "
                         f"(keep the file's own {found}, or leave out --dtype)")
    return rounded, dtype


def _dtype_name(dt: np.dtype) -> str:
    """A dtype as a person names it: "int32", "a 3-byte raw type", not numpy's "|V3"."""
    if dt.fields:
        return "a structured type (" + ", ".join(dt.names) + ")"
    if dt.kind == "V":
        return f"a {dt.itemsize}-byte raw type"
    return str(dt)


def batch(logits_path, labels_path, dtype: str | None = None, notes: list | None = None) -> Case:
    """A validated Case from the user's files; UsageError naming the problem otherwise.
    What was read other than as written (a 1-D example as one row) is appended to `notes`."""
    if dtype is not None:
        dtypes.get(dtype)
    logits, dtype = _logits_dtype(load_array(logits_path, "logits", memory.BYTES_PER_ELEMENT), dtype)
    labels = load_array(labels_path, "labels", 8)
    out_notes, notes = notes, []
    if logits.ndim == 1 and logits.shape[0] >= 2:  # np.save of one example, logits[0]
        logits = logits[None, :]
        notes.append(f"1-D logits read as one row (1, {logits.shape[1]})")
        if labels.ndim == 0:
            labels = labels[None]
            notes.append("scalar label read as that row's class")
        elif labels.ndim == 1 and labels.dtype.kind == "f" and labels.shape == logits.shape[1:]:
            labels = labels[None, :]
            notes.append("1-D dense labels read as that row's")
    if logits.ndim not in (2, 3) or logits.shape[-1] < 2 or logits.size == 0:
        raise UsageError(f"logits must be (N, V) or (N, T, V) with V >= 2 and N > 0 (or one example (V,)), got shape {logits.shape}")
    v = logits.shape[-1]
    note = " ".join([f"{logits_path} {labels_path}", *(f"(note: {n})" for n in notes)])
    if out_notes is not None:
        out_notes.extend(notes)
    rows = logits.reshape(-1, v)
    batch_shape = tuple(logits.shape[:-1]) if logits.ndim == 3 else ()
    if labels.dtype.kind in "iu":
        if labels.shape != logits.shape[:-1]:
            raise UsageError(f"labels shape {labels.shape} does not match logits {logits.shape} (expected {logits.shape[:-1]})")
        flat = labels.reshape(-1)
        if flat.dtype.kind == "u" and flat.size and flat.max() >= v:  # before int64: 2**64-100 would wrap to -100
            i = int(np.argmax(flat >= v))
            raise UsageError(f"label {int(flat[i])} at row {i} is out of range [0, {v}) ({int((flat >= v).sum())} such rows)")
        target = flat.astype(np.int64)
        ignored = target == IGNORE_INDEX
        bad = ~ignored & ((target < 0) | (target >= v))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UsageError(f"label {int(target[i])} at row {i} is out of range [0, {v}) ({int(bad.sum())} such rows)")
        target = np.where(ignored, 0, target)
        return Case("user/batch", "user", dtype, rows, target, ignored=ignored if ignored.any() else None, source="user",
                    note=note, batch_shape=batch_shape)
    if labels.dtype.kind == "f":
        if labels.shape == logits.shape[:-1] and labels.shape != rows.shape:
            raise UsageError(f"labels are {labels.dtype} of shape {labels.shape}: class ids must be integers "
                             "(save them with .astype(int)); float labels are dense rows (N, V) summing to 1")
        if labels.shape != rows.shape:
            raise UsageError(f"dense labels shape {labels.shape} does not match logits rows {rows.shape}")
        y = labels.astype(np.float64)
        if not np.isfinite(y).all() or (y < 0).any() or (y.sum(axis=1) != 1.0).any():
            raise UsageError("dense labels must be non-negative and sum to exactly 1 per row")
        if not (y.astype(rows.dtype).astype(np.float64) == y).all():
            raise UsageError(f"dense labels are not exact in {dtype}; round them to {dtype} first")
        return Case("user/batch", "user", dtype, rows, y.argmax(axis=1), label_kind="soft", soft_labels=y, source="user",
                    note=note, batch_shape=batch_shape)
    raise UsageError(f"labels must be integer classes or float probabilities, got {_dtype_name(labels.dtype)}")
