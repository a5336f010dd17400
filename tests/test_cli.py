"""The `cestab` command: a working run, and one-line errors with exit code 2 on bad input."""

import re
import subprocess
import sys
from pathlib import Path

import pytest


def cestab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_run_prints_summary_and_writes_the_folder(tmp_path):
    p = cestab("run", "--adapters", "numpy.stable,numpy.naive", "--dtypes", "float32", "--shapes", "4x10", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "numpy.naive" in p.stdout and "nonfinite" in p.stdout and "loss_ulps_max" in p.stdout
    run_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("results: "))
    assert (run_dir / "results.parquet").is_file() and run_dir.parent == tmp_path
    found = {p.name for p in (run_dir / "worst").iterdir()}  # the default quick search: worst first, then -2, -3
    assert "worst-numpy.naive-float32.npz" in found and "worst-numpy.stable-float32.npz" in found
    assert all(re.fullmatch(r"worst-numpy\.(naive|stable)-float32(-[23])?\.npz", name) for name in found), found
    assert "search:" in p.stdout and "rows per adapter x dtype" in p.stdout  # the summary says how much was searched


def test_list_shows_numpy_adapters():
    p = cestab("list")
    assert p.returncode == 0
    assert "numpy.naive" in p.stdout and "scipy.log_softmax" in p.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--adapters", "numpy.nope"], "unknown adapter 'numpy.nope'"),
        (["run", "--dtypes", "float8"], "unknown dtype 'float8'"),
        (["run", "--regimes", "calm"], "unknown regime 'calm'"),
        (["run", "--label-kinds", "hard"], "unknown label kind 'hard'"),
        (["run", "--shapes", "10by10"], "bad shape '10by10'"),
        (["run", "--shapes", "0x10"], "bad shape 0x10"),
        (["run", "--seed", "-1"], "seed must be a non-negative integer"),
        (["run", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "--timeout", "0"], "timeout must be positive"),
        (["run", "--adapter", "no_such_module:fn"], "cannot import adapter module 'no_such_module'"),
        (["run", "--resume", "/nonexistent/run"], "does not exist (expected a run folder)"),
        (["run", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["run", "--ray-address", "auto"], "--ray-address and --ray-chunk need --executor ray"),
        (["run", "--executor", "dask"], "invalid choice: 'dask'"),
        (["run", "--jobs", "0"], "jobs must be a positive integer"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    with_out = args[0] == "run" and "--resume" not in args  # --resume takes no --out: it finishes its own folder
    p = cestab(*args, "--out", str(tmp_path / "runs")) if with_out else cestab(*args)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("cestab: error: ")
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unwritable_output_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    p = cestab("run", "--adapters", "numpy.stable", "--dtypes", "float32", "--shapes", "2x3", "--out", str(blocker / "runs"))
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "cannot write the run folder" in p.stderr and "Traceback" not in p.stderr
    assert blocker.read_text() == "not a folder"


def test_list_names_a_missing_framework_and_keeps_the_others():
    # A framework that is not installed: its adapters are absent with one line saying why.
    code = (
        "import sys\n"
        "from harness import adapters, cli\n"
        "class NoSuch(adapters.Framework):\n"
        "    name, package = 'nosuchfw', 'nosuchfw'\n"
        "adapters.register_framework(NoSuch())\n"
        "adapters.register(adapters.Adapter('nosuchfw.ce', 'nosuchfw', print))\n"
        "sys.exit(cli.main(['list']))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "nosuchfw.*" in p.stdout and "nosuchfw is not installed (pip install 'cestab[nosuchfw]')" in p.stdout
    assert "numpy.stable" in p.stdout and "torch.cross_entropy" in p.stdout
    assert "nosuchfw.ce" not in p.stdout  # its adapters are gone with it


def test_list_shows_versions_dtypes_labels_and_devices():
    p = cestab("list")
    line = next(l for l in p.stdout.splitlines() if l.startswith("torch.cross_entropy "))
    assert "torch 2." in line and "bfloat16" in line and "smoothing+ignore" in line and "cuda" in line
