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

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import tolerances
from .errors import UsageError
from .tolerances import STATUSES

#: Statuses that judge an answer (the others say there was no answer to judge).
UNJUDGED = ("unsupported", "undefined")
#: Outcomes on invalid labels (no truth exists): a question of validation, not of accuracy,
#: so the accuracy table and the worst inputs leave them to the heatmap and the findings.
INVALID_LABEL_OUTCOMES = ("rejected", "silent")
#: Statuses that are a failure of the implementation, in STATUSES order (worst last).
FAILURES = tuple(s for s in STATUSES if s not in ("ok", "rejected", *UNJUDGED))
#: Failures on inputs with a finite truth: what the accuracy columns count.
ACCURACY_FAILURES = tuple(s for s in FAILURES if s not in INVALID_LABEL_OUTCOMES)
#: Statuses whose case had a finite truth and an answer to measure (the error plots).
MEASURED = ("ok", "lossy", "inaccurate", "nonfinite")

RESULTS_FILE = "results.parquet"
BENCH_FILE = "bench.parquet"
META_FILE = "run.json"


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path  # as the user named it: repro lines print it back
    label: str  # unique among the runs of one report
    meta: dict
    results: pd.DataFrame
    bench: pd.DataFrame | None = None


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: cannot read the {what} ({reason})") from None


def load_run(path: str | Path) -> Run:
    """A run folder's tables; UsageError (one line) when it is missing or unreadable."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path}: no such run folder")
    if not (path / RESULTS_FILE).is_file():
        raise UsageError(f"{path}: no {RESULTS_FILE} (not a finished run folder)")
    results = _read_parquet(path / RESULTS_FILE, "results table")
    missing = {"adapter", "dtype", "status", "case_id", "regime", "loss_ulps", "grad_ulps"} - set(results.columns)
    if missing:
        raise UsageError(f"{path / RESULTS_FILE}: not a cestab results table (no {', '.join(sorted(missing))})")
    meta = {}
    if (path / META_FILE).is_file():
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise UsageError(f"{path / META_FILE}: not valid JSON") from None
        if not isinstance(meta, dict):
            raise UsageError(f"{path / META_FILE}: not a JSON object")
    bench = _read_parquet(path / BENCH_FILE, "bench table") if (path / BENCH_FILE).is_file() else None
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
    for col in ("loss_ulps", "grad_ulps", "loss_tol_ratio", "grad_tol_ratio"):
        df[col] = df[col].astype("float64")
    for col in ("n_loss_nonfinite", "n_grad_nonfinite", "n_flushed"):
        if col in df:
            df[col] = df[col].astype("Float64").fillna(0).astype("int64")
    return df


def _invalid_labels(df: pd.DataFrame) -> pd.Series:
    """Rows whose case breaks the label contract: an invalid regime, or a rejected/silent outcome."""
    from .regimes import REGIMES

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
    """Badness for picking a cell's colour: failures above ok, no-answer statuses below ok."""
    if status in UNJUDGED:
        return -2 if status == "undefined" else -1
    return STATUSES.index(status) if status in STATUSES else len(STATUSES)


def worst_status(statuses) -> str:
    statuses = list(statuses)
    return max(statuses, key=status_rank) if statuses else ""


def _finite_max(values: pd.Series) -> float:
    v = values.to_numpy(dtype="float64", na_value=np.nan)
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else math.nan


def _dtype_order(dtypes) -> list[str]:
    order = {d: k for k, d in enumerate(tolerances.TABLE)}
    return sorted(set(dtypes), key=lambda d: (order.get(d, len(order)), d))


