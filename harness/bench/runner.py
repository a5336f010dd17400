"""`cestab bench`, the parent side: which batches, which adapters, the rows, the run folder.

Speed is measured in the workers (`bench.measure`), read against the copy bandwidth
(`bench.bandwidth`) and tabulated (`bench.table`); this module drives them: the default
batches per device, what is not timed and why, one worker task per adapter x batch (a
framework that crashes or hangs costs its own rows only), rows journalled as they come.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
import sys
import time
from pathlib import Path

import pandas as pd

from harness.adapters import registry
from harness.adapters.contract import Adapter
from harness.adapters.workers import Attempt, WorkerPool
from harness.bench.bandwidth import device_bandwidth
from harness.bench.measure import DEFAULT_TIMING, TASK, BenchCase, PassResult, TimingSpec, label_kind_for
from harness.bench.table import BENCH_SCHEMA_VERSION, PASSES, bench_frame
from harness.errors import UsageError
from harness.numerics import dtypes
from harness.run.progress import Progress
from harness.store import memory, runfolder
from harness.store.runfolder import RunFolder

#: Rows journalled as they come (JSON lines), so an interrupted bench keeps what it measured.
JOURNAL = "bench_rows.jsonl"

#: Default batches per device (dtype, N, V), smallest first. CPU: float32 only, 256 and 4096
#: rows of a 32000-class vocabulary (Llama-2's): the 22 CPU adapters take about 3-4 minutes
#: on 2 quiet cores, most of it on the 4096-row batch (0.5 GB of logits, up to seconds a
#: call, capped by DEFAULT_TIMING's 1.5 s per pass); every further dtype or shape adds
#: about as much again, so they are opt-in with --dtypes/--shapes. GPU: float32 and
#: bfloat16 at 8192 x 128256 (Llama-3's vocabulary), and 16384 x 256000 in bfloat16
#: (8 GB of logits), marked unsupported where it does not fit: the sizes where a GPU
#: kernel's memory traffic, not its launch, sets the time.
DEFAULT_SHAPES = {"cpu": ((256, 32000), (4096, 32000)), "cuda": ((8192, 128256),)}
DEFAULT_DTYPES = {"cpu": ("float32",), "cuda": ("float32", "bfloat16")}
LARGE_16BIT_SHAPE = (16384, 256000)

#: Copies of a bench batch alive at once on cpu (the batch, its device copy, the gradient,
#: the framework's temporaries), for the memory bound.
BENCH_COPIES = 4


def bench_cases(device: str, dtype_names=None, shapes=None, seed: int = 0, timing: TimingSpec | None = None) -> list[BenchCase]:
    """The batches to time, smallest first (defaults per device, see DEFAULT_SHAPES)."""
    timing = timing or DEFAULT_TIMING[device]
    names = list(dtype_names or DEFAULT_DTYPES[device])
    for name in names:
        dtypes.get(name)  # UsageError for an unknown dtype
    pairs = [(d, s) for d in names for s in (shapes or DEFAULT_SHAPES[device])]
    if not shapes and device == "cuda":
        pairs += [(d, LARGE_16BIT_SHAPE) for d in names if dtypes.get(d).numpy_dtype.itemsize == 2]
    for _, (n, v) in pairs:
        if n < 1 or v < 1:
            raise UsageError(f"shape {n}x{v}: rows and classes must be positive")
    out = [BenchCase(d, n, v, seed, timing) for d, (n, v) in pairs]
    return sorted(out, key=lambda c: (c.elements * c.itemsize, c.dtype))


def unsupported_reason(adapter: Adapter, bench_case: BenchCase, device: str) -> str | None:
    """Why an adapter is not timed on this batch (declared), or None."""
    if adapter.prepare is None:
        return f"{adapter.id} has no timing hook (Adapter.prepare)"
    if bench_case.dtype not in adapter.dtypes:
        return f"{adapter.id} does not support dtype {bench_case.dtype}"
    if device not in adapter.devices:
        return f"{adapter.id} does not run on {device}"
    return None


def _memory_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def host_memory_reason(bench_case: BenchCase, device: str) -> str | None:
    """On CPU, refuse a batch that would not fit (inputs, gradient and a framework's
    temporaries: about 8 arrays of the logits' size), rather than wake the OOM killer."""
    available = _memory_available()
    need = 8 * bench_case.elements * max(bench_case.itemsize, 4)
    if device == "cpu" and available is not None and need > available:
        return f"does not fit in memory: needs about {need / 1e9:.1f} GB, {available / 1e9:.1f} GB available"
    return None


def rows_for(adapter: Adapter, bench_case: BenchCase, answer, common: dict) -> list[dict]:
    """Bench rows (dicts keyed by column name) of one adapter on one batch, both passes."""
    base = dict(
        common,
        framework=adapter.framework,
        framework_version=registry.framework_version(adapter.framework),
        adapter=adapter.id,
        dtype=bench_case.dtype,
        label_kind=label_kind_for(adapter),
        n_rows=bench_case.n_rows,
        n_classes=bench_case.n_classes,
    )
    if isinstance(answer, Attempt):  # the worker crashed or hung: both passes lost
        answer = [PassResult(p, answer.status, answer.message) for p in PASSES]
    elif isinstance(answer, tuple):  # (status, message) decided here
        answer = [PassResult(p, *answer) for p in PASSES]
    rows = []
    for result in answer:
        row = dict(base, **{"pass": result.pass_}, status=result.status, message=result.message)
        row["min_bytes"] = bench_case.min_bytes(result.pass_)
        m = result.measurement
        if m is not None:
            median = m.median
            gbps = row["min_bytes"] / median / 1e9
            row.update(
                warmup_seconds=m.warmup_seconds,
                compile_seconds=m.compile_seconds,
                repeats=len(m.samples),
                median_ms=median * 1e3,
                iqr_ms=m.iqr * 1e3,
                min_ms=min(m.samples) * 1e3,
                noisy=m.noisy,
                rows_per_second=bench_case.n_rows / median,
                gbps=gbps,
                bandwidth_fraction=gbps / common["device_gbps"] if common["device_gbps"] else math.nan,
                peak_memory_bytes=m.peak_memory_bytes,
                memory_before_bytes=m.memory_before_bytes,
                peak_memory_kind=m.memory_kind,
                samples_ms=json.dumps([round(s * 1e3, 6) for s in m.samples]),
            )
            if m.noisy:
                row["message"] = f"noisy: IQR is {m.iqr / median:.0%} of the median"
        rows.append(row)
    return rows


def bench(
    adapters=None,
    dtypes=None,
    shapes=None,
    device: str = "cpu",
    out_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    seed: int = 0,
    timing: TimingSpec | None = None,
    time_budget: float | None = None,
    timeout: float = 600.0,
    plugins: tuple[str, ...] = (),
    progress: bool = False,
    command: str | None = None,
    bandwidth_bytes: int | None = None,
) -> pd.DataFrame:
    """Time every adapter on every batch; return the bench table (`bench_columns`).

    With `out_dir`, write a new run folder under it; with `run_dir`, add `bench.parquet`,
    `bench.csv` and a "bench" entry of run.json to an existing (accuracy) run folder, so
    the two tables share a run id. `time_budget` (seconds) bounds the whole bench: what is
    left when it runs out gets status `skipped`. `timeout` bounds one adapter (both passes);
    past it the worker is killed and the adapter gets `timeout`.
    """
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    if timeout <= 0 or (time_budget is not None and time_budget <= 0):
        raise UsageError("timeout and time budget must be positive seconds")
    if out_dir is not None and run_dir is not None:
        raise UsageError("give either an output folder or an existing run folder, not both")
    folder = RunFolder.open(run_dir) if run_dir is not None else None
    meta_before = folder.read_meta(required=("run_id",)) if folder is not None else None
    adapter_list = registry.resolve(adapters, plugins)
    cases = bench_cases(device, dtypes, shapes, seed, timing)
    for c in cases:  # the batch, and (on cpu) the framework's work and outputs beside it: bounded before drawing
        per_element = c.itemsize * (2 if device == "cuda" else BENCH_COPIES)
        memory.require(c.elements * per_element, f"a {c.n_rows}x{c.n_classes} {c.dtype} bench batch")
    if device == "cuda":  # JAX would otherwise take 75% of the GPU before torch allocates
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    started = dt.datetime.now(dt.timezone.utc)
    if folder is None and out_dir is not None:
        folder = RunFolder.create(out_dir, seed)
    run_id = meta_before["run_id"] if meta_before is not None else runfolder.run_id(folder, started, seed)
    t_start = time.perf_counter()
    device_name, device_gbps, bandwidth_note = device_bandwidth(device, bandwidth_bytes)
    bandwidth_seconds = time.perf_counter() - t_start
    options = {
        "adapters": [a.id for a in adapter_list],
        "plugins": list(plugins),
        "cases": [[c.dtype, c.n_rows, c.n_classes] for c in cases],
        "seed": seed,
        "device": device,
        "timing": vars(cases[0].timing) if cases else None,
        "time_budget": time_budget,
        "timeout": timeout,
    }
    info = {
        "started": started.isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "options": options,
        "device_name": device_name,
        "device_gbps": device_gbps,
        "bandwidth_note": bandwidth_note,
        "bench_schema_version": BENCH_SCHEMA_VERSION,
    }
    common = {
        "run_id": run_id,
        "time": info["started"],
        "host": socket.gethostname(),
        "device": device,
        "device_name": device_name,
        "device_gbps": device_gbps,
    }
    pool = WorkerPool(timeout, folder.logs if folder is not None else None)
    rows, info["state"] = _time_all(adapter_list, cases, device, pool, common, folder, time_budget, t_start, progress)
    df = bench_frame(rows)
    info["timing"] = {
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "bandwidth_seconds": round(bandwidth_seconds, 3),
        "worker_startup_seconds": {k: round(v, 3) for k, v in pool.startup_seconds.items()},
    }
    if folder is not None:
        _write(folder, df, info, meta_before, adapter_list)
        df.attrs["run_dir"] = str(folder.path)
    df.attrs["timing"] = info["timing"]
    df.attrs["device_name"], df.attrs["device_gbps"] = device_name, device_gbps
    return df


def _time_all(adapter_list, cases, device, pool, common, folder, time_budget, t_start, progress) -> tuple[list, str]:
    """Every adapter on every batch, worker by worker: (rows, final state). Rows are
    journalled as they come; Ctrl-C (or `timeout -s INT`) keeps what was measured."""
    journal = folder.journal(JOURNAL) if folder is not None else None
    rows: list[dict] = []

    def emit(adapter, bench_case, answer):
        for row in rows_for(adapter, bench_case, answer, common):
            rows.append(row)
            if journal:
                journal.append(row)

    bar = Progress(len(cases) * len(adapter_list), progress)
    state = "complete"
    try:
        for bench_case in cases:
            host_reason = host_memory_reason(bench_case, device)
            for adapter in adapter_list:
                reason = unsupported_reason(adapter, bench_case, device) or host_reason
                if reason:
                    emit(adapter, bench_case, ("unsupported", reason))
                elif time_budget is not None and time.perf_counter() - t_start > time_budget:
                    emit(adapter, bench_case, ("skipped", f"the bench's time budget of {time_budget:g} s ran out"))
                else:
                    for _, answer in pool.run(bench_case, [adapter], device, task=TASK):
                        emit(adapter, bench_case, answer)
                bar.step(f"{adapter.id} {bench_case.dtype} {bench_case.n_rows}x{bench_case.n_classes}")
    except KeyboardInterrupt:
        state = "interrupted"
    finally:
        bar.close()
        pool.close()
        if journal:
            journal.close()
    return rows, state


def _write(folder: RunFolder, df: pd.DataFrame, info: dict, meta_before: dict | None, adapter_list) -> None:
    """bench.parquet, bench.csv, then run.json (new, or the accuracy run's with "bench" added)."""
    folder.write_table(RunFolder.BENCH, df)
    if meta_before is not None:
        meta = folder.read_meta()  # re-read: keep what changed since
        meta["bench"] = info
    else:
        info = dict(info)
        meta = runfolder.new_meta(folder.name, dt.datetime.fromisoformat(info.pop("started")), info.pop("command"),
                                  info.pop("options"), kind="bench", **info, **registry.describe(adapter_list))
    folder.write_meta(meta)
    folder.drop_journal(JOURNAL)
