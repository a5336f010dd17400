"""The comparison run: cases x adapters -> one tidy DataFrame (and a run folder).

The reference is computed once per case, here, and shared by every adapter; the adapters
run in one worker process per framework (`workers`), so a crash or hang in one framework
costs only the rows it was computing. Rows are appended to `rows.jsonl` as they come, so
an interrupted run keeps what it had and `run(resume=RUN_DIR)` finishes it.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import sys
import time
from pathlib import Path

import pandas as pd

from . import adapters as registry
from . import columns, metrics, reference, regimes, runfolder, search
from . import dtypes
from .cases import Case
from .errors import UsageError
from .progress import Progress
from .workers import Attempt, InProcess, WorkerPool

DEFAULT_TIMEOUT = 120.0  # seconds one adapter may take on one case before it is killed


def resolve_adapters(ids=None, plugins=()) -> list[registry.Adapter]:
    """Adapters by id (None: every available one), plus users' `module:function` plug-ins."""
    extra = [a for spec in plugins for a in registry.load_source(spec)]
    if ids is None:
        chosen = [] if plugins else sorted(registry.all_adapters().values(), key=lambda a: a.id)
    else:
        if not ids:
            raise UsageError("no adapters selected")
        chosen = [registry.get(i) for i in ids]
    return chosen + [a for a in extra if a not in chosen]


def rows_for_case(case: Case, adapter_list, executor, device: str, base: dict, on_row=None) -> list[dict]:
    """Result rows (dicts keyed by column name) of every adapter on one case."""
    t0 = time.perf_counter()
    ref = reference.loss_and_grad(case)
    ref_seconds = time.perf_counter() - t0
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
    runnable = []
    rows = []

    def emit(adapter, attempt: Attempt):
        row = dict(common, adapter=adapter.id, framework=adapter.framework, framework_version=adapter.version())
        if case.invalid and attempt.status in ("ran", "error"):
            row.update(_judge_invalid(case, attempt))
        elif attempt.status == "ran":
            out = attempt.output
            row.update(adapter_seconds=attempt.seconds, compile_seconds=out.compile_seconds, out_dtype=out.out_dtype)
            row.update(metrics.evaluate(ref, out.loss, out.grad, case.dtype))
        else:
            row.update(status=attempt.status, message=attempt.message)
        rows.append(row)
        if on_row:
            on_row(row)

    for adapter in adapter_list:
        reason = adapter.unsupported_reason(case, device)
        if reason:
            emit(adapter, Attempt("unsupported", message=reason))
        else:
            runnable.append(adapter)
    for adapter, attempt in executor.run(case, runnable, device):
        emit(adapter, attempt)
    return rows


def _judge_invalid(case: Case, attempt: Attempt) -> dict:
    """Invalid labels have no answer: raising is right (`rejected`), numbers are `silent`."""
    if attempt.status == "error":
        return {"status": "rejected", "message": attempt.message}
    out = attempt.output
    return {
        "status": "silent",
        "out_dtype": out.out_dtype,
        "adapter_seconds": attempt.seconds,
        "message": f"returned numbers for invalid labels ({case.invalid}): " + metrics.describe_nonfinite(out.loss, out.grad),
    }


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
    plugins: tuple[str, ...] = (),
    isolate: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    resume: str | Path | None = None,
    budget: str | None = None,
    corpus: bool = True,
    executor: str | None = None,
    ray_address: str | None = None,
    ray_chunk: int | None = None,
) -> pd.DataFrame:
    """Run the comparison suite and return the results table (see `columns.COLUMNS`).

    With `out_dir`, also write a run folder under it; its path is in `df.attrs["run_dir"]`.
    `cases` replaces the regime cases (for corpora and users' own batches). `plugins` are
    `module:function[@framework]` specs of users' own implementations. `isolate=False` runs
    adapters in this process (faster, but a crash takes the caller down). `resume` finishes
    an interrupted run folder with the options it was started with. `budget` ("quick",
    "standard", "deep") adds a worst-case search per adapter x dtype (`search`): the worst
    input found is shrunk, saved under RUN_DIR/worst/ and added with source "search".
    `corpus` adds the public bug reports of `harness/corpus.json` (source "corpus") for every
    adapter (a bug found in one framework is a question for all the others), each in its own
    dtype, or in the requested dtypes when `dtypes` is given.
    `executor` is "local" (default: worker processes on this machine) or "ray" (units of
    work on a Ray cluster, `ray_executor`): the same rows either way. `ray_address` joins a
    running cluster ("auto": the one on this machine; None: start a local Ray instance);
    `ray_chunk` fixes the cases per unit (None: chosen from the cluster's CPUs). On a
    resume, `executor` and `ray_address` replace the ones the run was started with.
    """
    where = _executor_options(executor, ray_address, ray_chunk)
    if resume is not None:
        return _resume(Path(resume), progress, where if executor is not None else {})
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    if timeout <= 0:
        raise UsageError(f"timeout must be positive, got {timeout:g}")
    if budget is not None and budget not in search.BUDGETS:
        raise UsageError(f"unknown budget {budget!r}; choose from {', '.join(search.BUDGETS)}")
    adapter_list = resolve_adapters(adapters, plugins)
    options = {
        "adapters": [a.id for a in adapter_list],
        "plugins": list(plugins),
        "dtypes": dtypes,
        "regimes": regimes_,
        "shapes": [list(s) for s in shapes] if shapes else None,
        "label_kinds": label_kinds,
        "seed": seed,
        "device": device,
        "isolate": isolate,
        "timeout": timeout,
        "budget": budget,
        "corpus": corpus and cases is None,
        **where,
    }
    if executor == "ray":
        from .ray_executor import preflight

        preflight(options)
    case_list = cases if cases is not None else build_cases(options)
    run_dir = runfolder.new_run_dir(out_dir, seed) if out_dir is not None else None
    return _execute(case_list, adapter_list, options, run_dir, progress, command, done_rows=[])


