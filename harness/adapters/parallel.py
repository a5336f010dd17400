"""Workers of different frameworks at the same time (`cestab run --jobs N`).

One case (or one search batch) goes to every framework's worker at once, from one thread
per worker in the parent (the threads only wait on pipes: the work is in the worker
processes), at most `jobs` at a time. Answers are handed back in the order a serial pool
gives them (by implementation module, then adapter), so the rows, and everything computed
from them, are the same whatever `jobs` is; only the timing columns differ.

Each attempt's round trip is timed here, so the run can say how much of it was the
adapter, compilation, or the harness moving arrays between processes (`run.phases`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.adapters.workers import InProcess, WorkerPool, by_source, call_adapter


class ParallelPool(WorkerPool):
    """A `WorkerPool` that runs up to `jobs` workers at once and records per-attempt phases."""

    def __init__(self, timeout: float, log_dir: Path | None = None, jobs: int = 1, threads: int | None = None,
                 phases=None):
        super().__init__(timeout, log_dir, threads)
        self.jobs = max(1, int(jobs))
        self.phases = phases
        self._pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="cestab-dispatch") if self.jobs > 1 else None

    def _timed(self, source, group, case, device, task):
        """run_source, with each attempt's round trip (time since the previous answer) recorded."""
        last = time.perf_counter()
        for adapter, attempt in self.run_source(source, group, case, device, task):
            now = time.perf_counter()
            if self.phases is not None and task is None:
                self.phases.add_attempt(attempt, now - last, adapter.framework)
            last = now
            yield adapter, attempt

    def run(self, case, adapter_list, device, task=None):
        groups = by_source(adapter_list)
        if self._pool is None or len(groups) < 2:
            for source, group in groups.items():
                yield from self._timed(source, group, case, device, task)
            return
        if threading.current_thread() is threading.main_thread():
            self.start(groups)  # from the main thread: its workers die with the driver (PR_SET_PDEATHSIG)
        futures = [self._pool.submit(lambda s=s, g=g: list(self._timed(s, g, case, device, task))) for s, g in groups.items()]
        for future in futures:  # in submission order: the serial pool's order
            yield from future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        super().close()


class TimedInProcess(InProcess):
    """`InProcess` recording adapter and compile seconds (no round trip: no ipc)."""

    def __init__(self, phases=None):
        super().__init__()
        self.phases = phases

    def run(self, case, adapter_list, device):
        for adapter in adapter_list:
            attempt = call_adapter(adapter, case, device)
            if self.phases is not None:
                self.phases.add_attempt(attempt, None)
            yield adapter, attempt
