"""The CI gate (`cestab check`): planted regressions are caught, an identical rerun is green,
bad baselines are one-line usage errors, and the reports (terminal, JUnit, job summary,
rewritten baseline) are what CI systems read.

The planted regressions are `tests/regression_adapters.py`: numpy.stable with its gradient
moved by 8 ulps, and numpy.stable with a NaN loss on `near_ties`; each is judged against a
baseline of the honest numpy.stable through `--compare-as`.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import harness
from harness.gate import baseline as baseline_file
from harness.gate import check
from harness.gate import checkreport
from harness.store import columns
from harness.cli import main
from harness.numerics.statuses import STATUSES

TESTS = Path(__file__).parent
REGIMES = ["typical", "near_ties", "large_offset"]
SMALL = dict(dtypes=["float32", "bfloat16"], regimes_=REGIMES, shapes=[(16, 10)], label_kinds=["index", "soft"], corpus=False, isolate=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders: the honest baseline run, an identical rerun, and the planted regressions."""
    out = tmp_path_factory.mktemp("runs")
    honest = harness.run(adapters=["numpy.stable", "numpy.naive"], out_dir=out, **SMALL)
    rerun = harness.run(adapters=["numpy.stable", "numpy.naive"], out_dir=out, **SMALL)
    planted = harness.run(plugins=["regression_adapters:GRAD", "regression_adapters:NAN"], out_dir=out, **SMALL)
    return {k: df.attrs["run_dir"] for k, df in (("honest", honest), ("rerun", rerun), ("planted", planted))}


