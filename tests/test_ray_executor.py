"""`--executor ray` on a local three-node Ray cluster (one CPU per node), against the local executor.

The cluster (`ray.cluster_utils.Cluster`: a head and two worker nodes, each its own raylet)
is started once for the module. Each test runs cestab as a Ray driver that joins it by
address, as `cestab run --executor ray --ray-address HOST:PORT` does on a real cluster.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'cestab[ray]'): the Ray executor is untestable")

import crashy_adapters  # noqa: E402,F401  (registers the crashtest.* adapters)
import slow_adapters  # noqa: E402,F401  (registers slowtest.numpy_stable)
from ray.cluster_utils import Cluster  # noqa: E402

import harness  # noqa: E402
from harness.adapters import registry  # noqa: E402
from harness.run import ray_executor  # noqa: E402
from harness.store import columns  # noqa: E402

TESTS = Path(__file__).parent
STABLE = [c for c in columns.NAMES if c not in columns.VOLATILE]
KEY = ["case_id", "adapter"]
NODE = dict(num_cpus=1, object_store_memory=80 * 1024**2)
# A dead node is noticed in about a second rather than the default fifteen.
FAST_FAILURE = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args=dict(NODE, include_dashboard=False, _system_config=FAST_FAILURE))
    workers = [c.add_node(**NODE) for _ in range(2)]
    c.wait_for_nodes()
    c.workers = workers
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def sorted_rows(df):
    return df.sort_values(KEY).reset_index(drop=True)


def on_ray(cluster, **kw):
    return harness.run(executor="ray", ray_address=cluster.address, **kw)


def env_with_tests():
    paths = [str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))


# ------------------------------------------------------------------ same rows as the local executor

# index labels for the sparse APIs, soft ones for the dense: every adapter runs on 4 cases
SAME = dict(dtypes=["float32"], regimes_=["typical", "large_offset"], shapes=[(4, 10)], label_kinds=["index", "soft"],
            corpus=False)
EXACT_FRAMEWORKS = ("numpy", "scipy", "torch")


@pytest.fixture(scope="module")
def both_executors(cluster, tmp_path_factory):
    """The same run on both executors, with the same threads per framework worker.

    Ray gives a unit's process OMP_NUM_THREADS = its CPUs (1 here), and torch.compile's CPU
    kernels round differently with another thread count; so the local run is made with
    OMP_NUM_THREADS=1 too (its worker processes inherit it)."""
    ids = sorted(a.id for a in harness.all_adapters().values()  # cestab's own: not other test modules' plug-ins
                 if registry.source_of(a.id).startswith("implementations."))
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        local = harness.run(adapters=ids, **SAME)
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before
    remote = on_ray(cluster, adapters=ids, out_dir=tmp_path_factory.mktemp("runs"), **SAME)
    return sorted_rows(local), sorted_rows(remote)


def test_ray_rows_are_bit_identical_to_local_for_numpy_scipy_and_torch(both_executors):
    local, remote = both_executors
    exact = local["framework"].isin(EXACT_FRAMEWORKS)
    n_exact = sum(harness.all_adapters()[i].framework in EXACT_FRAMEWORKS for i in local["adapter"].unique())
    assert n_exact >= 7 and exact.sum() == 4 * n_exact  # 4 cases x (numpy, scipy, torch) adapters
    pd.testing.assert_frame_equal(local.loc[exact, STABLE], remote.loc[exact, STABLE])


def test_ray_statuses_equal_local_for_jax_tensorflow_and_keras(both_executors):
    local, remote = both_executors
    assert list(local[KEY].itertuples(index=False)) == list(remote[KEY].itertuples(index=False))
    others = ~local["framework"].isin(EXACT_FRAMEWORKS)
    assert set(local.loc[others, "framework"]) >= {"jax", "tensorflow", "keras"}
    assert local.loc[others, "status"].tolist() == remote.loc[others, "status"].tolist()


def test_rows_name_the_cluster_node_they_ran_on(cluster, both_executors):
    local, remote = both_executors
    assert set(local["node_id"]) == {"local"}
    node_ids = {cluster.head_node.node_id, *(w.node_id for w in cluster.workers)}
    assert set(remote["node_id"]) <= node_ids and remote["node_id"].nunique() >= 2  # the work was spread
    assert remote["node_host"].notna().all()


def test_run_json_lists_every_node_with_cpus_and_framework_versions(both_executors):
    _, remote = both_executors
    meta = json.loads((Path(remote.attrs["run_dir"]) / "run.json").read_text())
    cluster = meta["cluster"]
    assert cluster["executor"] == "ray" and len(cluster["nodes"]) == 3 and cluster["cpus"] == 3
    for node in cluster["nodes"]:
        assert node["cpus"] == 1 and node["versions"]["numpy"] == meta["versions"]["numpy"]
        assert node["versions"]["torch"] == meta["versions"]["torch"]
    assert cluster["warnings"] == []  # one machine: the same versions everywhere
    # 4 cases x one unit per implementation module on 3 CPUs: the automatic chunk (2 units
    # per CPU) is all 4 cases, so there is one unit per module
    modules = {registry.source_of(a) for a in meta["options"]["adapters"]}
    assert len(modules) >= 5 and meta["timing"][-1]["ray_units"] == len(modules) and cluster["unit_threads"] == 1


def test_differing_versions_between_nodes_are_a_warning():
    nodes = [
        {"node_id": "a" * 8, "host": "gpu1", "versions": {"torch": "2.13.0", "numpy": "2.4.6"}},
        {"node_id": "b" * 8, "host": "gpu2", "versions": {"torch": "2.12.1", "numpy": "2.4.6"}},
    ]
    assert ray_executor.version_warnings(nodes) == ["torch differs between nodes: 2.12.1 on gpu2; 2.13.0 on gpu1"]


# ------------------------------------------------------------------ a search is one unit per dtype

SEARCH = dict(adapters=["numpy.naive", "numpy.stable"], dtypes=["float32"], regimes_=["typical"], shapes=[(2, 3)],
              label_kinds=["index"], corpus=False, budget="quick")


def test_search_of_one_dtype_is_one_unit_and_finds_what_local_finds(cluster, tmp_path):
    local = harness.run(out_dir=tmp_path / "local", **SEARCH)
    remote = on_ray(cluster, out_dir=tmp_path / "ray", **SEARCH)
    found = [df[df["source"] == "search"].reset_index(drop=True) for df in (local, remote)]
    assert set(found[1]["adapter"]) == {"numpy.naive", "numpy.stable"}
    assert found[1].groupby("adapter")["status"].first()["numpy.naive"] == "nonfinite"  # the naive exp overflows
    pd.testing.assert_frame_equal(found[0][STABLE], found[1][STABLE])  # the same findings, in the same order
    run_dir = Path(remote.attrs["run_dir"])
    assert all((run_dir / f).is_file() for f in found[1]["case_file"])
    assert list(found[0]["case_file"]) == list(found[1]["case_file"])
    meta = json.loads((run_dir / "run.json").read_text())
    timing = meta["timing"][-1]
    assert timing["ray_units"] == 2  # the module's one chunk of cases, then the one dtype's search
    assert timing["counts"]["search_rows"] == local.attrs["timing"]["counts"]["search_rows"] > 0


# ------------------------------------------------------------------ crashes and hangs inside a unit

CRASHY = dict(dtypes=["float32"], regimes_=["typical", "large_offset", "near_ties"], shapes=[(4, 10)],
              label_kinds=["index"], corpus=False)


def test_crashing_and_hanging_adapters_become_rows_and_lose_nothing_else(cluster):
    ids = ["numpy.stable", *crashy_adapters.CRASHY]
    df = on_ray(cluster, adapters=ids, timeout=5.0, ray_chunk=1, **CRASHY)
    assert len(df) == 3 * 6 and not df.duplicated(KEY).any()
    status = df.set_index(["adapter", "regime"])["status"]
    expected = {"crashtest.segfault": "crash", "crashtest.abort": "crash", "crashtest.oom_kill": "crash",
                "crashtest.hang": "timeout", "crashtest.memory_error": "error"}
    for adapter_id, what in expected.items():
        assert status[(adapter_id, "large_offset")] == what
        assert status[(adapter_id, "typical")] == "ok" and status[(adapter_id, "near_ties")] == "ok"
    assert (df.loc[df["adapter"] == "numpy.stable", "status"] == "ok").all()
    hang = df[(df["adapter"] == "crashtest.hang") & (df["regime"] == "large_offset")].iloc[0]
    assert "no answer within 5 s" in hang["message"]


def test_a_case_that_kills_its_ray_worker_every_time_becomes_one_crash_row(cluster, monkeypatch):
    # isolate=False: the adapter runs in the Ray worker itself, so its segfault kills the
    # unit; cestab resubmits it, and after UNIT_ATTEMPTS deaths records the case as a crash
    monkeypatch.setattr(ray_executor, "RAY_TASK_RETRIES", 0)  # Ray's own retries: tested by the node kill
    df = on_ray(cluster, adapters=["numpy.stable", "crashtest.segfault"], isolate=False, ray_chunk=1,
                **dict(CRASHY, regimes_=["typical", "large_offset"]))
    assert len(df) == 4 and not df.duplicated(KEY).any()
    status = df.set_index(["adapter", "regime"])["status"]
    assert status[("crashtest.segfault", "large_offset")] == "crash"
    assert status[("crashtest.segfault", "typical")] == "ok"
    assert (df.loc[df["adapter"] == "numpy.stable", "status"] == "ok").all()
    crashed = df[df["status"] == "crash"].iloc[0]
    assert crashed["message"].startswith(f"unit failed {ray_executor.UNIT_ATTEMPTS} times on this case: ")


# ------------------------------------------------------------------ a node dies mid-run

KILL = dict(adapters=["slowtest.numpy_stable_1s", "numpy.stable"], dtypes=["float32", "float64"],
            regimes_=["typical", "large_offset", "near_ties"], shapes=[(4, 10)], label_kinds=["index", "onehot"],
            corpus=False)


def _first_row_from(journal_parent: Path, node_id: str, adapter_id: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        for journal in journal_parent.glob("*/rows.jsonl"):
            for line in journal.read_text().splitlines():
                if f'"node_id": "{node_id}"' in line and f'"adapter": "{adapter_id}"' in line:
                    return True
        time.sleep(0.05)
    return False


def test_killing_a_node_mid_run_loses_no_row_and_duplicates_none(cluster, tmp_path):
    victim = cluster.workers[0]
    killed = {}

    def kill_when_it_has_worked():
        # the first row of a slow unit there: that unit still has 3 cases (~3 s) to go (with
        # 0.3 s a case, 0.9 s to go, the journal's polling and remove_node on a loaded
        # 2-core machine once took longer: the unit finished before the kill)
        if _first_row_from(tmp_path, victim.node_id, "slowtest.numpy_stable_1s", time.monotonic() + 120):
            cluster.remove_node(victim, allow_graceful=False)
            killed["at"] = time.monotonic()

    watcher = threading.Thread(target=kill_when_it_has_worked, daemon=True)
    watcher.start()
    df = on_ray(cluster, ray_chunk=4, out_dir=tmp_path, **KILL)
    watcher.join(timeout=5)
    assert "at" in killed, "the victim node never produced a row"
    cluster.workers[0] = cluster.add_node(**NODE)  # back to three nodes for the next tests
    assert not df.duplicated(KEY).any()
    expected = harness.run(isolate=False, **KILL)
    assert len(df) == len(expected) == 12 * 2
    pd.testing.assert_frame_equal(sorted_rows(df)[STABLE], sorted_rows(expected)[STABLE])
    slow_from_victim = ((df["node_id"] == victim.node_id) & (df["adapter"] == "slowtest.numpy_stable_1s")).sum()
    # units of 4 cases: a count that is not a multiple of 4 is a unit cut short by the kill
    # (and finished elsewhere, since every row is there)
    assert slow_from_victim % 4 != 0, slow_from_victim


# ------------------------------------------------------------------ the driver dies; --resume finishes


def test_resume_after_killing_the_driver_finishes_the_run(cluster, tmp_path):
    args = ["run", "--executor", "ray", "--ray-address", cluster.address, "--adapter", "slow_adapters:SLOW",
            "--adapters", "numpy.stable,scipy.log_softmax", "--dtypes", "float32,float64",
            "--regimes", "typical,large_offset,near_ties", "--shapes", "4x10", "--label-kinds", "index,onehot",
            "--budget", "none", "--no-corpus", "--ray-chunk", "3", "--out", str(tmp_path), "--quiet"]
    env = env_with_tests()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], start_new_session=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(tmp_path.glob("*/rows.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 10:
            journal = found[0]
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert journal is not None, f"the run never journalled 10 rows: {proc.stderr.read().decode()[-2000:]}"
    run_dir = journal.parent
    kept = len(journal.read_text().splitlines())
    assert not (run_dir / "results.parquet").exists()

    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--resume", str(run_dir), "--quiet"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    resumed = pd.read_parquet(run_dir / "results.parquet")
    n_cases = 2 * 3 * 2
    assert len(resumed) == n_cases * 3 and not resumed.duplicated(KEY).any()
    assert kept < len(resumed)
    fresh = harness.run(isolate=False, adapters=["numpy.stable", "scipy.log_softmax", "slowtest.numpy_stable"],
                        dtypes=["float32", "float64"], regimes_=["typical", "large_offset", "near_ties"],
                        shapes=[(4, 10)], label_kinds=["index", "onehot"], corpus=False)
    pd.testing.assert_frame_equal(sorted_rows(resumed)[STABLE], sorted_rows(fresh)[STABLE])
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["state"] == "complete" and len(meta["timing"]) == 1  # the killed session never finished


# ------------------------------------------------------------------ bad addresses


@pytest.mark.parametrize(
    "address, message",
    [
        ("127.0.0.1:9", "cannot reach the Ray cluster at 127.0.0.1:9"),
        ("headnode", "bad --ray-address 'headnode': write HOST:PORT"),
    ],
)
def test_unreachable_or_malformed_ray_address_is_one_line_and_exit_2(tmp_path, address, message):
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--executor", "ray", "--ray-address", address,
                        "--adapters", "numpy.stable", "--out", str(tmp_path / "runs")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("cestab: error: " + message) and "Traceback" not in p.stderr
    assert not (tmp_path / "runs").exists()
