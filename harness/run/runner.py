"""The comparison run: cases x adapters -> one tidy DataFrame (and a run folder).

The reference is computed once per case, here, and shared by every adapter; the adapters
run in one worker process per framework (`workers`), so a crash or hang in one framework
costs only the rows it was computing. Rows are appended to `rows.jsonl` as they come, so
an interrupted run keeps what it had and `run(resume=RUN_DIR)` finishes it.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import math
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from harness.adapters import registry
from harness.store import columns
from harness.numerics import reference
from harness.inputs import regimes
from harness.store import memory, runfolder, validate
from harness.store.runfolder import RunFolder
from harness.run import rowsearch
from harness.run.phases import Phases
from harness.adapters import threads as thread_budget
from harness.adapters.parallel import ParallelPool, TimedInProcess
from harness.numerics import dtypes
from harness.numerics.cases import Case
from harness.errors import UsageError
from harness.run.ray_executor import local_cluster
from harness.run.rows import declined, judge_case, rows_for_case
from harness.run.progress import Progress

DEFAULT_TIMEOUT = 120.0  # seconds one adapter may take on one case before it is killed


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
    dtype, or in the requested dtypes when `dtypes` is given. `regimes_=[]` leaves the regime
    cases out (a search or a corpus on its own).
    `executor` is "local" (default: worker processes on this machine) or "ray" (units of
    work on a Ray cluster, `ray_executor`): the same rows either way. `ray_address` joins a
    running cluster ("auto": the one on this machine; None: start a local Ray instance);
    `ray_chunk` fixes the cases per unit (None: chosen from the cluster's CPUs). On a
    resume, `executor` and `ray_address` replace the ones the run was started with.
    `jobs`: how many framework workers of the local executor run at the same time
    (default: the number of cores), each with one thread (`adapters.threads`); rows do not
    depend on it. On a resume, a `jobs` given replaces the run's.
    """
    where = _executor_options(executor, ray_address, ray_chunk)
    if resume is not None:
        if jobs is not None:
            where = dict(where if executor is not None else {}, jobs=validate.jobs(jobs))
        elif executor is None:
            where = {}
        return _resume(Path(resume), progress, where)
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    timeout = validate.timeout(timeout)
    seed = validate.seed(seed)
    jobs = validate.jobs(jobs)
    if budget is not None and budget not in rowsearch.BUDGETS:
        raise UsageError(f"unknown budget {budget!r}; choose from {', '.join(rowsearch.BUDGETS)}")
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
        **where,
    }
    if executor == "ray":
        from harness.run.ray_executor import preflight

        preflight(options)
    if cases is not None:
        for case in cases:
            memory.require_case(case.nd_shape, case.dtype, f"case {case.case_id}")
    phases = Phases()  # its CPU count starts here
    t0 = time.perf_counter()
    case_list = cases if cases is not None else build_cases(options)
    phases.add("generation", time.perf_counter() - t0)
    folder = RunFolder.create(out_dir, seed) if out_dir is not None else None
    return _execute(case_list, adapter_list, options, folder, progress, command, done_rows=[], phases=phases)


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


def build_cases(options: dict) -> list:
    """The regime cases, then the corpus (unless switched off), from a run's options.

    Regime cases come as functions that draw the case (`functools.partial(make_case, ...)`):
    the run draws each when it reaches it, so a run holds one case at a time, not all of
    them; the largest is bounded by `memory` before anything is drawn."""
    shapes = [tuple(s) for s in options["shapes"]] if options["shapes"] else None
    planned = regimes.plan(options["regimes"] or None, options["dtypes"], shapes, options["label_kinds"], options["seed"])
    if options["regimes"] == []:  # `--regimes none`: no regime cases (the names above still checked)
        planned = []
    if planned:
        largest = max(planned, key=lambda p: math.prod(p[2]))
        memory.require_case(largest[2], largest[1])
    out = [functools.partial(regimes.make_case, *p) for p in planned]
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


