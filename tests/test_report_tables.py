"""The report's verdict tables, recomputed from `results.parquet` by the rules they print:
the "which to use" table, the "passed X of Y supported (Z unsupported)" counts, the realistic /
adversarial split and the Zimmermann-style accuracy cells.

Each test reads the stored run (tests/data/report_runs/, a real `cestab run`) directly with
pandas and the declarations (regimes.py, corpus.json), not through the report's own helpers,
so a wrong rule in harness/report/verdicts.py fails here.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.inputs import corpus
from harness.inputs.regimes import REGIMES
from harness.numerics import statuses
from harness.report import content as report
from harness.report import verdicts
from harness.report.write import write_report

RUN = Path(__file__).parent / "data" / "report_runs" / "20261128-070931-s0"


@pytest.fixture(scope="module")
def raw():
    """The results as stored, with the declared kind of input of each row."""
    df = pd.read_parquet(RUN / "results.parquet")
    realistic_corpus = {f"corpus/{e.id}" for e in corpus.load() if e.realistic}
    group = df["regime"].str.split(":").str[0]
    key = np.where(group == "corpus", df["case_id"].str.split("/").str[:2].str.join("/"), group)
    real = [(k in realistic_corpus) if g == "corpus" else (g in REGIMES and REGIMES[g].realistic)
            for g, k in zip(group, key)]
    return df.assign(group=group, kind=np.where(real, "realistic", "adversarial"))


@pytest.fixture(scope="module")
def built():
    return report.build([RUN])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_report([RUN], out, command="cestab report RUN")
    return out


def _counts(g: pd.DataFrame) -> tuple[int, int, int]:
    """(passed, supported, unsupported) straight from the status table's flags."""
    judged = g["status"].map(lambda s: statuses.get(s).judged)
    failed = g["status"].map(lambda s: statuses.get(s).failure)
    return int((judged & ~failed).sum()), int(judged.sum()), int((g["status"] == "unsupported").sum())


def test_every_row_is_realistic_or_adversarial_as_declared(raw, built):
    df = built.results
    assert (df["realism"].to_numpy() == raw["kind"].to_numpy()).all()
    kinds = dict(zip(df["regime_group"], df["realism"]))
    assert kinds["typical"] == "realistic" and kinds["large_offset"] == "adversarial"
    assert kinds["ignored_rows"] == "adversarial" and kinds["search"] == "adversarial"
    # both kinds of corpus entry are present, each as corpus.json declares it
    assert set(df.loc[df["regime_group"] == "corpus", "realism"]) == {"realistic", "adversarial"}
    # finite padding is declared realistic, -inf padding adversarial: the two are told apart
    assert REGIMES["ignored_finite"].realistic and not REGIMES["ignored_rows"].realistic
    every = corpus.load()
    assert all(isinstance(e.realistic, bool) and e.realistic_why != "not declared" for e in every)


def test_verdict_counts_are_passed_of_supported_with_unsupported_apart(raw, built, written):
    ver = built.verdicts.set_index(["adapter", "dtype", "realism"])
    for (adapter, dtype, kind), g in raw.groupby(["adapter", "dtype", "kind"]):
        passed, supported, unsupported = _counts(g)
        cell = ver.loc[(adapter, dtype, kind)]
        assert (cell["passed"], cell["supported"], cell["unsupported"]) == (passed, supported, unsupported)
    # an unsupported case is never a pass: torch.cross_entropy declares some (the report once counted them)
    torch = raw[raw["adapter"] == "torch.cross_entropy"]
    assert (torch["status"] == "unsupported").any()
    passed, supported, unsupported = _counts(torch)
    assert passed + unsupported > passed and supported + unsupported <= len(torch)
    # and the page prints exactly these counts in the realistic table's cell
    md = (written / "stability.md").read_text(encoding="utf-8")
    section = md.split("## Verdicts on realistic inputs")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| `numpy.naive` |"))
    g = raw[(raw["adapter"] == "numpy.naive") & (raw["dtype"] == "float16") & (raw["kind"] == "realistic")]
    passed, supported, unsupported = _counts(g)
    assert f"passed {passed} of {supported} supported ({unsupported} unsupported)" in row