# -- sections --------------------------------------------------------------------------------


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
        }
        for name, version in sorted((meta.get("versions") or {}).items()):
            info[name] = version
        unavailable = meta.get("unavailable_frameworks") or {}
        for name, reason in sorted(unavailable.items()):
            info[f"{name} (unavailable)"] = reason
        cols[run.label] = pd.Series(info, dtype="object").astype(str)
    return pd.DataFrame(cols).fillna("")


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
    """Regimes in the order harness.regimes declares them, then corpus, search, the rest."""
    from .regimes import REGIMES

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
    their ids and search findings load from the run folder (`harness.replay`), so this is
    still a fact of the stored run, not a new computation. NaN when a case cannot be rebuilt
    (e.g. a corpus entry that a later cestab dropped).
    """
    from . import casefile, replay

    by_label = {run.label: run for run in runs}
    cache: dict[tuple, tuple[float, bool]] = {}
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
                z = np.abs(z[finite])
                cache[key] = (float(z.max()) if z.size else math.nan, plain)
            except UsageError:
                cache[key] = (math.nan, False)
        values.append(cache[key])
    return pd.DataFrame(values, index=df.index, columns=["logit_scale", "plain"]).astype(
        {"logit_scale": "float64", "plain": "bool"})


def error_points(df: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """Measured cases (ok/inaccurate/nonfinite) with their logit scale and worst tolerance ratio.

    `tol_ratio` is the larger of the loss and gradient ratios; inf when an output was NaN/inf
    where the truth is finite.
    """
    m = df[df["status"].isin(MEASURED)].copy()
    m[["logit_scale", "plain"]] = case_facts(m, runs)
    m["tol_ratio"] = np.fmax(m["loss_tol_ratio"].to_numpy(float, na_value=np.nan),
                             m["grad_tol_ratio"].to_numpy(float, na_value=np.nan))
    m.loc[m["status"] == "nonfinite", "tol_ratio"] = math.inf
    return m[["run", "adapter", "dtype", "regime_group", "source", "case_id", "n_classes", "logit_scale", "plain",
              "tol_ratio", "status"]]


#: Bins of the largest |logit| (powers of ten, doubling exponents: float16 ends near 1e5,
#: float32 near 1e38, float64 near 1e308), with their labels; all-zero logits fall in the first.
LOGIT_BIN_EXPONENTS = (0, 1, 2, 4, 8, 16, 32, 64, 128)
LOGIT_BIN_LABELS = ("<1", "1-10", "10-100", "1e2-1e4", "1e4-1e8", "1e8-1e16", "1e16-1e32", "1e32-1e64",
                    "1e64-1e128", ">=1e128")


def logit_bin(scale) -> np.ndarray:
    """Index into LOGIT_BIN_LABELS of each logit scale (-1 for NaN: an empty batch)."""
    scale = np.asarray(scale, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.log10(scale)
    index = np.searchsorted(np.array(LOGIT_BIN_EXPONENTS, dtype=float), exponent, side="right")
    return np.where(np.isnan(scale), -1, np.where(scale == 0, 0, index))


def error_by(points: pd.DataFrame, by: str) -> pd.DataFrame:
    """Largest tolerance ratio per run x adapter x dtype x `by` ("n_classes", or "logit_bin").

    Only `plain` cases (finite logits, no ignored rows) count: a NaN from a -inf mask says
    nothing about scale or class count. Against the class count only the regime cases count:
    they share the run's grid of shapes, while corpus and search inputs come in shapes of
    their own that would scatter the axis.
    """
    p = points[points["plain"]].copy()
    if by == "n_classes" and (p["source"] == "regime").any():
        p = p[p["source"] == "regime"]
    if by == "logit_bin":
        p[by] = logit_bin(p["logit_scale"])
        p = p[p[by] >= 0]
    out = p.groupby(["run", "adapter", "dtype", by], sort=True, observed=True)["tol_ratio"].max().reset_index()
    out[by] = out[by].astype("int64")
    return out


# -- throughput ------------------------------------------------------------------------------


def throughput(bench_df: pd.DataFrame | None) -> pd.DataFrame | None:
    """The bench table, one row per run x adapter x dtype x shape x pass, the columns a reader needs."""
    if bench_df is None:
        return None
    cols = ["run", "adapter", "dtype", "n_rows", "n_classes", "pass", "status", "median_ms", "iqr_ms",
            "rows_per_second", "gbps", "bandwidth_fraction", "noisy", "device"]
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

    # first the answer to "which can I trust, in which dtype"
    for (run, dtype), g in acc.groupby(["run", "dtype"], sort=True, observed=True):
        judged = g[g["cases"] > g["unsupported"] + g["undefined"]]
        clean = judged[judged[list(ACCURACY_FAILURES)].sum(axis=1) == 0]["adapter"].tolist()
        where = f" ({run})" if multi else ""
        names = _join([f"`{a}`" for a in clean]) if clean else "none"
        out.append(f"{dtype}{where}: {len(clean)} of {len(judged)} adapters are within tolerance on every case "
                   f"with a finite truth: {names}.")

    finite = df[~df["status"].isin(UNJUDGED) & ~df["invalid_labels"]]
    all_dtypes = set(df["dtype"])

    def dtypes_of(g):
        return "all dtypes" if set(g["dtype"]) == all_dtypes and len(all_dtypes) > 1 else _join(_dtype_order(g["dtype"]))

    def regimes_of(g, top=3):
        counts = sorted(g["regime_group"].value_counts().items(), key=lambda kv: (-kv[1], kv[0]))
        text = ", ".join(f"{r} ({n})" for r, n in counts[:top])
        return text + (f" and {len(counts) - top} more" if len(counts) > top else "")

    nf = finite[(finite["n_loss_nonfinite"] + finite["n_grad_nonfinite"]) > 0]
    for (run, adapter), g in nf.groupby(["run", "adapter"], sort=True):
        total = finite[(finite["run"] == run) & (finite["adapter"] == adapter)]
        out.append(f"{who(run, adapter)} returns NaN/inf on finite inputs in {len(g)} of {_cases(len(total))} "
                   f"({dtypes_of(g)}), from {regimes_of(g)}.")
    bad = finite[finite["status"] == "inaccurate"]
    for (run, adapter), g in bad.groupby(["run", "adapter"], sort=True):
        worst = _severity(g).iloc[0]
        out.append(f"{who(run, adapter)} is outside tolerance in {_cases(len(g))} ({dtypes_of(g)}), from "
                   f"{regimes_of(g)}; worst {worst['_ratio']:.3g}x the tolerance on `{worst['case_id']}`.")
    for status in ("error", "crash", "timeout"):
        hit = df[df["status"] == status]
        for (run, adapter), g in hit.groupby(["run", "adapter"], sort=True):
            msg = str(g["message"].iloc[0] or "").splitlines()[0][:120] if not pd.isna(g["message"].iloc[0]) else ""
            out.append(f"{who(run, adapter)}: {status} in {_cases(len(g))}, e.g. `{g['case_id'].iloc[0]}`: {msg}")
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


def build(paths) -> Report:
    runs = load_runs(paths)
    df = results(runs)
    acc = accuracy(df)
    tp = throughput(bench(runs))
    speed = speed_vs_accuracy(acc, tp)
    return Report(
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
    )


def tolerance_legend() -> tuple[str, pd.DataFrame]:
    """The tolerance table's own explanation and values (harness/tolerances.py)."""
    table = pd.DataFrame(
        [{"dtype": d, "ulps": t.ulps, "cond": t.cond, "flush to zero counted, not judged": t.allow_flush_to_zero}
         for d, t in tolerances.TABLE.items()]
    )
    return (tolerances.__doc__ or "").strip(), table


