"""The worker side of `cestab bench`: build a batch, time one adapter's two passes.

Built the way torch.utils.benchmark is: a spec kept apart from the measurement
(`BenchCase` + `TimingSpec` -> `Measurement`, like TaskSpec -> Measurement), raw samples
kept and median/IQR derived from them, a noise warning when the IQR passes 10% of the
median. `measure` runs inside the accuracy run's worker processes (task `TASK`), so a
framework that crashes or hangs while being timed costs its own rows only. The first call
of each pass (compilation included) is timed apart as the warm-up; peak memory is the
device allocator's peak where the framework exposes one (`torch.cuda.max_memory_allocated`)
and otherwise the worker's peak RSS (VmHWM, reset through /proc/self/clear_refs).
"""

from __future__ import annotations

import functools
import gc
from pathlib import Path
import time
from dataclasses import dataclass, field, replace

import numpy as np

from harness.adapters.contract import Adapter, Prepared, Unsupported
from harness.bench.table import PASSES
from harness.errors import first_line
from harness.numerics import dtypes
from harness.numerics.cases import Case

#: torch.utils.benchmark warns when IQR / median exceeds this; so do we.
NOISE_THRESHOLD = 0.1

#: Worker task that measures one adapter on one BenchCase (see `measure`).
TASK = "harness.bench.measure:measure"


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


def measure_pass(prepared: Prepared, pass_: str, timing: TimingSpec) -> Measurement:
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
