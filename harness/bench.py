"""`cestab bench`: forward and forward+backward time per adapter x dtype x shape x device.

Built the way torch.utils.benchmark is: a spec kept apart from the measurement
(`BenchCase` + `TimingSpec` -> `Measurement`, like TaskSpec -> Measurement), raw samples
kept and median/IQR derived from them, a noise warning when the IQR passes 10% of the
median, and a Compare-style table (`format_compare`). Each adapter that can be timed has a
`prepare(case, device) -> Prepared` hook: its inputs go to the device once, and the timed
callables are the same code path the accuracy run checks, followed by the adapter's own
synchronisation (CUDA synchronise, `block_until_ready`, TensorFlow's `.numpy()`).

Measurements run in the accuracy run's worker processes (`workers.WorkerPool`, task
"harness.bench:measure"): a framework that crashes or hangs costs its own rows only. The
first call of each pass (compilation included) is timed apart as the warm-up; peak memory is
the device allocator's peak where the framework exposes one (`torch.cuda.max_memory_allocated`)
and otherwise the worker's peak RSS (VmHWM, reset through /proc/self/clear_refs).

Speed is read against the memory roofline: a softmax-CE pass must at least read the logits
once (forward) and write the gradient once (forward+backward), `min_bytes`, so
`min_bytes / median` is an effective bandwidth, and its ratio to the device's copy bandwidth
measured in the same bench (`device_bandwidth`) says how far an implementation is from
streaming speed.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import adapters as registry
from . import dtypes, runfolder
from .adapters import Adapter, Unsupported, first_line
from .bench_columns import BENCH_SCHEMA_VERSION, PASSES, bench_frame
from .cases import Case
from .errors import UsageError
from .progress import Progress
from .workers import Attempt, WorkerPool

#: torch.utils.benchmark warns when IQR / median exceeds this; so do we.
NOISE_THRESHOLD = 0.1

#: Worker task that measures one adapter on one BenchCase (see `measure`).
TASK = "harness.bench:measure"

#: Rows journalled as they come (JSON lines), so an interrupted bench keeps what it measured.
JOURNAL = "bench_rows.jsonl"

#: Rows of the logits block that `BenchCase.case` draws and then repeats down the batch.
BLOCK_ROWS = 256


@dataclass(frozen=True)
class TimingSpec:
    """How long to measure one pass: at least `min_repeats` timed calls and `min_time`
    seconds, at most `max_repeats` calls or `max_time` seconds (whichever comes first), after
    one warm-up call timed apart."""

    min_repeats: int = 3
    max_repeats: int = 100
    min_time: float = 0.3
    max_time: float = 3.0


#: CPU: batches of 256-4096 rows x 32000 take 20 ms to several seconds a call on 2 cores,
#: so a pass stops after 1.5 s (a call slower than that gets one timed sample after its
#: warm-up); GPU: sub-ms to tens of ms, so more repeats fit in less time.
DEFAULT_TIMING = {
    "cpu": TimingSpec(min_repeats=3, max_repeats=100, min_time=0.3, max_time=1.5),
    "cuda": TimingSpec(min_repeats=10, max_repeats=200, min_time=0.3, max_time=2.0),
}


@dataclass(frozen=True)
class BenchCase:
    """What a worker needs to build one benchmark batch itself: dtype, shape, seed, timing.

    The batch is built in the worker, not sent: a 16384 x 256000 bfloat16 batch is 8 GB.
    """

    dtype: str
    n_rows: int
    n_classes: int
    seed: int = 0
    timing: TimingSpec = field(default_factory=TimingSpec)

    @property
    def itemsize(self) -> int:
        return dtypes.get(self.dtype).numpy_dtype.itemsize

    @property
    def elements(self) -> int:
        return self.n_rows * self.n_classes

    def min_bytes(self, pass_: str) -> int:
        """Least traffic of a pass: read the logits once; forward+backward also writes the
        gradient once (2 * N * V * itemsize)."""
        return (2 if pass_ == "forward_backward" else 1) * self.elements * self.itemsize

    def case(self, label_kind: str = "index") -> Case:
        """The batch: typical logits (normal, sigma 3) exact in the dtype, random targets.

        A block of `BLOCK_ROWS` rows is drawn and repeated down the batch: drawing 4e9
        float64 normals for the largest GPU batch would take a minute per worker, and the
        time of softmax-CE does not depend on which finite values it reads.
        """
        case = _bench_case(self.dtype, self.n_rows, self.n_classes, self.seed)
        if label_kind == case.label_kind:
            return case
        return replace(case, label_kind=label_kind, case_id=case.case_id.replace("/index/", f"/{label_kind}/"))


@functools.lru_cache(maxsize=1)  # the worker's current batch; one-hot cases share its logits
def _bench_case(dtype: str, n: int, v: int, seed: int) -> Case:
    rng = np.random.default_rng([seed, n, v])
    block = dtypes.exact(rng.normal(0.0, 3.0, (min(n, BLOCK_ROWS), v)), dtype)
    logits = np.resize(block, (n, v))
    return Case(
        case_id=f"bench/{dtype}/{n}x{v}/index/s{seed}",
        regime="typical",
        dtype=dtype,
        logits=logits,
        target=rng.integers(0, v, size=n).astype(np.int64),
        seed=seed,
        source="bench",
    )


def label_kind_for(adapter: Adapter) -> str:
    """Class indices where the adapter takes them, else the same labels as one-hot rows."""
    return "index" if "index" in adapter.label_kinds else "onehot"


@dataclass(frozen=True)
class Measurement:
    """One pass of one adapter on one batch: the raw samples, and what is derived from them."""

    pass_: str
    samples: tuple[float, ...]  # seconds, one per timed call
    warmup_seconds: float
    compile_seconds: float
    peak_memory_bytes: int | None
    memory_before_bytes: int | None
    memory_kind: str

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def iqr(self) -> float:
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)

    @property
    def noisy(self) -> bool:
        return self.iqr > NOISE_THRESHOLD * self.median


@dataclass(frozen=True)
class PassResult:
    pass_: str
    status: str  # ok, unsupported, error
    message: str = ""
    measurement: Measurement | None = None


# ---------------------------------------------------------------- the worker side


def rss_bytes(field_name: str = "VmRSS") -> int | None:
    """This process's resident set (VmRSS) or its high-water mark (VmHWM), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_rss_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: "5" to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def time_calls(fn, sync, timing: TimingSpec) -> tuple[float, list[float]]:
    """(warm-up seconds, timed samples): each call is followed by `sync` before the clock."""
    t0 = time.perf_counter()
    sync(fn())
    warmup = time.perf_counter() - t0
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        sync(fn())
        samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(samples) >= timing.max_repeats or elapsed >= timing.max_time:
            return warmup, samples
        if len(samples) >= timing.min_repeats and elapsed >= timing.min_time:
            return warmup, samples


