"""The gate's portable environment (harness/gate/portable.py): workers of a gate run get
AVX2-level kernels in every framework, and nothing leaks out of the block. (Their one
thread is every worker's budget, adapters/threads.py: test_rowsearch.py tests it.)"""

import importlib
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from harness.gate import check, portable

PROBE = """
import json, torch
from numpy._core._multiarray_umath import __cpu_features__ as f
print(json.dumps({"isa": torch.backends.cpu.get_cpu_capability(),
                  "numpy_avx512": [k for k in ("X86_V4", "AVX512_ICL", "AVX512_SPR") if f.get(k)]}))
"""


def test_a_worker_started_in_the_pinned_block_runs_avx2_kernels():
    pytest.importorskip("torch")
    with portable.pinned():
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"isa": "AVX2", "numpy_avx512": []}


def test_the_pinned_block_restores_the_environment(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    before = dict(os.environ)
    with portable.pinned() as env:
        assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2"
        assert os.environ["XLA_FLAGS"].split() == ["--xla_dump_to=/nowhere", *portable.XLA]  # appended, kept
        assert env["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert dict(os.environ) == before


def test_the_gates_quick_run_starts_its_workers_inside_the_pinned_environment(monkeypatch, tmp_path):
    seen = {}

    def fake_run(**kwargs):  # stands in for the runner only (no framework is replaced)
        seen.update({k: os.environ.get(k) for k in portable.FIXED})
        folder = tmp_path / "run"
        folder.mkdir()
        df = pd.DataFrame()
        df.attrs["run_dir"] = str(folder)
        return df

    runner = importlib.import_module("harness.run.runner")  # harness.run is also a function's name
    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(check, "read_run", lambda d: (pd.DataFrame(), {"run_dir": d}))
    _, meta = check.quick_run(dict(check.QUICK, adapters=["numpy.stable"]), out_dir=str(tmp_path))
    assert seen == portable.FIXED
    assert meta["portable_environment"]["ATEN_CPU_CAPABILITY"] == "avx2"