@pytest.fixture(scope="module")
def base(runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("baseline") / "baseline.json"
    assert main(["check", "--baseline", str(path), runs["honest"], "--update-baseline"]) == 0
    return path


def cli(capsys, *args):
    code = main(["check", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_identical_rerun_is_green(runs, base, capsys):
    code, out, err = cli(capsys, "--baseline", base, runs["rerun"])
    assert code == 0, out + err
    gate = check.gate(base, run_dir=runs["rerun"], rtol=0, slack=0)  # deterministic: no allowance needed
    assert set(gate.report["verdict"]) == {"same"}
    assert len(gate.report) == 2 * 2 * 3  # adapters x dtypes x regimes
    assert "0 regressions" in out


def test_gradient_off_by_a_few_ulps_is_caught(runs, base, capsys):
    code, out, _ = cli(capsys, "--baseline", base, runs["planted"], "--compare-as", "regressiontest.grad_ulps=numpy.stable")
    assert code == 1
    report = check.gate(base, run_dir=runs["planted"], aliases={"regressiontest.grad_ulps": "numpy.stable"}).report
    judged = report[report["adapter"] == "numpy.stable"].set_index(["dtype", "regime"])
    assert (judged["verdict"] == "regression").all(), judged[["verdict", "why"]]
    # The loss is untouched: only the gradient (ulps or status) explains each regression.
    assert np.allclose(judged["now_loss_ulps"], judged["base_loss_ulps"], rtol=1e-3)  # the baseline keeps 4 digits
    assert judged["why"].str.contains("grad |status ok -> inaccurate").all()
    worse = judged.loc[("float32", "large_offset")]
    assert worse["now_grad_ulps"] > check.allowance(worse["base_grad_ulps"], 0.5, 2)
    assert "regression  numpy.stable" in out and "float32" in out
    # The other planted adapter is reported as new, not judged.
    assert set(report.loc[report["adapter"] == "regressiontest.nan_near_ties", "verdict"]) == {"new"}


def test_nan_in_one_regime_is_caught_in_that_regime_only(runs, base):
    report = check.gate(base, run_dir=runs["planted"], aliases={"regressiontest.nan_near_ties": "numpy.stable"}).report
    judged = report[report["adapter"] == "numpy.stable"].set_index(["dtype", "regime"])["verdict"]
    assert set(judged[judged == "regression"].index) == {("float32", "near_ties"), ("bfloat16", "near_ties")}
    assert set(judged.drop(index=[("float32", "near_ties"), ("bfloat16", "near_ties")])) == {"same"}
    row = report[(report["regime"] == "near_ties") & (report["dtype"] == "float32") & (report["adapter"] == "numpy.stable")].iloc[0]
    # One NaN loss per case: index and soft labels give 2 cases.
    assert row["base_nonfinite"] == 0 and row["now_nonfinite"] == 2
    assert "status ok -> nonfinite" in row["why"] and "(baseline had none)" in row["why"]


def test_allowance_is_rtol_and_slack_in_ulps():
    def one(loss_ulps, loss_tol=None):
        return {"adapter": "a", "dtype": "float32", "regime": "r", "framework": "numpy", "cases": 1, "worst_status": "ok",
                "statuses": {"ok": 1}, "loss_ulps": loss_ulps, "grad_ulps": 1.0, "loss_tol": loss_tol, "grad_tol": None, "loss_att": None, "grad_att": None,
                "nonfinite": 0, "failed": 0}

    import pandas as pd

    base = {"groups": [one(2.0)], "versions": {}}
    for now, verdict in ((5.0, "same"), (5.01, "regression"), (0.0, "same"), (float("inf"), "regression")):
        assert check.compare(base, pd.DataFrame([one(now)]), {})["verdict"].iloc[0] == verdict, now
    assert check.compare({"groups": [one(12.0)], "versions": {}}, pd.DataFrame([one(6.6)]), {})["verdict"].iloc[0] == "improved"
    assert check.compare(base, pd.DataFrame([one(2.0)]), {}, rtol=0, slack=0)["verdict"].iloc[0] == "same"
    assert check.compare(base, pd.DataFrame([one(2.5)]), {}, rtol=0, slack=0)["verdict"].iloc[0] == "regression"
    # The tolerance ratio must grow by the same allowance (slack 2 ulps = 0.5 of float32's 4):
    # a doubling of an ill-conditioned element's ulps at 0.3 -> 0.58 of the tolerance is CPU noise.
    noisy = {"groups": [one(100.0, 0.3)], "versions": {}}
    assert check.compare(noisy, pd.DataFrame([one(200.0, 0.58)]), {})["verdict"].iloc[0] == "same"
    assert check.compare(noisy, pd.DataFrame([one(200.0, 0.96)]), {})["verdict"].iloc[0] == "regression"
    assert check.compare(noisy, pd.DataFrame([one(152.0, 0.96)]), {})["verdict"].iloc[0] == "same"


def test_severity_orders_every_status():
    assert set(check.SEVERITY) == set(STATUSES)
    assert check.worst_status({"ok": 3, "undefined": 1}) == "undefined"
    assert check.worst_status({"ok": 3, "unsupported": 1, "inaccurate": 1}) == "inaccurate"
    assert check.SEVERITY["silent"] > check.SEVERITY["rejected"] == check.SEVERITY["ok"]
    assert check.SEVERITY["crash"] > check.SEVERITY["error"] > check.SEVERITY["nonfinite"]


def test_improvement_is_a_stale_baseline_not_a_failure(runs, tmp_path, capsys):
    df, meta = check.read_run(runs["planted"])
    df = df[df["adapter"] == "regressiontest.nan_near_ties"].assign(adapter="numpy.stable")
    path = tmp_path / "worse.json"
    baseline_file.write(path, baseline_file.make(check.aggregate(df).to_dict("records"), meta, check.options_of(meta)))
    code, out, _ = cli(capsys, "--baseline", path, runs["honest"])
    assert code == 0
    assert "improved" in out and "stale" in out and "--update-baseline" in out


def test_missing_adapter_is_reported_and_fails_only_when_strict(runs, base, capsys):
    df, meta = check.read_run(runs["honest"])
    gate = check.gate(base, run_dir=runs["honest"])
    assert gate.exit_code == 0
    # A run without numpy.naive: its groups are missing.
    only_stable = check.compare(baseline_file.load(base), check.aggregate(df[df["adapter"] == "numpy.stable"]),
                                dict(meta, adapters={"numpy.stable": {}}))
    missing = only_stable[only_stable["verdict"] == "missing"]
    assert set(missing["adapter"]) == {"numpy.naive"} and (missing["why"] == "adapter not in this run").all()
    strict = check.compare(baseline_file.load(base), check.aggregate(df[df["adapter"] == "numpy.stable"]),
                           dict(meta, adapters={"numpy.stable": {}}), strict=True)
    assert set(strict.loc[strict["adapter"] == "numpy.naive", "verdict"]) == {"regression"}


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ('{"format": "cestab-baseline", "format_version": 2, "schema_version": 0, "groups": []}', "schema_version 0"),
        ('{"format": "cestab-baseline", "format_version": 2, "schema_version": %d, "groups": [{"adapter": 1}]}'
         % columns.SCHEMA_VERSION, "group #0: missing"),
        ('{"format": "cestab-baseline", "format_version": 2, "schema_version": %d, "groups": [], "x": NaN}'
         % columns.SCHEMA_VERSION, "not valid JSON"),
        ("[1, 2]", "not a cestab baseline"),
        ('{"format": "cestab-baseline", "format_version": 2, "schema_version": %d, "groups": [{"adapter": "a", '
         '"dtype": "float32", "regime": "typical", "framework": "numpy", "cases": 1, "worst_status": "fine", '
         '"statuses": {"fine": 1}, "loss_ulps": 1, "grad_ulps": null, "loss_tol": 0.1, "grad_tol": null, "loss_att": null, "grad_att": null, "nonfinite": 0, "failed": 0}]}'
         % columns.SCHEMA_VERSION, "unknown status 'fine'"),
    ],
)
def test_bad_baseline_is_a_one_line_usage_error(runs, tmp_path, capsys, content, message):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    code, out, err = cli(capsys, "--baseline", path, runs["honest"])
    assert code == 2 and out == ""
    assert err.startswith("cestab: error: baseline ") and err.count("\n") == 1 and message in err, err


def test_bad_run_and_arguments_are_usage_errors(base, tmp_path, capsys):
    for args, message in (
        ([tmp_path], "not a run folder"),
        ([], "give a RUN_DIR to check, or --quick"),
        ([tmp_path, "--rtol", "-1"], "non-negative"),
        ([tmp_path, "--compare-as", "nonsense"], "RUN_ADAPTER=BASELINE_ADAPTER"),
    ):
        code, _, err = cli(capsys, "--baseline", base, *args)
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_junit_and_github_step_summary(runs, base, tmp_path, capsys, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "reports" / "check.xml"
    code, _, _ = cli(capsys, "--baseline", base, runs["planted"], "--compare-as", "regressiontest.nan_near_ties=numpy.stable",
                     "--junit", junit)
    assert code == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failed == {("numpy.stable", "float32 near_ties"), ("numpy.stable", "bfloat16 near_ties")}
    assert suite.get("failures") == "2" and int(suite.get("tests")) == len(cases)
    text = summary.read_text()
    assert text.startswith("earlier step\n") and ":x: cestab check: 2 regressions" in text
    assert "| regression | `numpy.stable` | float32 | near_ties |" in text


def test_update_baseline_is_atomic_and_diffable(runs, tmp_path, monkeypatch):
    path = tmp_path / "b.json"
    check.gate(path, run_dir=runs["honest"], update=True)
    before = path.read_text()
    data = json.loads(before)
    assert data["schema_version"] == columns.SCHEMA_VERSION and data["versions"]["numpy"]
    assert data["options"]["shapes"] == [[16, 10]] and data["options"]["regimes"] == REGIMES
    group_lines = [line for line in before.splitlines() if line.startswith('    {"adapter"')]
    assert len(group_lines) == len(data["groups"])  # one group per line

    def torn(self, text, **kw):  # dies half-way through writing
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(harness.UsageError, match="No space left"):
        check.gate(path, run_dir=runs["planted"], update=True)
    monkeypatch.undo()
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]


def test_version_change_is_printed_next_to_a_regression(runs, base, tmp_path):
    data = json.loads(Path(base).read_text())
    data["versions"]["numpy"] = "1.26.0"
    old = tmp_path / "old-numpy.json"
    baseline_file.write(old, data)
    gate = check.gate(old, run_dir=runs["planted"], aliases={"regressiontest.nan_near_ties": "numpy.stable"})
    row = gate.report[gate.report["verdict"] == "regression"].iloc[0]
    assert row["version_change"] == f"numpy 1.26.0 -> {harness.adapters.framework_version('numpy')}"
    assert "[numpy 1.26.0 -> " in checkreport.format_table(gate)
    assert any(n.startswith("versions changed since the baseline: numpy 1.26.0") for n in gate.notes)


def test_corpus_rows_group_by_entry_and_search_rows_are_left_out():
    df = harness.run(adapters=["numpy.stable"], dtypes=["float64"], regimes_=["typical"], shapes=[(4, 3)],
                     label_kinds=["index"], isolate=False, corpus=True)
    corpus_ids = {c.split("/")[1] for c in df.loc[df["source"] == "corpus", "case_id"]}
    assert corpus_ids  # the float64 entries of harness/inputs/corpus.json
    df.loc[df.index[0], "source"] = "search"  # a search row never reaches a group
    groups = check.aggregate(df)
    assert set(groups["regime"]) == {f"corpus:{i}" for i in corpus_ids}
    assert (groups["cases"] == 1).all()


def _subprocess(*args):
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "harness.cli", "check", *map(str, args)], capture_output=True, text=True, env=env)


