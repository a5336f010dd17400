"""The comparison run: cases x adapters -> one tidy DataFrame (and a run folder).

The reference is computed once per case and shared by every adapter. An exception in an
adapter becomes an `error` row and the run goes on. (Each framework moves into its own
worker process with the framework adapters; numpy and scipy run here.)
"""

from __future__ import annotations

import datetime as dt
import socket
import sys
import time
from pathlib import Path

import pandas as pd

from . import adapters as registry
from . import columns, metrics, reference, regimes, runfolder
from .cases import Case
from .errors import UsageError
from .progress import Progress

DEFAULT_ADAPTERS = None  # None: every available adapter


def resolve_adapters(ids=None) -> list[registry.Adapter]:
    if ids is None:
        return sorted(registry.all_adapters().values(), key=lambda a: a.id)
    if not ids:
        raise UsageError("no adapters selected")
    return [registry.get(i) for i in ids]


def evaluate_case(case: Case, adapter_list, device: str = "cpu", base: dict | None = None) -> list[dict]:
    """Result rows (dicts keyed by column name) of every adapter on one case."""
    t0 = time.perf_counter()
    ref = reference.loss_and_grad(case)
    ref_seconds = time.perf_counter() - t0
    n, v = case.shape
    common = dict(base or {})
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
    for adapter in adapter_list:
        row = dict(common, adapter=adapter.id, framework=adapter.framework, framework_version=adapter.version())
        reason = adapter.unsupported_reason(case, device)
        if reason:
            row.update(status="unsupported", message=reason)
            rows.append(row)
            continue
        t1 = time.perf_counter()
        try:
            out = adapter.compute(case, device)
        except Exception as exc:  # the adapter's failure is a result, not the run's
            row.update(status="error", message=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
            rows.append(row)
            continue
        row["adapter_seconds"] = time.perf_counter() - t1
        row["out_dtype"] = out.out_dtype
        row.update(metrics.evaluate(ref, out.loss, out.grad, case.dtype))
        rows.append(row)
    return rows


def run(
    adapters=None,
    dtypes=None,
    regimes_=None,
    shapes=None,
    label_kinds=None,
    seed: int = 0,
    device: str = "cpu",
    out_dir: str | Path | None = None,
    progress: bool = False,
    command: str | None = None,
    cases: list[Case] | None = None,
) -> pd.DataFrame:
    """Run the comparison suite and return the results table (see `columns.COLUMNS`).

    With `out_dir`, also write a run folder under it; its path is in `df.attrs["run_dir"]`.
    `cases` replaces the regime cases (for corpora and users' own batches).
    """
    if device != "cpu":
        raise UsageError(f"device {device!r} is not supported yet (only cpu)")
    adapter_list = resolve_adapters(adapters)
    case_list = cases if cases is not None else regimes.build_cases(regimes_, dtypes, shapes, label_kinds, seed)
    run_dir = runfolder.new_run_dir(out_dir, seed) if out_dir is not None else None
    started = dt.datetime.now(dt.timezone.utc)
    base = {
        "run_id": run_dir.name if run_dir else started.strftime("%Y%m%d-%H%M%S") + f"-s{seed}",
        "time": started.isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }
    bar = Progress(len(case_list), progress)
    rows = []
    t0 = time.perf_counter()
    for case in case_list:
        rows.extend(evaluate_case(case, adapter_list, device, base))
        bar.step(case.case_id)
    bar.close()
    df = columns.frame(rows)
    if run_dir is not None:
        meta = {
            "run_id": base["run_id"],
            "started": base["time"],
            "wall_seconds": round(time.perf_counter() - t0, 3),
            "command": command if command is not None else " ".join(sys.argv),
            "seed": seed,
            "device": device,
            "schema_version": columns.SCHEMA_VERSION,
            "reference_precision": reference.PRECISION,
            "n_cases": len(case_list),
            "adapters": {a.id: {"framework": a.framework, "version": a.version()} for a in adapter_list},
            "unavailable_frameworks": registry.unavailable(),
            "versions": versions(),
            "environment": runfolder.environment(),
        }
        runfolder.write_results(run_dir, df, meta)
        df.attrs["run_dir"] = str(run_dir)
    return df


def versions() -> dict:
    """Versions of cestab's own dependencies and of every framework it knows."""
    out = {name: registry.framework_version(name) for name in ("numpy", "pandas", "ml_dtypes", "pyarrow")}
    out["cestab"] = registry.framework_version("cestab")
    for framework in registry.IMPLEMENTATION_MODULES:
        out[framework] = registry.framework_version(framework)
    return out
