"""Issue 13: hostile inputs and faults. One test (at least) per numbered item of the issue,
each reproducing what used to go wrong: a traceback, a silent mis-load, lost work, a
runaway allocation, a worker outliving its driver.

The CLI runs in-process (`harness.cli.main`) where it can, so these stay fast; the tests
that need a real driver to die run it as a subprocess.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import pandas as pd
import pytest

import harness
from harness.store import casefile
from harness import cli
from harness.store import memory
from harness.inputs import probe
from harness.inputs import regimes
from harness.store import runfolder
from harness.errors import UsageError

TESTS = Path(__file__).parent
NARROW = ["--adapters", "numpy.stable", "--dtypes", "float32", "--regimes", "typical", "--shapes", "4x10",
          "--label-kinds", "index", "--budget", "none", "--no-corpus", "--quiet"]


def cestab(capsys, *argv):
    """(exit code, stdout, stderr) of `cestab argv` run in this process."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # --help
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    assert code == 2, err
    assert err.startswith("cestab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


@pytest.fixture
def batch_files(tmp_path):
    np.save(tmp_path / "z.npy", np.random.default_rng(0).normal(0, 3, (3, 10)).astype(np.float32))
    np.save(tmp_path / "t.npy", np.array([1, 2, 3]))
    return tmp_path


# ---------------------------------------------------------------- 1. no metrics at all


def test_1_repro_prints_the_table_when_no_adapter_produced_metrics(capsys):
    pytest.importorskip("jax")
    code, out, err = cestab(capsys, "repro", "typical/float32/4x10/soft/s0", "--adapters", "jax.log_softmax_gather")
    assert code == 0, err
    assert "0 rows with no finite truth" in out and "jax.log_softmax_gather" in out and "unsupported" in out
    assert "Traceback" not in err


def test_1_probe_prints_the_table_when_every_adapter_crashed(capsys, batch_files, tmp_path, monkeypatch):
    (tmp_path / "dying_kernel.py").write_text("import os, signal\n\ndef ce(logits, target):\n"
                                             "    os.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pytest.importorskip("torch")
    code, out, err = cestab(capsys, "probe", "--logits", batch_files / "z.npy", "--labels", batch_files / "t.npy",
                            "--adapter", "dying_kernel:ce@torch")
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith("dying_kernel:ce"))
    assert "crash" in line and "SIGKILL" in line


# ---------------------------------------------------------------- 2. memory bound


def test_2_run_refuses_a_shape_beyond_the_memory_limit_before_drawing_anything(capsys, tmp_path):
    t0 = time.perf_counter()
    code, _, err = cestab(capsys, "run", "--adapters", "numpy.stable", "--shapes", "4096x32000", "--max-memory", "1G",
                          "--budget", "none", "--no-corpus", "--out", tmp_path / "runs")
    one_line_error(code, err, "needs about 15.6 GiB", "limit of 1 GiB", "--max-memory")
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "runs").exists()


def test_2_default_limit_is_a_fraction_of_the_machine_and_refuses_absurd_shapes(capsys, tmp_path):
    assert memory.limit() == int(memory.machine_bytes() * memory.DEFAULT_FRACTION)
    code, _, err = cestab(capsys, "run", "--adapters", "numpy.stable", "--shapes", "100000000x100000",
                          "--out", tmp_path / "runs")
    one_line_error(code, err, "needs about", "of this machine's")


