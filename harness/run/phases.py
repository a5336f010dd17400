"""Where a run's time goes, phase by phase: so a slow run explains itself.

The parent process measures its own segments directly (`Phases.timed`): building cases and
search rows (`generation`), the reference (`reference`), judging and scoring
(`metrics`), writing journals and tables (`writing`), and the time it spends waiting on
the workers (`dispatch`). What the workers report is added per attempt: the adapters' own
compute (`adapter`), compilation (`compile`), and `ipc`, the rest of each round trip
(pickling arrays, the pipe, converting to and from the framework, waiting for a busy
worker; a message bringing several answers shares it among them: `Attempt.round_trip`).
Worker start-up (framework imports) is counted by the executor.

Workers of different frameworks run at the same time (`--jobs`), so adapter, compile and
ipc seconds are summed over workers and may exceed the wall time. The parent judges each
case in a thread of its own while the workers compute the next one (`runner._pipelined`),
and the search judges its batches, and shrinks its findings, in threads too
(`rowsearch.RowSearch`): the seconds those threads spend on the parent's phases (reference,
metrics, writing, their own dispatch) are counted in those phases and, again, in `beside`
(they cost CPU, not wall time, unless the main thread waits for them: `waiting`); the
worker seconds their attempts report are the workers' as always. The main thread's
segments never overlap one another, so `other` (wall minus them) is what nothing above
measured.
"""

from __future__ import annotations

import contextlib
import threading
import time

from harness.adapters.workers import process_cpu

#: The parent's own segments, in display order. The main thread's never overlap one another;
#: what the judging thread adds to them is also counted in `Phases.beside_seconds`.
PARENT = ("generation", "reference", "dispatch", "metrics", "writing", "waiting")
#: Per-attempt seconds the workers report (summed over workers).
WORKER = ("adapter", "compile", "ipc")
#: What counts as the harness's own cost (not the implementations' compute or compile).
HARNESS = ("generation", "reference", "ipc", "metrics", "writing", "other")


class Phases:
    """Seconds per phase, accumulated; thread-safe (the executor's threads add worker phases)."""

    def __init__(self):
        self.seconds: dict[str, float] = {name: 0.0 for name in PARENT + WORKER}
        self.counts: dict[str, int] = {}
        self.by_framework: dict[str, float] = {}  # seconds of round trips per framework's worker
        self.search_by_framework: dict[str, float] = {}  # of those, the search's cases' (batches, shrinking, findings)
        self.extra: dict = {}  # more facts for run.json's timing record (the search's rows per pair, per framework)
        self.beside_seconds: dict[str, float] = {}  # of the parent's phases, what ran beside the workers
        self.adapter_cpu = 0.0  # CPU seconds of the processes running adapters, during the calls
        self.worker_cpu: dict[str, float] = {}  # per worker process: its CPU seconds so far (last answer)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._cpu0 = process_cpu(children=False)
        self._all0 = process_cpu()

    def cpu_so_far(self, children: bool = False) -> float:
        """This process's CPU seconds since these phases began (user + system, all threads);
        `children`: with the child processes it waited for meanwhile. Adapters run in this
        process (no workers) count their compilers' processes as theirs (`process_cpu`), so
        this process's figure must hold them too; where workers ran, its children are the
        workers, counted apart."""
        return process_cpu() - self._all0 if children else process_cpu(children=False) - self._cpu0

    @contextlib.contextmanager
    def beside(self):
        """What this thread times from here on ran beside the main thread (the judging thread)."""
        self._local.beside = True
        try:
            yield
        finally:
            self._local.beside = False

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)
            if name in PARENT and getattr(self._local, "beside", False):  # a worker's seconds are not the parent's
                self.beside_seconds[name] = self.beside_seconds.get(name, 0.0) + float(seconds)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + int(n)

    @contextlib.contextmanager
    def timed(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add_attempt(self, attempt, round_trip: float | None, framework: str | None = None,
                    worker: str | None = None, search: bool = False) -> None:
        """An attempt's adapter and compile seconds, and the rest of its round trip as ipc;
        its CPU seconds, and (`worker`: which worker answered) that worker's CPU so far.
        `search`: the attempt was on one of the search's cases (its round trip is also
        counted per framework for the search's rows per second)."""
        with self._lock:
            if framework is not None and round_trip is not None:
                self.by_framework[framework] = self.by_framework.get(framework, 0.0) + round_trip
                if search:
                    self.search_by_framework[framework] = self.search_by_framework.get(framework, 0.0) + round_trip
            self.adapter_cpu += attempt.cpu_seconds or 0.0
            if worker is not None and attempt.process_cpu is not None:
                self.worker_cpu[worker] = max(self.worker_cpu.get(worker, 0.0), attempt.process_cpu)
        self.add("adapter", attempt.seconds or 0.0)
        self.add("compile", attempt.compile_seconds)
        if round_trip is not None:
            self.add("ipc", max(0.0, round_trip - attempt.work_seconds))

    def summary(self, wall: float, startup: dict[str, float], cpu: dict | None = None) -> dict:
        """The run.json `timing` record: wall, every phase, `other`, and the harness share;
        `cpu`: the CPU seconds record (`cpu_record`), where the executor can tell them."""
        parent = sum(self.seconds[name] for name in PARENT) - sum(self.beside_seconds.values())
        phases = {name: round(v, 3) for name, v in self.seconds.items()}
        phases["other"] = round(max(0.0, wall - parent), 3)
        harness = sum(phases[name] for name in HARNESS)
        extra = {} if cpu is None else {"cpu_seconds": cpu}
        return {
            "wall_seconds": round(wall, 3),
            "phases": phases,
            "counts": dict(self.counts),
            "harness_seconds": round(harness, 3),
            "beside_seconds": {k: round(v, 3) for k, v in sorted(self.beside_seconds.items())},
            "reference_seconds": phases["reference"],
            "adapter_seconds": phases["adapter"],
            "compile_seconds": phases["compile"],
            "worker_startup_seconds": {k: round(v, 3) for k, v in startup.items()},
            "framework_seconds": {k: round(v, 3) for k, v in sorted(self.by_framework.items())},
            **extra,
            **self.extra,
        }

    def cpu_record(self, parent: float, startup: float) -> dict:
        """CPU seconds, where the wall-clock phases above cannot say: with more processes and
        threads than cores, a thread's seconds count its waits for a core too, so they add up
        to more than the machine spent. `parent`: this process's CPU seconds over the run
        (user + system, every thread); `startup`: the workers' CPU seconds starting up.

        - adapters: the CPU of the processes running adapters during the calls (compute and
          compilation, the compiler processes they wait for included, e.g. inductor's C++
          compiler: `workers.process_cpu`);
        - workers: each worker process's own CPU seconds (its last answer's count);
        - harness: the rest, this process's and the workers' (round trips: pickling,
          converting, the pipe): parent + workers - start-up - adapters. In process (no
          workers) the adapters ran here, and the judging threads' CPU during a call is
          counted as the adapter's."""
        workers = sum(self.worker_cpu.values())
        harness = parent + workers - startup - self.adapter_cpu
        return {"parent": round(parent, 3), "workers": round(workers, 3), "startup": round(startup, 3),
                "adapters": round(self.adapter_cpu, 3), "harness": round(harness, 3)}
