"""Cell texts shared by the Markdown and HTML writers, so both print the same numbers.

Every function here formats a value taken from a report DataFrame; none computes one.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.numerics import statuses
from harness.numerics.statuses import TABLE as STATUS_TABLE
from harness.report import content as rp
from harness.report import verdicts as vd

#: A mark per status, so the tables read without colour too (the status table's).
STATUS_MARKS = {s.name: s.mark for s in STATUS_TABLE.values()}

#: What each status means (the status table's).
STATUS_MEANINGS = {s.name: s.meaning for s in STATUS_TABLE.values()}

#: Titles of the figures, by file name (also their order in the report).
FIGURE_TITLES = {
    "status-heatmap.png": "Status by adapter and regime",
    "error-vs-condition.png": "Error against the tolerance's condition scale, per dtype",
    "error-vs-class-count.png": "Error against class count, per dtype",
    "accuracy-vs-speed.png": "Accuracy against speed, per device and dtype",
    "time-memory-vs-classes.png": "Time and peak memory against the class count",
    "bandwidth-vs-size.png": "Achieved bandwidth against size, with the copy roofline",
}

#: A cell tagged NUM is a number: right-aligned in both writers.
NUM = "num"

#: A table cell of the form (shown, summary, folded): the HTML page shows `shown` and folds
#: `folded` under `summary` (a <details>, no script), so a use case with twenty adapters to
#: avoid does not push the rest of the "which to use" table off the first screen; the
#: Markdown prints shown and folded in full.
FOLD = "fold"
#: Entries an adapter list shows before folding the rest (the fastest: those a reader would pick).
SHOWN = 3


def sig3(x) -> str:
    """A number in 3 significant figures without an exponent for 1e-4 <= |x| < 1e7 ('1230',
    '0.0123'); beyond that, or for inf/NaN, as `num` writes it."""
    if x is None or x is pd.NA or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return num(x)
    x = float(x)
    if x == 0:
        return "0"
    if not 1e-4 <= abs(x) < 1e7:
        return num(x)
    decimals = 2 - math.floor(math.log10(abs(x)))
    x = round(x, decimals)
    if x != 0 and 2 - math.floor(math.log10(abs(x))) < decimals:  # rounding carried into the next decade
        decimals -= 1
    return f"{x:.{max(decimals, 0)}f}"


def count_text(c) -> str:
    """The one way a count is written: 'passed X of Y supported (Z unsupported)'."""
    return f"passed {c['passed']} of {c['supported']} supported ({c['unsupported']} unsupported)"


def slug(title: str) -> str:
    """A heading's anchor, as GitHub makes it: lower case, punctuation dropped, spaces to '-'."""
    import re

    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


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


def environment_rows(env: pd.DataFrame) -> tuple[list[str], list[list[tuple[str, str]]]]:
    header = [""] + list(env.columns)
    rows = [[(str(k), "")] + [(str(v), "") for v in vals] for k, vals in zip(env.index, env.to_numpy())]
    return header, rows


def adapter_versions(df: pd.DataFrame) -> dict:
    """(run, adapter) -> 'framework version'."""
    cols = df[["run", "adapter", "framework", "framework_version"]].drop_duplicates(["run", "adapter"])
    return {(r.run, r.adapter): f"{r.framework} {r.framework_version}" for r in cols.itertuples(index=False)}


def _adapter_list(entries) -> str:
    """'`adapter` 1.12×: passed X of Y supported (Z unsupported); 4 nonfinite', one a line."""
    parts = []
    for e in entries:
        text = f"`{e['adapter']}`"
        if not math.isnan(e.get("relative_time", math.nan)):
            text += f" {e['relative_time']:.2f}×"
        text += f": {count_text(e)}"
        if e.get("failures"):
            text += "; " + ", ".join(f"{n} {s}" for s, n in e["failures"].items())
        parts.append(text)
    return "\n".join(parts) if parts else "none"


