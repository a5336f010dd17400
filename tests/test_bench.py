"""`cestab bench`: timing agrees with torch.utils.benchmark, bandwidth arithmetic, the schema,
crash isolation, run-folder joins, one-line usage errors."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crashy_adapters  # noqa: F401  (registers crashtest.*: no timing hook)
import crashy_bench_adapters  # noqa: F401  (registers crashtest.bench_*)
import harness
from harness.bench import bandwidth, measure, runner, table
from harness import cli
from harness.adapters import get
from harness.bench.table import BENCH_NAMES, BENCH_STATUSES, bench_frame

QUICK = measure.TimingSpec(min_repeats=3, max_repeats=20, min_time=0.02, max_time=0.2)

#: The columns the report reads (the brief's contract with it).
REQUIRED = (
    "run_id time host device device_name framework framework_version adapter dtype n_rows n_classes pass status "
    "message warmup_seconds compile_seconds repeats median_ms iqr_ms min_ms noisy rows_per_second min_bytes gbps "
    "device_gbps bandwidth_fraction peak_memory_bytes peak_memory_kind samples_ms"
).split()


@pytest.fixture(scope="module")
def crashy_bench(tmp_path_factory):
    ids = ["numpy.stable", "crashtest.bench_segfault", "crashtest.bench_hang", "scipy.log_softmax", "crashtest.segfault"]
    return runner.bench(adapters=ids, shapes=[(64, 500)], out_dir=tmp_path_factory.mktemp("runs"), timing=QUICK,
                         timeout=5.0, bandwidth_bytes=1 << 24)


def test_cpu_copy_bandwidth_is_plausible():
    gbps = bandwidth.cpu_copy_bandwidth(1 << 25, repeats=3)
    assert 0.2 < gbps < 1000  # a CPU core copies between a few hundred MB/s and a few hundred GB/s


def test_bandwidth_arithmetic_for_a_known_measurement():
    bench_case = measure.BenchCase("bfloat16", 1000, 2000)
    m = measure.Measurement("forward_backward", (0.002, 0.004, 0.003), 0.5, 0.0, 10**9, 10**8, "rss")
    common = dict(run_id="r", time="t", host="h", device="cpu", device_name="x", device_gbps=2.0)
    (fwd,) = [r for r in runner.rows_for(get("numpy.stable"), bench_case, [measure.PassResult("forward", "ok", measurement=m)], common)]
    (row,) = runner.rows_for(get("numpy.stable"), bench_case, [measure.PassResult("forward_backward", "ok", measurement=m)], common)
    assert fwd["min_bytes"] == 1000 * 2000 * 2
    assert row["min_bytes"] == 2 * 1000 * 2000 * 2  # read logits once, write the gradient once
    assert row["median_ms"] == pytest.approx(3.0)
    assert row["iqr_ms"] == pytest.approx(1.0)  # numpy percentiles of 2, 3, 4 ms: 2.5 and 3.5
    assert row["min_ms"] == pytest.approx(2.0)
    assert row["gbps"] == pytest.approx(8e6 / 0.003 / 1e9)
    assert row["bandwidth_fraction"] == pytest.approx(8e6 / 0.003 / 1e9 / 2.0)
    assert row["rows_per_second"] == pytest.approx(1000 / 0.003)
    assert row["noisy"] and "33%" in row["message"]
    assert json.loads(row["samples_ms"]) == [2.0, 4.0, 3.0]


def test_schema_has_the_columns_the_report_reads():
    assert set(REQUIRED) <= set(BENCH_NAMES)
    empty = bench_frame([])
    assert list(empty.columns) == list(BENCH_NAMES)


def test_a_crash_or_hang_loses_no_other_rows(crashy_bench):
    df = crashy_bench.set_index(["adapter", "pass"])
    assert len(crashy_bench) == 5 * 2
    assert set(crashy_bench["status"]) <= set(BENCH_STATUSES)
    for adapter in ("numpy.stable", "scipy.log_softmax"):
        for pass_ in ("forward", "forward_backward"):
            row = df.loc[(adapter, pass_)]
            assert row["status"] == "ok"
            assert 0 < row["min_ms"] <= row["median_ms"] < 1000
            assert row["repeats"] == len(json.loads(row["samples_ms"])) >= 3
            assert row["peak_memory_kind"] == "rss" and row["peak_memory_bytes"] >= row["memory_before_bytes"] > 0
            assert row["gbps"] == pytest.approx(row["min_bytes"] / row["median_ms"] / 1e6)
    assert (df.loc["crashtest.bench_segfault", "status"] == "crash").all()
    assert df.loc["crashtest.bench_segfault", "message"].str.contains("SIGSEGV").all()
    assert (df.loc["crashtest.bench_hang", "status"] == "timeout").all()
    assert (df.loc["crashtest.segfault", "status"] == "unsupported").all()
    assert df.loc["crashtest.segfault", "message"].str.contains("no timing hook").all()


def test_run_folder_holds_both_formats_and_run_json(crashy_bench):
    run_dir = Path(crashy_bench.attrs["run_dir"])
    parquet = pd.read_parquet(run_dir / "bench.parquet")
    csv = pd.read_csv(run_dir / "bench.csv")
    assert list(parquet.columns) == list(csv.columns) == list(BENCH_NAMES)
    assert len(parquet) == len(csv) == len(crashy_bench)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["kind"] == "bench" and meta["state"] == "complete" and meta["device_gbps"] > 0
    assert not (run_dir / runner.JOURNAL).exists()


def test_bench_joins_an_accuracy_run_folder(tmp_path):
    acc = harness.run(adapters=["numpy.stable"], dtypes=["float32"], regimes_=["typical"], shapes=[(4, 10)],
                      label_kinds=["index"], corpus=False, out_dir=tmp_path)
    run_dir = Path(acc.attrs["run_dir"])
    df = runner.bench(adapters=["numpy.stable"], shapes=[(32, 100)], run_dir=run_dir, timing=QUICK, bandwidth_bytes=1 << 24)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["state"] == "complete" and meta["bench"]["state"] == "complete"  # the accuracy run's meta is kept
    assert set(df["run_id"]) == set(acc["run_id"])
    joined = pd.read_parquet(run_dir / "results.parquet").merge(pd.read_parquet(run_dir / "bench.parquet"), on=["adapter", "dtype"])
    assert len(joined) == 2 and (joined["status_y"] == "ok").all()


def test_time_budget_marks_the_rest_skipped():
    df = runner.bench(adapters=["numpy.stable"], shapes=[(8, 10)], time_budget=1e-9, timing=QUICK, bandwidth_bytes=1 << 20)
    assert (df["status"] == "skipped").all() and df["median_ms"].isna().all()


def test_default_cases_per_device():
    cpu = runner.bench_cases("cpu")
    assert [(c.dtype, c.n_rows, c.n_classes) for c in cpu] == [("float32", 256, 32000), ("float32", 4096, 32000)]
    cuda = {(c.dtype, c.n_rows, c.n_classes) for c in runner.bench_cases("cuda")}
    assert ("bfloat16", 16384, 256000) in cuda and ("float32", 16384, 256000) not in cuda
    assert ("float32", 8192, 128256) in cuda


def test_batch_is_exact_in_its_dtype_and_deterministic():
    a = measure.BenchCase("bfloat16", 600, 50, seed=3).case()
    b = measure._bench_case.__wrapped__("bfloat16", 600, 50, 3)
    onehot = measure.BenchCase("bfloat16", 600, 50, seed=3).case("onehot")
    assert onehot.logits is a.logits and onehot.label_kind == "onehot" and "/onehot/" in onehot.case_id
    assert a.logits.dtype == b.logits.dtype and str(a.logits.dtype) == "bfloat16"
    assert np.array_equal(a.logits.view(np.uint16), b.logits.view(np.uint16)) and np.array_equal(a.target, b.target)
    assert np.isfinite(a.logits.astype(np.float32)).all() and a.target.max() < 50


@pytest.mark.parametrize(
    "argv, words",
    [
        (["bench", "--shapes", "12"], "bad shape"),
        (["bench", "--shapes", "0x10"], "must be positive"),
        (["bench", "--device", "tpu"], "unknown device"),
        (["bench", "--dtypes", "float8"], "unknown dtype"),
        (["bench", "--run-dir", "/nonexistent/run"], "does not exist (expected a run folder)"),
        (["bench", "--repeats", "0"], "positive integer"),
        (["bench", "--adapters", "nope.nope"], "unknown adapter"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, words):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cestab: error:") and words in err and err.count("\n") == 1


def test_cli_prints_a_compare_table(tmp_path, capsys):
    argv = ["bench", "--adapters", "numpy.naive", "--shapes", "16x64", "--out", str(tmp_path), "--quiet",
            "--repeats", "3", "--min-time", "0.01", "--max-time", "0.1"]
    assert cli.main(argv) == 0
    run_dir = Path(capsys.readouterr().out.strip().split("bench: ")[-1])
    df = pd.read_parquet(run_dir / "bench.parquet")
    assert (df["status"] == "ok").all() and set(df["pass"]) == {"forward", "forward_backward"}
    text = table.format_compare(df)
    assert "numpy.naive" in text and "float32 16x64" in text and "GB/s" in text
