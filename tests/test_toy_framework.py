"""Adding a framework is one file: tests/toy_framework.py, with no other edit, runs through
`cestab run`, `cestab bench` and `cestab check` (a fresh baseline, then the quick run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

TESTS = Path(__file__).parent


def cestab(*args):
    env = dict(os.environ, PYTHONPATH=str(TESTS))  # where the one new file lives
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env)


def test_a_one_file_framework_runs_benches_and_is_gated(tmp_path):
    p = cestab("run", "--adapter", "toy_framework", "--adapters", "toy.stable,numpy.stable", "--dtypes", "float32,bfloat16",
               "--regimes", "typical,large_offset", "--shapes", "8x10", "--label-kinds", "index", "--budget", "none",
               "--no-corpus", "--out", str(tmp_path / "runs"), "--quiet")
    assert p.returncode == 0, p.stderr
    run_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("results: "))
    df = pd.read_parquet(run_dir / "results.parquet")
    toy = df[df["adapter"] == "toy.stable"]
    assert len(toy) == 4 and (toy["status"] == "ok").all(), toy[["case_id", "status", "message"]]
    assert (toy["framework"] == "toy").all() and (toy["framework_version"] != "").all()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["adapters"]["toy.stable"]["framework"] == "toy"

    p = cestab("bench", "--adapter", "toy_framework", "--adapters", "toy.stable", "--shapes", "64x100",
               "--repeats", "3", "--min-time", "0.01", "--max-time", "0.1", "--out", str(tmp_path / "bench"))
    assert p.returncode == 0, p.stderr
    bench_dir = Path(p.stdout.strip().split("bench: ")[-1])
    b = pd.read_parquet(bench_dir / "bench.parquet")
    assert set(b["pass"]) == {"forward", "forward_backward"} and (b["status"] == "ok").all(), b[["status", "message"]]
    assert (b["median_ms"] > 0).all()

    baseline = tmp_path / "baseline.json"
    p = cestab("check", "--baseline", str(baseline), str(run_dir), "--update-baseline")
    assert p.returncode == 0, p.stderr
    groups = json.loads(baseline.read_text())["groups"]
    assert {g["regime"] for g in groups if g["adapter"] == "toy.stable"} == {"typical", "large_offset"}
    p = cestab("check", "--baseline", str(baseline), "--quick", "--adapter", "toy_framework", "--quiet",
               "--out", str(tmp_path / "quick"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 regressions" in p.stdout and f"{len(groups)} unchanged" in p.stdout
    quick_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("results: "))
    quick = pd.read_parquet(quick_dir / "results.parquet")
    assert (quick.loc[quick["adapter"] == "toy.stable", "status"] == "ok").sum() == 4


def test_the_toy_framework_refuses_cuda_in_its_own_words():
    sys.path.insert(0, str(TESTS))
    try:
        import toy_framework
        from harness.adapters.workers import call_adapter
        from harness.inputs.regimes import make_case
    finally:
        sys.path.remove(str(TESTS))
    case = make_case("typical", "float32", (2, 5), "index", 0)
    from harness.adapters import get

    assert toy_framework.FRAMEWORK.name == "toy"
    attempt = call_adapter(get("toy.stable"), case, "cuda")
    assert attempt.status == "unsupported" and attempt.message == "toy cannot run on cuda"