def _adapter_cell(entries, what: str) -> tuple:
    """An adapter list as a table cell: plain when short, else folded after the first SHOWN
    entries (fastest first), its summary counting what is folded and how many of those break
    (NaN/inf, an error, a crash), so a folded hazard is still named on the first screen."""
    if len(entries) <= SHOWN + 1:
        return _adapter_list(entries), ""
    rest = entries[SHOWN:]
    worst = statuses.rank("inaccurate")
    breaking = sum(any(statuses.rank(s) > worst for s in (e.get("failures") or {})) for e in rest)
    summary = f"{len(rest)} more {what}" + (f", {breaking} of them with NaN/inf, errors or crashes" if breaking else "")
    return (_adapter_list(entries[:SHOWN]), summary, _adapter_list(rest)), FOLD


def which_rows(which: pd.DataFrame, devices: dict) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The "which to use" table: one row per use case x run (its device beside it)."""
    header = ["use case", "run", "recommended", "avoid", "evidence"]
    rows = []
    for r in which.itertuples(index=False):
        evidence = (f"{r.cases} realistic cases ({r.dtypes}; {r.label_kinds}); timed: {r.timed}; "
                    f"{r.others} adapters neither")
        if r.missing:
            evidence += f"; this run has no {', '.join(r.missing)} cases (run before that regime existed)"
        rows.append([(r.use_case, ""), (f"{r.run} ({devices.get(r.run, '')})", ""),
                     _adapter_cell(r.recommended, "recommended"), _adapter_cell(r.avoid, "to avoid"), (evidence, "")])
    return header, rows


def verdict_rows(ver: pd.DataFrame, kind: str, versions: dict) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """Realistic or adversarial verdicts: one row per (run,) adapter, one column per dtype,
    each cell 'mark passed X of Y supported (Z unsupported)' coloured by its worst status."""
    v = ver[ver["realism"] == kind]
    multi = ver["run"].nunique() > 1
    dtypes = rp._dtype_order(v["dtype"])
    header = (["run"] if multi else []) + ["adapter", "version"] + dtypes
    rows = []
    for run in sorted(v["run"].unique()):
        g = v[v["run"] == run]
        for adapter in vd.adapter_order(g["adapter"]):
            a = g[g["adapter"] == adapter].set_index("dtype")
            row = ([(run, "")] if multi else []) + [(f"`{adapter}`", ""), (versions.get((run, adapter), ""), "")]
            for d in dtypes:
                if d not in a.index:
                    row.append(("", ""))
                    continue
                c = a.loc[d]
                row.append((f"{STATUS_MARKS.get(c['status'], '?')} {count_text(c)}", c["status"]))
            rows.append(row)
    return header, rows


def failure_rows(fails: pd.DataFrame) -> tuple[list[str], list[list[tuple[str, str]]]]:
    header = ["run", "adapter", "dtype", "labels", "worst status", "count", "breakdowns by regime", "example case"]
    rows = [[(r["run"], ""), (f"`{r['adapter']}`", ""), (r["dtype"], ""), (r["label_kind"], ""),
             (f"{STATUS_MARKS.get(r['status'], '?')} {r['status']}", r["status"]), (count_text(r), ""),
             (", ".join(f"{k} ({v})" for k, v in r["regimes"].items()), ""), (f"`{r['case_id']}`", "")]
            for r in fails.to_dict("records")]
    return header, rows


def measures(z: pd.DataFrame) -> str:
    """What a Zimmermann table's numbers are ratios of: one measure, or one per run when the
    runs differ (an older run has no attainable ratio)."""
    per_run = z.drop_duplicates("run")[["run", "measure"]] if len(z) else z
    kinds = sorted(set(per_run["measure"])) if len(z) else []
    if len(kinds) <= 1:
        return kinds[0] if kinds else "error / tolerance"
    return "; ".join(f"`{r.run}`: {r.measure}" for r in per_run.itertuples(index=False))


def zimmermann_rows(z: pd.DataFrame, versions: dict) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """median / p99 / max per (run,) dtype x adapter, the best of each column in bold."""
    multi = z["run"].nunique() > 1
    header = (["run"] if multi else []) + ["dtype", "adapter", "version", "cases", "median", "p99", "max",
                                           "case of the max"]
    rows = []
    for r in z.to_dict("records"):
        cells = ([(r["run"], "")] if multi else []) + [(r["dtype"], ""), (f"`{r['adapter']}`", ""),
                                                       (versions.get((r["run"], r["adapter"]), ""), ""),
                                                       (str(r["cases"]), NUM)]
        for stat in ("median", "p99", "max"):
            text = sig3(r[stat])
            cells.append((f"**{text}**" if r[f"best_{stat}"] else text, NUM))
        cells.append((f"`{r['max_case']}`", ""))
        rows.append(cells)
    return header, rows


def _pm(median, iqr) -> str:
    if median is None or pd.isna(median):
        return ""
    return f"{sig3(median)} ± {sig3(iqr)}" if not pd.isna(iqr) else sig3(median)


def throughput_table(tp: pd.DataFrame) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """One run's throughput: one row per adapter x dtype x batch; median ± IQR ms per pass,
    then the forward+backward pass's GB/s, share of the copy bandwidth and peak memory.
    Columns with no value in any row are left out; `~` marks a noisy timing."""
    passes = [p for p in ("forward", "forward_backward") if p in set(tp["pass"])]
    short = {"forward": "fwd", "forward_backward": "fwd+bwd"}
    last = passes[-1] if passes else "forward"
    columns = ["adapter", "dtype", "N×V"] + [f"{short[p]} ms (median ± IQR)" for p in passes] + [
        f"{short[last]} GB/s", f"{short[last]} of copy", f"{short[last]} peak MiB", "not timed"]
    rows = []
    t = tp.assign(dtype=tp["dtype"].astype(str))
    for (adapter, dtype, n, v), g in t.groupby(["adapter", "dtype", "n_rows", "n_classes"], sort=True):
        by = {r["pass"]: r for r in g.to_dict("records")}
        row = {"adapter": (f"`{adapter}`", ""), "dtype": (dtype, ""), "N×V": (f"{n}×{v}", NUM)}
        problems = []
        for p in passes:
            r = by.get(p)
            if r is None:
                continue
            if r["status"] != "ok":
                problems.append(f"{short[p]}: {r['status']}")
                continue
            noisy = r.get("noisy")
            mark = "~" if noisy is not None and not pd.isna(noisy) and bool(noisy) else ""
            row[f"{short[p]} ms (median ± IQR)"] = (mark + _pm(r["median_ms"], r["iqr_ms"]), NUM)
        r = by.get(last)
        if r is not None and r["status"] == "ok":
            row[f"{short[last]} GB/s"] = (sig3(r.get("gbps")), NUM)
            frac = r.get("bandwidth_fraction")
            row[f"{short[last]} of copy"] = ("" if frac is None or pd.isna(frac) else f"{frac:.0%}", NUM)
            peak = r.get("peak_memory_bytes")
            row[f"{short[last]} peak MiB"] = ("" if peak is None or pd.isna(peak) else sig3(peak / 2**20), NUM)
        row["not timed"] = ("; ".join(problems), "")
        rows.append(row)
    keep = [c for c in columns if any(r.get(c, ("", ""))[0] not in ("", "—") for r in rows)]
    return keep, [[r.get(c, ("", "")) for c in keep] for r in rows]


def run_versions(run, keys=("torch", "jax", "tensorflow", "liger", "numpy", "scipy")) -> str:
    """The versions a run recorded, for the line beside its numbers: frameworks, then cestab and
    its git commit, CUDA, Triton and the NVIDIA driver (content.provenance: "absent" where the
    machine had none, "not recorded" for a run.json made before cestab recorded them), and the
    day the run started, so a reader sees which numbers came from an older run."""
    meta = run.meta
    versions = meta.get("versions") or {}
    parts = [f"{k} {versions[k]}" for k in keys if versions.get(k) not in (None, "", "unknown")]
    facts = rp.provenance(meta)
    recorded = {k: v for k, v in facts.items() if v != rp.NOT_RECORDED}
    parts += [f"{k} {v}" for k, v in recorded.items()]
    missing = [k for k in facts if k not in recorded]
    if missing:
        parts.append(f"{', '.join(missing)}: {rp.NOT_RECORDED} (run.json predates them)")
    started = str(meta.get("started", ""))[:10]
    return (f"started {started}; " if started else "") + ", ".join(parts)


def older_runs(runs) -> str:
    """A warning when the runs of one report were made on different days or by different
    cestab commits ('' when not): side by side, an older run's numbers would otherwise pass
    for this checkout's."""
    if len(runs) < 2:
        return ""
    started = {run.label: str(run.meta.get("started", ""))[:10] for run in runs}
    commits = {run.label: rp.provenance(run.meta)["git commit"].split(" (")[0] for run in runs}
    if len(set(started.values())) < 2 and len(set(commits.values())) < 2:
        return ""
    newest = max(started.values())
    old = [label for label, day in started.items() if day < newest or commits[label] == rp.NOT_RECORDED]
    if not old:
        return "**These runs come from different cestab commits**: compare their numbers with that in mind."
    by_label = {run.label: run for run in runs}

    def attainable(run) -> bool:
        return any(c.endswith("_att_ratio") and run.results[c].notna().any() for c in run.results.columns)

    newer_rules = any(attainable(run) for run in runs)

    def notes(label: str) -> str:
        run, out = by_label[label], ""
        if newer_rules and not attainable(run):  # its statuses were judged by an older rule
            out += "; judged without the attainable bound (no `lossy` status), so its verdicts are laxer than a newer run's"
        readme = run.path / "README.md"  # a run folder's own README (reports/gpu has one) may name what run.json lacks
        return out + (f"; see `{readme.as_posix()}`" if readme.is_file() else "")

    return ("**Older runs:** " + ", ".join(f"`{label}` (started {started[label] or 'on an unrecorded day'}, "
                                           f"git commit {commits[label]}{notes(label)})" for label in old)
            + f" predate the newest run ({newest}); their numbers were made with the versions listed for them, "
              "not with this checkout's.")