EXECUTORS = ("local", "ray")


def _executor_options(executor, ray_address, ray_chunk) -> dict:
    """The run options that say where the work runs (checked: one clear line if wrong)."""
    executor = executor or "local"
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if executor != "ray" and (ray_address is not None or ray_chunk is not None):
        raise UsageError("--ray-address and --ray-chunk need --executor ray")
    if ray_chunk is not None and ray_chunk < 1:
        raise UsageError(f"ray chunk must be a positive number of cases, got {ray_chunk}")
    return {"executor": executor, "ray_address": ray_address, "ray_chunk": ray_chunk}


def build_cases(options: dict) -> list[Case]:
    """The regime cases, then the corpus (unless switched off), from a run's options."""
    shapes = [tuple(s) for s in options["shapes"]] if options["shapes"] else None
    out = regimes.build_cases(options["regimes"], options["dtypes"], shapes, options["label_kinds"], options["seed"])
    if options.get("corpus"):
        out += corpus_cases(options["dtypes"], options["label_kinds"])
    return out


def corpus_cases(dtype_names, label_kinds) -> list[Case]:
    """Each entry in its own dtype by default (the report); with dtypes given, in those."""
    from . import corpus

    kinds = set(label_kinds or ())
    chosen = corpus.cases(dtype_names)
    if dtype_names:
        chosen = [c for c in chosen if c.dtype in dtype_names]
    return [c for c in chosen if not kinds or c.label_kind in kinds]


def _resume(run_dir: Path, progress: bool, where: dict) -> pd.DataFrame:
    meta_path = run_dir / "run.json"
    try:
        meta = json.loads(meta_path.read_text())
        options = meta["options"]
    except (OSError, ValueError, KeyError):
        raise UsageError(f"{run_dir} is not a resumable run folder (no readable run.json with options)") from None
    if meta.get("state") == "complete":
        raise UsageError(f"{run_dir} is already complete")
    options.update(where)
    done_rows = runfolder.read_rows(run_dir)
    adapter_list = resolve_adapters(options["adapters"], options["plugins"])
    case_list = build_cases(options)
    return _execute(case_list, adapter_list, options, run_dir, progress, meta.get("command"), done_rows, meta)