def test_quick_reruns_the_baselines_options_and_catches_a_plugin(tmp_path):
    """--quick with a tiny baseline: the fresh run (in worker processes) matches it, and a
    planted plug-in compared as numpy.stable fails the gate."""
    path = tmp_path / "tiny.json"
    options = dict(check.QUICK, adapters=["numpy.stable"], dtypes=["float32"], regimes=["typical", "near_ties"],
                   shapes=[[8, 10]], label_kinds=["index"], corpus=False)
    df = harness.run(adapters=options["adapters"], dtypes=options["dtypes"], regimes_=options["regimes"],
                     shapes=[(8, 10)], label_kinds=["index"], corpus=False, out_dir=tmp_path / "runs", isolate=False)
    _, meta = check.read_run(df.attrs["run_dir"])
    baseline_file.write(path, baseline_file.make(check.aggregate(df).to_dict("records"), meta, options))
    green = _subprocess("--baseline", path, "--quick", "--quiet", "--out", tmp_path / "runs")
    assert green.returncode == 0, green.stdout + green.stderr
    assert "0 regressions" in green.stdout and "2 unchanged" in green.stdout
    red = _subprocess("--baseline", path, "--quick", "--quiet", "--out", tmp_path / "runs",
                      "--adapter", "regression_adapters:NAN", "--compare-as", "regressiontest.nan_near_ties=numpy.stable")
    assert red.returncode == 1, red.stdout + red.stderr
    assert "regression  numpy.stable  float32  near_ties" in red.stdout


def test_committed_baseline_is_valid_and_covers_every_framework():
    data = baseline_file.load(TESTS.parent / "reports" / "baseline.json")
    assert data["options"] == check.QUICK
    frameworks = {g["framework"] for g in data["groups"]}
    assert {"numpy", "scipy", "torch", "jax", "tensorflow", "keras"} <= frameworks
    assert not any(g["regime"] == "search" for g in data["groups"])
