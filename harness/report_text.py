"""Cell texts shared by the Markdown and HTML writers, so both print the same numbers.

Every function here formats a value taken from a report DataFrame; none computes one.
"""

from __future__ import annotations

import math

import pandas as pd

#: A mark per status, so the tables read without colour too.
STATUS_MARKS = {
    "ok": "✓", "rejected": "✓", "lossy": "△", "inaccurate": "▲", "silent": "◆", "nonfinite": "✗", "error": "✗",
    "crash": "✗", "timeout": "✗", "unsupported": "–", "undefined": "·",
}

#: What each status means (the statuses and their order are harness.tolerances.STATUSES).
STATUS_MEANINGS = {
    "ok": "within the attainable bound: as accurate as a careful implementation (harness.bounds)",
    "rejected": "invalid labels, and the implementation raised: right",
    "lossy": "stable, but loses relative accuracy where a careful implementation does not (outside the attainable bound, within the textbook one)",
    "inaccurate": "outside the textbook bound too: worse than even the max-shift algorithm in this dtype",
    "silent": "invalid labels, and the implementation returned numbers anyway",
    "nonfinite": "NaN/inf where the truth is finite",
    "error": "the implementation raised on a valid input",
    "crash": "the worker process died (signal in the message)",
    "timeout": "the call did not return within the run's --timeout",
    "unsupported": "declared unsupported, or refused by the framework with its reason",
    "undefined": "the input has no finite truth (+inf, NaN, all -inf row): behaviour recorded, not judged",
}

#: Titles of the figures, by file name (also their order in the report).
FIGURE_TITLES = {
    "status-heatmap.png": "Status by adapter and regime",
    "error-vs-logit-scale.png": "Error against logit scale, per dtype",
    "error-vs-class-count.png": "Error against class count, per dtype",
    "accuracy-vs-speed.png": "Accuracy against speed",
}


def num(x, digits: int = 3) -> str:
    """A number in `digits` significant figures; '—' for missing, 'inf'/'nan' spelled out."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "—"
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def accuracy_cell(row) -> str:
    """'✓ 0.5 / 3.2' (largest loss / gradient ulps), plus the cases with NaN/inf outputs."""
    if row["status"] == "unsupported" and row["cases"] == row["unsupported"]:
        return "– unsupported"
    text = f"{STATUS_MARKS.get(row['status'], '?')} {num(row['loss_ulps_max'])} / {num(row['grad_ulps_max'])}"
    if not math.isnan(row["tol_ratio_max"]):
        text += f" ({num(row['tol_ratio_max'], 2)}× tol)"
    if row["nonfinite_cases"]:
        text += f" · {row['nonfinite_cases']} NaN/inf"
    return text


def accuracy_rows(acc: pd.DataFrame, versions: dict) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The accuracy table as header + rows of (text, status) cells: one row per (run,) adapter, one column per dtype."""
    multi = acc["run"].nunique() > 1
    dtypes = [str(d) for d in acc["dtype"].cat.categories if (acc["dtype"] == d).any()]
    header = (["run"] if multi else []) + ["adapter", "version"] + dtypes
    rows = []
    for (run, adapter), g in acc.groupby(["run", "adapter"], sort=True):
        cells = {str(r["dtype"]): (accuracy_cell(r), r["status"]) for _, r in g.iterrows()}
        row = ([(run, "")] if multi else []) + [(f"`{adapter}`", ""), (versions.get((run, adapter), ""), "")]
        row += [cells.get(d, ("", "")) for d in dtypes]
        rows.append(row)
    return header, rows


def worst_rows(worst: pd.DataFrame) -> tuple[list[str], list[list[tuple[str, str]]]]:
    multi = worst["run"].nunique() > 1
    header = (["run"] if multi else []) + ["adapter", "dtype", "status", "case", "loss ulps", "grad ulps",
                                           "error / tol"]
    rows = []
    for r in worst.itertuples(index=False):
        row = ([(r.run, "")] if multi else []) + [
            (f"`{r.adapter}`", ""), (r.dtype, ""), (f"{STATUS_MARKS.get(r.status, '?')} {r.status}", r.status),
            (f"`{r.case_id}`", ""), (num(r.loss_ulps), ""), (num(r.grad_ulps), ""), (num(r.tol_ratio), ""),
        ]
        rows.append(row)
    return header, rows


def throughput_rows(tp: pd.DataFrame) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """Median milliseconds per (run,) adapter x dtype, one column per shape and pass; '~' marks a noisy timing."""
    multi = tp["run"].nunique() > 1
    t = tp.assign(shape=tp["n_rows"].astype(str) + "x" + tp["n_classes"].astype(str))
    shapes = t[["n_rows", "n_classes", "shape"]].drop_duplicates().sort_values(["n_classes", "n_rows"])["shape"].tolist()
    passes = [p for p in ("forward", "forward_backward") if p in set(t["pass"])] + sorted(
        set(t["pass"]) - {"forward", "forward_backward"})
    columns = [(s, p) for s in shapes for p in passes]
    short = {"forward": "fwd", "forward_backward": "fwd+bwd"}
    header = (["run"] if multi else []) + ["adapter", "dtype"] + [f"{s} {short.get(p, p)} ms" for s, p in columns]
    rows = []
    for (run, adapter, dtype), g in t.groupby(["run", "adapter", "dtype"], sort=True, observed=True):
        cells = {}
        for r in g.to_dict("records"):  # `pass` is a keyword: no itertuples
            if r["status"] == "ok":
                noisy = r.get("noisy")
                mark = "~" if noisy is not None and not pd.isna(noisy) and bool(noisy) else ""
                cells[(r["shape"], r["pass"])] = (f"{mark}{num(r['median_ms'])}", "")
            else:
                cells[(r["shape"], r["pass"])] = (str(r["status"]), str(r["status"]))
        row = ([(run, "")] if multi else []) + [(f"`{adapter}`", ""), (str(dtype), "")]
        row += [cells.get(c, ("", "")) for c in columns]
        rows.append(row)
    return header, rows


