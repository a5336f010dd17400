"""Sweeps on a Ray cluster: the local run's cases, adapters and rows, computed on many nodes.

Why this shape:

* **Units of work** are (implementation module, chunk of cases): one framework per unit, as
  one framework per worker process locally. The worst-case search of one dtype is one unit
  too (`run.rowsearch`): its batches are shared by every adapter of that dtype, and each
  batch's children are bred from every adapter's worst rows, so the adapters of a dtype
  cannot be searched apart without changing what is found; dtypes are independent, so a
  search unit per dtype finds exactly what the local run's one search does. Its pool holds
  one worker per module, run one after another on the unit's CPU.
* **Isolation as today**: a unit is a Ray task that drives an ordinary local `WorkerPool`.
  The framework runs in that pool's spawned child, so a segfault, abort, OOM kill or hang
  becomes a `crash`/`timeout` row exactly as on one machine, the child is replaced and the
  unit goes on. The Ray task itself only computes the reference and the metrics (numpy);
  it dies only with its node. The pool is kept in the Ray worker process between units of
  the same module, so a node pays a framework's import once, not once per unit.
* **Rows stream back**: a unit is a streaming generator yielding one case's rows at a time;
  the driver journals them as they come (`rows.jsonl`) and writes the one run folder.
* **Retries without duplicates or losses**: Ray retries a unit whose node or worker died
  (`max_retries`); a retried generator may yield rows the driver already has, so the driver
  keeps the first row of each (case_id, adapter) and drops the others. A unit that still
  fails is resubmitted with only its missing cases; after `UNIT_ATTEMPTS` failures the case
  it was on becomes `crash` rows (it may be what kills the node) and the rest goes on.
* **Resume**: the driver submits only the (case, adapter) pairs and searches the journal
  lacks, so `--resume` after a killed driver finishes the run.

`import ray` happens only here, and only when a sweep starts: `import harness` stays light.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.adapters import registry
from harness.adapters import threads as thread_budget
from harness.errors import UsageError, first_line
from harness.run import rowsearch
from harness.run.rows import rows_for_case

#: A custom resource that marks CPU nodes (`ray start --resources '{"cestab_cpu_node": 1}'`).
#: When a node of the cluster advertises it, TensorFlow/Keras units ask for a sliver of it, so
#: they land on those nodes and leave GPU nodes to the GPU frameworks.
CPU_NODE_RESOURCE = "cestab_cpu_node"
#: Frameworks pinned to CPU nodes when the cluster has some.
CPU_FRAMEWORKS = ("tensorflow", "keras")
#: Share of a GPU one unit asks for with --device cuda. torch and Triton allocate on demand,
#: so four units share a GPU; JAX preallocates most of the GPU's memory, so it takes a whole one.
GPU_SHARE = {"torch": 0.25, "liger": 0.25, "jax": 1.0}
#: Ray's own retries of a unit whose worker or node died (a system failure, not an exception).
RAY_TASK_RETRIES = 3
#: Submissions of a unit's remaining cases before the case it was on is recorded as `crash`.
UNIT_ATTEMPTS = 3
#: At most this many cases per unit when the chunk is chosen automatically.
MAX_CHUNK = 64
#: Units per CPU of the cluster the automatic chunk aims for: more units balance the load
#: (and lose less to a dead node), fewer pay less per-unit overhead.
UNITS_PER_CPU = 2
#: Bytes of a worker's log a unit sends back per module (the end, where a crash prints).
LOG_TAIL = 64 * 1024


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("the ray executor needs Ray: pip install 'cestab[ray]'") from None
    return ray


# ---------------------------------------------------------------- on the nodes

#: The executor a Ray worker process keeps between units of the same module (see module doc).
_kept: dict = {}


def _executor_for(sources: tuple[str, ...], options: dict):
    """This process's WorkerPool (or InProcess) for `sources` (one module; every module of
    a dtype's search), kept from the last unit if it ran the same modules with the same
    timeout; other modules' pools are closed first, so a node holds one unit's workers per
    Ray worker, not all of them. Each framework worker gets the local run's thread budget
    (`adapters.threads`), so a row is the same on both executors."""
    from harness.adapters.workers import InProcess, WorkerPool

    key = (tuple(sources), options["timeout"], options["isolate"])
    if _kept.get("key") != key:
        _drop_kept()
        log_dir = _log_dir()
        executor = (WorkerPool(options["timeout"], log_dir, threads=thread_budget.PER_WORKER) if options["isolate"]
                    else InProcess())
        _kept.update(key=key, executor=executor, log_dir=log_dir, startup={})
    return _kept["executor"], _kept["log_dir"]


def _log_dir() -> Path:
    """TMP/cestab-unit-logs/<pid>: where this Ray worker's framework workers print.

    A Ray worker is often killed rather than shut down, so it cannot clean up after itself;
    instead each new one removes the folders of workers that are gone."""
    parent = Path(tempfile.gettempdir()) / "cestab-unit-logs"
    parent.mkdir(exist_ok=True)
    for old in parent.iterdir():
        if old.name.isdigit() and old.name != str(os.getpid()) and not _alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    mine = parent / str(os.getpid())
    mine.mkdir(exist_ok=True)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_kept() -> None:
    if _kept:
        _kept["executor"].close()
        shutil.rmtree(_kept["log_dir"], ignore_errors=True)
        _kept.clear()


def _take_logs(log_dir: Path) -> dict[str, str]:
    """What the workers printed since the last unit (its end), emptied for the next unit."""
    out = {}
    for path in sorted(log_dir.glob("*.log")):
        data = path.read_bytes()
        if data.strip():
            out[path.name] = data[-LOG_TAIL:].decode("utf-8", "replace")
        path.write_bytes(b"")  # workers append (O_APPEND): they keep writing at the new end
    return out


def _startup_delta(executor) -> dict[str, float]:
    """Worker start-up seconds spent during this unit (the pool's counters are cumulative)."""
    seen = _kept.setdefault("startup", {})
    now = dict(executor.startup_seconds)
    delta = {k: v - seen.get(k, 0.0) for k, v in now.items() if v - seen.get(k, 0.0) > 0}
    _kept["startup"] = now
    return delta


@contextlib.contextmanager
def _spawnable_main():
    """Hide Ray's worker script from multiprocessing while a unit runs.

    A spawned child re-runs the parent's `__main__` file; in a Ray worker that is Ray's
    `default_worker.py`, which would import all of Ray again in every framework worker.
    Without `__file__` the child skips that step, as it does for an interactive session.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is not None:
        del main.__file__
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


def _where() -> dict:
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "node_host": socket.gethostname()}


def run_cases(source: str, items: list, case_refs: list, options: dict, base: dict):
    """A unit (on a node): yield ("rows", case index, rows) per case, then ("done", stats).

    `items` are (case index, adapter ids still missing for that case); the cases come as
    object refs so a case shared by several modules' units is stored once in the cluster.
    """
    import ray

    t0 = time.perf_counter()
    cases = ray.get(case_refs)
    registry.load_source(source)
    base = dict(base, **_where())
    with _spawnable_main():
        executor, log_dir = _executor_for((source,), options)
        for (index, ids), case in zip(items, cases):
            adapters = [registry.get(i) for i in ids]
            yield ("rows", index, rows_for_case(case, adapters, executor, options["device"], base))
        stats = _stats(executor, log_dir, t0)
    yield ("done", stats)


def _stats(executor, log_dir: Path, t0: float) -> dict:
    """A unit's last message: start-up seconds, worker logs, its seconds, its threads.

    Ray sets OMP_NUM_THREADS to a unit's CPUs (unless the node's environment sets it), and
    the framework workers inherit it: torch.compile's CPU kernels round differently with
    another thread count, so run.json says what the units had."""
    return {"startup": _startup_delta(executor), "logs": _take_logs(log_dir), "seconds": time.perf_counter() - t0,
            "threads": os.environ.get("OMP_NUM_THREADS")}


def run_search(sources: list[str], dtype: str, adapter_ids: list[str], skip: list, options: dict, base: dict):
    """A search unit (on a node): the row-batched search of one dtype over `adapter_ids`
    (`rowsearch.RowSearch`, as the local run's), yielding ("findings", [Finding]) (pairs in
    `skip`, already reported, left out), then ("done", stats)."""
    t0 = time.perf_counter()
    for source in sources:
        registry.load_source(source)
    adapters = [registry.get(i) for i in adapter_ids]
    base = dict(base, **_where())
    device = options["device"]
    with _spawnable_main():
        executor, log_dir = _executor_for(tuple(sources), options)

        def evaluate(case, group):
            return executor.run(case, group, device)

        def run_case(case, adapter):
            return rows_for_case(case, [adapter], executor, device, base)[0]

        search = rowsearch.RowSearch(adapters, [dtype], rowsearch.BUDGETS[options["budget"]], evaluate,
                                     seed=options["seed"], device=device, label_kinds=options["label_kinds"])
        search.run()
        findings = search.findings(run_case, skip={tuple(k) for k in skip})
        stats = _stats(executor, log_dir, t0)
        stats["search"] = {"batches": search.batches, "pairs": search.stats()}
    yield ("findings", findings)
    yield ("done", stats)


def node_facts() -> dict:
    """Where a probe landed: its host and the versions installed there (run.json)."""
    return {**_where(), "python": sys.version.split()[0], "versions": registry.versions()}


# ---------------------------------------------------------------- the driver


def code_paths(sources) -> list[str]:
    """Folders the nodes need on their path for cestab and the adapters' modules.

    On a real cluster cestab and any plug-in module are installed on every node; on one
    machine (tests, a trial) they may live in a checkout. The folders are passed as
    PYTHONPATH (paths a node lacks are ignored by Python); installed packages are left out.
    """
    names = ["harness", "implementations", *(s.partition(":")[0].partition("@")[0] for s in sources)]
    out = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name.split(".")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            continue
        folder = Path(spec.origin).parent
        if spec.submodule_search_locations is not None:  # a package: its parent is the path entry
            folder = folder.parent
        text = str(folder)
        if "site-packages" not in text and "dist-packages" not in text and text not in out:
            out.append(text)
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in out]
    return out + extra


#: Seconds to wait for a cluster's head to accept a connection before giving up.
CONNECT_TIMEOUT = 10.0


def _check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT nothing listens at: Ray itself retries for minutes.

    "auto" (find the cluster on this machine) and ray:// client addresses are left to Ray,
    which answers those at once."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"bad --ray-address {address!r}: write HOST:PORT (e.g. 10.0.0.1:6379) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def preflight(options: dict) -> None:
    """Before a run folder is made: Ray is installed and the address answers (one line if not)."""
    _ray()
    if options.get("ray_address"):
        _check_reachable(options["ray_address"])


class Session:
    """The connection to Ray: an existing one (a test's or a notebook's, left open), a
    cluster joined at `address` ("auto": the one running on this machine), or, without an
    address, a local instance started here and stopped by `close`."""

    def __init__(self, address: str | None):
        ray = _ray()
        self.ray = ray
        self.owned = False
        if ray.is_initialized():
            return
        kwargs = dict(log_to_driver=False, logging_level="ERROR")
        if address is None:
            kwargs.update(include_dashboard=False)
        else:
            _check_reachable(address)
            kwargs.update(address=address)
        try:
            ray.init(**kwargs)
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError, TimeoutError ...
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UsageError(f"cannot connect to {where}: {first_line(exc) or type(exc).__name__}") from None
        self.owned = True

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()
            self.owned = False


def describe_cluster(runtime_env: dict, previous: dict | None = None) -> dict:
    """The cluster for run.json: every live node (id, host, CPUs, GPUs, custom resources, the
    versions of every framework installed there) and warnings when versions differ.

    A probe runs on each node (pinned there, zero CPUs so it never waits behind a unit).
    On a resume the nodes of the earlier sessions are kept, since rows still name them.
    """
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(node_facts)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = {
        n["NodeID"]: probe.options(
            num_cpus=0, runtime_env=runtime_env, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote()
        for n in nodes
    }
    described = {}
    for n in nodes:
        resources = n.get("Resources", {})
        entry = {
            "node_id": n["NodeID"],
            "address": n.get("NodeManagerAddress"),
            "host": n.get("NodeManagerHostname"),
            "cpus": resources.get("CPU", 0.0),
            "gpus": resources.get("GPU", 0.0),
            "cpu_node": CPU_NODE_RESOURCE in resources,
        }
        try:
            facts = ray.get(refs[n["NodeID"]], timeout=300)
            entry.update(host=facts["node_host"], python=facts["python"], versions=facts["versions"])
        except Exception as exc:  # a node that cannot run the probe is listed, with why
            entry["probe_error"] = first_line(exc)
        described[n["NodeID"]] = entry
    for old in (previous or {}).get("nodes", []):
        described.setdefault(old["node_id"], dict(old, alive=False))
    node_list = list(described.values())
    return {
        "executor": "ray",
        "ray_version": ray.__version__,
        "nodes": node_list,
        "cpus": sum(n["cpus"] for n in node_list if n.get("alive", True)),
        "gpus": sum(n["gpus"] for n in node_list if n.get("alive", True)),
        "warnings": version_warnings(node_list),
    }


def version_warnings(nodes: list[dict]) -> list[str]:
    """One line per package whose version differs between nodes: their rows are not
    comparable as if they came from one machine."""
    by_package: dict[str, dict[str, list[str]]] = {}
    for node in nodes:
        for package, version in (node.get("versions") or {}).items():
            by_package.setdefault(package, {}).setdefault(version, []).append(node.get("host") or node["node_id"][:8])
    out = []
    for package, versions in sorted(by_package.items()):
        if len(versions) > 1:
            spread = "; ".join(f"{v} on {', '.join(hosts)}" for v, hosts in sorted(versions.items()))
            out.append(f"{package} differs between nodes: {spread}")
    return out


def local_cluster() -> dict:
    """The local executor's "cluster" for run.json: this machine, as one node."""
    import glob

    host = socket.gethostname()
    return {
        "executor": "local",
        "nodes": [{"node_id": "local", "host": host, "cpus": os.cpu_count(), "gpus": len(glob.glob("/dev/nvidia[0-9]*"))}],
        "warnings": [],
    }


