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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import bounds, casefile, dtypes, metrics, tolerances
from .cases import Case

#: How many of the worst elements a report lists (a few, like assert_allclose's maxima).
WORST = 5
#: Where failing cases are saved when the caller names no folder (in .gitignore).
DEFAULT_FOLDER = Path(".cestab-failures")


@dataclass(frozen=True)
class Element:
    """One element outside the tolerance: where, what it is, how far."""

    index: tuple[int, ...]  # (row,) for the loss, (row, class) for the gradient
    computed: float
    true: float
    abs: float
    ulps: float
    ratio: float  # abs / allowance: > 1 is outside the tolerance
    ratio_att: float = 0.0  # abs / attainable allowance (`bounds`): > 1 is worse than a careful implementation


@dataclass
class Quantity:
    """The mismatch of one quantity (loss or grad) over the rows with a finite truth."""

    name: str
    n: int = 0
    n_bad: int = 0  # elements outside both bounds (non-finite ones included)
    n_lossy: int = 0  # elements outside the attainable bound only
    n_nonfinite: int = 0
    max_abs: float = 0.0
    max_ulps: float = 0.0
    max_ratio: float = 0.0
    worst: list[Element] = field(default_factory=list)

    def add(self, e: metrics.ElementErrors, computed, truth, index_of, top: int) -> None:
        """Fold in one block of element errors; `index_of(flat) -> index` in the case."""
        self.n += e.abs.size
        bad, lossy = metrics.grades(e)
        self.n_bad += int(bad.sum())
        self.n_lossy += int(lossy.sum())
        self.n_nonfinite += int(e.nonfinite.sum())
        if e.abs.size == 0:
            return
        self.max_abs = max(self.max_abs, float(e.abs.max()))
        self.max_ulps = max(self.max_ulps, float(e.ulps.max()))
        self.max_ratio = max(self.max_ratio, float(e.ratio.max()))
        ratio = e.ratio.reshape(-1)
        ratio_att = e.ratio_att.reshape(-1)
        bad = np.flatnonzero(ratio_att > 1)  # outside the attainable bound: lossy or worse
        # NaN/inf first (their ratio is inf), then by ratio; a stable sort keeps index order.
        order = bad[np.lexsort((-ratio_att[bad], -ratio[bad]))][:top]
        c, t = np.asarray(computed).reshape(-1), np.asarray(truth).reshape(-1)
        for i in order:
            self.worst.append(Element(
                index_of(int(i)), float(c[i]), float(t[i]), float(e.abs.flat[i]), float(e.ulps.flat[i]), float(ratio[i]),
                float(ratio_att[i]),
            ))
        self.worst.sort(key=lambda el: (-el.ratio, -el.ratio_att))
        del self.worst[top:]


def quantities(ref, loss, grad, dtype: str, top: int = WORST) -> list[Quantity]:
    """Loss and gradient mismatches of (loss, grad) against the reference `ref`."""
    rows = np.flatnonzero(ref.defined)
    loss = np.asarray(loss)
    grad = np.asarray(grad)
    lq = Quantity("loss")
    if rows.size:
        att = None if ref.loss_scale_att is None else ref.loss_scale_att[rows]
        e = metrics.element_errors(loss[rows], ref.loss[rows], ref.loss_scale[rows], dtype, att)
        lq.add(e, loss[rows], ref.loss[rows], lambda i: (int(rows[i]),), top)
    gq = Quantity("grad")
    v = grad.shape[1] if grad.ndim == 2 else 1
    step = max(1, metrics.CHUNK_ELEMENTS // max(v, 1))
    for lo in range(0, rows.size, step):
        ids = rows[lo : lo + step]
        att = None if ref.grad_scale_att is None else ref.grad_scale_att[ids]
        e = metrics.element_errors(grad[ids], ref.grad[ids], ref.grad_scale[ids], dtype, att)
        gq.add(e, grad[ids], ref.grad[ids], lambda i, ids=ids: (int(ids[i // v]), i % v), top)
    return [lq, gq]


def tolerance_line(dtype: str) -> str:
    """The tolerance of `dtype`, with the numbers of the one table."""
    tol = tolerances.get(dtype)
    fmt = dtypes.get(dtype)
    u = fmt.unit_roundoff
    flush = "; subnormal truths flushed to 0 are not judged" if tol.allow_flush_to_zero else ""
    att = bounds.get(dtype)
    return (
        f"Not within tolerance: |computed - true| <= {tol.ulps:g} ulp(true) + {tol.cond:g} u scale  "
        f"({dtype}: u = 2**{int(np.log2(u))}; scale is the condition scale of harness.tolerances{flush})\n"
        f"Attainable bound (ok within it, lossy outside it): <= {att.ulps:g} ulp(true) + {att.cond:g} u_w scale_att  "
        f"({att.work} work: u_w = 2**{int(np.log2(att.unit_roundoff))}; harness.bounds)"
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
        f"Max absolute difference: {q.max_abs:.6g}   Max ulps: {q.max_ulps:.6g}   Max tolerance ratio: {q.max_ratio:.6g}",
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

    `row` is the adapter's results row (`runner.rows_for_case`); `output` its `Output`, needed
    for the element list when it ran. The case is saved under `folder` (default
    `.cestab-failures/`) and the report ends with the `cestab repro` line that replays it
    with `repro_adapters` (default: this adapter), loading `repro_plugins` first.
    """
    from . import reference

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