def render_figures(report: Report) -> dict[str, bytes]:
    """Every figure of the report, by file name, as PNG bytes (only those with data to draw)."""
    from . import figures

    styles = figures.adapter_styles(report.results["adapter"])
    out = {"status-heatmap.png": figures.status_heatmap(report.status_by_regime, report.regimes)}
    points = report.points
    dtypes = _dtype_order(points["dtype"].astype(str)) if not points.empty else []
    if dtypes:
        by_scale = error_by(points, "logit_bin")
        out["error-vs-logit-scale.png"] = figures.error_heatmap(
            by_scale, "logit_bin", list(range(len(LOGIT_BIN_LABELS))), list(LOGIT_BIN_LABELS), dtypes,
            "Error against logit scale (largest finite |logit| of the case)")
        by_classes = error_by(points, "n_classes")
        classes = sorted(by_classes["n_classes"].unique())
        out["error-vs-class-count.png"] = figures.error_heatmap(
            by_classes, "n_classes", classes, [str(v) for v in classes], dtypes,
            "Error against class count V (regime cases)")
    if report.speed is not None and not report.speed.empty:
        sdtypes = _dtype_order(report.speed["dtype"].astype(str))
        out["accuracy-vs-speed.png"] = figures.accuracy_vs_speed(report.speed, sdtypes, styles)
    return out


def _publish(path: Path, write, *args, **kwargs) -> None:
    """Write, then make the file world-readable: a report is meant to be served and shared
    (the temporary file of an atomic write starts private)."""
    write(*args, **kwargs)
    path.chmod(0o644)


def write_report(paths, out_dir: str | Path = "reports", command: str = "") -> dict[str, Path]:
    """Build the report from run folders and write stability.md, stability.html and figures/*.png.

    Each file is written atomically; the same run folders (and command) give the same bytes.
    Returns the written paths by name.
    """
    from . import report_html, report_markdown, report_text
    from .runfolder import write_atomic

    report = build(paths)
    figures = render_figures(report)
    blocks = [b for b in report_text.blocks(report, command or "cestab report " + " ".join(map(str, paths)))
              if b[0] != "figure" or b[1] in figures]
    out_dir = Path(out_dir)
    try:
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the report folder {out_dir}: {exc.strerror or exc}") from None
    written = {}
    for name, png in figures.items():
        path = out_dir / "figures" / name
        write_atomic(path, lambda p, data=png: _publish(p, p.write_bytes, data))
        written[name] = path
    md = report_markdown.render(blocks)
    page = report_html.render(blocks, figures)
    for name, text in (("stability.md", md), ("stability.html", page)):
        write_atomic(out_dir / name, lambda p, t=text: _publish(p, p.write_text, t, encoding="utf-8"))
        written[name] = out_dir / name
    return written
