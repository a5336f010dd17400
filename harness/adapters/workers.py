"""Running adapters: in this process, or one spawned worker process per framework (two
for a framework that splits its dtypes, `Framework.worker_shards`).

A segfault, abort, out-of-memory kill or hang inside one framework must not lose the run.
So each framework's adapters run in a worker process of their own (spawned, never forked:
frameworks hold threads and GPU contexts that do not survive a fork). The parent sends a
case and the adapter ids; the worker answers them together, in one message (`GROUP_BYTES`),
and says in shared memory which adapter it is running, since when (`Worker.progress`). If
the worker dies, the adapter it was running gets a `crash` attempt with the signal; if one
adapter runs longer than the timeout the worker is killed and that adapter gets `timeout`.
Either way a fresh worker takes over the other adapters whose answers had not come back,
and the run goes on.

Both executors return `Attempt`s, so the runner does not care where an adapter ran.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import multiprocessing as mp
from multiprocessing import connection as mp_connection
import os
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.adapters import compilecache, registry
from harness.adapters import threads as thread_budget
from harness.adapters import transport
from harness.adapters.contract import Adapter, Output, Unsupported
from harness.errors import first_line
from harness.numerics import samebits
from harness.numerics.cases import Case
from harness.store import memory

#: Seconds a worker may take to import its framework before it counts as crashed.
STARTUP_TIMEOUT = 300.0


@dataclass
class Attempt:
    """What happened when one adapter met one case."""

    status: str  # "ran", "unsupported", "error", "crash", "timeout"
    output: Output | None = None
    message: str = ""
    seconds: float | None = None
    # CPU seconds of the process that ran the adapter during the call (compute and any
    # compilation, all its threads, and the compiler processes it waited for: `process_cpu`);
    # and that process's so far when it answered (a worker's: what it spent in all, round
    # trips included).
    cpu_seconds: float | None = None
    process_cpu: float | None = None
    # Wall seconds of the parent's wait that this attempt accounts for (set by `Worker.run`):
    # its own compute and compilation, and an equal share of the rest of the round trip of the
    # message that brought it (`run.phases` counts that rest as ipc).
    round_trip: float | None = None

    @property
    def compile_seconds(self) -> float:
        """The compilation seconds its output reports (0 without one)."""
        return self.output.compile_seconds if self.output is not None else 0.0

    @property
    def work_seconds(self) -> float:
        """Its adapter compute and compilation seconds: what of its round trip is not ipc."""
        return (self.seconds or 0.0) + self.compile_seconds


def process_cpu(children: bool = True) -> float:
    """This process's CPU seconds so far (user + system, every thread), plus (`children`) those
    of the child processes it has waited for. A worker's children are the adapters' own: the
    C++ compiler inductor runs for torch.compile is compilation the adapter asked for (24 CPU
    seconds beside torch.compile's own 6 for its first graph here)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    used = own.ru_utime + own.ru_stime
    if children:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        used += kids.ru_utime + kids.ru_stime
    return used


def call_adapter(adapter: Adapter, case: Case, device: str) -> Attempt:
    """Run one adapter on one case, turning its failures into attempts."""
    t0, c0 = time.perf_counter(), process_cpu()
    try:
        out = adapter.compute(case, device)
    except Unsupported as exc:
        return Attempt("unsupported", message=compilecache.without_fresh_dirs(first_line(exc)))
    except Exception as exc:  # the adapter's failure is a result, not the run's
        return Attempt("error", message=compilecache.without_fresh_dirs(first_line(f"{type(exc).__name__}: {exc}")),
                       cpu_seconds=process_cpu() - c0)
    seconds = time.perf_counter() - t0 - out.compile_seconds
    cpu = process_cpu() - c0
    if case.batch_shape:  # fed (N, T, V): back to the N*T rows the reference has
        try:
            out = dataclasses.replace(out, loss=np.reshape(out.loss, case.shape[:1]), grad=np.reshape(out.grad, case.shape))
        except ValueError as exc:
            return Attempt("error", message=first_line(f"outputs of shape {np.shape(out.loss)}, {np.shape(out.grad)} "
                                                       f"for logits {case.nd_shape}: {exc}"))
    return Attempt("ran", out, seconds=seconds, cpu_seconds=cpu)


class InProcess:
    """Runs adapters here: fast, for tests and ad-hoc adapters; no crash isolation."""

    def __init__(self):
        self.startup_seconds: dict[str, float] = {}  # no workers to start

    def run(self, case: Case, adapter_list: list[Adapter], device: str):
        for adapter in adapter_list:
            yield adapter, call_adapter(adapter, case, device)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- the worker side


#: Seconds between the watchdog's checks that the driver is still there.
WATCHDOG_SECONDS = 1.0


def _die_with_parent(parent_pid: int, arm_signal: bool = True) -> None:
    """End this worker when the driver dies, however it dies.

    A worker stuck in a hang (or in a framework's endless loop) would otherwise outlive a
    driver killed by `kill -9`, a CI timeout or the OOM killer, and keep a CPU or a GPU
    under init. Linux delivers SIGKILL to us when the parent dies (PR_SET_PDEATHSIG);
    since that signal follows the parent *thread* and exists only on Linux, a daemon
    thread also checks that the parent is still our parent, and kills us if not. The
    thread runs even while the main thread is stuck in a C call that holds no GIL (a
    sleep, a framework kernel); one that holds the GIL is what the signal is for.
    `arm_signal` is False when the worker was started from a thread other than the main
    one: that thread's end would kill a worker whose driver lives on.
    """
    if arm_signal and sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no libc prctl here: the watchdog alone
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch():
        while True:
            time.sleep(WATCHDOG_SECONDS)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="cestab-parent-watchdog", daemon=True).start()


