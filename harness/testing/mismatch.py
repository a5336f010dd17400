"""The mismatch report: what a failing test prints, in the style of numpy.testing.assert_allclose.

    Not within tolerance: |computed - true| <= 2 ulp(true) + 2 u scale  (float16, u = 2**-11)
    [torch.cross_entropy float16 grad] status nonfinite
    Mismatched elements: 2 / 40 (5%)
    Non-finite where the truth is finite: 1
    Max absolute difference: inf   Max ulps: inf   Max tolerance ratio: inf
    Worst elements:
      (row, class)       computed             true   abs err      ulps     x tol
      (3, 0)                  nan      -0.99999994       inf       inf       inf
    ...
    Case: search/float16/4x10/index/1a2b3c4d  regime search:normal+mask.target  4x10 index labels
    Repro: cestab repro .cestab-failures/torch.cross_entropy-1a2b3c4d.npz --adapters torch.cross_entropy

Everything is measured by `metrics.element_errors` against `reference.loss_and_grad` and
judged by the one tolerance table (`tolerances`): this module only selects and formats, so
the report can never disagree with the status the results table records.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np

from harness.store import casefile
from harness.numerics import bounds, dtypes
from harness.numerics import metrics
from harness.numerics import tolerances
from harness.numerics.cases import Case

#: How many of the worst elements a report lists (a few, like assert_allclose's maxima).
WORST = 5
#: Where failing cases are saved when the caller names no folder (in .gitignore).
DEFAULT_FOLDER = Path(".cestab-failures")


#: One quantity's mismatch: the same chunked reduction the results table is read from.
Quantity = metrics.Reduction


def quantities(ref, loss, grad, dtype: str, top: int = WORST) -> list[Quantity]:
    """Loss and gradient mismatches of (loss, grad) against the reference `ref`."""
    return [metrics.reduce_errors(ref, loss, "loss", dtype, top), metrics.reduce_errors(ref, grad, "grad", dtype, top)]


def tolerance_line(dtype: str) -> str:
    """The tolerance of `dtype`, with the numbers of the one table."""
    tol = tolerances.get(dtype)
    fmt = dtypes.get(dtype)
    u = fmt.unit_roundoff
    flush = "; subnormal truths flushed to 0 are not judged" if tol.allow_flush_to_zero else ""
    att = bounds.get(dtype)
    return (
        f"Not within tolerance: |computed - true| <= {tol.ulps:g} ulp(true) + {tol.cond:g} u scale  "
        f"({dtype}: u = 2**{int(np.log2(u))}; scale is the condition scale of harness.numerics.tolerances{flush})\n"
        f"Attainable bound (ok within it, lossy outside it): <= {att.ulps:g} ulp(true) + {att.cond:g} u_w scale_att  "
        f"({att.work} work: u_w = 2**{int(np.log2(att.unit_roundoff))}; harness.numerics.bounds)"
    )


def _num(x: float, dtype: str) -> str:
    digits = 17 if dtype == "float64" else 9
    return f"{x:.{digits}g}"


def format_quantity(q: Quantity, adapter_id: str, dtype: str, status: str) -> str:
    pct = 100.0 * q.n_bad / q.n if q.n else 0.0
    lines = [
        f"[{adapter_id} {dtype} {q.name}] status {status}",
        f"Mismatched elements: {q.n_bad} / {q.n} ({pct:.3g}%)",
        f"Outside the attainable bound only (lossy): {q.n_lossy}",
        f"Non-finite where the truth is finite: {q.n_nonfinite}",
        f"Max absolute difference: {q.abs_max:.6g}   Max ulps: {q.ulps_max:.6g}   Max tolerance ratio: {q.ratio_max:.6g}",
    ]
    if q.worst:
        where = "(row,)" if q.name == "loss" else "(row, class)"
        width = 25 if dtype == "float64" else 17
        lines.append("Worst elements:")
        lines.append(f"  {where:<14}{'computed':>{width}}{'true':>{width}}{'abs err':>11}{'ulps':>11}{'x tol':>11}{'x att':>11}")
        for el in q.worst:
            idx = "(" + ", ".join(map(str, el.index)) + ("," if len(el.index) == 1 else "") + ")"
            lines.append(
                f"  {idx:<14}{_num(el.computed, dtype):>{width}}{_num(el.true, dtype):>{width}}"
                f"{el.abs:>11.3g}{el.ulps:>11.3g}{el.ratio:>11.3g}{el.ratio_att:>11.3g}"
            )
    return "\n".join(lines)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def save_case(case: Case, adapter_id: str, folder: str | Path | None, meta: dict) -> str:
    """Save `case` for replay and return what `cestab repro` takes: a path or a case id.

    Cases with invalid labels are not stored by `casefile` (they have no truth to store);
    regime cases rebuild from their id, which is what the repro line then names.
    """
    if case.invalid:
        return case.case_id
    folder = Path(folder) if folder is not None else DEFAULT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    crc = zlib.crc32(case.case_id.encode()) ^ zlib.crc32(np.ascontiguousarray(case.logits).tobytes())
    path = folder / f"{_safe(adapter_id)}-{case.dtype}-{crc & 0xFFFFFFFF:08x}.npz"
    casefile.save(case, path, {"adapter": adapter_id, **meta})
    return str(path)


def repro_line(spec: str, adapter_ids, plugins=()) -> str:
    """`cestab repro SPEC --adapters IDS [--adapter PLUGIN ...]` (plug-ins: `module:attr` specs)."""
    extra = "".join(f" --adapter {p}" for p in plugins)
    return f"cestab repro {spec} --adapters {','.join(adapter_ids)}{extra}"


def report(
    case: Case,
    adapter_id: str,
    row: dict,
    output=None,
    ref=None,
    folder: str | Path | None = None,
    repro_adapters=None,
    repro_plugins=(),
    top: int = WORST,
) -> str:
    """The assert_allclose-style report of one adapter's result `row` on `case`.

    `row` is the adapter's results row (`run.rows.rows_for_case`); `output` its `Output`, needed
    for the element list when it ran. The case is saved under `folder` (default
    `.cestab-failures/`) and the report ends with the `cestab repro` line that replays it
    with `repro_adapters` (default: this adapter), loading `repro_plugins` first.
    """
    from harness.numerics import reference

    status = row.get("status", "?")
    parts = []
    if output is not None and status in ("ok", "lossy", "inaccurate", "nonfinite"):
        ref = ref if ref is not None else reference.loss_and_grad(case)
        parts.append(tolerance_line(case.dtype))
        for q in quantities(ref, output.loss, output.grad, case.dtype, top):
            if q.n_bad or q.n_nonfinite or q.n_lossy:
                parts.append(format_quantity(q, adapter_id, case.dtype, status))
        if len(parts) == 1:
            parts.append(f"[{adapter_id} {case.dtype}] status {status}: every element within tolerance")
    else:
        parts.append(f"[{adapter_id} {case.dtype}] status {status}: {row.get('message') or ''}".rstrip(": "))
    parts.append(
        f"Case: {case.case_id}  regime {case.regime}  {'x'.join(map(str, case.nd_shape))} {case.label_kind} labels"
        + (f" (smoothing {case.smoothing:g})" if case.smoothing else "")
        + (f", {int(case.ignored.sum())} ignored rows" if case.has_ignored else "")
        + (f"  [{case.note}]" if case.note else "")
    )
    spec = save_case(case, adapter_id, folder, {"status": status, "message": row.get("message") or ""})
    parts.append("Repro: " + repro_line(spec, repro_adapters or [adapter_id], repro_plugins))
    return "\n".join(parts)
