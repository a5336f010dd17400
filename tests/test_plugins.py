"""Users' own implementations plug in without editing cestab: --adapter and entry points."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

TESTS = Path(__file__).parent


def cestab(*args, extra_path=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, extra_path), str(TESTS)]))
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env)


def test_user_torch_and_jax_functions_run_and_are_judged(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    p = cestab(
        "run", "--adapter", "user_losses_torch:fused_ce", "--adapter", "user_losses_torch:unshifted_ce@torch",
        "--adapter", "user_losses_jax:gather_ce", "--dtypes", "float32", "--regimes", "typical,large_offset",
        "--shapes", "8x10", "--label-kinds", "index", "--budget", "none", "--out", str(tmp_path), "--quiet",
    )
    assert p.returncode == 0, p.stderr
    run_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("results: "))
    df = pd.read_parquet(run_dir / "results.parquet").set_index(["adapter", "regime"])
    assert set(df.index.get_level_values(0)) == {"user_losses_torch:fused_ce", "user_losses_torch:unshifted_ce", "user_losses_jax:gather_ce"}
    assert df.loc[("user_losses_torch:fused_ce", "typical"), "status"] == "ok"
    # logsumexp(z) - z_t cancels when every logit carries a huge shared offset: a finding
    # about the user's kernel (optax's integer-label loss has the same flaw).
    assert df.loc[("user_losses_torch:fused_ce", "large_offset"), "status"] == "inaccurate"
    assert df.loc[("user_losses_torch:fused_ce", "large_offset"), "loss_tol_ratio"] > 1e3
    assert df.loc[("user_losses_jax:gather_ce", "typical"), "status"] == "ok"
    assert df.loc[("user_losses_torch:unshifted_ce", "typical"), "status"] == "ok"
    assert df.loc[("user_losses_torch:unshifted_ce", "large_offset"), "status"] == "nonfinite"  # exp overflow
    assert (df["framework"].loc[["user_losses_torch:fused_ce"]] == "torch").all()


def test_a_function_of_no_known_framework_needs_an_explicit_one(tmp_path):
    # A plain function that refers to no framework cestab can differentiate (numpy has no
    # autodiff): cestab cannot tell how to take its gradient, and says which suffixes exist.
    (tmp_path / "user_losses_plain.py").write_text(
        "import numpy as np\n\ndef no_framework(z, t):\n    return np.log(np.exp(z).sum(-1))\n")
    p = cestab("run", "--adapter", "user_losses_plain:no_framework", extra_path=[tmp_path])
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "cannot tell the framework of user_losses_plain:no_framework" in p.stderr and "@torch" in p.stderr
    p = cestab("run", "--adapter", "user_losses_plain:no_framework@numpy", extra_path=[tmp_path])
    assert p.returncode == 2 and "unknown framework 'numpy'" in p.stderr and "torch" in p.stderr


def test_ambiguous_framework_is_a_usage_error(tmp_path):
    (tmp_path / "two_frameworks.py").write_text("import numpy\nimport torch\nimport jax\n\ndef loss(z, t):\n    return z\n")
    p = cestab("run", "--adapter", "two_frameworks:loss", extra_path=[tmp_path])
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "cannot tell the framework" in p.stderr


def test_entry_point_adapters_appear_in_list(tmp_path):
    pytest.importorskip("torch")
    dist = tmp_path / "kernels_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kernels-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cestab.adapters]\nfused = user_losses_torch:fused_ce@torch\n")
    p = cestab("list", extra_path=[tmp_path])
    assert p.returncode == 0, p.stderr
    line = next(l for l in p.stdout.splitlines() if l.startswith("user_losses_torch:fused_ce "))
    assert "torch" in line and "index" in line
