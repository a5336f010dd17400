"""Workers of different frameworks at the same time (`cestab run --jobs N`).

One case (or one search batch) goes to every framework's worker at once, from one thread
per worker in the parent (the threads only wait on pipes: the work is in the worker
processes), at most `jobs` at a time. Answers are handed back in the order a serial pool
gives them (by implementation module, then adapter), so the rows, and everything computed
from them, are the same whatever `jobs` is; only the timing columns differ.

`submit` goes further for the comparison run: each framework gets a lane (one thread that
feeds its worker the cases in order), so a framework that is done with a case starts the
next one while another is still compiling; at most `jobs` workers compute at once (a
semaphore). Every worker still sees the same cases in the same order as with `run`, so its
answers, compilations included, are the same.

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
        self._lanes: dict[str, ThreadPoolExecutor] = {}  # per implementation module, for `submit`
        self._slots = threading.Semaphore(self.jobs)  # workers computing at once

    def _timed(self, source, group, case, device, task):
        """run_source, with each attempt's round trip recorded: its share of its message's
        (`Attempt.round_trip`), or, for a crash or a timeout, the time since the previous answer."""
        last = time.perf_counter()
        for adapter, attempt in self.run_source(source, group, case, device, task):
            now = time.perf_counter()
            if self.phases is not None and task is None:
                worker = self.workers.get(source)  # a restarted worker counts its CPU from 0 again
                process = f"{source}:{worker.process.pid}" if worker is not None else None
                round_trip = attempt.round_trip if attempt.round_trip is not None else now - last
                self.phases.add_attempt(attempt, round_trip, adapter.framework, worker=process,
                                        search=getattr(case, "source", None) == "search")
            last = now
            yield adapter, attempt

    def run(self, case, adapter_list, device, task=None):
        groups = by_source(adapter_list, getattr(case, "dtype", None))
        if self._pool is None or len(groups) < 2:
            for source, group in groups.items():
                with self._slots:  # one of --jobs computing workers (callers in threads: the search's findings)
                    answers = list(self._timed(source, group, case, device, task))
                yield from answers
            return
        if threading.current_thread() is threading.main_thread():
            self.start(groups)  # from the main thread: its workers die with the driver (PR_SET_PDEATHSIG)
        futures = [self._pool.submit(lambda s=s, g=g: list(self._timed(s, g, case, device, task))) for s, g in groups.items()]
        for future in futures:  # in submission order: the serial pool's order
            yield from future.result()

    def submit(self, case, adapter_list, device) -> "Answers":
        """Hand a case to every framework's lane and return at once; `.result()` waits for
        the (adapter, Attempt) pairs in `run`'s order. Call from the main thread (it starts
        missing workers there, see `WorkerPool.start`)."""
        groups = by_source(adapter_list, getattr(case, "dtype", None))
        self.start([source for source in groups if source not in self._lanes])  # later restarts: in the lane
        return Answers([self._lane(source).submit(self._in_slot, source, group, case, device)
                        for source, group in groups.items()])

    def _lane(self, source: str) -> ThreadPoolExecutor:
        if source not in self._lanes:
            self._lanes[source] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cestab-lane-{len(self._lanes)}")
        return self._lanes[source]

    def _in_slot(self, source, group, case, device) -> list:
        with self._slots:
            return list(self._timed(source, group, case, device, None))

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.shutdown(wait=True, cancel_futures=True)  # an interrupted run: the queued cases are dropped
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        super().close()


class Answers:
    """One case's attempts from several lanes, joined in the lanes' (serial) order."""

    def __init__(self, futures):
        self.futures = futures

    def result(self) -> list:
        return [pair for future in self.futures for pair in future.result()]


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
