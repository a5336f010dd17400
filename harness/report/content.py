"""The stability report's content: DataFrames and sentences computed from stored run folders.

The report answers "which implementation can I trust, in which dtype, at what speed?" from
the data alone. It only reads what a run folder holds (`results.parquet`, `run.json`,
`worst/*.npz`, and `bench.parquet` where `cestab bench` wrote one); it never runs an
adapter. Each section is a function returning a DataFrame (or sentences), so every number a
writer prints (`report_markdown`, `report_html`) is a cell of one of these frames, and a
test can compare them with the results table directly.

Several run folders (a CPU and a GPU run, two framework versions, two machines) are read
side by side: each keeps its own label (`run` column), and every table is keyed by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.numerics import tolerances
from harness.errors import UsageError
from harness.store.runfolder import RunFolder
from harness.numerics import statuses
from harness.numerics.statuses import STATUSES
from harness.report import verdicts

#: Statuses that judge no answer (the status table's `judged`).
UNJUDGED = statuses.names(judged=False)
#: Outcomes on invalid labels (no truth exists): a question of validation, not of accuracy,
#: so the accuracy table and the worst inputs leave them to the heatmap and the findings.
INVALID_LABEL_OUTCOMES = statuses.names(invalid_labels=True)
#: Statuses that are a failure of the implementation, in display order.
FAILURES = statuses.names(failure=True)
#: Failures on inputs with a finite truth: what the accuracy columns count.
ACCURACY_FAILURES = statuses.names(failure=True, invalid_labels=False)
#: Statuses whose case had a finite truth and an answer to measure (the error plots).
MEASURED = statuses.names(measured=True)



@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path  # as the user named it: repro lines print it back
    label: str  # unique among the runs of one report
    meta: dict
    results: pd.DataFrame
    bench: pd.DataFrame | None = None


def load_run(path: str | Path) -> Run:
    """A run folder's tables; UsageError (one line) when it is missing or unreadable."""
    path = Path(path)
    folder = RunFolder.open(path)
    results = folder.read_table(RunFolder.RESULTS, "results table",
                                ("adapter", "case_id", "dtype", "grad_ulps", "loss_ulps", "regime", "status"))
    meta = folder.read_meta() if folder.has(RunFolder.META) else {}
    bench = folder.read_table(RunFolder.BENCH, "bench table") if folder.has(RunFolder.BENCH) else None
    return Run(path=path, label=path.name or str(path), meta=meta, results=results, bench=bench)


def load_runs(paths) -> list[Run]:
    """The runs in the order given, labelled by folder name (made unique with #k)."""
    if not paths:
        raise UsageError("give at least one run folder")
    runs = [load_run(p) for p in paths]
    seen: dict[str, int] = {}
    for run in runs:
        k = seen.get(run.label, 0)
        seen[run.label] = k + 1
        if k:
            run.label = f"{run.label}#{k + 1}"
    return runs


def results(runs: list[Run]) -> pd.DataFrame:
    """All runs' results, one table, with `run` (the label) and `regime_group` (search:* as search)."""
    frames = []
    for run in runs:
        df = run.results.copy()
        df.insert(0, "run", run.label)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["regime_group"] = df["regime"].astype("string").str.split(":").str[0]
    df["invalid_labels"] = _invalid_labels(df)
    df["realism"] = verdicts.realism(df)
    for col in ("loss_ulps", "grad_ulps", "loss_tol_ratio", "grad_tol_ratio"):
        df[col] = df[col].astype("float64")
    for col in ("n_loss_nonfinite", "n_grad_nonfinite", "n_flushed"):
        if col in df:
            df[col] = df[col].astype("Float64").fillna(0).astype("int64")
    return df


def _invalid_labels(df: pd.DataFrame) -> pd.Series:
    """Rows whose case breaks the label contract: an invalid regime, or a rejected/silent outcome."""
    from harness.inputs.regimes import REGIMES

    invalid = [name for name, regime in REGIMES.items() if regime.invalid]
    return (df["regime_group"].isin(invalid) | df["status"].isin(INVALID_LABEL_OUTCOMES)).astype(bool)