def _resume(path: Path, progress: bool, where: dict) -> pd.DataFrame:
    folder = RunFolder.open(path)
    meta = folder.read_meta(required=("options",))  # validated field by field
    options = meta["options"]
    meta.setdefault("run_id", folder.name)  # a hand-made or damaged run.json: the folder's name, and now
    meta.setdefault("started", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    if meta.get("state") == "complete":
        raise UsageError(f"{path} is already complete")
    options.update(where)
    done_rows = folder.read_rows()
    adapter_list = registry.resolve(options["adapters"], options["plugins"])
    case_list = build_cases(options)
    return _execute(case_list, adapter_list, options, folder, progress, meta.get("command"), done_rows, meta)


def _executor(options, folder, phases):
    """Adapters in isolated workers, up to `jobs` frameworks at once (each with the fixed
    thread budget of `adapters.threads`), or in this process."""
    if not options["isolate"]:
        return TimedInProcess(phases)
    jobs = options.get("jobs") or thread_budget.cores()
    return ParallelPool(options["timeout"], folder.logs if folder else None, jobs=jobs,
                        threads=thread_budget.PER_WORKER, phases=phases)


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
    phases = phases or Phases()
    t0 = time.perf_counter() - phases.seconds["generation"]  # case building counts towards the wall time
    if options.get("executor") == "ray":
        from harness.run.ray_executor import RaySweep  # imports ray: only for a sweep that asks for it

        executor = RaySweep(options, meta.get("cluster"))
        meta["cluster"] = executor.cluster
    else:
        executor = _executor(options, folder, phases)
        meta["cluster"] = local_cluster()
    if folder is not None:
        folder.write_meta(meta)
    host = socket.gethostname()
    base = {"run_id": meta["run_id"], "time": meta["started"], "host": host, "node_id": "local", "node_host": host}
    done = {(r["case_id"], r["adapter"]) for r in done_rows}
    rows = list(done_rows)
    journal = folder.journal() if folder is not None else None
    bar = Progress(len(case_list), progress)
    case_order: dict[str, int] = {}
    try:
        if options.get("executor") == "ray":
            with phases.timed("generation"):
                case_list = [case() if callable(case) else case for case in case_list]  # units are chunks of cases
            case_order = {case.case_id: k for k, case in enumerate(case_list)}
            new = executor.run(case_list, adapter_list, base, done_rows, journal, bar, folder.path if folder else None)
            _ray_phases(phases, new, executor)
            rows.extend(new)
        else:
            search = None
            if options.get("budget"):
                def search(regimes_done):
                    return _search(adapter_list, options, executor, base, folder, done_rows, journal, phases,
                                   before_findings=regimes_done)
            regime_rows, search_rows = _pipelined(case_list, adapter_list, done, executor, options["device"], base,
                                                  journal.append if journal else None, phases, bar, case_order,
                                                  then=search)
            rows.extend(regime_rows)
            rows.extend(search_rows or [])
    finally:
        bar.close()
        executor.close()
        if journal:
            journal.close()
    with phases.timed("writing"):
        if done_rows:  # resumed: the order a run without interruption gives (case, then adapter)
            rows = _in_run_order(rows, case_order)
        df = columns.frame(rows)
        meta["state"] = "complete"
        if folder is not None:
            folder.finish(df, meta)
    cpu = None
    if options.get("executor") != "ray":  # Ray's workers are not this machine's processes
        in_process = not hasattr(executor, "startup_cpu")  # adapters ran here: their compilers are this process's children
        cpu = phases.cpu_record(phases.cpu_so_far(children=in_process), sum(getattr(executor, "startup_cpu", {}).values()))
    timing = phases.summary(time.perf_counter() - t0, executor.startup_seconds, cpu)
    if options.get("executor") == "ray":
        timing.update(executor.timing())
    meta.setdefault("timing", []).append(timing)
    if folder is not None:
        folder.write_meta(meta)  # again, with the timing (which includes writing the tables)
        df.attrs["run_dir"] = str(folder.path)
    df.attrs["timing"] = timing
    return df


#: Cases judged in the background while the main thread goes on (memory: their inputs and
#: outputs wait to be judged).
JUDGE_AHEAD = 2
#: How far the frameworks' lanes may run ahead of the oldest unanswered case: at most this
#: many cases, and `memory.ahead_elements` logit elements (the answers waiting for a slow
#: framework are bounded by the memory limit), are with the workers at once (always one).
#: Far: torch.compile's first two minutes of compiling in one lane held the others 16
#: cases (and then 4 M elements) ahead, one core idle.
AHEAD_CASES = 1024


def _pipelined(case_list, adapter_list, done, executor, device, base, on_row, phases, bar, case_order,
               then=None) -> tuple[list[dict], object]:
    """Every case's rows, with nobody waiting on anybody more than they must:

    - each framework's worker takes the cases in order from a lane of its own
      (`ParallelPool.submit`), so a framework that is done with a case goes on to the next
      while another compiles (up to AHEAD_CASES cases ahead of the oldest unanswered one);
    - one thread of this process computes a case's reference and judges its attempts
      (`rows.judge_case`) while the workers compute the next cases;
    - `then(regimes_done)`, the search, starts in this thread as soon as the last case is
      with the lanes, while another thread collects the last answers: its batches queue in
      each lane behind that framework's last cases, so a framework that is done with the
      cases goes on to the search while another still computes them (a core idled through
      that tail: 5-15 s of a default run). It calls `regimes_done()` (which waits for every
      case's rows) before it runs anything outside the lanes or writes to the journal.

    Returns (the cases' rows, what `then` returned). The rows, and the journal's order, are
    a serial run's: every worker sees the same cases, then the same batches, in the same
    order; answers are joined per case in the serial order, and one thread judges the cases
    in order. Only where the time goes changes (`run.phases`)."""
    rows: list[dict] = []
    asked: collections.deque = collections.deque()  # (case, declined, answers) with the workers
    judged: collections.deque = collections.deque()  # futures of judged rows, in case order
    elements = 0
    ahead_elements = memory.ahead_elements(len(adapter_list))

    def judge_one(case, attempts):
        with phases.beside():
            return judge_case(case, attempts, device, base, on_row, phases)

    def collect(limit):
        """Take judged rows, oldest first, until at most `limit` cases are being judged."""
        while len(judged) > limit:
            with phases.timed("waiting"):
                rows.extend(judged.popleft().result())

    def answered(judging):
        nonlocal elements
        case, declined_, answers = asked.popleft()
        elements -= case.logits.size
        with phases.timed("dispatch"):  # waiting on the workers
            attempts = declined_ + answers.result()
        judged.append(judging.submit(judge_one, case, attempts))
        bar.step(case.case_id)
        collect(JUDGE_AHEAD)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cestab-judge") as judging:
        for case in case_list:
            if callable(case):
                with phases.timed("generation"):
                    case = case()  # drawn now, dropped after its rows: a few cases in memory at a time
            case_order.setdefault(case.case_id, len(case_order))
            todo = [a for a in adapter_list if (case.case_id, a.id) not in done]
            if not todo:
                bar.step(case.case_id)
                continue
            declined_, runnable = declined(case, todo, device)
            with phases.timed("dispatch"):  # returns at once, unless the executor has no lanes
                asked.append((case, declined_, _ask(executor, case, runnable, device)))
            elements += case.logits.size
            while len(asked) > 1 and (len(asked) > AHEAD_CASES or elements > ahead_elements):
                answered(judging)
        stop = threading.Event()  # `then` failed: stop collecting after the case in hand

        def the_rest():
            while asked and not stop.is_set():
                answered(judging)
            collect(0)

        if then is None:
            the_rest()
            return rows, None

        def the_rest_beside():
            with phases.beside():
                the_rest()

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cestab-collect") as collector:
            rest = collector.submit(the_rest_beside)

            def regimes_done():
                with phases.timed("waiting"):
                    rest.result()

            try:
                later = then(regimes_done)
                regimes_done()
            except BaseException:
                stop.set()
                raise
    return rows, later


def _ask(executor, case, runnable, device):
    """The executor's answers for a case, to `.result()` later: handed to the lanes of a
    pool that has them (`ParallelPool.submit`), else computed now."""
    if hasattr(executor, "submit"):
        return executor.submit(case, runnable, device)
    done = Future()
    done.set_result(list(executor.run(case, runnable, device)))
    return done


def _in_run_order(rows: list[dict], case_order: dict[str, int]) -> list[dict]:
    """Rows sorted as an uninterrupted run writes them: by case in the run's order, search
    rows last; the journal's order within a case (a stable sort)."""
    return sorted(rows, key=lambda r: (r.get("source") == "search", case_order.get(r["case_id"], len(case_order))))


def _ray_phases(phases: Phases, rows: list[dict], sweep) -> None:
    """The phases of a Ray sweep, from what its rows and units report: the driver sees no
    attempt, so the adapters' and compilers' seconds come from the rows, and each module's
    unit computes its cases' reference (each (case, unit) counted once)."""
    phases.add("reference", sum(s for _, s in {(r["case_id"], r.get("reference_seconds") or 0.0) for r in rows}))
    for name in ("adapter", "compile"):
        seconds = (r.get(f"{name}_seconds") for r in rows)
        phases.add(name, sum(float(x) for x in seconds if isinstance(x, (int, float)) and math.isfinite(x)))
    for name, n in sweep.search_counts().items():
        phases.count(name, n)
    if sweep.search_rows_per_pair:
        phases.extra["search_rows_per_pair"] = dict(sorted(sweep.search_rows_per_pair.items()))


def _search(adapter_list, options, executor, base, folder, done_rows, journal, phases,
            before_findings=lambda: None) -> list[dict]:
    """The row-batched worst-case search over every adapter x dtype (`rowsearch`); each
    pair's shrunk worst rows (one per failure kind, worst first) become results rows.
    `before_findings()` runs between the batches (which go through the executor's lanes)
    and the shrinking (which calls the workers directly and writes to the journal)."""
    budget = rowsearch.BUDGETS[options["budget"]]
    searched = {(r["adapter"], r["dtype"]) for r in done_rows if r.get("source") == "search"}
    dtype_names = options["dtypes"] or list(dtypes.DTYPE_NAMES)
    device = options["device"]

    def evaluate(case, adapters):
        return executor.run(case, adapters, device)

    def run_case(case, adapter):
        return rows_for_case(case, [adapter], executor, device, base, phases=phases)[0]

    def submit(case, adapters):  # the workers' lanes compute the next batches while this process judges
        return executor.submit(case, adapters, device)

    search = rowsearch.RowSearch(adapter_list, dtype_names, budget, evaluate, seed=options["seed"], device=device,
                                 label_kinds=options["label_kinds"], phases=phases,
                                 submit=submit if hasattr(executor, "submit") else None,
                                 group=registry.worker_of)
    search.run()
    before_findings()
    rows = []
    rank: dict[tuple[str, str], int] = {}
    apart = isinstance(executor, ParallelPool) and executor.jobs > 1  # workers shrink their pairs at once
    for finding in search.findings(run_case, skip=searched, apart=apart):
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
    rates = search_rates(stats, {a.id: a.framework for a in adapter_list}, phases.search_by_framework)
    if rates:
        phases.extra["search_frameworks"] = rates
    return rows


def search_rates(stats: dict, framework_of: dict, seconds: dict) -> dict:
    """Per framework: the search's candidate rows (`RowSearch.stats`, keyed "adapter|dtype"),
    the seconds of its workers' round trips on the search's cases (compilation included:
    `Phases.search_by_framework`) and rows per second of them. Frameworks whose round trips
    were not timed (adapters run in this process) are left out."""
    rows: dict[str, int] = {}
    for key, s in stats.items():
        framework = framework_of[key.split("|")[0]]
        rows[framework] = rows.get(framework, 0) + s["rows"]
    return {f: {"rows": n, "seconds": round(seconds[f], 6), "rows_per_second": round(n / seconds[f], 1)}
            for f, n in sorted(rows.items()) if seconds.get(f, 0.0) > 0}