def _execute(case_list, adapter_list, options, run_dir, progress, command, done_rows, meta=None) -> pd.DataFrame:
    started = dt.datetime.now(dt.timezone.utc)
    meta = meta or {
        "run_id": run_dir.name if run_dir else started.strftime("%Y%m%d-%H%M%S") + f"-s{options['seed']}",
        "started": started.isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "options": options,
        "seed": options["seed"],
        "device": options["device"],
        "schema_version": columns.SCHEMA_VERSION,
        "reference_precision": reference.PRECISION,
        "n_cases": len(case_list),
        "adapters": {a.id: {"framework": a.framework, "version": a.version()} for a in adapter_list},
        "unavailable_frameworks": registry.unavailable(),
        "versions": versions(),
        "environment": runfolder.environment(),
    }
    meta["state"] = "running"
    t0 = time.perf_counter()
    if options.get("executor") == "ray":
        from .ray_executor import RaySweep  # imports ray: only for a sweep that asks for it

        executor = RaySweep(options, meta.get("cluster"))
        meta["cluster"] = executor.cluster
    else:
        from .ray_executor import local_cluster

        executor = WorkerPool(options["timeout"], runfolder.log_dir(run_dir)) if options["isolate"] else InProcess()
        meta["cluster"] = local_cluster()
    if run_dir is not None:
        runfolder.write_meta(run_dir, meta)
    host = socket.gethostname()
    base = {"run_id": meta["run_id"], "time": meta["started"], "host": host, "node_id": "local", "node_host": host}
    done = {(r["case_id"], r["adapter"]) for r in done_rows}
    rows = list(done_rows)
    journal = runfolder.RowJournal(run_dir) if run_dir is not None else None
    bar = Progress(len(case_list), progress)
    reference_seconds = 0.0
    try:
        if options.get("executor") == "ray":
            new = executor.run(case_list, adapter_list, base, done_rows, journal, bar, run_dir)
            # each module's unit computes its cases' reference: count each (case, unit) once
            reference_seconds = sum(s for _, s in {(r["case_id"], r.get("reference_seconds") or 0.0) for r in new})
            rows.extend(new)
        else:
            for case in case_list:
                todo = [a for a in adapter_list if (case.case_id, a.id) not in done]
                if todo:
                    new = rows_for_case(case, todo, executor, options["device"], base, journal.append if journal else None)
                    reference_seconds += new[0]["reference_seconds"] if new else 0.0
                    rows.extend(new)
                bar.step(case.case_id)
            if options.get("budget"):
                rows.extend(_search(adapter_list, options, executor, base, run_dir, done_rows, journal))
    finally:
        bar.close()
        executor.close()
        if journal:
            journal.close()
    df = columns.frame(rows)
    timing = {
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "reference_seconds": round(reference_seconds, 3),
        "worker_startup_seconds": {k: round(v, 3) for k, v in executor.startup_seconds.items()},
        "adapter_seconds": round(float(pd.to_numeric(df["adapter_seconds"]).sum()), 3),
        "compile_seconds": round(float(pd.to_numeric(df["compile_seconds"]).sum()), 3),
    }
    if options.get("executor") == "ray":
        timing.update(executor.timing())
    meta.setdefault("timing", []).append(timing)
    meta["state"] = "complete"
    if run_dir is not None:
        runfolder.write_results(run_dir, df, meta)
        df.attrs["run_dir"] = str(run_dir)
    df.attrs["timing"] = timing
    return df


def _search(adapter_list, options, executor, base, run_dir, done_rows, journal) -> list[dict]:
    """One worst-case search per adapter x dtype; the shrunk worst input becomes a row."""
    budget = search.BUDGETS[options["budget"]]
    searched = {(r["adapter"], r["dtype"]) for r in done_rows if r.get("source") == "search"}
    dtype_names = options["dtypes"] or list(dtypes.DTYPE_NAMES)
    rows = []
    for adapter in adapter_list:
        for dtype in dtype_names:
            if (adapter.id, dtype) in searched or dtype not in adapter.dtypes:
                continue

            def evaluate(case, adapter=adapter):
                return rows_for_case(case, [adapter], executor, options["device"], base)[0]

            finding = search.search_one(adapter, dtype, evaluate, budget, seed=options["seed"])
            if finding is None:
                continue
            row = dict(finding.row)
            if run_dir is not None:
                path = search.save_finding(finding, run_dir / "worst")
                row["case_file"] = str(path.relative_to(run_dir))
            rows.append(row)
            if journal:
                journal.append(row)
    return rows


def versions() -> dict:
    """Versions of cestab's own dependencies and of every framework it knows."""
    out = {name: registry.framework_version(name) for name in ("numpy", "pandas", "ml_dtypes", "pyarrow")}
    out["cestab"] = registry.framework_version("cestab")
    for framework in (*registry.IMPLEMENTATION_MODULES, "keras", "optax"):
        out[framework] = registry.framework_version(framework)
    return out