def test_which_to_use_follows_its_written_rule(raw, built, written):
    which = built.which
    assert len(which) and set(which["run"]) == {RUN.name}
    uses = {u.name: u for u in verdicts.USE_CASES}
    for row in which.itertuples(index=False):
        use = uses[row.use_case]
        scope = raw[(raw["kind"] == "realistic") & raw["dtype"].isin(use.dtypes) & raw["label_kind"].isin(use.label_kinds)]
        assert row.cases == len(scope)
        avoid, candidates = set(), {}
        for adapter, g in scope.groupby("adapter"):
            passed, supported, unsupported = _counts(g)
            failing = g["status"][g["status"].map(lambda s: statuses.get(s).failure)]
            severe = any(statuses.rank(s) > statuses.rank("inaccurate") for s in failing)
            hard = int((failing != "lossy").sum())  # lossy is counted, not held against anyone
            if severe or hard > verdicts.AVOID_SHARE * supported:
                avoid.add(adapter)
            elif supported and not unsupported:
                candidates[adapter] = hard
        least = min(candidates.values(), default=None)
        assert {e["adapter"] for e in row.recommended} == {a for a, n in candidates.items() if n == least}
        assert {e["adapter"] for e in row.avoid} == avoid
    # numpy.naive returns NaN on realistic float32 inputs: avoided wherever float32 is in scope
    dense = which[which["use_case"].str.startswith("CPU inference")].iloc[0]
    assert "numpy.naive" in {e["adapter"] for e in dense["avoid"]}
    # the table is the first thing on the page, with its rule beside it
    md = (written / "stability.md").read_text(encoding="utf-8")
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Which to use"
    assert verdicts.RULE in md.split("## Which to use")[1].split("\n## ")[0]


def _order_stat(values, q):
    v = sorted(values)
    return v[max(math.ceil(q * len(v)) - 1, 0)]


@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_zimmermann_cells_are_order_statistics_of_the_realistic_errors(raw, built, quantity):
    table = built.zimmermann_loss if quantity == "loss" else built.zimmermann_grad
    measured = raw[(raw["kind"] == "realistic") & raw["status"].map(lambda s: statuses.get(s).measured)
                   & (raw["regime"] != "invalid_labels")]
    assert len(table) == measured.groupby(["adapter", "dtype"]).ngroups
    for r in table.itertuples(index=False):
        g = measured[(measured["adapter"] == r.adapter) & (measured["dtype"] == r.dtype)]
        err = np.where(g[f"n_{quantity}_nonfinite"].fillna(0) > 0, np.inf, g[f"{quantity}_tol_ratio"].astype(float))
        ids = g["case_id"].to_numpy()[~np.isnan(err)]
        err = err[~np.isnan(err)]
        assert r.cases == len(err)
        assert (r.median, r.p99, r.max) == (_order_stat(err, 0.5), _order_stat(err, 0.99), err.max())
        assert r.max_case == min(ids[err == err.max()])
    # the best of each column within a dtype is marked, and only it
    for (_, dtype), g in table.groupby(["run", "dtype"]):
        for stat in ("median", "p99", "max"):
            best = g[stat][np.isfinite(g[stat])].min()
            assert (g[f"best_{stat}"] == (g[stat] == best)).all()
    # numpy.naive returns NaN on realistic cases: its max is inf, never the best
    naive = table[(table["adapter"] == "numpy.naive") & (table["dtype"] == "float16")].iloc[0]
    assert naive["max"] == math.inf and not naive["best_max"]


def test_careful_row_on_top_and_attainable_ratio_used_when_present(tmp_path):
    run = tmp_path / RUN.name
    shutil.copytree(RUN, run)
    df = pd.read_parquet(run / "results.parquet")
    df.loc[df["adapter"] == "numpy.stable", "adapter"] = "numpy.careful"
    df["loss_att_ratio"] = df["loss_tol_ratio"] * 2.0  # what issue 12's column will hold
    df.to_parquet(run / "results.parquet", index=False)
    built = report.build([run])
    for dtype, g in built.zimmermann_loss.groupby("dtype"):
        assert g["adapter"].iloc[0] == "numpy.careful"
    assert verdicts.error_metric(built.results, "loss") == ("loss_att_ratio", "error / attainable error")
    assert verdicts.error_metric(built.results, "grad")[0] == "grad_tol_ratio"  # fallback where absent
    ok = built.zimmermann_loss[built.zimmermann_loss["max"] < math.inf]
    twice = report.build([RUN]).zimmermann_loss.set_index(["dtype", "adapter"])
    for r in ok[ok["adapter"] != "numpy.careful"].itertuples(index=False):
        assert r.max == 2.0 * twice.loc[(r.dtype, r.adapter), "max"]