def corpus_rows(corpus: pd.DataFrame) -> tuple[list[str], list[list[tuple[str, str]]]]:
    header = ["entry", "its report", "kind", "still reproduced by"]
    rows = []
    for r in corpus.itertuples(index=False):
        who = ", ".join(f"`{a}`" for a in r.reproduced_by) or f"none of the {r.adapters_run} adapters run"
        rows.append([(f"[{r.id}]({r.url})", ""), (f"{r.title}: {r.what_went_wrong}", ""),
                     (f"{r.realism}: {r.why}", ""), (who, "")])
    return header, rows


# -- the document: a list of blocks both writers render ----------------------------------------


def _known_failure_sources() -> list[str]:
    """Each known failure's source (harness/testing/known_failures.json), its URL a link."""
    import json
    import re
    from pathlib import Path

    path = Path(rp.__file__).parents[1] / "testing" / "known_failures.json"
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for item in items:
        source = str(item.get("source", ""))
        linked = re.sub(r"(https?://[^\s,;)]+)", r"[\1](\1)", source)
        when = ", ".join(item.get("when", []))
        out.append(f"`{item.get('adapter', '?')}`" + (f" ({when})" if when else "") + f": {linked}")
    return sorted(set(out))


def blocks(report, command: str) -> list[tuple]:
    """The report as ("h1"|"h2"|"p"|"list"|"table"|"figure"|"pre"|"toc", ...) blocks, in reading order.

    The "which to use" table comes first (a reader's question is which one to use), then the
    evidence behind it. Text may hold `code` spans, **bold** and [links](url); the writers
    render them. Every number comes from a report DataFrame through the formatters above.
    """
    by_label = {run.label: run for run in report.runs}
    versions = adapter_versions(report.results)
    out: list[tuple] = [("h1", "Softmax cross-entropy: stability report")]
    for c in report.completeness:
        if c["partial"]:
            planned = c["planned"] if c["planned"] not in (None, "") else "?"
            out.append(("p", f"**Partial run `{c['run']}`: {c['ran']} of {planned} planned cases ran** "
                             f"(state: {c['state'] or 'unknown'}{'; ' + c['note'] if c['note'] else ''}). "
                             "Its counts cover only the cases that ran."))

    out.append(("h2", "Which to use"))
    out.append(("p", "By use case, from the realistic inputs of these runs; the rule is below the table, the "
                     "evidence in the sections after it."))
    if report.which is not None and not report.which.empty:
        header, rows = which_rows(report.which, {run.label: vd.run_device(run.meta) for run in report.runs})
        out.append(("table", header, rows))
    out.append(("p", "**Rule.** " + vd.RULE))
    out.append(("p", "**Made with** (details under Provenance):"))
    out.append(("list", [f"`{run.label}` ({vd.run_device(run.meta)}): {run_versions(run)}" for run in report.runs]))
    if older_runs(report.runs):
        out.append(("p", older_runs(report.runs)))
    out.append(("toc",))

    out.append(("h2", "Breakdowns on realistic inputs"))
    out.append(("p", f"What a model's own logits can hit: every run × adapter × dtype × label kind with a failure "
                     f"worse than `{vd.MILDEST_BREAKDOWN_ABOVE}` (NaN/inf, an exception, a crash) on realistic inputs, "
                     "with the counts of that group and the regimes of its breakdowns (the next section says which "
                     "inputs are realistic, and why; inaccurate cases are in the verdict and accuracy tables)."))
    if report.realistic_failures is not None and not report.realistic_failures.empty:
        header, rows = failure_rows(report.realistic_failures)
        out.append(("table", header, rows))
    else:
        out.append(("p", "None: no adapter returns NaN/inf, raises or crashes on a realistic case."))

    out.append(("h2", "Realistic and adversarial inputs"))
    out.append(("p", "Each regime (`harness/inputs/regimes.py`) and corpus entry (`corpus.json`) declares whether "
                     "training or inference produces its inputs; search findings are adversarial. `ignored_finite` "
                     "is padding with finite logits, `ignored_rows` the same with an all -inf padding row."))
    d = report.declarations
    out.append(("table", list(d.columns), [[(str(v), "") for v in r] for r in d.itertuples(index=False)]))

    out.append(("h2", "Findings"))
    out.append(("list", report.findings or ["No adapter failed a judged case."]))

    for kind in vd.KINDS:
        out.append(("h2", f"Verdicts on {kind} inputs"))
        out.append(("p", f"One row per adapter, one column per dtype, {kind} inputs only. Each cell: the mark of "
                         "the worst judged status, then passed X of Y supported (Z unsupported): supported cases have "
                         "a verdict; unsupported ones did not run and are never counted as passed; `undefined` "
                         "(no finite truth) are in neither."))
        header, rows = verdict_rows(report.verdicts, kind, versions)
        out.append(("table", header, rows))
    out.append(("list", [f"{STATUS_MARKS[s]} `{s}`: {STATUS_MEANINGS[s]}" for s in STATUS_MEANINGS]))

    out.append(("h2", "Accuracy: median, p99 and max error"))
    out.append(("p", f"Per dtype and adapter, over the realistic cases with a finite truth and a measured answer: "
                     f"the median, 99th percentile and largest error ratio (an actual case's value each, NaN/inf "
                     "outputs as inf), and the case of the largest; the best of each column within a dtype in bold. "
                     "Careful (attainable) implementations, where present, on top."))
    for quantity, frame in (("Loss", report.zimmermann_loss), ("Gradient", report.zimmermann_grad)):
        out.append(("p", f"**{quantity}** ({measures(frame)}):"))
        header, rows = zimmermann_rows(frame, versions)
        out.append(("table", header, rows))
    doc, table = rp.tolerance_legend()
    out.append(("p", "The tolerance is condition-aware. From `harness/numerics/tolerances.py`:"))
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

    out.append(("h2", "Error against the condition scale and class count"))
    out.append(("p", "Each point a case (finite logits, no ignored rows): its largest error / tolerance against the "
                     "tolerance's condition scale (loss + 2 + log2 V of its worst-conditioned row, recomputed "
                     "from the rebuilt case); realistic filled, adversarial hollow; NaN/inf in the top band."))
    out.append(("figure", "error-vs-condition.png"))
    out.append(("figure", "error-vs-class-count.png"))

    out.append(("h2", "Throughput"))
    if report.throughput is None:
        out.append(("p", "No bench table (`bench.parquet`) in these run folders: run `cestab bench` to add one."))
    else:
        out.append(("p", "Per run: median ± interquartile range of the timed calls in milliseconds (`~`: noisy, "
                         "IQR above 10 % of the median), the achieved bandwidth of the forward+backward pass, its "
                         "share of the device's measured copy bandwidth, and its peak memory."))
        for run in sorted(report.throughput["run"].unique()):
            tp = report.throughput[report.throughput["run"] == run]
            out.append(("p", f"**{run}** ({tp['device'].iloc[0] if 'device' in tp else ''}): "
                             f"{run_versions(by_label[run])}"))
            header, rows = throughput_table(tp)
            out.append(("table", header, rows))
        out.append(("figure", "accuracy-vs-speed.png"))
        out.append(("figure", "time-memory-vs-classes.png"))
        out.append(("figure", "bandwidth-vs-size.png"))

    if report.corpus is not None and not report.corpus.empty:
        out.append(("h2", "Corpus"))
        out.append(("p", "Inputs from public bug reports, each run against every adapter: the report, what it "
                         "said, whether it is realistic, and which adapters still fail on it (any run, any dtype)."))
        header, rows = corpus_rows(report.corpus)
        out.append(("table", header, rows))
        sources = _known_failure_sources()
        if sources:
            out.append(("p", "Sources of the known failures (`harness/testing/known_failures.json`):"))
            out.append(("list", sources))

    out.append(("h2", "Provenance"))
    out.append(("p", "Generated by this command from the stored results of "
                + ", ".join(f"`{run.path.as_posix()}`" for run in report.runs)
                + "; the report runs no implementation. Every number above is a cell of those results."))
    out.append(("pre", command))
    out.append(("p", "Versions per run (each number above belongs to its own run's versions):"))
    out.append(("list", [f"`{run.label}` ({vd.run_device(run.meta)}): {run_versions(run)}" for run in report.runs]))
    older = older_runs(report.runs)
    if older:
        out.append(("p", older))
    checks = [f"`{run.label}`: {timing_check_text(run)}" for run in report.runs if timing_check_text(run)]
    if checks:
        out.append(("p", "Timing check (the harness's timer against independent timers, same call):"))
        out.append(("list", checks))
    header, rows = environment_rows(report.environment)
    out.append(("table", header, rows))
    return out


def timing_check_text(run) -> str:
    """`timing_check.json` of a run folder, in one sentence ('' when the run has none)."""
    import json

    path = run.path / "timing_check.json"
    try:
        t = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    shape = "x".join(map(str, t.get("shape", [])))
    parts = [f"{t.get('call', '')} on {t.get('device', '')}, {t.get('dtype', '')} {shape}: harness "
             f"{sig3(t.get('harness_median_ms'))} ms"]
    for key, name in (("timer_median_ms", "torch.utils.benchmark.Timer"), ("do_bench_median_ms", "triton do_bench")):
        if key in t:
            parts.append(f"{name} {sig3(t[key])} ms")
    verdict = "within 5 %" if t.get("within_5_percent") else "NOT within 5 %"
    return ", ".join(parts) + f" ({verdict})"
