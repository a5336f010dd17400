"""Is a candidate implementation no less accurate than a baseline adapter? (the pytest fixture's engine)

A kernel author's question, asked on cestab's regimes (small shapes by default) and corpus:
both implementations run on every case (in this process, the reference computed once), and
the candidate is *worse* on a case where

- its status ranks below the baseline's (`statuses.rank`: severity, then display order: ok,
  rejected, lossy, inaccurate, silent, nonfinite, error, ...), or
- both are inaccurate and the candidate's largest textbook tolerance ratio (loss or
  gradient) exceeds the baseline's by more than the factor 1 + rtol; or both are lossy and
  its largest attainable ratio does.

Staying within the tolerance table is never worse, however the raw errors compare: those
differ in the last bits from one CPU to the next. Cases the candidate does not support
(label kinds, dtypes) or that have no finite truth are left out and counted.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.adapters import registry
from harness.testing import mismatch
from harness.inputs import regimes
from harness.adapters import Adapter
from harness.errors import UsageError
from harness.testing.outcomes import outcomes
from harness.numerics import statuses

#: Small regime shapes: V = 2, a tile-sized V and a 1000-class V, in well under a minute.
SMALL_SHAPES = ((16, 2), (8, 100), (4, 1000))
#: Statuses that are not compared: the combination did not run, or the input has no truth.
NOT_COMPARED = statuses.names(judged=False)
#: The default margin: up to twice as far outside the tolerance as the baseline.
RTOL = 1.0


def as_adapter(candidate, framework: str = "") -> tuple[Adapter, str | None]:
    """(adapter, plug-in spec or None) for an Adapter, an adapter id or `module:attr` spec,
    or a plain loss function (framework detected as `adapters.load_source` does)."""
    if isinstance(candidate, Adapter):
        return candidate, None
    if isinstance(candidate, str):
        if ":" in candidate:
            known = registry.all_adapters().get(candidate.partition("@")[0])
            return (known or registry.load_source(candidate)[0]), candidate
        return registry.get(candidate), None
    if not callable(candidate):
        raise UsageError(f"candidate must be an Adapter, an adapter id or a loss function, got {type(candidate).__name__}")
    module, name = getattr(candidate, "__module__", "user"), getattr(candidate, "__qualname__", "loss")
    spec = f"{module}:{name}"
    adapter = registry.from_function(candidate, spec, framework)
    importable = name.isidentifier() and module != "__main__"  # not a lambda, not a closure
    return adapter, (spec + (f"@{framework}" if framework else "")) if importable else None


def _ratio(row: dict, keys=("loss_tol_ratio", "grad_tol_ratio")) -> float:
    """The larger tolerance ratio of loss and gradient; NaN (a NaN error) counts as inf."""
    ratios = [float(row.get(k) or 0.0) for k in keys]
    return max(math.inf if math.isnan(r) else r for r in ratios)


def verdict(cand: dict, base: dict, rtol: float) -> str:
    """Why the candidate's row is worse than the baseline's, or "" if it is not."""
    cs, bs = cand["status"], base["status"]
    if cs in NOT_COMPARED or bs in NOT_COMPARED:
        return ""
    if statuses.rank(cs) > statuses.rank(bs):
        return f"status {cs} where the baseline is {bs}"
    if cs == bs == "inaccurate" and _ratio(cand) > _ratio(base) * (1.0 + rtol):
        return f"{_ratio(cand):.3g}x tolerance where the baseline is {_ratio(base):.3g}x (margin 1 + {rtol:g})"
    att = ("loss_att_ratio", "grad_att_ratio")
    if cs == bs == "lossy" and _ratio(cand, att) > _ratio(base, att) * (1.0 + rtol):
        return (f"{_ratio(cand, att):.3g}x the attainable bound where the baseline is {_ratio(base, att):.3g}x "
                f"(margin 1 + {rtol:g})")
    return ""


def cases_for(dtypes, regime_names, shapes, corpus: bool, label_kinds=None) -> list:
    """cestab's regime cases (in `dtypes`, at `shapes`) and, with `corpus`, the corpus in them."""
    from harness.run.runner import corpus_cases

    out = regimes.build_cases(regime_names, list(dtypes), shapes, label_kinds)
    if corpus:
        out += corpus_cases(list(dtypes), label_kinds)
    return out


