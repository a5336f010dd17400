"""`cestab report`: every number traces to the stored results, the page is self-contained, the bytes repeat.

The stored run under tests/data/report_runs/ is a real `cestab run` (numpy.naive, numpy.stable,
torch.cross_entropy; float16, float32; 64x10 and 16x1000; quick search). The bench table is
fixture data written by `_write_bench` below (no real `cestab bench` output is stored).
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.store import casefile
from harness import cli
from harness.report import content as report
from harness.report.write import write_report
from harness.bench.table import bench_frame
from harness.report.text import accuracy_cell, num, sig3

RUN = Path(__file__).parent / "data" / "report_runs" / "20261128-070931-s0"
COMMAND = "cestab report tests/data/report_runs/20261128-070931-s0 --out OUT"


@pytest.fixture(scope="module")
def raw():
    return pd.read_parquet(RUN / "results.parquet")


@pytest.fixture(scope="module")
def built():
    return report.build([RUN])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_report([RUN], out, command=COMMAND)
    return out


def _finite_max(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else math.nan


@pytest.mark.parametrize("adapter,dtype", [
    ("numpy.naive", "float16"), ("numpy.naive", "float32"), ("numpy.stable", "float16"),
    ("torch.cross_entropy", "float32"),
])
def test_accuracy_cells_are_the_results_maxima(raw, built, written, adapter, dtype):
    everything = raw[(raw["adapter"] == adapter) & (raw["dtype"] == dtype)]
    sel = everything[everything["regime"] != "invalid_labels"]  # no truth to be accurate to
    assert (everything.loc[everything["regime"] == "invalid_labels", "status"].isin(["rejected", "silent"])).all()
    cell = built.accuracy[(built.accuracy["adapter"] == adapter) & (built.accuracy["dtype"] == dtype)].iloc[0]
    assert cell["loss_ulps_max"] == _finite_max(sel["loss_ulps"])
    assert cell["grad_ulps_max"] == _finite_max(sel["grad_ulps"])
    nonfinite = ((sel["n_loss_nonfinite"].fillna(0) + sel["n_grad_nonfinite"].fillna(0)) > 0).sum()
    assert cell["nonfinite_cases"] == nonfinite
    assert cell["cases"] == len(sel)
    for status, count in everything["status"].value_counts().items():
        assert cell[status] == count
    # the printed cell text is built from exactly those numbers
    text = accuracy_cell(cell)
    assert f"{num(_finite_max(sel['loss_ulps']))} / {num(_finite_max(sel['grad_ulps']))}" in text


def test_naive_is_nonfinite_and_stable_is_ok_in_the_table(built):
    acc = built.accuracy.set_index(["adapter", "dtype"])
    assert acc.loc[("numpy.naive", "float16"), "status"] == "nonfinite"
    assert acc.loc[("numpy.naive", "float16"), "nonfinite_cases"] > 0
    # numpy.stable answers invalid labels silently; that belongs to the heatmap, not to accuracy
    assert acc.loc[("numpy.stable", "float32"), "status"] == "ok"
    assert acc.loc[("numpy.stable", "float32"), "silent"] > 0


def test_heatmap_data_is_the_worst_status_per_regime(raw, built):
    table = built.status_by_regime.set_index(["adapter", "regime"])
    for (adapter, regime), g in raw.assign(group=raw["regime"].str.split(":").str[0]).groupby(["adapter", "group"]):
        cell = table.loc[(adapter, regime)]
        assert cell["cases"] == len(g)
        assert cell["failing"] == g["status"].isin(report.FAILURES).sum()
        assert cell["status"] == max(g["status"], key=report.status_rank)
    assert table.loc[("numpy.stable", "invalid_labels"), "status"] == "silent"
    assert table.loc[("numpy.naive", "large_offset"), "status"] == "nonfinite"
    assert built.regimes[0] == "typical" and built.regimes[-1] == "search"


def test_worst_inputs_replay_from_the_run_folder(raw, built):
    worst = built.worst.set_index("adapter")
    naive = worst.loc["numpy.naive"]
    assert naive["status"] == "nonfinite"
    # a NaN search finding (a shrunk input) is preferred, and its repro line names its .npz
    row = raw[(raw["adapter"] == "numpy.naive") & (raw["case_id"] == naive["case_id"])].iloc[0]
    assert row["source"] == "search"
    path = RUN / row["case_file"]
    assert naive["repro"] == f"cestab repro {path.as_posix()} --adapters numpy.naive"
    case, info = casefile.load(path)
    assert case.case_id == naive["case_id"] and info["adapter"] == "numpy.naive"
    # a regime case replays from its id
    stable = worst.loc["numpy.stable"]
    assert stable["status"] == "ok"
    ok = raw[(raw["adapter"] == "numpy.stable") & (raw["status"] == "ok")]
    ratios = np.fmax(ok["loss_tol_ratio"].to_numpy(float), ok["grad_tol_ratio"].to_numpy(float))
    assert stable["tol_ratio"] == np.nanmax(ratios)
    if not stable["case_id"].startswith("search/"):
        assert stable["repro"] == f"cestab repro {stable['case_id']} --adapters numpy.stable"


def test_findings_count_nonfinite_cases_per_adapter_and_kind_of_input(raw, built):
    from harness.report import verdicts

    df = built.results
    for kind in verdicts.KINDS:
        scope = df[(df["adapter"] == "numpy.naive") & ~df["invalid_labels"] & (df["realism"] == kind)]
        judged = scope[~scope["status"].isin(report.UNJUDGED)]
        n = ((judged["n_loss_nonfinite"] + judged["n_grad_nonfinite"]) > 0).sum()
        c = verdicts.counts(scope)
        sentence = next(f for f in built.findings
                        if f.startswith(f"`numpy.naive` returns NaN/inf where the truth is finite on {kind} inputs"))
        assert f"in {n} cases" in sentence
        assert f"passed {c['passed']} of {c['supported']} supported ({c['unsupported']} unsupported)" in sentence
    assert not any(f.startswith("`numpy.stable` returns NaN/inf") for f in built.findings)


def test_logit_scale_is_the_largest_finite_logit_of_the_case(built):
    from harness.inputs import replay

    points = built.points
    row = points[points["case_id"].str.startswith("large_offset/float32/64x10")].iloc[0]
    case, _ = replay.load(row["case_id"])
    z = case.logits.astype(float)
    assert row["logit_scale"] == np.abs(z[np.isfinite(z)]).max() and row["plain"]
    masked = points[points["case_id"].str.startswith("neg_inf_mask/")]
    assert len(masked) and not masked["plain"].any()
    # only an empty batch has no logit scale
    assert set(points.loc[points["logit_scale"].isna(), "regime_group"]) == {"empty_batch"}


def test_html_is_self_contained_and_every_figure_exists(written):
    page = (written / "stability.html").read_text(encoding="utf-8")
    srcs = re.findall(r"""src\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert srcs, "the page embeds its figures"
    assert all(r.startswith("data:image/png;base64,") for r in srcs), [r[:40] for r in srcs]
    # links go to the page's own headings or to the public reports it cites; nothing is fetched
    hrefs = re.findall(r"""href\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    anchors = set(re.findall(r"""<h2 id=["']([^"']+)["']""", page))
    assert all(h[1:] in anchors if h.startswith("#") else h.startswith("https://") for h in hrefs), hrefs
    assert not re.search(r"<script|<link|@import|url\(", page, flags=re.I)
    md = (written / "stability.md").read_text(encoding="utf-8")
    assert md.startswith("# ") and f"```\n{COMMAND}\n```" in md
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(linked) == 3 == page.count("<img ")
    for name in linked:
        assert (written / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (written / "figures").iterdir()) == sorted(Path(n).name for n in linked)
    assert "No bench table" in md
    assert md.count("\ncestab repro ") == 3  # one replay line per adapter


def test_same_input_gives_the_same_bytes(written, tmp_path):
    write_report([RUN], tmp_path, command=COMMAND)
    files = sorted(p.relative_to(written) for p in written.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (written / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def _write_bench(run_dir: Path, raw: pd.DataFrame) -> pd.DataFrame:
    """Fixture data in the bench table's schema (harness.bench.table): made-up, deterministic
    timings, not measured, so that the join and the plot are checked against known numbers."""
    rows = []
    speeds = {"numpy.naive": 4e5, "numpy.stable": 2e5, "torch.cross_entropy": 1e6}
    for adapter, dtype in sorted(set(zip(raw["adapter"], raw["dtype"]))):
        for n, v in ((64, 10), (16, 1000)):
            for pass_ in ("forward", "forward_backward"):
                rps = speeds[adapter] / (2 if pass_ == "forward_backward" else 1) / (v / 10)
                median_ms = n / rps * 1e3
                rows.append({
                    "run_id": run_dir.name, "time": "2026-11-28T07:09:31+00:00", "host": "fixture", "device": "cpu",
                    "device_name": "fixture CPU", "framework": adapter.split(".")[0], "framework_version": "0",
                    "adapter": adapter, "dtype": dtype, "label_kind": "index", "n_rows": n, "n_classes": v,
                    "pass": pass_, "status": "ok", "message": "", "warmup_seconds": 0.01, "compile_seconds": 0.0,
                    "repeats": 5, "median_ms": median_ms, "iqr_ms": median_ms / 50, "min_ms": median_ms * 0.9,
                    "noisy": adapter == "numpy.naive", "rows_per_second": rps, "min_bytes": n * v * 4,
                    "gbps": 1.0, "device_gbps": 10.0, "bandwidth_fraction": 0.1, "peak_memory_bytes": 1 << 20,
                    "peak_memory_kind": "rss", "memory_before_bytes": 1 << 19, "samples_ms": "[1.0]",
                })
    df = bench_frame(rows)
    df.to_parquet(run_dir / "bench.parquet", index=False)
    return df


def test_throughput_joins_accuracy_by_adapter_and_dtype(raw, tmp_path):
    run_dir = tmp_path / RUN.name
    shutil.copytree(RUN, run_dir)
    bench = _write_bench(run_dir, raw)
    out = tmp_path / "out"
    write_report([run_dir], out, command="cestab report RUN")
    built = report.build([run_dir])
    speed = built.speed.set_index(["adapter", "dtype"])
    assert set(speed["shape"]) == {"16x1000"}  # the largest timed shape
    fixture = bench[(bench["pass"] == "forward_backward") & (bench["n_classes"] == 1000)].set_index(["adapter", "dtype"])
    for key in speed.index:
        assert speed.loc[key, "rows_per_second"] == fixture.loc[key, "rows_per_second"]
        acc = built.accuracy[(built.accuracy["adapter"] == key[0]) & (built.accuracy["dtype"] == key[1])].iloc[0]
        assert speed.loc[key, "tol_ratio_max"] == acc["tol_ratio_max"]
    md = (out / "stability.md").read_text(encoding="utf-8")
    assert (out / "figures" / "accuracy-vs-speed.png").is_file() and "figures/accuracy-vs-speed.png" in md
    section = md.split("## Throughput")[1].split("\n## ")[0].splitlines()
    row = next(line for line in section if line.startswith("| `numpy.stable` | float32 | 16×1000 |"))
    fb = fixture.loc[("numpy.stable", "float32")]
    assert f"| {sig3(fb['median_ms'])} ± {sig3(fb['iqr_ms'])} |" in row  # fwd+bwd median ± IQR, 3 figures
    assert f"| {fb['bandwidth_fraction']:.0%} |" in row and f"| {sig3(fb['peak_memory_bytes'] / 2**20)} |" in row
    assert any(line.startswith("| `numpy.naive` | float16 | 64×10 | ~") for line in section)  # noisy marked
    header = next(line for line in section if line.startswith("| adapter |"))
    assert "not timed" not in header  # every bench row is ok: no empty column
    assert header.count("|") - 1 == len(row.split(" | "))
    # torch is fastest in the fixture but returns NaN; numpy.stable is the fastest clean one
    assert any(f.startswith("float32: the fastest adapter without a failing case is `numpy.stable`")
               and "`torch.cross_entropy` is faster" in f for f in built.findings)


def _cli(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr().err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _cli(["report", str(tmp_path / "missing"), "--out", str(out)], capsys)
    assert code == 2 and err.startswith("cestab: error:") and "does not exist (expected a run folder)" in err and err.count("\n") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _cli(["report", str(empty), "--out", str(out)], capsys)
    assert code == 2 and "no results.parquet" in err and err.count("\n") == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.parquet").write_bytes(b"PAR1 this is not parquet")
    code, err = _cli(["report", str(broken), "--out", str(out)], capsys)
    assert code == 2 and "cannot read the results table" in err and err.count("\n") == 1
    code, err = _cli(["report", str(RUN), str(broken), "--out", str(out)], capsys)
    assert code == 2
    assert not out.exists()  # nothing half-written


def test_two_run_folders_side_by_side(tmp_path, capsys):
    other = tmp_path / "gpu-run"
    shutil.copytree(RUN, other)
    out = tmp_path / "out"
    assert cli.main(["report", str(RUN), str(other), "--out", str(out)]) == 0
    assert "stability.md" in capsys.readouterr().out
    built = report.build([RUN, other])
    assert sorted(built.accuracy["run"].unique()) == ["20261128-070931-s0", "gpu-run"]
    one = built.accuracy[built.accuracy["run"] == "gpu-run"].drop(columns="run").reset_index(drop=True)
    alone = report.build([RUN]).accuracy.drop(columns="run")
    pd.testing.assert_frame_equal(one, alone)
    md = (out / "stability.md").read_text(encoding="utf-8")
    assert "| run | adapter | version | float16 | float32 |" in md
    assert "| gpu-run | `numpy.stable` |" in md
    # the same folder twice keeps two labels
    twice = report.load_runs([RUN, RUN])
    assert [r.label for r in twice] == ["20261128-070931-s0", "20261128-070931-s0#2"]


def test_the_report_loads_no_framework(tmp_path):
    """It only reads stored results: building it must not even import torch, jax or tensorflow."""
    import subprocess
    import sys

    code = (f"import sys; from harness.report.write import write_report; write_report([{str(RUN)!r}], {str(tmp_path)!r}); "
            "print(','.join(m for m in ('torch', 'jax', 'tensorflow', 'keras', 'optax', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_code_spans_stay_literal_in_html_while_bold_and_links_around_them_render():
    from harness.report.html import _inline

    # a corpus title: `2**126` to `2**1022` once came out as 2<b>126 to 2</b>1022
    out = _inline("could be `2**126` to `2**1022` times more accurate")
    assert "<code>2**126</code> to <code>2**1022</code>" in out and "<strong>" not in out
    # the partial-run banner: bold around a code span, and a link on code
    out = _inline("**Partial run `gpu`: 3 of 5 ran** see [`a_b`](#c)")
    assert out == '<strong>Partial run <code>gpu</code>: 3 of 5 ran</strong> see <a href="#c"><code>a_<wbr>b</code></a>'


def test_condition_scale_axis_spans_points_near_float64s_largest_value():
    from harness.report.figures import X_EDGE, _log_xlim, _pyplot

    _, plt = _pyplot()
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    x = np.array([5.0, 40.0, 1e300, 1.7e308, np.inf])  # float64 large_offset cases: loss near the range's edge
    ax.scatter(np.minimum(x[:-1], X_EDGE), np.ones(4))
    _log_xlim(ax, x)
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    plt.close(fig)
    # matplotlib's own margin overflowed to a 1-to-10 axis; the largest drawn at the edge
    assert lo <= 5.0 and X_EDGE <= hi < np.inf and fig.axes[0].get_xticks().size > 2


def test_direct_labels_stay_inside_the_axes_and_apart_and_lone_ones_stay_put():
    from harness.report.figures import _spread_labels

    # the committed report's CPU panel: two careful adapters alone at the floor, 22 crowded at the top
    ys = [-3.0, -3.0] + [6.0] * 10 + [7.0] * 12
    gap, lo, hi = 0.25, -3.2, 7.5
    placed = _spread_labels(ys, gap, lo, hi)
    assert all(lo - 1e-9 <= p <= hi + 1e-9 for p in placed)
    ordered = sorted(placed)
    assert all(b - a >= gap - 1e-9 for a, b in zip(ordered, ordered[1:]))
    assert abs(min(placed[:2]) - (-3.0)) < 1e-9  # the lone pair keeps its place (one just above the other)
    # more labels than fit: spread evenly over the axis, still inside it
    many = _spread_labels([0.0] * 50, gap, 0.0, 5.0)
    assert min(many) >= 0.0 and max(many) <= 5.0 + 1e-9
