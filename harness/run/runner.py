"""The comparison run: cases x adapters -> one tidy DataFrame (and a run folder).

The reference is computed once per case, here, and shared by every adapter; the adapters
run in one worker process per framework (`workers`), so a crash or hang in one framework
costs only the rows it was computing. Rows are appended to `rows.jsonl` as they come, so
an interrupted run keeps what it had and `run(resume=RUN_DIR)` finishes it.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from pathlib import Path

import pandas as pd

from harness.adapters import registry
from harness.store import columns
from harness.numerics import reference
from harness.inputs import regimes
from harness.store import runfolder
from harness.store.runfolder import RunFolder
from harness.run import rowsearch
from harness.run.phases import Phases
from harness.adapters import threads as thread_budget
from harness.adapters.parallel import ParallelPool, TimedInProcess
from harness.numerics import dtypes
from harness.numerics.cases import Case
from harness.errors import UsageError
from harness.run.judge import judge
from harness.run.progress import Progress
from harness.adapters.workers import Attempt

DEFAULT_TIMEOUT = 120.0  # seconds one adapter may take on one case before it is killed


def rows_for_case(case: Case, adapter_list, executor, device: str, base: dict, on_row=None, phases: Phases | None = None,
                  ref=None) -> list[dict]:
    """Result rows (dicts keyed by column name) of every adapter on one case (`ref`: its
    reference, when the caller has it already)."""
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
    runnable = []
    rows = []

    def emit(adapter, attempt: Attempt):
        with phases.timed("metrics"):
            row = dict(common, adapter=adapter.id, framework=adapter.framework,
                       framework_version=registry.framework_version(adapter.framework))
            row.update(judge(case, ref, attempt))
        rows.append(row)
        if on_row:
            with phases.timed("writing"):
                on_row(row)

    for adapter in adapter_list:
        reason = adapter.unsupported_reason(case, device)
        if reason:
            emit(adapter, Attempt("unsupported", message=reason))
        else:
            runnable.append(adapter)
    t0 = time.perf_counter()
    attempts = list(executor.run(case, runnable, device))  # all frameworks at once (--jobs)
    phases.add("dispatch", time.perf_counter() - t0)
    for adapter, attempt in attempts:
        emit(adapter, attempt)
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
    plugins: tuple[str, ...] = (),
    isolate: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    resume: str | Path | None = None,
    budget: str | None = None,
    corpus: bool = True,
    jobs: int | None = None,
) -> pd.DataFrame:
    """Run the comparison suite and return the results table (see `columns.COLUMNS`).

    With `out_dir`, also write a run folder under it; its path is in `df.attrs["run_dir"]`.
    `cases` replaces the regime cases (for corpora and users' own batches). `plugins` are
    `module:function[@framework]` specs of users' own implementations. `isolate=False` runs
    adapters in this process (faster, but a crash takes the caller down). `resume` finishes
    an interrupted run folder with the options it was started with. `budget` ("quick",
    "standard", "deep") adds a worst-case search per adapter x dtype (`search`): the worst
    input found is shrunk, saved under RUN_DIR/worst/ and added with source "search".
    `corpus` adds the public bug reports of `harness/inputs/corpus.json` (source "corpus") for every
    adapter (a bug found in one framework is a question for all the others), each in its own
    dtype, or in the requested dtypes when `dtypes` is given. `regimes_=[]` leaves the regime cases out (a search or a
    corpus on its own). `jobs`: how many framework workers run at the same time (default:
    the number of cores), each held to its share of the cores; rows do not depend on it.
    """
    if resume is not None:
        return _resume(Path(resume), progress)
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    if timeout <= 0:
        raise UsageError(f"timeout must be positive, got {timeout:g}")
    if budget is not None and budget not in rowsearch.BUDGETS:
        raise UsageError(f"unknown budget {budget!r}; choose from {', '.join(rowsearch.BUDGETS)}")
    if jobs is not None and jobs < 1:
        raise UsageError(f"jobs must be at least 1, got {jobs}")
    adapter_list = registry.resolve(adapters, plugins)
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
        "jobs": jobs,
    }
    t0 = time.perf_counter()
    case_list = cases if cases is not None else build_cases(options)
    phases = Phases()
    phases.add("generation", time.perf_counter() - t0)
    folder = RunFolder.create(out_dir, seed) if out_dir is not None else None
    return _execute(case_list, adapter_list, options, folder, progress, command, done_rows=[], phases=phases)


def build_cases(options: dict) -> list[Case]:
    """The regime cases, then the corpus (unless switched off), from a run's options."""
    shapes = [tuple(s) for s in options["shapes"]] if options["shapes"] else None
    out = []
    if options["regimes"] != []:  # [] (`--regimes none`): no regime cases
        out = regimes.build_cases(options["regimes"], options["dtypes"], shapes, options["label_kinds"], options["seed"])
    if options.get("corpus"):
        out += corpus_cases(options["dtypes"], options["label_kinds"])
    return out


def corpus_cases(dtype_names, label_kinds) -> list[Case]:
    """Each entry in its own dtype by default (the report); with dtypes given, in those."""
    from harness.inputs import corpus

    kinds = set(label_kinds or ())
    chosen = corpus.cases(dtype_names)
    if dtype_names:
        chosen = [c for c in chosen if c.dtype in dtype_names]
    return [c for c in chosen if not kinds or c.label_kind in kinds]


def _resume(path: Path, progress: bool) -> pd.DataFrame:
    folder = RunFolder.open(path)
    meta = folder.read_meta(required=("run_id", "options"))
    options = meta["options"]
    if meta.get("state") == "complete":
        raise UsageError(f"{path} is already complete")
    done_rows = folder.read_rows()
    adapter_list = registry.resolve(options["adapters"], options["plugins"])
    case_list = build_cases(options)
    return _execute(case_list, adapter_list, options, folder, progress, meta.get("command"), done_rows, meta)


def _executor(options, folder, phases):
    """Adapters in isolated workers, up to `jobs` frameworks at once, or in this process."""
    if not options["isolate"]:
        return TimedInProcess(phases)
    jobs = options.get("jobs") or thread_budget.cores()
    return ParallelPool(options["timeout"], folder.logs if folder else None, jobs=jobs,
                        threads=thread_budget.per_worker(jobs), phases=phases)


def _execute(case_list, adapter_list, options, folder, progress, command, done_rows, meta=None, phases=None) -> pd.DataFrame:
    started = dt.datetime.now(dt.timezone.utc)
    meta = meta or runfolder.new_meta(
        runfolder.run_id(folder, started, options["seed"]), started, command, options,
        seed=options["seed"],
        device=options["device"],
        schema_version=columns.SCHEMA_VERSION,
        reference_precision=reference.PRECISION,
        n_cases=len(case_list),
        **registry.describe(adapter_list),
    )
    meta["state"] = "running"
    if folder is not None:
        folder.write_meta(meta)
    base = {"run_id": meta["run_id"], "time": meta["started"], "host": socket.gethostname()}
    done = {(r["case_id"], r["adapter"]) for r in done_rows}
    rows = list(done_rows)
    journal = folder.journal() if folder is not None else None
    phases = phases or Phases()
    executor = _executor(options, folder, phases)
    bar = Progress(len(case_list), progress)
    t0 = time.perf_counter() - phases.seconds["generation"]  # case building counts towards the wall time
    try:
        for case in case_list:
            todo = [a for a in adapter_list if (case.case_id, a.id) not in done]
            if todo:
                rows.extend(rows_for_case(case, todo, executor, options["device"], base,
                                          journal.append if journal else None, phases))
            bar.step(case.case_id)
        if options.get("budget"):
            rows.extend(_search(adapter_list, options, executor, base, folder, done_rows, journal, phases))
    finally:
        bar.close()
        executor.close()
        if journal:
            journal.close()
    with phases.timed("writing"):
        df = columns.frame(rows)
        meta["state"] = "complete"
        if folder is not None:
            folder.finish(df, meta)
    timing = phases.summary(time.perf_counter() - t0, executor.startup_seconds)
    meta.setdefault("timing", []).append(timing)
    if folder is not None:
        folder.write_meta(meta)  # again, with the timing (which includes writing the tables)
        df.attrs["run_dir"] = str(folder.path)
    df.attrs["timing"] = timing
    return df


def _search(adapter_list, options, executor, base, folder, done_rows, journal, phases) -> list[dict]:
    """The row-batched worst-case search over every adapter x dtype (`rowsearch`); each
    pair's shrunk worst rows (one per failure kind, worst first) become results rows."""
    budget = rowsearch.BUDGETS[options["budget"]]
    searched = {(r["adapter"], r["dtype"]) for r in done_rows if r.get("source") == "search"}
    dtype_names = options["dtypes"] or list(dtypes.DTYPE_NAMES)
    device = options["device"]

    def evaluate(case, adapters):
        return executor.run(case, adapters, device)

    def run_case(case, adapter):
        return rows_for_case(case, [adapter], executor, device, base, phases=phases)[0]

    search = rowsearch.RowSearch(adapter_list, dtype_names, budget, evaluate, seed=options["seed"], device=device,
                                 label_kinds=options["label_kinds"], phases=phases)
    search.run()
    rows = []
    rank: dict[tuple[str, str], int] = {}
    for finding in search.findings(run_case, skip=searched):
        row = dict(finding.row)
        key = (finding.adapter, finding.dtype)
        if folder is not None:
            with phases.timed("writing"):
                path = rowsearch.save_finding(finding, folder.path / "worst", rank.get(key, 0))
            row["case_file"] = str(path.relative_to(folder.path))
        rank[key] = rank.get(key, 0) + 1
        rows.append(row)
        if journal:
            with phases.timed("writing"):
                journal.append(row)
    stats = search.stats()
    phases.extra["search_rows_per_pair"] = {key: s["rows"] for key, s in stats.items()}
    phases.count("search_batches", search.batches)
    phases.count("search_rows", sum(s["rows"] for s in stats.values()))
    phases.count("search_pairs", len(stats))
    return rows
