"""The pytest plugin, used as another project would: a user's test file, a pytest subprocess.

The plugin comes in through the `pytest11` entry point of the installed package (after
`pip install -e .`), so the user's test file needs no import of cestab at all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from harness.testing import comparison

USER_TESTS = '''
import torch
import torch.nn.functional as F


def softmax_then_log(logits, labels):
    """The hand-written loss a kernel author might start from."""
    onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return -(torch.softmax(logits, -1).log() * onehot).sum(-1)


def test_softmax_then_log_is_no_worse(cestab):
    cestab.assert_no_worse_than(softmax_then_log, baseline="torch.cross_entropy", dtypes=("float32",))


def test_cross_entropy_itself_is_no_worse(cestab):
    table = cestab.assert_no_worse_than(
        lambda z, t: F.cross_entropy(z, t, reduction="none"), baseline="torch.cross_entropy", dtypes=("float32",)
    )
    assert table["compared"].sum() >= 30 and not table["worse"].any()
    assert set(table["source"]) == {"regime", "corpus"}
'''


def test_plugin_fails_a_worse_kernel_with_the_mismatch_report_and_passes_the_baseline(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "test_user_kernel.py").write_text(textwrap.dedent(USER_TESTS))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    out = p.stdout
    assert p.returncode == 1, out[-3000:]
    assert "1 failed, 1 passed" in out
    assert "FAILED test_user_kernel.py::test_softmax_then_log_is_no_worse" in out
    assert "cestab: test_user_kernel:softmax_then_log is less accurate than torch.cross_entropy on" in out
    # the same report as cestab's own tests: tag, tolerance, counts, elements, repro line
    assert "Not within tolerance: |computed - true| <= 4 ulp(true) + 4 u scale  (float32" in out
    assert "[test_user_kernel:softmax_then_log float32 " in out and "Mismatched elements: " in out
    # the baseline's own grade: within the textbook bound (ok, or lossy against the attainable one)
    assert re.search(r"worse than torch\.cross_entropy \((ok|lossy), ", out), out[-3000:]
    repro = next(line for line in out.splitlines() if "Repro: cestab repro " in line)
    assert repro.rstrip().endswith(
        "--adapters test_user_kernel:softmax_then_log,torch.cross_entropy --adapter test_user_kernel:softmax_then_log"
    )

    # The repro line replays the candidate's failure next to the baseline's success.
    args = repro.split("Repro: cestab ")[1].split()
    r = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    statuses = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines() if line.startswith(("test_user", "torch."))}
    assert statuses["torch.cross_entropy"] in ("ok", "lossy"), r.stdout  # lossy on a tiny loss: within the textbook bound
    assert statuses["test_user_kernel:softmax_then_log"] in ("nonfinite", "inaccurate")


def test_verdict_ranks_statuses_then_ratios():
    ok, nonfin = ({"status": s} for s in ("ok", "nonfinite"))
    assert comparison.verdict(nonfin, ok, 1.0).startswith("status nonfinite")
    assert comparison.verdict(ok, nonfin, 1.0) == ""  # better is never worse
    assert comparison.verdict({"status": "ok", "loss_tol_ratio": 0.9}, {"status": "ok", "loss_tol_ratio": 0.0}, 1.0) == ""
    worse = {"status": "inaccurate", "grad_tol_ratio": 25.0}
    base = {"status": "inaccurate", "loss_tol_ratio": 10.0}
    assert "25x tolerance where the baseline is 10x" in comparison.verdict(worse, base, 1.0)
    assert comparison.verdict(worse, base, 2.0) == ""  # within the stated margin
    assert comparison.verdict({"status": "unsupported"}, ok, 1.0) == ""
    assert comparison.verdict({"status": "silent"}, {"status": "rejected"}, 1.0).startswith("status silent")


def test_candidate_forms():
    pytest.importorskip("torch")
    import torch.nn.functional as F

    from harness.errors import UsageError

    def loss(z, t):
        return F.cross_entropy(z, t, reduction="none")

    # F is local here, so this module's globals name no framework: say which
    with pytest.raises(UsageError, match="cannot tell the framework"):
        comparison.as_adapter(loss)
    adapter, spec = comparison.as_adapter(loss, framework="torch")
    assert adapter.framework == "torch" and spec is None  # a closure has no importable name
    adapter, spec = comparison.as_adapter("numpy.stable")
    assert adapter.id == "numpy.stable" and spec is None
    with pytest.raises(UsageError):
        comparison.as_adapter(42)


def test_plugin_imports_no_framework_at_import_time():
    """Loaded by every pytest session in the environment: `harness` (numpy, pandas) only."""
    code = "import sys, harness.testing.pytest_plugin; print(sorted(m for m in ('torch', 'jax', 'tensorflow', 'scipy', 'hypothesis') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