def compile_signature(case) -> tuple:
    """What a JIT adapter (torch.compile, jax.jit, XLA) compiles for: dtype, shape, labels.

    Cases are listed regime by regime, so a chunk cut from that order would meet every
    signature and each unit would compile them all again (compilation is per process).
    Chunks cut from cases sorted by signature meet few, and compile little."""
    return (case.dtype, tuple(case.nd_shape), case.label_kind, case.has_ignored)


@dataclass
class Unit:
    """What one Ray task computes: a chunk of cases of one module, or the search of one dtype."""

    source: str  # the module; for a search, its modules joined by ","
    items: list  # [(case index, (adapter ids...))]; empty for a search
    search: tuple | None = None  # (dtype, (adapter ids...)) of a search
    failures: int = 0

    @property
    def sources(self) -> list[str]:
        return self.source.split(",")


class RaySweep:
    """The driver side: connect, describe the cluster, submit units, gather rows."""

    def __init__(self, options: dict, previous_cluster: dict | None = None):
        self.options = options
        self.session = Session(options.get("ray_address"))
        try:
            sources = [registry.source_of(i) for i in options["adapters"]] + list(options.get("plugins") or [])
            self.runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(code_paths(sources))}}
            self.cluster = describe_cluster(self.runtime_env, previous_cluster)
            if options["device"] == "cuda" and not self.cluster["gpus"]:
                raise UsageError("--device cuda: the Ray cluster has no GPU")
        except BaseException:
            self.session.close()
            raise
        self.startup_seconds: dict[str, float] = {}
        self.unit_seconds: list[float] = []
        self.threads: set = set()
        self.units_submitted = 0
        self.search_batches = 0
        self.search_rows_per_pair: dict[str, int] = {}

    def close(self) -> None:
        self.session.close()

    def timing(self) -> dict:
        """For run.json: how many units ran and how long they took on their nodes."""
        return {
            "ray_units": self.units_submitted,
            "ray_unit_seconds": round(sum(self.unit_seconds), 3),
            "ray_cluster_cpus": self.cluster["cpus"],
        }

    def search_counts(self) -> dict:
        """The search units' batches, rows and adapter x dtype pairs (as the local run's counts)."""
        if not self.search_rows_per_pair:
            return {}
        return {"search_batches": self.search_batches, "search_rows": sum(self.search_rows_per_pair.values()),
                "search_pairs": len(self.search_rows_per_pair)}

    # -------------------------------------------------------- planning

    def _chunk(self, n_items: int) -> int:
        chosen = self.options.get("ray_chunk")
        if chosen:
            return int(chosen)
        slots = max(1, int(self.cluster["cpus"]))
        return max(1, min(MAX_CHUNK, math.ceil(n_items / (UNITS_PER_CPU * slots))))

    def plan(self, case_list, adapter_list, done: set, searched: set) -> list[Unit]:
        """Units for what is missing: one per dtype with an adapter x dtype pair not yet
        searched (the search of a dtype runs over all its adapters, as locally: see the
        module doc), then per module the cases lacking a row of one of its adapters, in chunks."""
        by_source: dict[str, list] = {}
        for adapter in adapter_list:
            by_source.setdefault(registry.source_of(adapter.id), []).append(adapter)
        todo: dict[str, list] = {}
        for source, group in by_source.items():
            for index, case in enumerate(case_list):
                ids = tuple(a.id for a in group if (case.case_id, a.id) not in done)
                if ids:
                    todo.setdefault(source, []).append((index, ids))
        for items in todo.values():  # see `compile_signature`
            items.sort(key=lambda item: compile_signature(case_list[item[0]]))
        chunk = self._chunk(sum(len(v) for v in todo.values()))
        units = [Unit(source, items[k:k + chunk]) for source, items in todo.items() for k in range(0, len(items), chunk)]
        searches = []
        if self.options.get("budget"):
            from harness.numerics import dtypes

            device = self.options["device"]
            for dtype in self.options["dtypes"] or list(dtypes.DTYPE_NAMES):
                group = [a for a in adapter_list if dtype in a.dtypes and device in a.devices]
                if all((a.id, dtype) in searched for a in group):
                    continue
                sources = list(dict.fromkeys(registry.source_of(a.id) for a in group))
                searches.append(Unit(",".join(sources), [], search=(dtype, tuple(a.id for a in group))))
        # Searches first: they are the longest units and cannot be split, so starting them
        # early keeps the last one from finishing long after everything else (a shorter run).
        return searches + units

    def _task_options(self, sources: list[str]) -> dict:
        """Resources of a unit: a CPU; a GPU share for GPU frameworks with --device cuda;
        TensorFlow/Keras on CPU nodes when the cluster marks some (a search unit that also
        holds GPU frameworks is not pinned there)."""
        adapters = [a for a in registry.all_adapters().values() if registry.source_of(a.id) in sources]
        frameworks = {a.framework for a in adapters}
        opts = dict(num_cpus=1, max_retries=RAY_TASK_RETRIES, runtime_env=self.runtime_env)
        if self.options["device"] == "cuda" and any("cuda" in a.devices for a in adapters):
            opts["num_gpus"] = max(GPU_SHARE.get(f, 1.0) for f in frameworks if f in GPU_SHARE) if frameworks & set(GPU_SHARE) else 1.0
        if frameworks and frameworks <= set(CPU_FRAMEWORKS) and any(n.get("cpu_node") for n in self.cluster["nodes"]):
            opts["resources"] = {CPU_NODE_RESOURCE: 0.001}
        return opts

    # -------------------------------------------------------- running

    def run(self, case_list, adapter_list, base, done_rows, journal, bar, run_dir) -> list[dict]:
        """Every missing row (and search finding), journalled as it arrives; new rows are
        returned in the local executor's order: by case, then by adapter."""
        ray = self.session.ray
        done = {(r["case_id"], r["adapter"]) for r in done_rows}
        searched = {(r["adapter"], r["dtype"]) for r in done_rows if r.get("source") == "search"}
        units = self.plan(case_list, adapter_list, done, searched)
        searched_dtypes: set = set()  # search units whose findings arrived (or were given up)
        bar.total = sum(len(u.items) for u in units) + sum(1 for u in units if u.search)
        tasks = {"cases": ray.remote(run_cases), "search": ray.remote(run_search)}
        case_refs: dict[int, object] = {}
        new_rows: dict[tuple, dict] = {}
        findings: list[dict] = []
        pending: dict = {}

        def submit(unit: Unit) -> None:
            opts = self._task_options(unit.sources)
            self.units_submitted += 1
            if unit.search:
                dtype, ids = unit.search
                skip = sorted(k for k in searched if k[1] == dtype)
                gen = tasks["search"].options(**opts).remote(unit.sources, dtype, list(ids), skip, self.options, base)
            else:
                for index, _ in unit.items:
                    if index not in case_refs:
                        case_refs[index] = ray.put(case_list[index])
                refs = [case_refs[index] for index, _ in unit.items]
                gen = tasks["cases"].options(**opts).remote(unit.source, unit.items, refs, self.options, base)
            pending[gen] = unit

        def keep(row: dict) -> bool:
            key = (row["case_id"], row["adapter"])
            if key in done:
                return False  # a retried unit's repeat
            done.add(key)
            new_rows[key] = row
            if journal:
                journal.append(row)
            return True

        def take(unit: Unit, item) -> None:
            kind = item[0]
            if kind == "rows":
                if any([keep(row) for row in item[2]]):
                    bar.step(case_list[item[1]].case_id)
            elif kind == "findings":
                dtype = unit.search[0]
                if dtype in searched_dtypes:
                    return  # a retried unit's repeat
                searched_dtypes.add(dtype)
                bar.step(f"search {dtype}")
                rank: dict[tuple[str, str], int] = {}
                for finding in item[1]:  # per adapter x dtype, the worst first (as the local run)
                    key = (finding.adapter, finding.dtype)
                    if key in searched:
                        continue
                    row = dict(finding.row)
                    if run_dir is not None:
                        path = rowsearch.save_finding(finding, run_dir / "worst", rank.get(key, 0))
                        row["case_file"] = str(path.relative_to(run_dir))
                    rank[key] = rank.get(key, 0) + 1
                    findings.append(row)
                    if journal:
                        journal.append(row)
                searched.update(rank)
            elif kind == "done":
                stats = item[1]
                self.unit_seconds.append(stats["seconds"])
                self.threads.add(stats["threads"])
                for name, seconds in stats["startup"].items():
                    self.startup_seconds[name] = self.startup_seconds.get(name, 0.0) + seconds
                if "search" in stats:
                    self.search_batches += stats["search"]["batches"]
                    for pair, counts in stats["search"]["pairs"].items():
                        self.search_rows_per_pair[pair] = counts["rows"]
                self._write_logs(run_dir, stats["logs"], unit)

        for unit in units:
            submit(unit)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for gen in ready:
                unit = pending[gen]
                try:
                    item = ray.get(next(gen))
                except StopIteration:
                    del pending[gen]
                    for again in self._leftover(unit, case_list, done, searched_dtypes, None):
                        submit(again)
                    continue
                except ray.exceptions.RayError as exc:  # the unit failed after Ray's own retries
                    del pending[gen]
                    for again in self._leftover(unit, case_list, done, searched_dtypes, exc, keep, base):
                        submit(again)
                    continue
                take(unit, item)
        threads = sorted({int(t) if t and t.isdigit() else t for t in self.threads}, key=str)
        self.cluster["unit_threads"] = threads[0] if len(threads) == 1 else threads
        order = {a.id: k for k, a in enumerate(adapter_list)}
        index = {c.case_id: k for k, c in enumerate(case_list)}
        ordered = sorted(new_rows.values(), key=lambda r: (index.get(r["case_id"], -1), order.get(r["adapter"], len(order))))
        # findings in the local run's order: by adapter x dtype, each pair's worst first (a stable sort)
        return ordered + sorted(findings, key=lambda r: (r["adapter"], r["dtype"]))

    def _leftover(self, unit: Unit, case_list, done, searched_dtypes, exc, keep=None, base=None) -> list[Unit]:
        """What a finished or failed unit left undone, as units to submit again.

        A unit that ended normally has done everything (an empty list). A failed one is
        resubmitted with its missing cases; after UNIT_ATTEMPTS failures the first missing
        case, the one it was computing, gets `crash` rows (it may be what kills the node)."""
        if unit.search:
            dtype = unit.search[0]
            if dtype in searched_dtypes:
                return []
            if exc is not None and unit.failures + 1 < UNIT_ATTEMPTS:
                return [Unit(unit.source, [], unit.search, unit.failures + 1)]
            searched_dtypes.add(dtype)  # give up on this search: its cases' rows are not search rows
            return []
        missing = []
        for index, ids in unit.items:
            left = tuple(i for i in ids if (case_list[index].case_id, i) not in done)
            if left:
                missing.append((index, left))
        if not missing:
            return []
        if exc is None:  # ended without an error yet rows are missing: should not happen
            exc = RuntimeError("unit ended without all its rows")
        failures = unit.failures + 1
        if failures < UNIT_ATTEMPTS:
            return [Unit(unit.source, missing, failures=failures)]
        (index, ids), rest = missing[0], missing[1:]
        message = f"unit failed {failures} times on this case: {first_line(exc) or type(exc).__name__}"
        for row in crash_rows(case_list[index], [registry.get(i) for i in ids], self.options["device"], base, message):
            keep(row)
        return [Unit(unit.source, rest)] if rest else []

    def _write_logs(self, run_dir, logs: dict, unit: Unit) -> None:
        if run_dir is None or not logs:
            return
        folder = run_dir / "logs"
        folder.mkdir(exist_ok=True)
        for name, text in logs.items():
            with open(folder / name, "a", encoding="utf-8") as f:
                f.write(f"==== a unit of {unit.source} ====\n{text}")


def crash_rows(case, adapters, device: str, base: dict, message: str) -> list[dict]:
    """Rows for a case no node could finish (the reference is not computed here: it may be
    what killed the nodes). Adapters that do not support the case say so, as usual."""
    n, v = case.shape
    common = dict(base, node_id=None, node_host=None, dtype=case.dtype, regime=case.regime, source=case.source, label_kind=case.label_kind,
                  n_rows=n, n_classes=v, case_id=case.case_id, seed=case.seed, device=device)
    rows = []
    for adapter in adapters:
        reason = adapter.unsupported_reason(case, device)
        row = dict(common, adapter=adapter.id, framework=adapter.framework,
                   framework_version=registry.framework_version(adapter.framework))
        row.update(status="unsupported" if reason else "crash", message=reason or message)
        rows.append(row)
    return rows
