"""Provenance in run.json and beside the report's numbers: the cestab commit (and whether the
tree differed from it), the cestab version, torch's CUDA, Triton and the NVIDIA driver.

Each recorded value is checked against the tool that knows it (git, `torch.version.cuda` in a
process that imports torch, the installed Triton, the kernel module's version file), not
against cestab's own reader of it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from harness.report.write import write_report
from harness.run.runner import run
from harness.store import runfolder

ROOT = Path(__file__).resolve().parent.parent
OLD_RUN = ROOT / "tests" / "data" / "report_runs" / "20261128-070931-s0"  # made before provenance was recorded
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def git(*args, cwd=ROOT) -> str:
    return subprocess.run([GIT, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory) -> Path:
    """A real (tiny) run folder made by this checkout."""
    df = run(adapters=["numpy.stable"], dtypes=["float32"], regimes_=["typical"], shapes=[(4, 10)],
             label_kinds=["index"], corpus=False, isolate=False, budget=None,
             out_dir=tmp_path_factory.mktemp("runs"))
    return Path(df.attrs["run_dir"])


def meta_of(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text(encoding="utf-8"))


@needs_git
def test_run_json_records_the_checkouts_commit_and_dirty_state(fresh_run):
    if Path(git("rev-parse", "--show-toplevel")).resolve() != ROOT:
        pytest.skip("this cestab is not a git checkout's top folder")
    rec = meta_of(fresh_run)["provenance"]
    assert rec["git_commit"] == git("rev-parse", "HEAD")
    assert rec["git_dirty"] is bool(git("status", "--porcelain"))


def test_run_json_records_the_cestab_version_of_pyproject(fresh_run):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert meta_of(fresh_run)["versions"]["cestab"] == declared


def test_run_json_cuda_is_what_torch_says_in_its_own_process(fresh_run):
    if importlib.util.find_spec("torch") is None:
        assert meta_of(fresh_run)["provenance"]["cuda"] == "absent"
        return
    said = subprocess.run([sys.executable, "-c", "import torch; print(torch.version.cuda)"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert meta_of(fresh_run)["provenance"]["cuda"] == ("absent" if said == "None" else said)


def test_run_json_triton_is_the_importable_triton_or_absent(fresh_run):
    said = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"], capture_output=True,
                          text=True).stdout.strip()
    assert meta_of(fresh_run)["provenance"]["triton"] == (said or "absent")


def test_run_json_driver_is_the_kernel_modules_or_absent(fresh_run):
    proc = Path("/proc/driver/nvidia/version")
    recorded = meta_of(fresh_run)["provenance"]["nvidia_driver"]
    if proc.is_file():
        assert recorded in proc.read_text()
    elif shutil.which("nvidia-smi") is None:
        assert recorded == "absent"  # no NVIDIA driver on this machine: nothing to report
    else:
        said = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.split()
        assert recorded == (said[0] if said else "absent")


@pytest.mark.parametrize("text, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
     "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", "550.54.15"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06  Release Build  (dvs-builder@U16)\n",
     "570.124.06"),
])
def test_driver_version_is_read_from_both_kinds_of_kernel_module_file(tmp_path, text, version):
    path = tmp_path / "version"
    path.write_text(text)
    assert runfolder.parse_driver_version(text) == version
    assert runfolder.nvidia_driver(proc_file=path) == version


def test_driver_version_file_without_a_version_names_none():
    assert runfolder.parse_driver_version("NVRM: no module loaded\n") is None


@needs_git
def test_git_state_follows_commits_and_edits_of_a_checkout(tmp_path):
    repo = tmp_path / "checkout"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "a.py").write_text("x = 1\n")
    git("add", "a.py", cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=repo)
    assert runfolder.git_state(repo) == (git("rev-parse", "HEAD", cwd=repo), False)
    (repo / "a.py").write_text("x = 2\n")
    assert runfolder.git_state(repo) == (git("rev-parse", "HEAD", cwd=repo), True)


@needs_git
def test_git_state_is_absent_outside_a_checkouts_top_folder(tmp_path):
    assert runfolder.git_state(tmp_path) == ("absent", None)
    # cestab installed in a site-packages inside some other repository: not that repository's commit
    repo = tmp_path / "other"
    (repo / "site-packages").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    (repo / "f").write_text("")
    git("add", "f", cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=repo)
    assert runfolder.git_state(repo / "site-packages") == ("absent", None)


@pytest.mark.parametrize("field, value, message", [
    ("git_commit", 42, "provenance.git_commit must be a 40-digit hex commit"),
    ("git_commit", "HEAD", "provenance.git_commit must be a 40-digit hex commit"),
    ("git_dirty", "yes", "provenance.git_dirty must be true, false or null"),
    ("cuda", "", "provenance.cuda must be a version string"),
    ("nvidia_driver", "550\n<b>", "provenance.nvidia_driver must be a version string"),
])
def test_bad_provenance_in_run_json_is_one_line_and_exit_2(fresh_run, tmp_path, field, value, message):
    folder = tmp_path / fresh_run.name
    shutil.copytree(fresh_run, folder)
    meta = meta_of(folder)
    meta["provenance"][field] = value
    (folder / "run.json").write_text(json.dumps(meta))
    p = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(folder), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr


def test_report_prints_each_runs_provenance_beside_its_numbers(fresh_run, tmp_path):
    write_report([fresh_run, OLD_RUN], tmp_path, command="cestab report NEW OLD")
    md = (tmp_path / "stability.md").read_text(encoding="utf-8")
    rec = meta_of(fresh_run)["provenance"]
    made_with = md.split("**Made with**")[1].split("\n\n", 2)[1]  # the list right under "which to use"
    new = next(line for line in made_with.splitlines() if line.startswith(f"- `{fresh_run.name}`"))
    assert f"git commit {rec['git_commit']}" in new and "cestab 0.1.0" in new
    for name, key in (("CUDA (torch build)", "cuda"), ("Triton", "triton"), ("NVIDIA driver", "nvidia_driver")):
        assert f"{name} {rec[key]}" in new
    # the older run's run.json has no provenance: said so, never filled in from this checkout
    old = next(line for line in made_with.splitlines() if line.startswith(f"- `{OLD_RUN.name}`"))
    assert "git commit, CUDA (torch build), Triton, NVIDIA driver: not recorded" in old
    assert rec["git_commit"] not in old and "started 2026-11-28" in old
    assert f"**Older runs:** `{OLD_RUN.name}` (started 2026-11-28, git commit not recorded" in md
    # the older run has no attainable ratios, the fresh one does: its laxer verdicts are named
    older = md.split("**Older runs:**")[1].split("\n")[0]
    assert ("no `lossy` status" in older) == ("loss_att_ratio" in pd.read_parquet(fresh_run / "results.parquet"))
    # and the environment table holds the same facts, one row each
    env = md.split("## Provenance")[1]
    assert f"| git commit | {rec['git_commit']} ({'tree differed from it' if rec['git_dirty'] else 'clean tree'}) |" in env
    assert f"| NVIDIA driver | {rec['nvidia_driver']} | not recorded |" in env


def test_report_of_one_run_has_no_older_run_warning(fresh_run, tmp_path):
    write_report([fresh_run], tmp_path, command="cestab report NEW")
    md = (tmp_path / "stability.md").read_text(encoding="utf-8")
    assert "Older runs" not in md and "not recorded" not in md