def environment_rows(env: pd.DataFrame) -> tuple[list[str], list[list[tuple[str, str]]]]:
    header = [""] + list(env.columns)
    rows = [[(str(k), "")] + [(str(v), "") for v in vals] for k, vals in zip(env.index, env.to_numpy())]
    return header, rows


def adapter_versions(df: pd.DataFrame) -> dict:
    """(run, adapter) -> 'framework version'."""
    cols = df[["run", "adapter", "framework", "framework_version"]].drop_duplicates(["run", "adapter"])
    return {(r.run, r.adapter): f"{r.framework} {r.framework_version}" for r in cols.itertuples(index=False)}


# -- the document: a list of blocks both writers render ----------------------------------------


def blocks(report, command: str) -> list[tuple]:
    """The report as ("h1"|"h2"|"p"|"list"|"table"|"figure"|"pre", ...) blocks, in reading order.

    Text may hold `code` spans; the writers render them. Every number comes from a report
    DataFrame through the formatters above.
    """
    from . import report as rp

    out: list[tuple] = [("h1", "Softmax cross-entropy: stability report")]
    out.append(("pre", command))
    out.append(("p", "Generated by the command above from the stored results of "
                + ", ".join(f"`{run.path.as_posix()}`" for run in report.runs)
                + "; the report runs no implementation. Every number below is a cell of those results."))

    out.append(("h2", "Findings"))
    out.append(("list", report.findings or ["No adapter failed a judged case."]))

    out.append(("h2", "Accuracy"))
    out.append(("p", "One row per adapter, one column per tested dtype. Each cell: the status mark of the "
                     "worst case, then the largest loss error / largest gradient error observed, in ulps of the "
                     "tested dtype at the true value (over finite outputs), the largest error over its tolerance "
                     "(above 1 is outside), then the number of cases with NaN/inf outputs where the truth is "
                     "finite. Invalid labels (`rejected`/`silent`) are in the heatmap's `invalid_labels` column."))
    header, rows = accuracy_rows(report.accuracy, adapter_versions(report.results))
    out.append(("table", header, rows))
    out.append(("list", [f"{STATUS_MARKS[s]} `{s}`: {STATUS_MEANINGS[s]}" for s in STATUS_MEANINGS]))
    doc, table = rp.tolerance_legend()
    out.append(("p", "Why an `ok` cell can show large ulps: the tolerance is condition-aware. "
                     "From `harness/tolerances.py`:"))
    out.append(("pre", doc))
    out.append(("table", list(table.columns),
                [[(str(v), "") for v in r] for r in table.itertuples(index=False)]))

    out.append(("h2", "Status by regime"))
    out.append(("figure", "status-heatmap.png"))

    out.append(("h2", "Worst input per adapter"))
    out.append(("p", "The worst judged case of each adapter (failures first, then the largest error / "
                     "tolerance; among equals a shrunk search finding, then the smallest batch)."))
    header, rows = worst_rows(report.worst)
    out.append(("table", header, rows))
    out.append(("p", "Replay each of them (the same order):"))
    out.append(("pre", "\n".join(report.worst["repro"])))

    out.append(("h2", "Error against logit scale and class count"))
    out.append(("p", "Largest error / tolerance (loss or gradient) per adapter: green within tolerance, red "
                     "outside, black NaN/inf where the truth is finite, white no case. Cases with finite logits and "
                     "no ignored rows only (-inf masks and padding have their own heatmap columns). Logit scale: the "
                     "largest |logit| of the case, rebuilt from its id or saved file; class count: the regime cases, "
                     "on the run's grid of shapes."))
    out.append(("figure", "error-vs-logit-scale.png"))
    out.append(("figure", "error-vs-class-count.png"))

    out.append(("h2", "Throughput"))
    if report.throughput is None:
        out.append(("p", "No bench table (`bench.parquet`) in these run folders: run `cestab bench` to add one."))
    else:
        out.append(("p", "Median wall time in milliseconds per call (`~`: noisy, a wide spread between repeats); "
                         "a status instead of a time where the benchmark did not run."))
        header, rows = throughput_rows(report.throughput)
        out.append(("table", header, rows))
        if report.speed is not None and not report.speed.empty:
            out.append(("figure", "accuracy-vs-speed.png"))

    out.append(("h2", "Environment"))
    header, rows = environment_rows(report.environment)
    out.append(("table", header, rows))
    return out