def compare(
    candidate: Adapter,
    baseline: Adapter,
    cases,
    rtol: float = RTOL,
    device: str = "cpu",
    keep=None,
) -> pd.DataFrame:
    """One row per case the candidate supports: both statuses and ratios, and `worse`.

    `keep(case, cand_outcome, base_outcome)` is called for every worse case (the fixture
    keeps a few for their mismatch reports).
    """
    rows = []
    for case in cases:
        if candidate.unsupported_reason(case, device):
            continue
        got = outcomes(case, [candidate, baseline], device)
        c, b = got[candidate.id].row, got[baseline.id].row
        why = verdict(c, b, rtol)
        rows.append({
            "case_id": case.case_id, "source": case.source, "dtype": case.dtype,
            "candidate_status": c["status"], "candidate_ratio": _ratio(c),
            "baseline_status": b["status"], "baseline_ratio": _ratio(b),
            "compared": c["status"] not in NOT_COMPARED and b["status"] not in NOT_COMPARED,
            "worse": bool(why), "why": why,
        })
        if why and keep is not None:
            keep(case, got[candidate.id], got[baseline.id])
    return pd.DataFrame(rows)


class Checker:
    """What the `cestab` fixture gives a test: `assert_no_worse_than(...)`."""

    def __init__(self, folder=None, max_reports: int = 3):
        self.folder = folder
        self.max_reports = max_reports

    def assert_no_worse_than(
        self,
        candidate,
        baseline: str = "torch.cross_entropy",
        dtypes=("float32",),
        regimes=None,
        shapes=SMALL_SHAPES,
        corpus: bool = True,
        rtol: float = RTOL,
        framework: str = "",
        device: str = "cpu",
    ) -> pd.DataFrame:
        """Fail (AssertionError with mismatch reports) where `candidate` is worse than `baseline`.

        `candidate`: a plain `loss(logits, labels) -> per-row loss` (torch, jax or
        tensorflow; `framework` if its module uses several), a `harness.Adapter`, or an
        adapter id / `module:attr` spec. Returns the comparison table when it passes.
        """
        __tracebackhide__ = True  # pytest: show the caller's line and the report, not this code
        cand, spec = as_adapter(candidate, framework)
        base = registry.get(baseline)
        if cand.id == base.id:
            raise UsageError("candidate and baseline are the same adapter")
        reports: list[str] = []

        def keep(case, c, b):
            if len(reports) >= self.max_reports:
                return
            ids, plugins = ([cand.id, base.id], [spec]) if spec else ([base.id], [])
            reports.append(
                f"worse than {base.id} ({b.status}, {_ratio(b.row):.3g}x tolerance) on this case:\n"
                + mismatch.report(case, cand.id, c.row, c.output, folder=self.folder, repro_adapters=ids, repro_plugins=plugins)
            )

        table = compare(cand, base, cases_for(dtypes, regimes, shapes, corpus), rtol, device, keep)
        if table.empty or not table["compared"].any():
            raise AssertionError(f"cestab: no case compared {cand.id} with {base.id} (unsupported label kinds or dtypes?)")
        worse = table[table["worse"]]
        if worse.empty:
            return table
        lines = [
            f"cestab: {cand.id} is less accurate than {base.id} on {len(worse)} of {int(table['compared'].sum())} "
            f"compared cases ({', '.join(dtypes)}; {len(table)} supported, regimes and corpus):"
        ]
        with pd.option_context("display.width", 200, "display.max_colwidth", 70, "display.float_format", "{:.3g}".format):
            shown = worse[["case_id", "candidate_status", "candidate_ratio", "baseline_status", "baseline_ratio"]]
            lines.append(shown.head(20).to_string(index=False))
        if len(worse) > 20:
            lines.append(f"... and {len(worse) - 20} more")
        lines.append(f"\nMismatch reports of the first {len(reports)}:")
        lines.extend("\n" + r for r in reports)
        if not spec:
            lines.append(f"\n(The repro lines replay {base.id} only: {cand.id} is not importable by name.)")
        raise AssertionError("\n".join(lines))