def measure_pass(prepared: registry.Prepared, pass_: str, timing: TimingSpec) -> Measurement:
    """Warm-up, timed calls and peak memory of one pass of a prepared adapter."""
    fn = prepared.forward if pass_ == "forward" else prepared.forward_backward
    gc.collect()
    device_memory = prepared.peak_memory is not None
    if device_memory:
        prepared.reset_peak_memory()
        before = prepared.memory_in_use() if prepared.memory_in_use else None
    else:
        reset_rss_peak()
        before = rss_bytes()
    warmup, samples = time_calls(fn, prepared.sync, timing)
    peak = prepared.peak_memory() if device_memory else rss_bytes("VmHWM")
    median = float(np.median(samples))
    if pass_ in prepared.compile_seconds:
        compile_seconds = prepared.compile_seconds[pass_]
    elif prepared.compiles_on_first_call:
        compile_seconds = max(0.0, warmup - median)
    else:
        compile_seconds = 0.0
    return Measurement(
        pass_, tuple(samples), warmup, compile_seconds, peak, before, prepared.memory_kind if device_memory else "rss"
    )


def _failure(exc: BaseException) -> tuple[str, str]:
    """(status, message) of an exception: a refusal or an out-of-memory is `unsupported`."""
    if isinstance(exc, Unsupported):
        return "unsupported", first_line(exc)
    text = first_line(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, MemoryError) or any(s in str(exc) for s in ("out of memory", "RESOURCE_EXHAUSTED", "OutOfMemory")):
        return "unsupported", "does not fit in memory: " + text
    return "error", text


