"""Stability tests: hypothesis-drawn extreme inputs against every available adapter x dtype.

Each adapter x dtype gets a few derandomized examples from `harness.inputs.strategies.cases` (the
same examples on every machine), run in this process. A result outside the tolerance table
fails the test with the mismatch report (`harness.testing.mismatch`) and its `cestab repro` line,
unless `harness/testing/known_failures.json` lists it with its public source: then the test is
reported as an expected failure (XFAIL, with the entries in the reason), never skipped.

The deep run (`pytest -m deep tests/test_stability.py`) uses the `deep` hypothesis profile
(random, not derandomized), far more examples and any shape up to 64k elements.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from harness.run import judge
from harness.adapters import registry
from harness.store import casefile
from harness.numerics import dtypes
from harness.testing import known_failures
from harness.testing import mismatch
from harness.numerics import reference
from harness.inputs import regimes
from harness.inputs import strategies as S
from harness.adapters import Adapter, Output
from harness.testing.outcomes import outcomes

#: The CI budget: a few examples per adapter x dtype on two shapes (JAX and XLA compile once
#: per shape): V = 2, and a 3-D (2, 3, 10) batch.
CI_EXAMPLES = 3
CI_SHAPES = ((1, 2), (2, 3, 10))
#: The deep budget: any shape up to this many elements.
DEEP_EXAMPLES = 150
DEEP_MAX_ELEMENTS = 1 << 16

#: cestab's own adapters (their sources are the built-in implementation modules): plug-ins
#: that other test modules register in this process (crashing, slow, planted) are test data.
ADAPTERS = sorted((a for a in registry.all_adapters().values() if registry.source_of(a.id).startswith("implementations.")),
                  key=lambda a: a.id)
PAIRS = [pytest.param(a, d, id=f"{a.id}-{d}") for a in ADAPTERS for d in a.dtypes]


def check_strategies(adapter: Adapter, dtype: str, profile: str, examples: int, shape_pool, max_elements, folder):
    """Run the drawn cases; raise the mismatch report on an unexpected failure, return the
    known failures seen ({entry: count})."""
    seen: dict = {}
    cases = S.cases(
        dtype=dtype,
        label_kinds=adapter.label_kinds,
        allow_ignored=adapter.supports_ignore,
        shape_pool=shape_pool,
        max_elements=max_elements,
    )

    @settings(parent=settings.get_profile(profile), max_examples=examples, database=None, print_blob=False)
    @given(case=cases)
    def drawn(case):
        outcome = outcomes(case, [adapter])[adapter.id]
        if outcome.status not in known_failures.FAILURES:
            return
        entry = known_failures.match(case, adapter.id, outcome.row)
        if entry is None:
            raise AssertionError("\n" + mismatch.report(case, adapter.id, outcome.row, outcome.output, folder=folder))
        seen[entry] = seen.get(entry, 0) + 1

    drawn()
    return seen


def expect_known(seen: dict) -> None:
    """Report the known failures met: the test is an expected failure naming each source."""
    if seen:
        listed = "; ".join(f"{n}x {entry.label()}" for entry, n in seen.items())
        pytest.xfail(f"known failures only: {listed}")


@pytest.mark.parametrize("adapter,dtype", PAIRS)
def test_strategies(adapter, dtype, tmp_path):
    seen = check_strategies(adapter, dtype, "ci", CI_EXAMPLES, CI_SHAPES, S.MAX_ELEMENTS, tmp_path)
    expect_known(seen)


@pytest.mark.deep
@pytest.mark.parametrize("adapter,dtype", PAIRS)
def test_strategies_deep(adapter, dtype, request):
    if "deep" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("deep stability run: select it with pytest -m deep tests/test_stability.py")
    seen = check_strategies(adapter, dtype, "deep", DEEP_EXAMPLES, None, DEEP_MAX_ELEMENTS, mismatch.DEFAULT_FOLDER)
    expect_known(seen)


# --- the mismatch report itself, on a planted wrong gradient -------------------------------


def planted_case():
    return regimes.make_case("typical", "float32", (4, 10), "index", 0)


PLANTED_ULPS = 200  # far outside float32's tolerance for these elements
PLANTED_AT = (2, 7)
NAN_AT = (1, 3)


def _planted(case, device):
    """numpy.stable's output, gradient element PLANTED_AT moved PLANTED_ULPS ulps up and
    element NAN_AT made NaN: the regression a kernel change could bring."""
    out = registry.get("numpy.stable").compute(case, device)
    grad = out.grad.copy()
    grad[PLANTED_AT] = S.step(float(grad[PLANTED_AT]), PLANTED_ULPS, dtypes.get(case.dtype))[()]
    grad[NAN_AT] = np.nan
    return Output(out.loss, grad)


PLANTED = Adapter("planted.wrong_grad", "numpy", _planted, "numpy.stable with a planted gradient error")


def test_mismatch_report_planted_gradient(tmp_path):
    case = planted_case()
    ref = reference.loss_and_grad(case)
    outcome = outcomes(case, [PLANTED])[PLANTED.id]
    assert outcome.status == "nonfinite"
    assert known_failures.match(case, PLANTED.id, outcome.row) is None

    # The element list agrees with the results row: same metrics, same tolerance table.
    q = {x.name: x for x in mismatch.quantities(ref, outcome.output.loss, outcome.output.grad, case.dtype)}
    assert (q["loss"].n, q["loss"].n_bad) == (4, 0)
    assert (q["grad"].n, q["grad"].n_bad, q["grad"].n_nonfinite) == (40, 2, 1)
    assert q["grad"].n_bad == outcome.row["n_grad_bad"]
    worst = q["grad"].worst
    assert [el.index for el in worst] == [NAN_AT, PLANTED_AT]  # NaN first, then the planted element
    assert np.isnan(worst[0].computed) and worst[0].ratio == np.inf
    assert PLANTED_ULPS - 2 <= worst[1].ulps <= PLANTED_ULPS + 2  # numpy.stable's own error is about 1 ulp
    assert worst[1].true == float(ref.grad[PLANTED_AT]) and worst[1].ratio > 1

    text = mismatch.report(case, PLANTED.id, outcome.row, outcome.output, ref=ref, folder=tmp_path,
                           repro_plugins=["test_stability:PLANTED"])
    lines = text.splitlines()
    assert lines[0].startswith("Not within tolerance: |computed - true| <= 4 ulp(true) + 4 u scale  (float32: u = 2**-24")
    assert "[planted.wrong_grad float32 grad] status nonfinite" in lines
    assert "Mismatched elements: 2 / 40 (5%)" in lines
    assert "Non-finite where the truth is finite: 1" in lines
    assert not any("float32 loss]" in line for line in lines)  # the loss is fine: not reported
    row_nan = next(line for line in lines if line.strip().startswith("(1, 3)"))
    row_planted = next(line for line in lines if line.strip().startswith("(2, 7)"))
    assert "nan" in row_nan and "inf" in row_nan
    assert {str(PLANTED_ULPS + k) for k in range(-2, 3)} & set(row_planted.split()[3:])  # the ulps column
    assert lines[-2].startswith("Case: typical/float32/4x10/index/s0")
    repro = lines[-1]
    assert repro.startswith("Repro: cestab repro ") and repro.endswith(
        "--adapters planted.wrong_grad --adapter test_stability:PLANTED"
    )

    # The saved case is bit-exact, and the repro line replays it: the planted error again.
    path = Path(repro.split()[3])
    saved, info = casefile.load(path)
    assert saved.logits.tobytes() == case.logits.tobytes() and (saved.target == case.target).all()
    assert info["adapter"] == "planted.wrong_grad" and info["status"] == "nonfinite"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    args = repro.split()[2:]  # after "Repro: cestab"
    p = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    row = next(line for line in p.stdout.splitlines() if line.startswith("planted.wrong_grad"))
    assert row.split()[1] == "nonfinite"
    assert "0 of 4 losses and 1 of 40 gradient elements non-finite" in row


def test_mismatch_report_loss_rows_and_status_only(tmp_path):
    """A wrong loss is listed by (row,); an adapter that raised has its message instead."""
    case = planted_case()
    ref = reference.loss_and_grad(case)
    out = registry.get("numpy.stable").compute(case, "cpu")
    loss = out.loss.copy()
    loss[3] = np.float32(loss[3]) * np.float32(1.5)
    row = judge.accuracy(ref, loss, out.grad, case.dtype)
    text = mismatch.report(case, "numpy.stable", row, Output(loss, out.grad), ref=ref, folder=tmp_path)
    assert "[numpy.stable float32 loss] status inaccurate" in text
    assert "Mismatched elements: 1 / 4 (25%)" in text
    assert any(line.strip().startswith("(3,)") for line in text.splitlines())
    text = mismatch.report(case, "x.raises", {"status": "error", "message": "ValueError: boom"}, folder=tmp_path)
    assert "[x.raises float32] status error: ValueError: boom" in text
    assert text.splitlines()[-1].startswith("Repro: cestab repro ")


def test_known_failures_file_is_well_formed():
    entries = known_failures.load()
    assert len(entries) >= 10
    for e in entries:
        assert e.source.startswith("https://") or "Higham" in e.source
        assert e.why.endswith(".") and e.statuses and e.quantities
        known = {f for feats in S.PIECES.values() for f in feats} | set(known_failures.DATA_FEATURES)
        known |= {f"label.{k}" for k in ("index", "onehot", "soft", "smoothing")}
        known |= {f"V>={t}" for t in known_failures.CLASS_THRESHOLDS}
        assert set(e.when) <= known, e.when
        framework = e.adapter.split(".")[0]
        if framework in registry.unavailable():  # its adapters are absent here: nothing to match
            continue
        assert any(known_failures.fnmatch.fnmatchcase(i, e.adapter) for i in registry.all_adapters()), e.adapter


def test_known_failures_match_on_features_not_ratios():
    entries = known_failures.load()
    naive = regimes.make_case("large_offset", "float32", (4, 10), "index", 0)
    assert "exp_overflow" in known_failures.features(naive)
    row = {"status": "nonfinite", "n_loss_nonfinite": 4, "n_grad_nonfinite": 40}
    assert known_failures.match(naive, "numpy.naive", row, entries).source.startswith("Blanchard")
    assert known_failures.match(naive, "numpy.stable", row, entries) is None  # the stable one must not fail there
    typical = planted_case()
    assert known_failures.match(typical, "numpy.naive", row, entries) is None  # no feature explains it


def test_bad_known_failures_file_is_a_usage_error(tmp_path):
    from harness.errors import UsageError

    bad = tmp_path / "kf.json"
    bad.write_text('[{"adapter": "x", "dtypes": ["float8"], "when": [], "statuses": ["nonfinite"], '
                   '"quantities": ["loss"], "source": "https://x", "why": "y."}]')
    with pytest.raises(UsageError, match="unknown"):
        known_failures.load(bad)
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="cannot read known failures"):
        known_failures.load(bad)
