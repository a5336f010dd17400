"""Worker isolation: crashes, aborts, OOM kills and hangs become rows; the run goes on.

Also: an interrupted run keeps its rows and `--resume` finishes it with identical results.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crashy_adapters  # noqa: F401  (registers the crashtest.* adapters)
import harness
from harness.store import columns

SMALL = dict(dtypes=["float32"], regimes_=["typical", "large_offset", "near_ties"], shapes=[(4, 10)], label_kinds=["index"],
             corpus=False)


@pytest.fixture(scope="module")
def crashy_run(tmp_path_factory):
    ids = ["numpy.stable", *crashy_adapters.CRASHY]
    return harness.run(adapters=ids, timeout=5.0, out_dir=tmp_path_factory.mktemp("runs"), **SMALL)


@pytest.mark.parametrize(
    "adapter_id, status, message",
    [
        ("crashtest.segfault", "crash", "killed by SIGSEGV"),
        ("crashtest.abort", "crash", "killed by SIGABRT"),
        ("crashtest.oom_kill", "crash", "killed by SIGKILL"),
        ("crashtest.hang", "timeout", "no answer within 5 s"),
        ("crashtest.memory_error", "error", "MemoryError"),
    ],
)
def test_failure_becomes_a_row_and_other_cases_still_run(crashy_run, adapter_id, status, message):
    mine = crashy_run[crashy_run["adapter"] == adapter_id].set_index("regime")
    assert mine.loc["large_offset", "status"] == status
    assert message in mine.loc["large_offset", "message"]
    assert mine.loc["typical", "status"] == "ok" and mine.loc["near_ties", "status"] == "ok"


def test_other_adapters_and_cases_are_not_lost(crashy_run):
    stable = crashy_run[crashy_run["adapter"] == "numpy.stable"]
    assert len(stable) == 3 and (stable["status"] == "ok").all()
    assert len(crashy_run) == 3 * 6


def test_worker_start_up_is_recorded(crashy_run):
    meta = json.loads((Path(crashy_run.attrs["run_dir"]) / "run.json").read_text())
    timing = meta["timing"][-1]
    assert timing["worker_startup_seconds"]["crashy_adapters"] > 0  # restarted after each crash
    assert timing["worker_startup_seconds"]["numpy_impl"] > 0
    assert meta["state"] == "complete"


def test_interrupted_run_keeps_its_rows_and_resume_finishes_it(tmp_path):
    args = ["run", "--adapters", "numpy.stable,numpy.naive,scipy.log_softmax", "--dtypes", "float32,float64",
            "--shapes", "64x10,4x20000", "--budget", "none", "--out", str(tmp_path), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("*/rows.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 30:
            journal = found[0]
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run dies: parent and workers
    proc.wait()
    assert journal is not None, "the run never journalled 30 rows"
    run_dir = journal.parent
    kept = len(journal.read_text().splitlines())
    assert not (run_dir / "results.parquet").exists()

    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--resume", str(run_dir), "--quiet"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = pd.read_parquet(run_dir / "results.parquet")
    fresh = harness.run(adapters=["numpy.stable", "numpy.naive", "scipy.log_softmax"], dtypes=["float32", "float64"],
                        shapes=[(64, 10), (4, 20000)], isolate=False)
    stable_cols = [c for c in columns.NAMES if c not in columns.VOLATILE]
    key = ["case_id", "adapter"]
    pd.testing.assert_frame_equal(
        resumed[stable_cols].sort_values(key).reset_index(drop=True).drop(columns=["device"]),
        fresh[stable_cols].sort_values(key).reset_index(drop=True).drop(columns=["device"]),
    )
    assert kept < len(resumed)
    assert not (run_dir / "rows.jsonl").exists()
    again = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--resume", str(run_dir)], capture_output=True, text=True)
    assert again.returncode == 2 and "already complete" in again.stderr


def test_torch_and_jax_in_two_workers_by_dtype_give_the_rows_of_one_worker():
    """torch's and JAX's cases go to two workers each by dtype (`worker_shards`):
    torch.compile's and XLA's compilations are split between two processes. Each dtype's
    programs must compile as they do in one process that compiled the other dtypes first:
    the same rows, bit for bit."""
    from harness.adapters import registry
    from harness.adapters.workers import WorkerPool
    from harness.inputs import regimes
    from harness.run.rows import rows_for_case

    # One dtype of each shard, float32's before float64's: in one process float64 compiles
    # after float32's two shapes (torch.compile's automatic dynamic shapes are per function,
    # not per dtype), in the split run first in a fresh process.
    cases = regimes.build_cases(regimes=["typical", "near_ties"], dtype_names=["float32", "float64"],
                                shapes=[(8, 100), (3, 7)], label_kinds=["index"])
    assert [c.dtype for c in cases[:4]] == ["float32", "float32", "float64", "float64"]
    adapters = registry.resolve(["torch.compile.cross_entropy", "torch.cross_entropy", "jax.optax.softmax_cross_entropy.jit",
                                 "jax.log_softmax_gather"], ())
    glues = [registry.framework("torch"), registry.framework("jax")]
    assert all(len(glue.worker_shards) == 2 for glue in glues)

    def rows(split):
        for glue in glues:  # this process's glue decides where a case goes
            glue.worker_shards = type(glue).worker_shards if split else ()
        pool = WorkerPool(120.0, threads=1)
        try:
            out = [r for c in cases for r in rows_for_case(c, adapters, pool, "cpu", base={})]
            return out, sorted(pool.workers)
        finally:
            pool.close()
            for glue in glues:
                del glue.worker_shards  # back to the class's

    split, split_workers = rows(True)
    one, one_workers = rows(False)
    assert split_workers == ["implementations.jax_impl#0", "implementations.jax_impl#1",
                             "implementations.torch_impl#0", "implementations.torch_impl#1"]
    assert one_workers == ["implementations.jax_impl", "implementations.torch_impl"]
    stable = [c for c in columns.NAMES if c not in columns.VOLATILE]
    compiled = [r for r in split if r["adapter"] == "torch.compile.cross_entropy"]
    assert sum(r["status"] in ("ok", "lossy", "inaccurate") for r in compiled) > len(cases) // 2  # it compiled and ran
    pd.testing.assert_frame_equal(columns.frame(split)[stable], columns.frame(one)[stable])


def test_a_stopped_worker_leaves_at_once_and_takes_its_fresh_compiler_folder_with_it(tmp_path, monkeypatch):
    """A worker told to stop skips the interpreter's teardown (`workers._leave`), so it must
    remove its fresh inductor folder itself: after a torch.compile run the folder holds
    kernels; once the pool has closed, nothing of it is left, and the worker exited with 0."""
    from harness.adapters import registry
    from harness.adapters.workers import WorkerPool
    from harness.inputs import regimes
    from harness.run.rows import rows_for_case

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the worker's fresh folders go here
    case = regimes.make_case("typical", "float32", (8, 10), "index", 0)
    pool = WorkerPool(120.0, threads=1)
    try:
        [row] = rows_for_case(case, registry.resolve(["torch.compile.cross_entropy"], ()), pool, "cpu", base={})
        [worker] = pool.workers.values()
        [fresh] = list(tmp_path.glob("cestab-inductor-*"))
        assert row["status"] in ("ok", "lossy") and any(fresh.rglob("*.so"))  # it compiled there
    finally:
        pool.close()
    assert worker.process.exitcode == 0
    assert not fresh.exists() and list(tmp_path.glob("cestab-*")) == []


def test_an_answer_repeating_an_earlier_adapters_bits_comes_back_the_same_without_crossing_the_pipe_again():
    """A worker sends an answer of the very same bits as an earlier adapter's on the same
    case as that adapter's id (`SentAnswers`); the parent gets the earlier arrays back. Every
    answer must equal, bit for bit, the adapter's own in this process, and one differing in
    a single bit (same loss) must come with its own arrays."""
    import repeat_adapters
    from harness.adapters import registry
    from harness.adapters.workers import WorkerPool, call_adapter
    from harness.inputs import regimes
    from harness.numerics.samebits import same_bits

    cases = regimes.build_cases(regimes=["typical", "near_ties"], dtype_names=["bfloat16", "float64"],
                                shapes=[(8, 100)], label_kinds=["index", "soft"])
    adapters = registry.resolve(list(repeat_adapters.REPEATS), ())
    pool = WorkerPool(60.0, threads=1)
    try:
        for case in cases:
            got = {a.id: att for a, att in pool.run_source(registry.source_of(adapters[0].id), adapters, case, "cpu")}
            for adapter in adapters:
                want = call_adapter(adapter, case, "cpu").output
                out = got[adapter.id].output
                assert got[adapter.id].status == "ran" and got[adapter.id].seconds is not None
                assert same_bits(out.loss, want.loss) and same_bits(out.grad, want.grad), (adapter.id, case.case_id)
            first, same, nudged = (got[i].output for i in repeat_adapters.REPEATS)
            assert same.grad is first.grad and same.loss is first.loss  # the earlier arrays: not sent again
            assert nudged.grad is not first.grad and same_bits(nudged.loss, first.loss)
    finally:
        pool.close()


def test_sent_answers_treats_only_identical_bits_as_a_repeat_and_keeps_no_more_than_its_limit():
    from harness.adapters.contract import Output
    from harness.adapters.workers import Attempt, SentAnswers

    grad = np.array([[0.25, -0.25], [0.0, np.nan]], np.float32)
    loss = np.array([1.0, 2.0], np.float32)
    ran = lambda g: Attempt("ran", Output(loss.copy(), g), seconds=0.1)  # noqa: E731
    sent = SentAnswers()
    assert sent.strip("a", ran(grad.copy()))[1] is None
    stripped, same_as = sent.strip("b", ran(grad.copy()))
    assert same_as == "a" and stripped.output.grad is None and stripped.seconds == 0.1
    negative_zero = grad.copy()
    negative_zero[1, 0] = -0.0  # equal as numbers, not as bits
    other_nan = grad.copy()
    other_nan.view(np.uint32)[1, 1] ^= 1  # another NaN payload
    for g in (negative_zero, other_nan, grad.astype(np.float64)):
        assert sent.strip("c", ran(g))[1] is None
    tight = SentAnswers(limit=grad.nbytes + loss.nbytes - 1)  # nothing fits: nothing is a repeat
    assert tight.strip("a", ran(grad.copy()))[1] is None and tight.strip("b", ran(grad.copy()))[1] is None
    assert sent.strip("d", Attempt("error", message="x")) == (Attempt("error", message="x"), None)


def _large_offset_case():
    from harness.inputs import regimes

    [case] = regimes.build_cases(regimes=["large_offset"], dtype_names=["float32"], shapes=[(4, 10)],
                                 label_kinds=["index"])
    return case


def test_a_workers_answers_to_one_case_come_back_in_one_message_each_as_the_adapter_gave_it():
    """Each message costs the parent and the worker CPU whatever its size (`GROUP_BYTES`), so
    a case's answers travel together: one message for a default-sized case, and for a case
    whose answers are larger than GROUP_BYTES, the messages the bound allows."""
    from harness.adapters import registry
    from harness.adapters.workers import GROUP_BYTES, WorkerPool, call_adapter
    from harness.inputs import regimes
    from harness.numerics.samebits import same_bits

    adapters = registry.resolve(["numpy.naive", "numpy.stable"], ())
    source = registry.worker_of(adapters[0].id, "float32")
    small, large = (regimes.build_cases(regimes=["typical"], dtype_names=["float32"], shapes=[shape],
                                        label_kinds=["index"])[0] for shape in [(16, 100), (512, 1024)])
    pool = WorkerPool(60.0, threads=1)
    try:
        pool.start([source])
        channel = pool.workers[source].channel
        messages = []
        receive = channel.recv
        channel.recv = lambda: messages.append(receive()) or messages[-1]
        for case, want_messages in [(small, 1), (large, None)]:
            messages.clear()
            got = list(pool.run_source(source, adapters, case, "cpu"))
            assert [a.id for a, _ in got] == [a.id for a in adapters]
            for adapter, attempt in got:
                want = call_adapter(adapter, case, "cpu").output
                assert attempt.status == "ran" and same_bits(attempt.output.grad, want.grad), (adapter.id, case.case_id)
                assert same_bits(attempt.output.loss, want.loss)
            if want_messages is None:  # each grad is 2 MiB: one answer per message
                assert case.logits.nbytes >= GROUP_BYTES
                want_messages = len(adapters)
            assert len(messages) == want_messages, case.case_id
    finally:
        pool.close()


def test_a_death_after_earlier_answers_of_the_case_is_the_running_adapters_and_the_others_run_again():
    """The answers before the one that killed the worker had not gone back yet: the shared
    progress says which adapter died (not the first whose answer is missing), a fresh worker
    computes the others, and the attempts keep the request's order."""
    from harness.adapters import registry
    from harness.adapters.workers import WorkerPool

    adapters = registry.resolve(["crashtest.memory_error", "crashtest.abort", "crashtest.oom_kill"], ())
    pool = WorkerPool(30.0, threads=1)
    try:
        got = list(pool.run_source(registry.worker_of(adapters[0].id, "float32"), adapters, _large_offset_case(), "cpu"))
    finally:
        pool.close()
    assert [(a.id, att.status) for a, att in got] == [("crashtest.memory_error", "error"), ("crashtest.abort", "crash"),
                                                      ("crashtest.oom_kill", "crash")]
    assert "MemoryError" in got[0][1].message
    assert "SIGABRT" in got[1][1].message and "SIGKILL" in got[2][1].message


def test_each_adapter_of_a_case_has_its_own_timeout_and_a_hang_is_the_hanging_adapters():
    """Two adapters of 1 s each answer together after 2 s: with a timeout of 1.5 s neither is
    late, as each has the timeout from its own start. The hang after them is blamed on
    itself, and only it times out."""
    import slow_adapters
    from harness.adapters import registry
    from harness.adapters.workers import WorkerPool

    slow = registry.resolve([slow_adapters.SLOWER.id, slow_adapters.SLOWER_TOO.id], ())
    pool = WorkerPool(1.5, threads=1)
    try:
        got = list(pool.run_source(registry.worker_of(slow[0].id, "float32"), slow, _large_offset_case(), "cpu"))
        assert [(a.id, att.status) for a, att in got] == [(a.id, "ran") for a in slow]
        hangs = registry.resolve(["crashtest.memory_error", "crashtest.hang"], ())
        got = list(pool.run_source(registry.worker_of(hangs[0].id, "float32"), hangs, _large_offset_case(), "cpu"))
    finally:
        pool.close()
    assert [(a.id, att.status) for a, att in got] == [("crashtest.memory_error", "error"), ("crashtest.hang", "timeout")]
    assert "no answer within 1.5 s" in got[1][1].message