def bench(runs: list[Run]) -> pd.DataFrame | None:
    """All runs' bench tables, with `run`; None when no run has one."""
    frames = []
    for run in runs:
        if run.bench is not None:
            df = run.bench.copy()
            df.insert(0, "run", run.label)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else None


def status_rank(status: str) -> int:
    """Badness for picking a cell's colour and the worst inputs: unjudged statuses below
    every judged one, then the status table's severity and display order."""
    judged = statuses.get(status).judged
    severity, order = statuses.rank(status)
    return 1000 * judged + 100 * severity + order


def worst_status(names) -> str:
    """What a cell shows: its worst judged status, else the worst of the others."""
    return statuses.worst_judged(names)


def _finite_max(values: pd.Series) -> float:
    v = values.to_numpy(dtype="float64", na_value=np.nan)
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else math.nan


def _dtype_order(dtypes) -> list[str]:
    order = {d: k for k, d in enumerate(tolerances.TABLE)}
    return sorted(set(dtypes), key=lambda d: (order.get(d, len(order)), d))


# -- sections --------------------------------------------------------------------------------


#: What a run.json made before cestab recorded provenance says instead of a value.
NOT_RECORDED = "not recorded"


def provenance(meta: dict) -> dict:
    """What produced a run's numbers beyond its Python packages, for the report to print beside
    them: the cestab version and git commit (with the tree's state), torch's CUDA, Triton and
    the NVIDIA driver, as run.json's "provenance" holds them (harness/store/runfolder.py);
    "absent" where the machine lacked one, `NOT_RECORDED` for a run.json older than the field
    (an older run's numbers must not borrow this checkout's versions)."""
    rec = meta.get("provenance")
    rec = rec if isinstance(rec, dict) else {}
    version = (meta.get("versions") or {}).get("cestab")
    commit = rec.get("git_commit", NOT_RECORDED)
    if commit not in (NOT_RECORDED, "absent"):
        dirty = rec.get("git_dirty")
        commit += {True: " (tree differed from it)", False: " (clean tree)"}.get(dirty, " (tree state unknown)")
    return {
        "cestab": version if version not in (None, "", "unknown") else NOT_RECORDED,
        "git commit": commit,
        "CUDA (torch build)": rec.get("cuda", NOT_RECORDED),
        "Triton": rec.get("triton", NOT_RECORDED),
        "NVIDIA driver": rec.get("nvidia_driver", NOT_RECORDED),
    }


def environment(runs: list[Run]) -> pd.DataFrame:
    """One column per run: where, with what and how it ran (from run.json)."""
    cols = {}
    for run in runs:
        meta, env = run.meta, run.meta.get("environment", {})
        bench_df = run.bench
        gpu = env.get("gpu") or ""
        if not gpu and bench_df is not None and "device_name" in bench_df:
            names = sorted({str(n) for n, d in zip(bench_df["device_name"], bench_df["device"]) if str(d) != "cpu"})
            gpu = ", ".join(names)
        timing = meta.get("timing") or []
        seconds = sum(float(t.get("wall_seconds", 0) or 0) for t in timing if isinstance(t, dict))
        info = {
            "folder": str(run.path),
            "command": meta.get("command", ""),
            "seed": meta.get("seed", ""),
            "started (UTC)": meta.get("started", ""),
            "state": meta.get("state", ""),
            "device": meta.get("device", ""),
            "host": env.get("host", ""),
            "CPU": f"{env.get('cpu', '')} ({env.get('cpu_count', '?')} cores)" if env else "",
            "GPU": gpu or "none recorded",
            "platform": env.get("platform", ""),
            "Python": env.get("python", ""),
            "cases": meta.get("n_cases", ""),
            "results rows": len(run.results),
            "run time (s)": f"{seconds:.0f}" if seconds else "",
            "reference precision (float64 cases)": meta.get("reference_precision", ""),
            "bench table": "yes" if run.bench is not None else "no",
            **provenance(meta),
        }
        for name, version in sorted((meta.get("versions") or {}).items()):
            if name != "cestab":  # in the provenance rows above
                info[name] = version
        unavailable = meta.get("unavailable_frameworks") or {}
        for name, reason in sorted(unavailable.items()):
            info[f"{name} (unavailable)"] = reason
        cols[run.label] = pd.Series(info, dtype="object").astype(str)
    order = list(dict.fromkeys(k for col in cols.values() for k in col.index))  # as listed, not sorted
    return pd.DataFrame(cols).reindex(order).fillna("")


def accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run x adapter x dtype: largest loss and gradient errors in ulps, non-finite counts.

    The ulp maxima are taken over the finite errors (a NaN/inf output is counted in
    `nonfinite_cases`, not turned into an infinite ulp count) of every case with an answer;
    `status` is the worst status of the cell's cases (failures above ok, "unsupported" and
    "undefined" only when nothing was judged). Cases with invalid labels have no truth to be
    accurate to: they are left out here, except for the `rejected` and `silent` counts.
    """
    keys = ["run", "adapter", "dtype"]
    rows = []
    for (run, adapter, dtype), everything in df.groupby(keys, sort=True):
        g = everything[~everything["invalid_labels"]]
        invalid = everything[everything["invalid_labels"]]
        nonfinite = (g["n_loss_nonfinite"] + g["n_grad_nonfinite"]) > 0
        counts = g["status"].value_counts()
        row = {
            "run": run, "adapter": adapter, "dtype": dtype,
            "loss_ulps_max": _finite_max(g["loss_ulps"]),
            "grad_ulps_max": _finite_max(g["grad_ulps"]),
            "tol_ratio_max": _finite_max(pd.concat([g["loss_tol_ratio"], g["grad_tol_ratio"]])),
            "nonfinite_cases": int(nonfinite.sum()),
            "n_loss_nonfinite": int(g["n_loss_nonfinite"].sum()),
            "n_grad_nonfinite": int(g["n_grad_nonfinite"].sum()),
            "cases": len(g),
            "status": worst_status(g["status"].unique()),
        }
        for status in STATUSES:
            row[status] = int(counts.get(status, 0))
        row["invalid_label_cases"] = len(invalid)
        for status in INVALID_LABEL_OUTCOMES:
            row[status] = int((invalid["status"] == status).sum())
        rows.append(row)
    out = pd.DataFrame(rows)
    out["dtype"] = pd.Categorical(out["dtype"], _dtype_order(out["dtype"]), ordered=True)
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def status_by_regime(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run x adapter x regime group: worst status, failing cases, cases (all dtypes)."""
    rows = []
    for (run, adapter, regime), g in df.groupby(["run", "adapter", "regime_group"], sort=True):
        rows.append({
            "run": run, "adapter": adapter, "regime": regime,
            "status": worst_status(g["status"].unique()),
            "failing": int(g["status"].isin(FAILURES).sum()),
            "cases": len(g),
        })
    return pd.DataFrame(rows)


def regime_order(df: pd.DataFrame) -> list[str]:
    """Regimes in the order harness.inputs.regimes declares them, then corpus, search, the rest."""
    from harness.inputs.regimes import REGIMES

    known = [*REGIMES, "corpus", "search", "user"]
    present = set(df["regime_group"].unique()) if "regime_group" in df else set(df["regime"].unique())
    return [r for r in known if r in present] + sorted(present - set(known))


