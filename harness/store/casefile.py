"""Saving and loading one case as `.npz`: the replayable record of a finding.

Logits are stored as their raw bits (uint16/32/64) plus the dtype name, so bfloat16 needs no
pickle; everything else is a plain array. Files are loaded with `allow_pickle=False`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.numerics import dtypes
from harness.errors import first_line
from harness.numerics.cases import Case
from harness.errors import UsageError
from harness.store.runfolder import write_atomic
from harness.store import memory, validate

_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def save(case: Case, path: str | Path, meta: dict | None = None) -> Path:
    """Write `case` (and `meta`, JSON-encoded: adapter, score, status ...) atomically."""
    path = Path(path)
    logits = np.ascontiguousarray(case.logits)
    arrays = {
        "logits_bits": logits.view(_BITS[logits.itemsize]),
        "target": case.target,
        "info": np.array(json.dumps({
            "case_id": case.case_id, "regime": case.regime, "dtype": case.dtype, "label_kind": case.label_kind,
            "smoothing": case.smoothing, "seed": case.seed, "source": case.source, "note": case.note,
            "batch_shape": list(case.batch_shape), **(meta or {}),
        })),
    }
    if case.soft_labels is not None:
        arrays["soft_labels"] = case.soft_labels
    if case.ignored is not None:
        arrays["ignored"] = case.ignored

    def write(tmp: Path):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    write_atomic(path, write)
    return path


def load(path: str | Path) -> tuple[Case, dict]:
    """(case, info) from a file written by `save`; UsageError with one line otherwise.

    Every array's header is checked and bounded before it is read (`validate.load_npz`), the
    info record's fields are type-checked, and the logits' bit width must be the dtype's:
    a 4-element uint16 array under "float32" would otherwise replay as another shape."""
    path = Path(path)
    data = validate.load_npz(path, "case file", ("logits_bits", "target", "info"), memory.BYTES_PER_ELEMENT)
    what = f"{path} is not a cestab case file"
    raw = data["info"]
    if raw.shape != () or raw.dtype.kind != "U":
        raise UsageError(f"{what}: info must be one JSON string")
    try:
        info = json.loads(str(raw))
    except ValueError as exc:
        raise UsageError(f"{what}: info is not JSON: {first_line(exc)}") from None
    except RecursionError:  # "[[[[..." deeper than Python's stack (found by tests/test_cli_fuzz.py)
        raise UsageError(f"{what}: info is not JSON: nested too deeply") from None
    info = validate.case_info(info, str(path))
    fmt = dtypes.get(info["dtype"])
    bits = data["logits_bits"]
    if bits.dtype != np.dtype(_BITS[fmt.numpy_dtype.itemsize]) or bits.ndim != 2:
        raise UsageError(f"{what}: logits_bits are {bits.dtype} of {bits.ndim} dimensions; {info['dtype']} logits "
                         f"are stored as 2-D {np.dtype(_BITS[fmt.numpy_dtype.itemsize])}")
    target = data["target"]
    if target.dtype.kind not in "iu" or (target.dtype.kind == "u" and target.size and target.max() > np.iinfo(np.int64).max):
        raise UsageError(f"{what}: target must be integer classes, got {target.dtype}")
    soft, ignored = data.get("soft_labels"), data.get("ignored")
    if soft is not None and (soft.dtype.kind != "f" or soft.shape != bits.shape):
        raise UsageError(f"{what}: soft_labels must be floats of the logits' shape {bits.shape}")
    if ignored is not None and ignored.dtype != bool:
        raise UsageError(f"{what}: ignored must be booleans")
    try:
        case = Case(
            case_id=info["case_id"],
            regime=info["regime"],
            dtype=info["dtype"],
            logits=bits.view(fmt.numpy_dtype),
            target=target.astype(np.int64),
            label_kind=info["label_kind"],
            soft_labels=None if soft is None else soft.astype(np.float64),
            smoothing=float(info["smoothing"]),
            ignored=ignored,
            seed=int(info["seed"]),
            source=info["source"],
            note=info["note"],
            batch_shape=tuple(int(d) for d in info.get("batch_shape", ())),
        )
    except UsageError as exc:
        raise UsageError(f"{what}: {exc}") from None
    return case, info
