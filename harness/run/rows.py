"""One case against some adapters: the reference once, each adapter's attempt, the judge's
verdict, one results row per adapter. The local runner and the Ray executor both build
their rows here, so a row is the same wherever it was computed."""

from __future__ import annotations

import time

from harness.adapters import registry
from harness.adapters.workers import Attempt
from harness.numerics import reference
from harness.numerics.cases import Case
from harness.run.judge import judge
from harness.run.phases import Phases


def rows_for_case(case: Case, adapter_list, executor, device: str, base: dict, on_row=None, phases: Phases | None = None,
                  ref=None) -> list[dict]:
    """Result rows (dicts keyed by column name) of every adapter on one case (`ref`: its
    reference, when the caller has it already; `phases`: where the time went, `run.phases`)."""
    attempts = attempts_for_case(case, adapter_list, executor, device, phases)
    return judge_case(case, attempts, device, base, on_row, phases, ref)


def attempts_for_case(case: Case, adapter_list, executor, device: str, phases: Phases | None = None) -> list:
    """(adapter, Attempt) of every adapter on one case, in row order: the adapters that
    declare they cannot run it first (no call), then the executor's answers (all
    frameworks at once, --jobs). Needs no reference."""
    phases = phases or Phases()
    out, runnable = declined(case, adapter_list, device)
    t0 = time.perf_counter()
    out += list(executor.run(case, runnable, device))
    phases.add("dispatch", time.perf_counter() - t0)
    return out


def declined(case: Case, adapter_list, device: str) -> tuple[list, list]:
    """(the `unsupported` attempts of the adapters that declare they cannot run the case,
    the adapters to call)."""
    out, runnable = [], []
    for adapter in adapter_list:
        reason = adapter.unsupported_reason(case, device)
        if reason:
            out.append((adapter, Attempt("unsupported", message=reason)))
        else:
            runnable.append(adapter)
    return out, runnable


def judge_case(case: Case, attempts: list, device: str, base: dict, on_row=None, phases: Phases | None = None,
               ref=None) -> list[dict]:
    """The rows of one case's attempts: the reference (once, shared by every adapter), then
    each attempt judged (`judge`) into a row, handed to `on_row` as it is made."""
    phases = phases or Phases()
    t0 = time.perf_counter()
    if ref is None:
        ref = reference.loss_and_grad(case)
    ref_seconds = time.perf_counter() - t0
    phases.add("reference", ref_seconds)
    n, v = case.shape
    common = dict(base)
    common.update(
        dtype=case.dtype,
        regime=case.regime,
        source=case.source,
        label_kind=case.label_kind,
        n_rows=n,
        n_classes=v,
        case_id=case.case_id,
        seed=case.seed,
        reference_precision=ref.precision,
        reference_seconds=ref_seconds,
        device=device,
    )
    rows = []
    for adapter, attempt in attempts:
        with phases.timed("metrics"):
            row = dict(common, adapter=adapter.id, framework=adapter.framework,
                       framework_version=registry.framework_version(adapter.framework))
            row.update(judge(case, ref, attempt))
        rows.append(row)
        if on_row:
            with phases.timed("writing"):
                on_row(row)
    return rows