def _severity(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted worst first: by status rank, then by the larger tolerance ratio.

    Ties (e.g. several NaN cases) go to a search finding (a shrunk input), then to the
    smallest batch, then to the case id, so the pick is deterministic and easy to replay.
    """
    out = df.assign(
        _search=(df["source"] == "search").astype("int64") if "source" in df else 0,
        _size=(df["n_rows"].astype("Float64") * df["n_classes"].astype("Float64")).fillna(0).astype("float64"),
        _rank=df["status"].map(status_rank).astype("int64"),
        _ratio=np.fmax(df["loss_tol_ratio"].to_numpy(float, na_value=np.nan),
                       df["grad_tol_ratio"].to_numpy(float, na_value=np.nan)),
    )
    out["_ratio"] = out["_ratio"].fillna(-1.0)
    return out.sort_values(["_rank", "_ratio", "_search", "_size", "case_id"],
                           ascending=[False, False, False, True, True], kind="stable")


def repro_command(run: Run, row) -> str:
    """The `cestab repro` line that replays this row's input with this adapter."""
    case_file = row.get("case_file")
    if isinstance(case_file, str) and case_file:
        target = (run.path / case_file).as_posix()
    else:
        target = row["case_id"]
    return f"cestab repro {target} --adapters {row['adapter']}"


def _literal(text: str) -> str:
    """An adapter's message as a code span: it is the framework's text (or a user's), so
    Markdown must not read `<script>`, `*`, `[link](...)` or `|` in it as markup."""
    text = str(text).replace("`", "'").replace("\n", " ").strip()
    return f"`{text}`" if text else ""


def worst_inputs(df: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """Per run x adapter, the worst judged case (failures first, then by tolerance ratio).

    Invalid-label cases are left out: their outcome (rejected/silent) is in the heatmap.
    """
    by_label = {run.label: run for run in runs}
    judged = df[~df["status"].isin(UNJUDGED) & ~df["invalid_labels"]]
    rows = []
    for (run, adapter), g in judged.groupby(["run", "adapter"], sort=True):
        worst = _severity(g).iloc[0]
        rows.append({
            "run": run, "adapter": adapter, "dtype": worst["dtype"], "status": worst["status"],
            "case_id": worst["case_id"], "regime": worst["regime"],
            "loss_ulps": float(worst["loss_ulps"]), "grad_ulps": float(worst["grad_ulps"]),
            "tol_ratio": float(worst["_ratio"]) if worst["_ratio"] >= 0 else math.nan,
            "message": str(worst["message"] or "") if not pd.isna(worst["message"]) else "",
            "repro": repro_command(by_label[run], worst),
        })
    return pd.DataFrame(rows)


def case_facts(df: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """Per results row: `logit_scale`, the largest finite |logit| of its case (NaN for an empty
    batch), and `plain`, True when every logit is finite and no row is ignored.

    `plain` separates what the logits' size and the class count do from what -inf masks and
    padding do (those have their own regimes and heatmap columns).

    The results do not store the logits; regime and corpus cases rebuild bit-exactly from
    their ids and search findings load from the run folder (`harness.inputs.replay`), so this is
    still a fact of the stored run, not a new computation. NaN when a case cannot be rebuilt
    (e.g. a corpus entry that a later cestab dropped).
    """
    from harness.store import casefile
    from harness.inputs import replay

    by_label = {run.label: run for run in runs}
    cache: dict[tuple, tuple[float, bool, float]] = {}
    values = []
    for run, case_id, case_file in zip(df["run"], df["case_id"], df.get("case_file", pd.Series([None] * len(df)))):
        has_file = isinstance(case_file, str) and bool(case_file)
        key = (run, case_file) if has_file else (None, case_id)
        if key not in cache:
            try:
                if has_file:
                    case, _ = casefile.load(by_label[run].path / case_file)
                else:
                    case, _ = replay.load(str(case_id))
                z = case.logits.astype("float64")
                finite = np.isfinite(z)
                plain = bool(finite.all()) and not case.has_ignored
                cond = condition_scale(case) if plain and z.size else math.nan
                z = np.abs(z[finite])
                cache[key] = (float(z.max()) if z.size else math.nan, plain, cond)
            except UsageError:
                cache[key] = (math.nan, False, math.nan)
        values.append(cache[key])
    return pd.DataFrame(values, index=df.index, columns=["logit_scale", "plain", "cond_scale"]).astype(
        {"logit_scale": "float64", "plain": "bool", "cond_scale": "float64"})


def condition_scale(case) -> float:
    """The tolerance's loss condition scale of the case's worst-conditioned row, loss + 2 +
    log2(V) (harness/numerics/tolerances.py), for a case with finite logits and no ignored
    rows. The loss is recomputed in float64 with the max shift: a plotting axis, not the
    reference (the error it would need to matter is far below the axis's resolution)."""
    z = case.logits.astype("float64").reshape(-1, case.logits.shape[-1])
    n, v = z.shape
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    y = np.zeros_like(z)
    y[np.arange(n), np.asarray(case.target).reshape(-1)] = 1.0
    if case.soft_labels is not None:
        y = np.asarray(case.soft_labels, dtype="float64").reshape(n, v)
    elif case.smoothing:
        y = (1.0 - case.smoothing) * y + case.smoothing / v
    loss = lse - (y * z).sum(axis=1)
    return float((loss + 2.0 + math.log2(v)).max())


def error_points(df: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """Measured cases (ok/inaccurate/nonfinite) with their logit scale and worst tolerance ratio.

    `tol_ratio` is the larger of the loss and gradient ratios; inf when an output was NaN/inf
    where the truth is finite.
    """
    m = df[df["status"].isin(MEASURED)].copy()
    m[["logit_scale", "plain", "cond_scale"]] = case_facts(m, runs)
    m["tol_ratio"] = np.fmax(m["loss_tol_ratio"].to_numpy(float, na_value=np.nan),
                             m["grad_tol_ratio"].to_numpy(float, na_value=np.nan))
    m.loc[m["status"] == "nonfinite", "tol_ratio"] = math.inf
    return m[["run", "adapter", "dtype", "regime_group", "realism", "source", "case_id", "n_classes", "logit_scale",
              "plain", "cond_scale", "tol_ratio", "status"]]


def error_by(points: pd.DataFrame, by: str) -> pd.DataFrame:
    """Largest tolerance ratio per run x adapter x dtype x `by` (e.g. "n_classes").

    Only `plain` cases (finite logits, no ignored rows) count: a NaN from a -inf mask says
    nothing about scale or class count. Against the class count only the regime cases count:
    they share the run's grid of shapes, while corpus and search inputs come in shapes of
    their own that would scatter the axis.
    """
    p = points[points["plain"]].copy()
    if by == "n_classes" and (p["source"] == "regime").any():
        p = p[p["source"] == "regime"]
    out = p.groupby(["run", "adapter", "dtype", by], sort=True, observed=True)["tol_ratio"].max().reset_index()
    out[by] = out[by].astype("int64")
    return out


# -- throughput ------------------------------------------------------------------------------


def throughput(bench_df: pd.DataFrame | None) -> pd.DataFrame | None:
    """The bench table, one row per run x adapter x dtype x shape x pass, the columns a reader needs."""
    if bench_df is None:
        return None
    cols = ["run", "adapter", "dtype", "n_rows", "n_classes", "pass", "status", "median_ms", "iqr_ms",
            "rows_per_second", "gbps", "bandwidth_fraction", "noisy", "device", "min_bytes", "device_gbps",
            "peak_memory_bytes", "peak_memory_kind"]
    cols = [c for c in cols if c in bench_df]
    out = bench_df[cols].copy()
    out["dtype"] = pd.Categorical(out["dtype"], _dtype_order(out["dtype"]), ordered=True)
    return out.sort_values(["run", "adapter", "dtype", "n_rows", "n_classes", "pass"], kind="stable").reset_index(drop=True)


def speed_shape(tp: pd.DataFrame) -> tuple[int, int] | None:
    """The largest shape (by elements) timed with forward_backward and status ok: the comparison point."""
    ok = tp[(tp["status"] == "ok") & (tp["pass"] == "forward_backward")]
    if ok.empty:
        return None
    shapes = ok[["n_rows", "n_classes"]].drop_duplicates()
    shapes = shapes.assign(_n=shapes["n_rows"].astype("int64") * shapes["n_classes"].astype("int64"))
    top = shapes.sort_values(["_n", "n_classes"], ascending=False, kind="stable").iloc[0]
    return int(top["n_rows"]), int(top["n_classes"])


def speed_vs_accuracy(acc: pd.DataFrame, tp: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per run x adapter x dtype: rows/s (forward_backward, at the run's own `speed_shape`: a
    CPU run and a GPU run time different batches) beside the accuracy cell."""
    if tp is None:
        return None
    parts = []
    for _, timed in tp.groupby("run", sort=True):
        shape = speed_shape(timed)
        if shape is not None:
            parts.append(timed[(timed["status"] == "ok") & (timed["pass"] == "forward_backward")
                               & (timed["n_rows"] == shape[0]) & (timed["n_classes"] == shape[1])]
                         .assign(shape=f"{shape[0]}x{shape[1]}"))
    if not parts:
        return None
    sel = pd.concat(parts)
    speed = sel.groupby(["run", "adapter", "dtype", "shape"], observed=True, sort=True)[["rows_per_second", "median_ms"]].median().reset_index()
    speed["dtype"] = speed["dtype"].astype(str)
    a = acc.assign(dtype=acc["dtype"].astype(str))
    out = speed.merge(a[["run", "adapter", "dtype", "status", "tol_ratio_max", "nonfinite_cases", *ACCURACY_FAILURES]],
                      on=["run", "adapter", "dtype"], how="inner")
    out["failing_cases"] = out[list(ACCURACY_FAILURES)].sum(axis=1)
    return out.drop(columns=list(ACCURACY_FAILURES))


# -- findings --------------------------------------------------------------------------------


def _cases(n: int) -> str:
    return f"{n} case" if n == 1 else f"{n} cases"


def _join(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def findings(df: pd.DataFrame, acc: pd.DataFrame, speed: pd.DataFrame | None) -> list[str]:
    """Short sentences generated from the tables: what fails, where, and what to use instead."""
    out = []
    multi = df["run"].nunique() > 1

    def who(run, adapter):
        return f"`{adapter}`" + (f" ({run})" if multi else "")

    def count_text(g) -> str:
        c = verdicts.counts(g)
        return f"passed {c['passed']} of {c['supported']} supported ({c['unsupported']} unsupported)"

    # first the answer to "which can I trust, in which dtype", realistic and adversarial apart
    for (run, dtype, kind), g in df[~df["invalid_labels"]].groupby(["run", "dtype", "realism"], sort=True):
        per = {a: verdicts.counts(x) for a, x in g.groupby("adapter", sort=True)}
        judged = [a for a, c in per.items() if c["supported"]]
        clean = [a for a in judged if per[a]["passed"] == per[a]["supported"]]
        full = [a for a in clean if not per[a]["unsupported"]]
        where = f" ({run})" if multi else ""
        names = ", ".join(f"`{a}`" + ("" if a in full else f" ({per[a]['unsupported']} unsupported)") for a in clean)
        out.append(f"{dtype}{where}, {kind} inputs: {len(clean)} of {len(judged)} adapters pass every case they "
                   f"support{': ' + names if clean else ''}.")

    finite = df[~df["status"].isin(UNJUDGED) & ~df["invalid_labels"]]
    all_dtypes = set(df["dtype"])

    def dtypes_of(g):
        return "all dtypes" if set(g["dtype"]) == all_dtypes and len(all_dtypes) > 1 else _join(_dtype_order(g["dtype"]))

    def regimes_of(g, top=3):
        counts = sorted(g["regime_group"].value_counts().items(), key=lambda kv: (-kv[1], kv[0]))
        text = ", ".join(f"{r} ({n})" for r, n in counts[:top])
        return text + (f" and {len(counts) - top} more" if len(counts) > top else "")

    scope = df[~df["invalid_labels"]]
    nf = finite[(finite["n_loss_nonfinite"] + finite["n_grad_nonfinite"]) > 0]
    for (run, adapter, kind), g in nf.groupby(["run", "adapter", "realism"], sort=True):
        total = scope[(scope["run"] == run) & (scope["adapter"] == adapter) & (scope["realism"] == kind)]
        top = 99 if kind == verdicts.KINDS[0] else 3  # a realistic hazard is never "and N more"
        out.append(f"{who(run, adapter)} returns NaN/inf where the truth is finite on {kind} inputs in "
                   f"{_cases(len(g))} ({dtypes_of(g)}; {count_text(total)}), from {regimes_of(g, top)}.")
    bad = finite[finite["status"] == "inaccurate"]
    for (run, adapter, kind), g in bad.groupby(["run", "adapter", "realism"], sort=True):
        worst = _severity(g).iloc[0]
        total = scope[(scope["run"] == run) & (scope["adapter"] == adapter) & (scope["realism"] == kind)]
        top = 99 if kind == verdicts.KINDS[0] else 3
        out.append(f"{who(run, adapter)} is outside tolerance on {kind} inputs in {_cases(len(g))} ({dtypes_of(g)}; "
                   f"{count_text(total)}), from {regimes_of(g, top)}; worst {worst['_ratio']:.3g}x the tolerance on "
                   f"`{worst['case_id']}`.")
    for status in ("error", "crash", "timeout"):
        hit = df[df["status"] == status]
        for (run, adapter), g in hit.groupby(["run", "adapter"], sort=True):
            msg = str(g["message"].iloc[0] or "").splitlines()[0][:120] if not pd.isna(g["message"].iloc[0]) else ""
            out.append(f"{who(run, adapter)}: {status} in {_cases(len(g))}, e.g. `{g['case_id'].iloc[0]}`: {_literal(msg)}")
    silent = df[df["status"] == "silent"]
    if not silent.empty:
        tested = df[df["invalid_labels"]]
        everyone = sorted({who(r, a) for r, a in zip(tested["run"], tested["adapter"])})
        names = sorted({who(r, a) for r, a in zip(silent["run"], silent["adapter"])})
        others = [n for n in everyone if n not in names]
        text = (f"{len(names)} of {len(everyone)} adapters return numbers for invalid labels (silent) in "
                f"{_cases(len(silent))} instead of raising")
        if len(names) > len(everyone) / 2:
            text += f"; every other adapter raises: {_join(others)}." if others else "."
        else:
            text += f": {_join(names)}."
        out.append(text)
    flushed = df[df["n_flushed"] > 0] if "n_flushed" in df else df.iloc[:0]
    if not flushed.empty:
        per = flushed.groupby(["run", "adapter"], sort=True).size()
        names = [f"{who(r, a)} ({_cases(n)})" for (r, a), n in per.items()]
        text = (f"{len(names)} adapters return 0 for a subnormal true value (flush to zero; counted in "
                f"`n_flushed`, not judged)")
        text += f": {_join(names)}." if len(names) <= 6 else f", in {per.min()} to {_cases(per.max())} each."
        out.append(text)
    if speed is not None and not speed.empty:
        for (run, dtype), g in speed.groupby(["run", "dtype"], sort=True):
            clean = g[g["failing_cases"] == 0]
            if clean.empty:
                continue
            best = clean.sort_values(["rows_per_second", "adapter"], ascending=[False, True]).iloc[0]
            fastest = g.sort_values(["rows_per_second", "adapter"], ascending=[False, True]).iloc[0]
            text = (f"{dtype}: the fastest adapter without a failing case is {who(run, best['adapter'])}, "
                    f"{best['rows_per_second']:.3g} rows/s at {best['shape']} (forward+backward)")
            if fastest["adapter"] != best["adapter"]:
                text += (f"; {who(run, fastest['adapter'])} is faster ({fastest['rows_per_second']:.3g} rows/s) "
                         f"but fails {int(fastest['failing_cases'])} cases")
            out.append(text + ".")
    return out


# -- the whole report ------------------------------------------------------------------------


@dataclass
class Report:
    """Every section of the report, computed once from the run folders."""

    runs: list[Run]
    results: pd.DataFrame
    environment: pd.DataFrame
    accuracy: pd.DataFrame
    status_by_regime: pd.DataFrame
    regimes: list[str]
    worst: pd.DataFrame
    points: pd.DataFrame
    throughput: pd.DataFrame | None
    speed: pd.DataFrame | None
    findings: list[str] = field(default_factory=list)
    verdicts: pd.DataFrame | None = None
    declarations: pd.DataFrame | None = None
    realistic_failures: pd.DataFrame | None = None
    zimmermann_loss: pd.DataFrame | None = None
    zimmermann_grad: pd.DataFrame | None = None
    which: pd.DataFrame | None = None
    completeness: list[dict] = field(default_factory=list)
    corpus: pd.DataFrame | None = None
    speed_accuracy: pd.DataFrame | None = None


def corpus_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per corpus entry run: its link, what its report says, realistic or not, and
    which adapters still reproduce it (a failure on its case, in any run or dtype)."""
    from harness.inputs import corpus

    try:
        entries = corpus.load()
    except UsageError:
        entries = []
    c = df[df["regime_group"] == "corpus"]
    ids = c["case_id"].astype(str).str.split("/").str[1]
    rows = []
    for e in entries:
        mine = c[ids == e.id]
        if mine.empty:
            continue
        bad = mine[mine["status"].isin(FAILURES)]
        who = sorted({f"{a} ({r})" if df["run"].nunique() > 1 else a for a, r in zip(bad["adapter"], bad["run"])})
        rows.append({"id": e.id, "url": e.url, "title": e.title, "what_went_wrong": e.what_went_wrong,
                     "realism": verdicts.KINDS[0] if e.realistic else verdicts.KINDS[1], "why": e.realistic_why,
                     "reproduced_by": who, "adapters_run": int(mine["adapter"].nunique())})
    return pd.DataFrame(rows, columns=["id", "url", "title", "what_went_wrong", "realism", "why", "reproduced_by",
                                       "adapters_run"])


def build(paths) -> Report:
    runs = load_runs(paths)
    df = results(runs)
    acc = accuracy(df)
    tp = throughput(bench(runs))
    speed = speed_vs_accuracy(acc, tp)
    report = Report(
        runs=runs,
        results=df,
        environment=environment(runs),
        accuracy=acc,
        status_by_regime=status_by_regime(df),
        regimes=regime_order(df),
        worst=worst_inputs(df, runs),
        points=error_points(df, runs),
        throughput=tp,
        speed=speed,
        findings=findings(df, acc, speed),
        verdicts=verdicts.verdicts(df),
        declarations=verdicts.regime_declarations(df),
        realistic_failures=verdicts.realistic_failures(df),
        zimmermann_loss=verdicts.zimmermann(df, "loss"),
        zimmermann_grad=verdicts.zimmermann(df, "grad"),
        which=verdicts.which_to_use(df, runs, tp),
        completeness=verdicts.completeness(runs, df),
        corpus=corpus_table(df),
    )
    report.speed_accuracy = verdicts.speed_accuracy(tp, report.zimmermann_loss, report.zimmermann_grad)
    return report


def tolerance_legend() -> tuple[str, pd.DataFrame]:
    """The tolerance table's own explanation and values (harness/numerics/tolerances.py)."""
    table = pd.DataFrame(
        [{"dtype": d, "ulps": t.ulps, "cond": t.cond, "flush to zero counted, not judged": t.allow_flush_to_zero}
         for d, t in tolerances.TABLE.items()]
    )
    return (tolerances.__doc__ or "").strip(), table