def test_2_npy_header_claiming_1e12_elements_is_refused_without_allocating(capsys, tmp_path):
    with open(tmp_path / "huge.npy", "wb") as f:  # a valid header, no data: np.load would try to allocate 4 TB
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    np.save(tmp_path / "t.npy", np.zeros(10**6, np.int64))
    code, _, err = cestab(capsys, "probe", "--logits", tmp_path / "huge.npy", "--labels", tmp_path / "t.npy")
    one_line_error(code, err, "truncated", "4000000000000 bytes")
    # the same header over a sparse file of the full size: the memory bound refuses it
    with open(tmp_path / "sparse.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**5, 10**5)})
        f.truncate(f.tell() + 4 * 10**10)
    code, _, err = cestab(capsys, "probe", "--logits", tmp_path / "sparse.npy", "--labels", tmp_path / "t.npy")
    one_line_error(code, err, "needs about", "--max-memory")


def test_2_case_file_and_case_id_beyond_the_limit_are_refused(capsys, tmp_path):
    code, _, err = cestab(capsys, "repro", "typical/float32/100000x100000/index/s0", "--max-memory", "1G")
    one_line_error(code, err, "needs about", "limit of 1 GiB")
    case = regimes.make_case("typical", "float32", (64, 1000), "index", 0)
    casefile.save(case, tmp_path / "c.npz")
    code, _, err = cestab(capsys, "repro", tmp_path / "c.npz", "--max-memory", "1M")
    one_line_error(code, err, "needs about", "limit of 1 MiB")


def test_2_bench_refuses_a_batch_beyond_the_memory_limit(capsys, tmp_path):
    code, _, err = cestab(capsys, "bench", "--adapters", "numpy.stable", "--shapes", "4096x32000", "--max-memory", "64M",
                          "--out", tmp_path / "runs")
    one_line_error(code, err, "a 4096x32000 float32 bench batch needs about 1.95 GiB", "limit of 64 MiB")
    assert not (tmp_path / "runs").exists()


def test_2_a_run_draws_its_cases_one_at_a_time():
    from harness.run.runner import build_cases

    built = build_cases({"regimes": ["typical", "near_ties"], "dtypes": ["float32"], "shapes": [[4, 10]],
                                        "label_kinds": ["index"], "seed": 0, "corpus": False})
    assert len(built) == 2 and all(callable(c) for c in built)  # drawn when reached, not up front
    assert built[0]().case_id == "typical/float32/4x10/index/s0"


# ---------------------------------------------------------------- 3. workers die with their driver


_DRIVER = """
import sys, threading
sys.path.insert(0, {tests!r})
import crashy_adapters, harness
def go():
    harness.run(adapters=["crashtest.hang"], dtypes=["float32"], regimes_=["large_offset"], shapes=[(4, 10)],
                label_kinds=["index"], corpus=False, timeout=600)
if {from_thread}:  # a worker started from a thread gets no PDEATHSIG: the watchdog must end it
    t = threading.Thread(target=go); t.start(); t.join()
else:
    go()
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat_file.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("from_thread", [False, True], ids=["pdeathsig", "watchdog"])
def test_3_a_hung_worker_dies_when_its_driver_is_killed(from_thread):
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER.format(tests=str(TESTS), from_thread=from_thread)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not workers:
            workers = [p for p in _children(driver.pid) if "cestab-crashy" in Path(f"/proc/{p}/cmdline").read_text()
                       or "multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
            time.sleep(0.2)
        assert workers, "the driver never started a worker"
        time.sleep(6)  # the worker imports numpy and reaches the hang
        assert all(_alive(p) for p in workers)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "a worker outlived its killed driver"
    finally:  # whatever happened, leave no worker behind
        driver.kill()
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_3_workers_of_frameworks_in_parallel_are_started_by_the_main_thread_and_get_pdeathsig():
    """--jobs hands each framework's work to a thread; the workers are started before, from
    the main thread, so each dies with the driver by signal, not by the watchdog alone."""
    import threading

    from harness.adapters import registry
    from harness.adapters.parallel import ParallelPool

    case = regimes.make_case("typical", "float32", (4, 10), "index", 0)
    adapters = [registry.get("numpy.stable"), registry.get("scipy.log_softmax")]
    assert len({registry.source_of(a.id) for a in adapters}) == 2
    pool = ParallelPool(60.0, jobs=2, threads=1)
    try:
        got = {a.id: v for a, v in pool.run(case, adapters, "cpu", task="crashy_adapters:parent_death_signal")}
    finally:
        pool.close()
    assert got == {"numpy.stable": signal.SIGKILL, "scipy.log_softmax": signal.SIGKILL}
    # what the main thread's start gives them: a worker a thread started has no such signal
    from_thread = {}
    pool = ParallelPool(60.0, jobs=1, threads=1)
    try:
        t = threading.Thread(target=lambda: from_thread.update(
            {a.id: v for a, v in pool.run(case, adapters[:1], "cpu", task="crashy_adapters:parent_death_signal")}))
        t.start()
        t.join()
    finally:
        pool.close()
    assert from_thread == {"numpy.stable": 0}


# ---------------------------------------------------------------- 4. numeric options


@pytest.mark.parametrize("option, value, message", [
    ("--seed", str(2**63), "seed must be a non-negative integer below 2**63"),
    ("--seed", "1e3", "seed must be"),
    ("--timeout", "inf", "timeout must be positive seconds, at most"),
    ("--timeout", "1e10", "timeout must be positive seconds, at most"),
    ("--timeout", "nan", "timeout must be positive seconds"),
    ("--jobs", "0", "jobs must be a positive integer, at most"),
    ("--jobs", "100000", "jobs must be a positive integer, at most"),
    ("--jobs", "2.5", "jobs must be a positive integer"),
])
def test_4_out_of_range_numbers_are_refused_at_parse_time(capsys, tmp_path, option, value, message):
    code, _, err = cestab(capsys, "run", *NARROW, option, value, "--out", tmp_path / "runs")
    one_line_error(code, err, message)
    assert not (tmp_path / "runs").exists()


def test_4_the_api_refuses_them_too_and_the_largest_seed_works(tmp_path):
    with pytest.raises(UsageError, match="seed must be an integer in"):
        harness.run(adapters=["numpy.stable"], seed=2**63, regimes_=["typical"], shapes=[(4, 10)], isolate=False)
    with pytest.raises(UsageError, match="timeout must be positive"):
        harness.run(adapters=["numpy.stable"], timeout=float("inf"), isolate=False)
    df = harness.run(adapters=["numpy.stable"], seed=2**63 - 1, dtypes=["float32"], regimes_=["typical"], shapes=[(4, 10)],
                     label_kinds=["index"], corpus=False, isolate=False, out_dir=tmp_path)
    assert (df["seed"] == 2**63 - 1).all() and (Path(df.attrs["run_dir"]) / "results.parquet").is_file()


def test_4_the_api_and_a_resumed_run_json_refuse_bad_jobs_too(capsys, tmp_path):
    with pytest.raises(UsageError, match="jobs must be a positive integer"):
        harness.run(adapters=["numpy.stable"], jobs=0, isolate=False)
    (tmp_path / "run.json").write_text('{"options": {"adapters": ["numpy.stable"], "jobs": "many"}, "state": "running"}')
    code, _, err = cestab(capsys, "run", "--resume", tmp_path)
    one_line_error(code, err, "options.jobs must be a positive integer")


def test_4_a_run_json_with_a_bare_infinity_is_one_line_on_resume(capsys, tmp_path):
    (tmp_path / "run.json").write_text('{"options": {"adapters": ["numpy.stable"], "timeout": Infinity}, "state": "running"}')
    code, _, err = cestab(capsys, "run", "--resume", tmp_path)
    one_line_error(code, err, "bare Infinity is not JSON")


# ---------------------------------------------------------------- 5. file modes, symlinks, --update-baseline


def test_5_atomic_writes_honour_the_umask_keep_the_mode_and_write_through_a_symlink(tmp_path):
    old = os.umask(0o022)
    try:
        runfolder.write_atomic(tmp_path / "new.txt", lambda p: p.write_text("a"))
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644
        os.umask(0o027)
        runfolder.write_atomic(tmp_path / "new2.txt", lambda p: p.write_text("a"))
        assert stat.S_IMODE((tmp_path / "new2.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    (tmp_path / "kept.txt").write_text("old")
    os.chmod(tmp_path / "kept.txt", 0o604)
    runfolder.write_atomic(tmp_path / "kept.txt", lambda p: p.write_text("new"))
    assert stat.S_IMODE((tmp_path / "kept.txt").stat().st_mode) == 0o604 and (tmp_path / "kept.txt").read_text() == "new"
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "baseline.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real" / "baseline.json")
    runfolder.write_atomic(tmp_path / "link.json", lambda p: p.write_text("new"))
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real" / "baseline.json").read_text() == "new"
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_5_run_folder_files_are_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        df = harness.run(adapters=["numpy.stable"], dtypes=["float32"], regimes_=["typical"], shapes=[(4, 10)],
                         label_kinds=["index"], corpus=False, isolate=False, out_dir=tmp_path)
    finally:
        os.umask(old)
    for name in ("run.json", "results.parquet", "results.csv"):
        assert stat.S_IMODE((Path(df.attrs["run_dir"]) / name).stat().st_mode) == 0o644, name


def test_5_update_baseline_into_a_missing_folder_fails_before_the_quick_run(capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    t0 = time.perf_counter()
    code, _, err = cestab(capsys, "check", "--quick", "--baseline", tmp_path / "file" / "baseline.json",
                          "--update-baseline", "--out", tmp_path / "runs")
    one_line_error(code, err, "cannot write baseline", "no folder")
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "runs").exists()


def test_5_an_unwritable_junit_path_fails_before_the_quick_run(capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    code, _, err = cestab(capsys, "check", "--quick", "--baseline", tmp_path / "b.json", "--update-baseline",
                          "--junit", tmp_path / "file" / "j.xml", "--out", tmp_path / "runs")
    one_line_error(code, err, "cannot write JUnit report", "no folder")
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_5_update_baseline_checks_writability_before_the_quick_run(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        t0 = time.perf_counter()
        code, _, err = cestab(capsys, "check", "--quick", "--baseline", ro / "baseline.json", "--update-baseline",
                              "--out", tmp_path / "runs")
        one_line_error(code, err, "cannot write baseline", "permission denied")
        assert time.perf_counter() - t0 < 10 and not (tmp_path / "runs").exists()  # no run was made
    finally:
        os.chmod(ro, 0o755)


# ---------------------------------------------------------------- 6. --resume and the journal


@pytest.mark.parametrize("extra", [["--adapters", "nope"], ["--timeout", "0.001"], ["--seed", "0"], ["--out", "x"]])
def test_6_resume_refuses_every_other_option(capsys, tmp_path, extra):
    code, _, err = cestab(capsys, "run", "--resume", tmp_path, *extra)
    one_line_error(code, err, "--resume finishes a run with its own options", "leave out " + extra[0])


def _interrupted(tmp_path, keep: int, torn: str):
    """A finished small run turned back into one interrupted after `keep` rows and a torn line."""
    df = harness.run(adapters=["numpy.stable", "numpy.naive"], dtypes=["float32", "float64"], regimes_=["typical", "near_ties"],
                     shapes=[(4, 10)], label_kinds=["index"], corpus=False, isolate=False, out_dir=tmp_path)
    run_dir = Path(df.attrs["run_dir"])
    meta = json.loads((run_dir / "run.json").read_text())
    meta["state"] = "running"
    (run_dir / "run.json").write_text(json.dumps(meta))
    (run_dir / "results.parquet").unlink()
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    (run_dir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:keep]) + torn)
    return df, run_dir


def test_6_a_journal_torn_twice_resumes_to_the_same_rows_in_the_same_order(tmp_path):
    fresh, run_dir = _interrupted(tmp_path, 3, '{"case_id": "typical/flo')
    journal = runfolder.RunFolder(run_dir).journal()  # a first resume that dies again mid-line
    journal.append(fresh.iloc[3].to_dict())
    journal.file.write('{"case_id": "near_t')
    journal.close()
    assert len(runfolder.RunFolder(run_dir).read_rows()) == 4  # the torn tail cut, the appended row kept
    resumed = harness.run(resume=run_dir)
    stable = [c for c in harness.store.columns.NAMES if c not in harness.store.columns.VOLATILE]
    pd.testing.assert_frame_equal(resumed[stable], fresh[stable])  # same rows, same order


@pytest.mark.parametrize("line", ["42", "null", '"text"', "[1, 2]", '{"case_id": 5, "adapter": "x"}'])
def test_6_journal_lines_that_are_not_rows_are_one_line(capsys, tmp_path, line):
    _, run_dir = _interrupted(tmp_path, 2, "")
    with open(run_dir / "rows.jsonl", "a") as f:
        f.write(line + "\n")
    code, _, err = cestab(capsys, "run", "--resume", run_dir)
    one_line_error(code, err, "rows.jsonl line 3: not a result row")


# ---------------------------------------------------------------- 7. plug-in loading


@pytest.mark.parametrize("source, spec, message", [
    ("raise RuntimeError('boom')\n", "raising:f", "it raised RuntimeError: boom"),
    ("def f(:\n", "syntax:f", "it raised SyntaxError"),
    ("import sys\nsys.exit(7)\n", "exiting:f", "it raised SystemExit: 7"),
    (None, ":f", "bad adapter ':f'"),
    (None, "a b:f", "bad adapter"),
    ("from harness.adapters import Adapter\nfrom implementations.numpy_impl import stable\n"
     "clash = Adapter('numpy.stable', 'numpy', stable)\n", "clashing:clash", "adapter id 'numpy.stable' of clashing:clash is already taken"),
])
def test_7_a_broken_plugin_is_one_line(capsys, tmp_path, monkeypatch, source, spec, message):
    if source is not None:
        (tmp_path / f"{spec.split(':')[0]}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = cestab(capsys, "run", *NARROW, "--adapter", spec, "--out", tmp_path / "runs")
    one_line_error(code, err, message)


# ---------------------------------------------------------------- 8. silent mis-loads


def test_8_uint64_labels_beyond_int64_are_out_of_range_not_ignored(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((2, 4), np.float32))
    np.save(tmp_path / "t.npy", np.array([1, 2**64 - 100], dtype=np.uint64))
    with pytest.raises(UsageError, match=r"label 18446744073709551516 at row 1 is out of range \[0, 4\)"):
        probe.batch(tmp_path / "z.npy", tmp_path / "t.npy")


def test_8_case_file_with_a_bit_width_not_its_dtypes_is_refused(capsys, tmp_path):
    case = regimes.make_case("typical", "float32", (1, 2), "index", 0)
    casefile.save(case, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as d:
        arrays = dict(d)
    arrays["logits_bits"] = case.logits.view(np.uint16)  # 1x4 uint16 under "float32"
    np.savez(tmp_path / "bad.npz", **arrays)
    code, _, err = cestab(capsys, "repro", tmp_path / "bad.npz")
    one_line_error(code, err, "logits_bits are uint16", "stored as 2-D uint32")


def test_8_logits_beyond_the_requested_dtype_are_refused_without_a_numpy_warning(tmp_path):
    np.save(tmp_path / "z.npy", np.array([[1e6, 0.0, 1.0]]))
    np.save(tmp_path / "t.npy", np.array([0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UsageError, match=r"logit 1e\+06 at \(0, 0\) is beyond float16's range"):
            probe.batch(tmp_path / "z.npy", tmp_path / "t.npy", dtype="float16")


# ---------------------------------------------------------------- 9. valid JSON, wrong structure


@pytest.mark.parametrize("meta, message", [
    ({"options": {}, "state": "running"}, "options lack adapters"),
    ({"options": [], "state": "running"}, "options must be an object"),
    ({"options": {"adapters": ["numpy.stable"], "seed": "abc"}, "state": "running"}, "options.seed must be an integer"),
    ({"options": {"adapters": ["numpy.stable"], "shapes": [[0, 10]]}, "state": "running"}, "options.shapes must be"),
    ([1, 2], "not a run.json"),
])
def test_9_run_json_of_the_wrong_structure_is_one_line(capsys, tmp_path, meta, message):
    (tmp_path / "run.json").write_text(json.dumps(meta))
    code, _, err = cestab(capsys, "run", "--resume", tmp_path)
    one_line_error(code, err, message)


def _baseline(tmp_path, **change):
    base = {"format": "cestab-baseline", "format_version": 2, "schema_version": 1, "options": {}, "groups": []}
    base.update(change)
    (tmp_path / "b.json").write_text(json.dumps(base) if "raw" not in change else change["raw"])
    return tmp_path / "b.json"


def test_9_baseline_with_ulps_1e400_is_one_line(capsys, tmp_path):
    group = {"adapter": "numpy.stable", "dtype": "float32", "regime": "typical", "framework": "numpy", "cases": 1,
             "worst_status": "ok", "statuses": {"ok": 1}, "loss_ulps": 1.0, "grad_ulps": 1.0, "loss_tol": 0.1,
             "grad_tol": 0.1, "loss_att": 0.5, "grad_att": 0.5, "nonfinite": 0, "failed": 0}
    text = json.dumps({"format": "cestab-baseline", "format_version": 2, "schema_version": 1, "groups": [group]})
    (tmp_path / "b.json").write_text(text.replace('"loss_ulps": 1.0', '"loss_ulps": 1e400'))
    code, _, err = cestab(capsys, "check", "--quick", "--baseline", tmp_path / "b.json", "--out", tmp_path / "runs")
    one_line_error(code, err, "loss_ulps must be a finite non-negative number")


def test_9_baseline_quick_options_of_the_wrong_type_are_refused_before_the_run(capsys, tmp_path):
    path = _baseline(tmp_path, options={"seed": "abc"})
    code, _, err = cestab(capsys, "check", "--quick", "--baseline", path, "--out", tmp_path / "runs")
    one_line_error(code, err, "options.seed must be an integer")
    assert not (tmp_path / "runs").exists()


def test_9_case_file_score_that_is_not_a_number_is_one_line(capsys, tmp_path):
    case = regimes.make_case("typical", "float32", (2, 4), "index", 0)
    casefile.save(case, tmp_path / "c.npz", {"adapter": "numpy.stable", "score": "abc", "status": "ok", "message": ""})
    code, _, err = cestab(capsys, "repro", tmp_path / "c.npz")
    one_line_error(code, err, "info.score must be a number")


def test_9_check_of_a_run_folder_with_a_list_for_run_json_is_one_line(capsys, tmp_path):
    df = harness.run(adapters=["numpy.stable"], dtypes=["float32"], regimes_=["typical"], shapes=[(4, 10)],
                     label_kinds=["index"], corpus=False, isolate=False, out_dir=tmp_path)
    run_dir = Path(df.attrs["run_dir"])
    (run_dir / "run.json").write_text("[]")
    path = _baseline(tmp_path)
    code, _, err = cestab(capsys, "check", run_dir, "--baseline", path)
    one_line_error(code, err, "not a run.json")
    code, _, err = cestab(capsys, "report", run_dir, "--out", tmp_path / "rep")
    one_line_error(code, err, "not a run.json")


# ---------------------------------------------------------------- 10. messages


def test_10_a_directory_is_called_a_directory(capsys, tmp_path):
    np.save(tmp_path / "t.npy", np.array([0]))
    code, _, err = cestab(capsys, "probe", "--logits", tmp_path, "--labels", tmp_path / "t.npy")
    one_line_error(code, err, "is a directory")
    code, _, err = cestab(capsys, "repro", tmp_path)
    one_line_error(code, err, "is a directory")


def test_10_bfloat16_file_with_dtype_float32_is_converted_not_called_V2(tmp_path):
    np.save(tmp_path / "z.npy", np.array([[1.0, 2.5, -3.0]], dtype=ml_dtypes.bfloat16))
    np.save(tmp_path / "t.npy", np.array([2]))
    case = probe.batch(tmp_path / "z.npy", tmp_path / "t.npy", dtype="float32")
    assert case.dtype == "float32" and case.logits.tolist() == [[1.0, 2.5, -3.0]]
    np.save(tmp_path / "r.npy", np.zeros((1, 3), dtype="V3"))
    with pytest.raises(UsageError, match="got a 3-byte raw type"):
        probe.batch(tmp_path / "r.npy", tmp_path / "t.npy")


def test_10_float_class_ids_are_called_class_ids(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((3, 4), np.float32))
    np.save(tmp_path / "t.npy", np.array([0.0, 1.0, 2.0]))
    with pytest.raises(UsageError, match=r"class ids must be integers \(save them with .astype\(int\)\)"):
        probe.batch(tmp_path / "z.npy", tmp_path / "t.npy")


@pytest.mark.parametrize("case_id", ["typical/float32/4x1/index/s0", "typical/float32/0x10/index/s0",
                                     f"typical/float32/4x10/index/s{2**63}"])
def test_10_repro_refuses_case_ids_run_refuses(capsys, case_id):
    code, _, err = cestab(capsys, "repro", case_id)
    one_line_error(code, err, "case id")


def test_10_adapter_messages_are_literal_in_the_markdown_report(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    (tmp_path / "evil_kernel.py").write_text(textwrap.dedent("""
        from harness.adapters import Adapter
        def compute(case, device):
            raise ValueError("<img src=x onerror=alert(1)> | *bold* [link](http://x) `tick`")
        evil = Adapter("evil.kernel", "numpy", compute)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    df = harness.run(plugins=("evil_kernel:evil",), dtypes=["float32"], regimes_=["typical"], shapes=[(4, 10)],
                     label_kinds=["index"], corpus=False, isolate=False, out_dir=tmp_path / "runs")
    from harness.report.write import write_report

    written = write_report([df.attrs["run_dir"]], tmp_path / "rep")
    md = Path(written["stability.md"]).read_text()
    line = next(l for l in md.splitlines() if "evil.kernel" in l and "error in" in l)
    assert "`ValueError: <img src=x onerror=alert(1)> | *bold* [link](http://x) 'tick'`" in line
    html = Path(written["stability.html"]).read_text()
    assert "<img src=x" not in html


# ---------------------------------------------------------------- 11. one example


def test_11_one_1d_example_is_read_as_one_row_with_a_note(capsys, tmp_path):
    z = np.random.default_rng(1).normal(0, 3, (5, 10)).astype(np.float32)
    np.save(tmp_path / "z.npy", z[0])
    np.save(tmp_path / "t.npy", np.array(3))
    notes = []
    case = probe.batch(tmp_path / "z.npy", tmp_path / "t.npy", notes=notes)
    assert case.shape == (1, 10) and case.target.tolist() == [3] and (case.logits[0] == z[0]).all()
    assert notes[0] == "1-D logits read as one row (1, 10)"
    code, out, err = cestab(capsys, "probe", "--logits", tmp_path / "z.npy", "--labels", tmp_path / "t.npy",
                            "--adapters", "numpy.stable")
    assert code == 0, err
    assert out.startswith("note: 1-D logits read as one row (1, 10)\n") and "1 rows x 10 classes" in out


# ---------------------------------------------------------------- 12. probe --adapter


def test_12_probe_takes_a_users_kernel(capsys, batch_files, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(TESTS))
    code, out, err = cestab(capsys, "probe", "--logits", batch_files / "z.npy", "--labels", batch_files / "t.npy",
                            "--adapter", "user_losses_torch:fused_ce", "--adapters", "numpy.stable")
    assert code == 0, err
    rows = {l.split()[0]: l.split()[1] for l in out.splitlines()[3:]}
    assert rows == {"numpy.stable": "ok", "user_losses_torch:fused_ce": "ok"}


# ---------------------------------------------------------------- found by the fuzz test


@pytest.mark.parametrize("command", ["run", "repro", "probe", "check", "report", "bench", "list"])
def test_help_of_every_command_prints(capsys, command):
    """A '%' in a help text (argparse formats them) made `--help` a traceback."""
    code, out, err = cestab(capsys, command, "--help")
    assert code == 0 and out.startswith("usage: cestab " + command) and not err


def test_deeply_nested_json_in_a_case_file_is_one_line(capsys, tmp_path):
    case = regimes.make_case("typical", "float32", (2, 3), "index", 0)
    casefile.save(case, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as d:
        arrays = dict(d)
    arrays["info"] = np.array("[" * 5000)
    np.savez(tmp_path / "nested.npz", **arrays)
    code, _, err = cestab(capsys, "repro", tmp_path / "nested.npz")
    one_line_error(code, err, "info is not JSON: nested too deeply")


def test_bench_bandwidth_buffer_stays_within_the_memory_bound():
    import tracemalloc

    from harness.bench import bandwidth as bench

    memory.set_limit(64 * 2**20)
    tracemalloc.start()
    try:
        bench.device_bandwidth("cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        memory.set_limit(None)
    assert peak <= 64 * 2**20


def test_junit_report_stays_well_formed_with_control_characters_in_the_baseline(capsys, tmp_path):
    import xml.etree.ElementTree as ET

    df = harness.run(adapters=["numpy.stable"], dtypes=["float32"], regimes_=["typical"], shapes=[(4, 10)],
                     label_kinds=["index"], corpus=False, isolate=False, out_dir=tmp_path)
    group = {"adapter": "evil\x00\x1b[2J", "dtype": "float32", "regime": "typical", "framework": "numpy", "cases": 1,
             "worst_status": "ok", "statuses": {"ok": 1}, "loss_ulps": 1.0, "grad_ulps": 1.0, "loss_tol": 0.1,
             "grad_tol": 0.1, "loss_att": 0.5, "grad_att": 0.5, "nonfinite": 0, "failed": 0}
    path = _baseline(tmp_path, groups=[group])
    code, _, err = cestab(capsys, "check", df.attrs["run_dir"], "--baseline", path, "--junit", tmp_path / "j.xml")
    assert code == 0, err
    names = [c.get("classname") for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")]
    assert "evil\ufffd\ufffd[2J" in names


def test_a_nul_byte_in_an_argument_is_one_line(capsys, tmp_path):
    """Found by the deep CLI fuzz run: `--junit "\\x00"` reached os.path.realpath, which raises ValueError."""
    code, _, err = cestab(capsys, "check", "--quick", "--baseline", tmp_path / "b.json", "--junit", "\x00")
    one_line_error(code, err, "NUL byte")


def test_a_budget_of_the_wrong_type_in_run_json_is_one_line(capsys, tmp_path):
    """Found by the deep CLI fuzz run: a list as options.budget raised TypeError (unhashable) in resume, check and report."""
    (tmp_path / "run.json").write_text(json.dumps({"options": {"adapters": ["numpy.stable"], "budget": [1]}, "state": "running"}))
    code, _, err = cestab(capsys, "run", "--resume", tmp_path)
    one_line_error(code, err, "options.budget must be null or a budget name")