def test_partial_run_gets_a_banner_with_cases_run_of_planned(tmp_path):
    run = tmp_path / "partial"
    shutil.copytree(RUN, run)
    meta = json.loads((run / "run.json").read_text())
    meta.update(state="interrupted", n_cases=999, note="cut off by the test")
    (run / "run.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    write_report([run], out, command="cestab report partial")
    md = (out / "stability.md").read_text(encoding="utf-8")
    ran = pd.read_parquet(run / "results.parquet").query("source != 'search'")["case_id"].nunique()
    assert f"**Partial run `partial`: {ran} of 999 planned cases ran** (state: interrupted; cut off by the test)" in md
    assert md.index("Partial run") < md.index("## Which to use")
    complete = (tmp_path / "complete")
    write_report([RUN], complete, command="x")
    assert "Partial run" not in (complete / "stability.md").read_text(encoding="utf-8")


def test_each_run_keeps_its_own_error_measure_when_runs_differ(tmp_path):
    """A newer run has attainable ratios, an older one only tolerance ratios: the older run's
    finite errors stay in the accuracy table (they once all vanished, leaving only its infs)."""
    newer = tmp_path / "newer"
    shutil.copytree(RUN, newer)
    df = pd.read_parquet(newer / "results.parquet")
    df["loss_att_ratio"] = df["loss_tol_ratio"] * 2.0
    df.to_parquet(newer / "results.parquet", index=False)
    alone = report.build([RUN]).zimmermann_loss.set_index(["dtype", "adapter"])
    both = report.build([newer, RUN]).zimmermann_loss
    older = both[both["run"] == RUN.name].set_index(["dtype", "adapter"])
    assert set(older["measure"]) == {"error / tolerance"} and set(both.loc[both["run"] == "newer", "measure"]) == {
        "error / attainable error"}
    assert len(older) == len(alone) and np.isfinite(older["max"].astype(float)).any()
    for key, r in alone.iterrows():
        assert (older.loc[key, "median"], older.loc[key, "max"]) == (r["median"], r["max"])


def test_long_adapter_lists_fold_in_html_and_stay_whole_in_markdown():
    from harness.report import html, markdown
    from harness.report.text import FOLD, SHOWN, _adapter_cell

    entries = [{"adapter": f"a{k}", "relative_time": 1.0 + k, "passed": 1, "supported": 2, "unsupported": 0,
                "failures": {"nonfinite" if k == 6 else "lossy": 1}} for k in range(8)]
    cell = _adapter_cell(entries, "to avoid")
    assert cell[1] == FOLD and cell[0][1] == f"{8 - SHOWN} more to avoid, 1 of them with NaN/inf, errors or crashes"
    page = html.render([("table", ["avoid"], [[cell]])], {})
    shown, folded = page.split("<details>")
    assert all(f"a{k}</code>" in shown for k in range(SHOWN)) and all(f"a{k}</code>" in folded for k in range(SHOWN, 8))
    md = markdown.render([("table", ["avoid"], [[cell]])])
    assert all(f"`a{k}`" in md for k in range(8)) and "more to avoid" not in md
    assert _adapter_cell(entries[:SHOWN + 1], "to avoid")[1] == ""  # one more than shown: not worth a fold


def test_lossy_cases_are_counted_in_each_entry_but_make_no_adapter_to_avoid():
    """On the committed fresh CPU run (where `lossy` is common), an adapter whose only in-scope
    failures are lossy is never avoided, and such adapters are recommended with their lossy
    count on the entry."""
    run = Path(__file__).parents[1] / "reports" / "cpu"
    which = report.build([run]).which
    recommended_with_lossy = 0
    for row in which.itertuples(index=False):
        for e in row.avoid:
            assert set(e["failures"]) - set(verdicts.MILD_FAILURES), e  # avoided for something worse
        for e in row.recommended:
            assert e["failed"] == sum(n for s, n in e["failures"].items() if s not in verdicts.MILD_FAILURES)
            recommended_with_lossy += e["failures"].get("lossy", 0) > 0
    assert recommended_with_lossy > 0