#: A worker's answers to one case go back together: a message is sent once its arrays hold
#: this many bytes, and after the last adapter. Each message costs CPU on each side
#: whatever its size (waking the parent's lane and the worker, the system calls), and a
#: default run's cases have three adapters per worker on average, most of them small
#: (2-128 KB): their answers go in one message instead of three. Larger answers go one or
#: two a message: a larger message costs more per byte than its parts (it no longer fits a
#: core's cache: a lone numpy worker spent 1.4-2.4 ms of CPU sending two 1 MB answers in
#: one message, 1.3-1.4 ms in two, 2-core EPYC). Nothing waits for the next adapter, so a
#: message's round trip is the work of the answers it brings (`Attempt.round_trip`).
GROUP_BYTES = 256 << 10


def _answer_bytes(attempt) -> int:
    output = getattr(attempt, "output", None)
    return sum(x.nbytes for x in (getattr(output, "loss", None), getattr(output, "grad", None))
               if isinstance(x, np.ndarray))


def _serve(conn, sources: list[str], log_path: str | None, parent_pid: int | None = None, arm_signal: bool = True,
           threads: int | None = None, folder: str | None = None, progress=None) -> None:
    """Worker main loop: load the adapters' sources, then answer case requests.

    `threads`: the worker's thread budget (`adapters.threads`), set before any framework import.
    `folder`: the pool's shared-memory folder for large messages (`transport`).
    `progress`: the shared words where the worker writes which adapter of the request it
    starts, and when (`Worker.progress`)."""
    if parent_pid is not None:
        _die_with_parent(parent_pid, arm_signal)
    # Framework chatter (TF, XLA) goes to the run folder's logs, never to the terminal.
    fd = os.open(log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if threads:
        thread_budget.apply_environment(threads)
    memory.reuse_freed_memory()
    loaded = [a for source in sources for a in registry.load_source(source)]
    for name in sorted({a.framework for a in loaded}):
        framework = registry.framework(name)
        if framework is not None:  # import the framework now: start-up time, not the first adapter's
            framework.warm_up()
            if threads:
                framework.set_threads(threads)
    channel = transport.Channel(conn, folder)
    channel.send(("ready", process_cpu()))  # the CPU seconds start-up took
    while True:
        try:
            message = channel.recv()
        except EOFError:
            return
        if message[0] == "stop":
            _leave()
        _, case, ids, device, *task = message
        handle = _task(task[0]) if task else call_adapter
        sent = SentAnswers()
        group, size = [], 0
        for index, adapter_id in enumerate(ids):
            if progress is not None:
                progress[1] = time.monotonic()  # the time first: the parent reads the index first
                progress[0] = index
            attempt = handle(registry.get(adapter_id), case, device)
            same_as = None
            if isinstance(attempt, Attempt):
                attempt, same_as = sent.strip(adapter_id, attempt)
                attempt.process_cpu = process_cpu()
            group.append((adapter_id, attempt, same_as))
            size += _answer_bytes(attempt)
            if size >= GROUP_BYTES or index == len(ids) - 1:  # sent as soon as it is full: nothing waits on the next adapter
                channel.send(("attempts", group))
                group, size = [], 0


def _leave() -> None:
    """End the worker now, without the interpreter's teardown: a JAX worker spent 3.5 s of a
    default run destroying its thousands of compiled executables before it exited, with the
    parent waiting (`WorkerPool.close`). What the process must do before it goes is done here:
    its fresh compiler folders are removed (`compilecache.remove_fresh_dirs`) and what it
    wrote is flushed to its log."""
    compilecache.remove_fresh_dirs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


#: Bytes of answers a worker keeps per case to recognise a repeat (`SentAnswers`); a
#: user's batch larger than this is sent each time, as a batch is not held twice.
SENT_KEPT_BYTES = 64 << 20


class SentAnswers:
    """The answers a worker has sent for the case in hand, so that an answer of the very
    same bits as an earlier adapter's goes back as that adapter's id instead of its arrays
    (`Worker.run` puts them back; `numerics.samebits`). Each answer's bytes cost the pipe
    four copies and the parent's CPU (`transport`); comparing costs one read of each, and
    only where the losses already agree."""

    def __init__(self, limit: int = SENT_KEPT_BYTES):
        self.sent = samebits.AnswerIndex(limit)  # -> the adapter id that sent it

    def strip(self, adapter_id: str, attempt: Attempt) -> tuple[Attempt, str | None]:
        """(`attempt`, None), or, for a repeat of adapter X's answer, (`attempt` without its
        arrays, X)."""
        out = attempt.output
        if attempt.status != "ran" or not (isinstance(out.loss, np.ndarray) and isinstance(out.grad, np.ndarray)):
            return attempt, None
        earlier = self.sent.find(out.loss, out.grad)
        if earlier is not None:
            return dataclasses.replace(attempt, output=dataclasses.replace(out, loss=None, grad=None)), earlier
        self.sent.add(out.loss, out.grad, adapter_id)  # sent already: nothing changes it
        return attempt, None


def _task(name: str):
    """The function `module:function` a request names, e.g. "harness.bench.runner:measure": other
    work than an accuracy call (the benchmark) gets the same isolation. `case` is then that
    task's payload, and the answer whatever picklable value it returns."""
    module_name, _, function = name.partition(":")
    return getattr(importlib.import_module(module_name), function)


# ---------------------------------------------------------------- the parent side


class Worker:
    """One spawned process holding one framework's adapters."""

    def __init__(self, name: str, sources: list[str], log_path: str | None, threads: int | None = None,
                 wait: bool = True, folder: str | None = None):
        """Spawn the worker and, with `wait`, wait until it is ready (`wait_ready`). `folder`:
        where large messages go (`transport`; None: the pipe)."""
        ctx = mp.get_context("spawn")
        self.name, self.sources, self.log_path = name, sources, log_path
        self.conn, child = ctx.Pipe()
        transport.widen(self.conn, child)
        self.channel = transport.Channel(self.conn, folder)
        # [index in the request in hand of the adapter the worker is running (-1: none yet),
        # time.monotonic() when it started it] (CLOCK_MONOTONIC: one clock for every
        # process): which adapter a death or a hang belongs to, and since when it has run
        # (`_await`), while the answers to the case wait to go back together.
        self.progress = ctx.RawArray("d", [-1.0, 0.0])
        t0 = time.perf_counter()
        in_main_thread = threading.current_thread() is threading.main_thread()
        self.process = ctx.Process(target=_serve, args=(child, sources, log_path, os.getpid(), in_main_thread, threads, folder,
                                                        self.progress),
                                   daemon=True,
                                   name=f"cestab-{name}")
        with _main_without_missing_file():
            self.process.start()
        child.close()
        self._t0 = t0
        self._stopping = False  # "stop" sent (`stop`)
        self.startup_seconds = 0.0
        self.startup_cpu = 0.0  # CPU seconds the worker spent starting (its own count)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait for the worker's "ready" (its framework imported); WorkerFailed if it died or
        stayed silent for `timeout` seconds (it is killed then)."""
        ready = self._receive(timeout)
        self.startup_seconds = time.perf_counter() - self._t0
        if ready is None or ready[0] != "ready":
            self.kill()
            raise WorkerFailed(self.death_message() if ready is None else f"unexpected {ready!r}")
        self.startup_cpu = float(ready[1])

    def _receive(self, timeout: float):
        """The next message, None if the worker died, "timeout" if it stayed silent."""
        try:
            if not self.conn.poll(timeout):
                return "timeout"
            return self.channel.recv()
        except (EOFError, OSError):
            return None

    def _await(self, sent: float, timeout: float):
        """The next message; None if the worker died; "timeout" once one adapter has run for
        `timeout` seconds (from its start, as the worker's `progress` says; the first, from
        `sent`, the request's time.monotonic()): each adapter has its own `timeout`, as when
        every answer came back on its own. The progress is looked at every PROGRESS_SECONDS."""
        while True:
            index, started = self.progress[0], self.progress[1]
            remaining = (started if index >= 0 else sent) + timeout - time.monotonic()
            if remaining <= 0:
                return "timeout"
            reply = self._receive(min(PROGRESS_SECONDS, remaining))
            if reply != "timeout":
                return reply

    def run(self, case: Case, adapter_ids: list[str], device: str, timeout: float, task: str | None = None):
        """Yield (adapter_id, Attempt) for the adapters, in order, as their answers come back,
        until all ran or the worker failed: then the adapter it was running gets the crash or
        timeout, and the others that had not come back are left to the caller (`run_source`
        gives them to a fresh worker).

        With `task` ("module:function"), the worker answers with that function's result
        for (adapter, case, device) instead of an Attempt; crash and timeout stay Attempts."""
        self.progress[0] = -1  # the worker is idle between requests: nothing running yet
        sent = time.monotonic()
        try:
            self.channel.send(("case", case, adapter_ids, device, *([task] if task else [])))
        except (BrokenPipeError, OSError):
            yield adapter_ids[0], Attempt("crash", message=self.death_message())
            return
        answers: dict[str, Output] = {}  # this case's, for the repeats (`SentAnswers`)
        received, last = 0, time.perf_counter()
        while received < len(adapter_ids):
            reply = self._await(sent, timeout)
            if reply == "timeout" or reply is None:
                running = adapter_ids[min(max(int(self.progress[0]), received), len(adapter_ids) - 1)]
                if reply is None:
                    yield running, Attempt("crash", message=self.death_message())
                else:
                    self.kill()
                    yield running, Attempt("timeout", message=f"no answer within {timeout:g} s; worker killed")
                return
            now = time.perf_counter()
            group = reply[1]
            work = sum(a.work_seconds for _, a, _ in group if isinstance(a, Attempt))
            share = (now - last - work) / len(group)  # the message's round trip beyond the adapters' work
            last = now
            for answered, attempt, same_as in group:
                if same_as is not None:  # the arrays of an earlier answer: the same bits, shared
                    earlier = answers[same_as]
                    attempt = dataclasses.replace(attempt, output=dataclasses.replace(attempt.output, loss=earlier.loss,
                                                                                       grad=earlier.grad))
                if isinstance(attempt, Attempt):
                    attempt.round_trip = attempt.work_seconds + share
                    if attempt.status == "ran":
                        answers[answered] = attempt.output
                received += 1
                yield answered, attempt

    def death_message(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"worker process killed by {signal.Signals(-code).name}"
        return f"worker process exited with code {code}"

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to exit (it cleans up after itself: its fresh compiler caches);
        `close` waits for it."""
        if self.process.is_alive() and not self._stopping:
            self._stopping = True
            try:
                self.channel.send(("stop",))
            except (BrokenPipeError, OSError):
                pass

    def close(self) -> None:
        """Stop the worker, waiting up to 10 s for it to exit, and kill it if it has not."""
        self.stop()
        if self.process.is_alive():
            self.process.join(timeout=10)
        self.kill()


@contextlib.contextmanager
def _main_without_missing_file():
    """Hide a `__main__.__file__` that is not a file (a script piped to `python -`).

    A spawned child re-imports the parent's main script; `<stdin>` cannot be, and the
    worker would die before it starts. Without `__file__` the child skips that step, as it
    does for an interactive session.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = path is not None and not os.path.isfile(path)
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = path


#: How often (seconds) the parent looks at a silent worker's progress (`Worker._await`).
PROGRESS_SECONDS = 1.0


class WorkerFailed(RuntimeError):
    """A worker died or hung while starting (importing its framework)."""


def by_source(adapter_list: list[Adapter], dtype: str | None = None) -> dict[str, list[Adapter]]:
    """Adapters grouped by the worker that runs them on a case of `dtype`, in order: one per
    implementation module, or per group of dtypes where its framework says so
    (`registry.worker_of`)."""
    groups: dict[str, list[Adapter]] = {}
    for adapter in adapter_list:
        groups.setdefault(registry.worker_of(adapter.id, dtype), []).append(adapter)
    return groups


class WorkerPool:
    """One worker per implementation module (TensorFlow and Keras share one, as they share a
    runtime; a framework with `worker_shards` has one per group of dtypes), started on first
    use and restarted after a crash or hang. Keyed by `registry.worker_of`."""

    def __init__(self, timeout: float, log_dir: Path | None = None, threads: int | None = None):
        self.timeout = timeout
        self.log_dir = log_dir
        self.threads = threads  # each worker's thread budget (None: the frameworks' defaults)
        self.workers: dict[str, Worker] = {}
        self.startup_seconds: dict[str, float] = {}
        self.startup_cpu: dict[str, float] = {}  # per worker key: CPU seconds of its start-ups
        self._start_failures: dict[str, WorkerFailed] = {}  # from `start`, reported by run_source
        self._folder: str | None | bool = False  # the workers' shared-memory folder (`transport`); False: not made yet

    def _spawn(self, source: str) -> Worker:
        """A worker for `source`, a `registry.worker_of` key (a module, maybe "#k": a shard)."""
        name = source.removeprefix("implementations.").replace(":", "-").replace("@", "-").replace("#", "-")
        log = str(self.log_dir / f"worker-{name}.log") if self.log_dir else None
        if self._folder is False:
            self._folder = transport.SharedFolder.create()
        return Worker(name, [registry.source_of_worker(source)], log, self.threads, wait=False, folder=self._folder)

    def _ready(self, source: str, worker: Worker, timeout: float = STARTUP_TIMEOUT) -> Worker:
        try:
            worker.wait_ready(timeout)
        finally:
            self.startup_seconds[worker.name] = self.startup_seconds.get(worker.name, 0.0) + worker.startup_seconds
            self.startup_cpu[source] = self.startup_cpu.get(source, 0.0) + worker.startup_cpu
        self.workers[source] = worker
        return worker

    def _missing(self, source: str) -> bool:
        worker = self.workers.get(source)
        return worker is None or not worker.alive

    def _worker(self, source: str) -> Worker:
        failed = self._start_failures.pop(source, None)
        if failed is not None:
            raise failed
        if self._missing(source):
            return self._ready(source, self._spawn(source))
        return self.workers[source]

    def start(self, sources) -> None:
        """Start the missing workers of `sources` all at once, from the calling thread, and
        wait until they are ready. Called from the main thread before work is handed to
        other threads (`parallel.ParallelPool`): PR_SET_PDEATHSIG follows the thread that
        started a worker, so only a worker the main thread started gets it (the others
        have the watchdog alone). A worker that fails to start is reported by `run_source`."""
        spawned = {s: self._spawn(s) for s in dict.fromkeys(sources) if self._missing(s) and s not in self._start_failures}
        deadline = time.perf_counter() + STARTUP_TIMEOUT
        while spawned:
            conns = {worker.conn: source for source, worker in spawned.items()}
            ready = mp_connection.wait(list(conns), timeout=max(0.0, deadline - time.perf_counter()))
            for conn in ready or list(conns):  # none ready by the deadline: each times out at once
                source = conns[conn]
                try:
                    self._ready(source, spawned.pop(source), timeout=0.0 if not ready else STARTUP_TIMEOUT)
                except WorkerFailed as exc:
                    self._start_failures[source] = exc

    def run(self, case: Case, adapter_list: list[Adapter], device: str, task: str | None = None):
        """Yield (adapter, Attempt) for every adapter, worker by worker (`task`: see Worker.run)."""
        for source, group in by_source(adapter_list, getattr(case, "dtype", None)).items():  # a task's payload may have none
            yield from self.run_source(source, group, case, device, task)

    def run_source(self, source: str, group: list[Adapter], case: Case, device: str, task: str | None = None):
        """Yield (adapter, Attempt) for the adapters of one implementation module (one worker),
        in `group`'s order. After a death or a hang the adapter that was running has its
        attempt, and a fresh worker runs the others whose answers had not come back (those
        before it too: they were waiting to go back with theirs), so attempts can arrive out
        of order; they are held until the ones before them are in."""
        pending = {a.id: a for a in group}
        waiting, done = collections.deque(group), {}  # not yet yielded, in order; attempts in hand
        while pending:
            try:
                worker = self._worker(source)
            except WorkerFailed as exc:
                for adapter_id in pending:
                    done[adapter_id] = Attempt("crash", message=f"worker failed to start: {exc}")
                pending.clear()
            else:
                for adapter_id, attempt in worker.run(case, list(pending), device, self.timeout, task):
                    done[adapter_id] = attempt
                    del pending[adapter_id]
                    while waiting and waiting[0].id in done:
                        yield waiting[0], done.pop(waiting.popleft().id)
        while waiting:
            yield waiting[0], done.pop(waiting.popleft().id)

    def close(self) -> None:
        """Stop every worker at once, then wait for each: a worker's exit (its framework's
        teardown, removing its compiler cache) takes 0.2-2 s, and one after another they took
        4-10 s of a run's wall time with a core idle."""
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            worker.close()
        self.workers.clear()
        if self._folder:
            transport.SharedFolder.remove(self._folder)
        self._folder = False
