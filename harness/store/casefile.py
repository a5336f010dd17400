"""Saving and loading one case as `.npz`: the replayable record of a finding.

Logits are stored as their raw bits (uint16/32/64) plus the dtype name, so bfloat16 needs no
pickle; everything else is a plain array. Files are loaded with `allow_pickle=False`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from harness.numerics import dtypes
from harness.errors import first_line
from harness.numerics.cases import Case
from harness.errors import UsageError
from harness.store.runfolder import write_atomic

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
    """(case, info) from a file written by `save`; UsageError with one line otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            fmt = dtypes.get(info["dtype"])
            logits = data["logits_bits"].view(fmt.numpy_dtype)
            case = Case(
                case_id=info["case_id"],
                regime=info["regime"],
                dtype=info["dtype"],
                logits=logits,
                target=data["target"],
                label_kind=info["label_kind"],
                soft_labels=data["soft_labels"] if "soft_labels" in data else None,
                smoothing=float(info["smoothing"]),
                ignored=data["ignored"] if "ignored" in data else None,
                seed=int(info["seed"]),
                source=info["source"],
                note=info["note"],
                batch_shape=tuple(int(d) for d in info.get("batch_shape", ())),
            )
    except FileNotFoundError:
        raise UsageError(f"case file {path} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path} is not a cestab case file: " + first_line(f"{type(exc).__name__}: {exc}")) from None
    return case, info