def measure(adapter: Adapter, bench_case: BenchCase, device: str) -> list[PassResult]:
    """Worker task: prepare the adapter on the batch, then measure each pass.

    A failure of one pass (or of `prepare`, which fails both) is that pass's row; it never
    stops the worker.
    """
    try:
        prepared = adapter.prepare(bench_case.case(label_kind_for(adapter)), device)
    except Exception as exc:  # the adapter's failure is a result
        status, message = _failure(exc)
        return [PassResult(p, status, message) for p in PASSES]
    results = []
    try:
        for pass_ in PASSES:
            try:
                results.append(PassResult(pass_, "ok", measurement=measure_pass(prepared, pass_, bench_case.timing)))
            except Exception as exc:
                results.append(PassResult(pass_, *_failure(exc)))
    finally:  # drop the inputs, then let the framework return its cached memory
        release = prepared.release
        del prepared
        gc.collect()
        release()
    return results


# ---------------------------------------------------------------- device bandwidth


def cpu_copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """GB/s (1e9 bytes/s) of a large numpy copy, counting the bytes read and the bytes
    written: the same traffic model as `min_bytes`. One thread, like most adapters' loops."""
    src = np.ones(max(nbytes // 8, 1), dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / float(np.median(times)) / 1e9


def cuda_copy_bandwidth(nbytes: int = 2 << 30, repeats: int = 20) -> tuple[str, float]:
    """(GPU name, GB/s) of a torch device-to-device copy timed with CUDA events, read +
    written bytes. Runs in a spawned process so the bench's own process holds no CUDA context."""
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return torch.cuda.get_device_name(), 2 * src.numel() * 4 / float(np.median(times)) / 1e9


def device_bandwidth(device: str, nbytes: int | None = None) -> tuple[str, float, str]:
    """(device name, copy GB/s, note) measured now, on the bench's device."""
    if device == "cpu":
        return runfolder.cpu_model(), cpu_copy_bandwidth(nbytes or 1 << 30), ""
    import concurrent.futures
    import multiprocessing as mp

    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            name, gbps = pool.submit(cuda_copy_bandwidth, nbytes or 2 << 30).result(timeout=300)
        return name, gbps, ""
    except Exception as exc:  # no torch, no GPU: the bench still runs, fractions are NaN
        return "cuda (unknown)", math.nan, "copy bandwidth not measured: " + first_line(f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- the parent side

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
        framework_version=adapter.version(),
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
    from .runner import resolve_adapters, versions

    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    if timeout <= 0 or (time_budget is not None and time_budget <= 0):
        raise UsageError("timeout and time budget must be positive seconds")
    if out_dir is not None and run_dir is not None:
        raise UsageError("give either an output folder or an existing run folder, not both")
    meta_before = _existing_meta(Path(run_dir)) if run_dir is not None else None
    adapter_list = resolve_adapters(adapters, plugins)
    cases = bench_cases(device, dtypes, shapes, seed, timing)
    if device == "cuda":  # JAX would otherwise take 75% of the GPU before torch allocates
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    started = dt.datetime.now(dt.timezone.utc)
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_id = meta_before["run_id"]
    elif out_dir is not None:
        run_dir = runfolder.new_run_dir(out_dir, seed)
        run_id = run_dir.name
    else:
        run_id = started.strftime("%Y%m%d-%H%M%S") + f"-s{seed}"
    t_start = time.perf_counter()
    device_name, device_gbps, bandwidth_note = device_bandwidth(device, bandwidth_bytes)
    bandwidth_seconds = time.perf_counter() - t_start
    info = {
        "started": started.isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "options": {
            "adapters": [a.id for a in adapter_list],
            "plugins": list(plugins),
            "cases": [[c.dtype, c.n_rows, c.n_classes] for c in cases],
            "seed": seed,
            "device": device,
            "timing": vars(cases[0].timing) if cases else None,
            "time_budget": time_budget,
            "timeout": timeout,
        },
        "device_name": device_name,
        "device_gbps": device_gbps,
        "bandwidth_note": bandwidth_note,
        "bench_schema_version": BENCH_SCHEMA_VERSION,
        "state": "running",
    }
    common = {
        "run_id": run_id,
        "time": info["started"],
        "host": socket.gethostname(),
        "device": device,
        "device_name": device_name,
        "device_gbps": device_gbps,
    }
    journal = open(run_dir / JOURNAL, "a", encoding="utf-8") if run_dir is not None else None
    rows: list[dict] = []

    def emit(adapter, bench_case, answer):
        for row in rows_for(adapter, bench_case, answer, common):
            rows.append(row)
            if journal:
                journal.write(json.dumps(row, default=str) + "\n")
                journal.flush()

    pool = WorkerPool(timeout, runfolder.log_dir(run_dir))
    bar = Progress(len(cases) * len(adapter_list), progress)
    info["state"] = "complete"
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
    except KeyboardInterrupt:  # Ctrl-C, or `timeout -s INT`: keep and write what was measured
        info["state"] = "interrupted"
    finally:
        bar.close()
        pool.close()
        if journal:
            journal.close()
    df = bench_frame(rows)
    info["timing"] = {
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "bandwidth_seconds": round(bandwidth_seconds, 3),
        "worker_startup_seconds": {k: round(v, 3) for k, v in pool.startup_seconds.items()},
    }
    if run_dir is not None:
        _write(run_dir, df, info, meta_before, adapter_list, versions)
        df.attrs["run_dir"] = str(run_dir)
    df.attrs["timing"] = info["timing"]
    df.attrs["device_name"], df.attrs["device_gbps"] = device_name, device_gbps
    return df


def _existing_meta(run_dir: Path) -> dict:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
        meta["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{run_dir} is not a run folder (no readable run.json with a run_id)") from None
    return meta


def _write(run_dir: Path, df: pd.DataFrame, info: dict, meta_before: dict | None, adapter_list, versions) -> None:
    """bench.parquet, bench.csv, then run.json (new, or the accuracy run's with "bench" added)."""
    runfolder.write_atomic(run_dir / "bench.parquet", lambda p: df.to_parquet(p, index=False))
    runfolder.write_atomic(run_dir / "bench.csv", lambda p: df.to_csv(p, index=False))
    if meta_before is not None:
        meta = json.loads((run_dir / "run.json").read_text())  # re-read: keep what changed since
        meta["bench"] = info
    else:
        meta = dict(
            run_id=run_dir.name,
            kind="bench",
            **info,
            adapters={a.id: {"framework": a.framework, "version": a.version()} for a in adapter_list},
            unavailable_frameworks=registry.unavailable(),
            versions=versions(),
            environment=runfolder.environment(),
        )
    runfolder.write_meta(run_dir, meta)
    (run_dir / JOURNAL).unlink(missing_ok=True)


# ---------------------------------------------------------------- the table


def _cell(row) -> list[str]:
    if row["status"] != "ok":
        return [row["status"], "", "", "", ""]
    mark = "*" if row["noisy"] else ""
    frac = row["bandwidth_fraction"]
    return [
        f"{row['median_ms']:.3g}{mark}",
        f"{row['iqr_ms']:.2g}",
        f"{row['gbps']:.3g}",
        "" if pd.isna(frac) else f"{frac:.0%}",
        "" if pd.isna(row["peak_memory_bytes"]) else f"{row['peak_memory_bytes'] / 2**20:.0f}",
    ]


def format_compare(df: pd.DataFrame) -> str:
    """A Compare-style table per batch: median ms (* = noisy), IQR, GB/s, share of the
    measured copy bandwidth and peak memory (MiB), forward then forward+backward."""
    if df.empty:
        return "(no rows)"
    first = df.iloc[0]
    lines = [f"[ cestab bench: {first['device']}, {first['device_name']}, copy bandwidth {first['device_gbps']:.3g} GB/s ]"]
    sub = ["median ms", "IQR", "GB/s", "of copy", "peak MiB"]
    for (dtype, n, v), group in df.groupby(["dtype", "n_rows", "n_classes"], sort=False):
        lines.append(f"\n{dtype} {n}x{v}")
        table = {}
        for adapter, rows in group.groupby("adapter", sort=True):
            cells = []
            for pass_ in PASSES:
                r = rows[rows["pass"] == pass_]
                cells += _cell(r.iloc[0]) if len(r) else [""] * len(sub)
            table[adapter] = cells
        columns = pd.MultiIndex.from_product([["forward", "forward+backward"], sub])
        lines.append(pd.DataFrame.from_dict(table, orient="index", columns=columns).to_string())
    problems = df[~df["status"].isin(["ok"])].drop_duplicates(["adapter", "status", "message"])
    if len(problems):
        lines.append("\nnot timed:")
        lines += [f"  {r.adapter} {r.dtype} {r.n_rows}x{r.n_classes}: {r.status}: {r.message}" for r in problems.itertuples()]
    if df["noisy"].fillna(False).any():
        lines.append("* noisy: IQR above 10% of the median; rerun on a quieter machine before comparing those")
    return "\n".join(lines)
