"""The report's verdict tables: realistic vs adversarial, honest counts, the use-case table
("which to use") and the Zimmermann-style accuracy table.

Why a module of its own: these are the tables a reader acts on, each computed from the
results table by a rule that is written down here (and printed beside the table), so a test
can recompute every cell from `results.parquet` by the same rule. It sits beside
`content` on the report's ladder (DataFrames only; no figure, no text formatting).

Realistic or adversarial is declared where the inputs are declared: `Regime.realistic`
(harness/inputs/regimes.py) and each corpus entry's `realistic` (corpus.json); search
findings are adversarial by construction. Statuses are read from the status table
(`harness.numerics.statuses`): a status added there (e.g. `lossy`) is counted by its own
`judged` and `failure` flags without any change here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.numerics import statuses

#: Judged statuses (a verdict on the result): the "supported" cases of a count.
JUDGED = statuses.names(judged=True)
#: Failures: the judged statuses that are not a pass.
FAILURES = statuses.names(failure=True)
#: Measured statuses: an error against a finite truth exists (the accuracy table).
MEASURED = statuses.names(measured=True)
#: The status of a case the adapter did not run (declared or refused): "Z unsupported".
UNSUPPORTED = "unsupported"

#: The two kinds of input, in display order.
KINDS = ("realistic", "adversarial")


def is_careful(adapter: str) -> bool:
    """An attainable-accuracy implementation (`numpy.careful`, a torch careful adapter):
    its row goes on top of the accuracy tables, as the line the others are measured from."""
    return "careful" in str(adapter).split(".")


def adapter_order(adapters) -> list[str]:
    """Careful (attainable) adapters first, then the rest, each alphabetically."""
    return sorted(set(adapters), key=lambda a: (not is_careful(a), a))


# -- realistic or adversarial -------------------------------------------------------------


def _corpus_declarations() -> dict[str, tuple[bool, str]]:
    from harness.inputs import corpus

    try:
        return {e.id: (e.realistic, e.realistic_why) for e in corpus.load()}
    except Exception:  # a broken corpus file must not stop a report of stored results
        return {}


def declarations() -> dict[str, tuple[bool, str]]:
    """regime group or `corpus/<id>` -> (realistic, why): every declaration the report uses."""
    from harness.inputs.regimes import REGIMES, SEARCH_WHY

    out = {name: (r.realistic, r.why) for name, r in REGIMES.items()}
    out.update({f"corpus/{k}": v for k, v in _corpus_declarations().items()})
    out["search"] = (False, SEARCH_WHY)
    return out


def _declaration_key(regime_group: str, case_id: str) -> str:
    if regime_group == "corpus":
        parts = str(case_id).split("/")
        return "/".join(parts[:2])
    return regime_group


def realism(df: pd.DataFrame) -> pd.Series:
    """'realistic' or 'adversarial' per results row, from the declarations; anything not
    declared (a user's probe, a corpus entry a later cestab dropped) counts as adversarial."""
    decl = declarations()
    keys = [_declaration_key(g, c) for g, c in zip(df["regime_group"], df["case_id"])]
    return pd.Series([KINDS[0] if decl.get(k, (False, ""))[0] else KINDS[1] for k in keys],
                     index=df.index, dtype="object")


def regime_declarations(df: pd.DataFrame) -> pd.DataFrame:
    """The regimes present in these runs with their kind and reason (the report's legend)."""
    from harness.inputs.regimes import REGIMES

    decl = declarations()
    rows = []
    for name in [*REGIMES, "corpus", "search"]:
        if name not in set(df["regime_group"]):
            continue
        if name == "corpus":
            kinds = df.loc[df["regime_group"] == "corpus", "realism"].value_counts()
            rows.append({"regime": name, "kind": "per entry",
                         "description": "inputs from public bug reports",
                         "why": f"{int(kinds.get('realistic', 0))} realistic and "
                                f"{int(kinds.get('adversarial', 0))} adversarial results rows; see the corpus table"})
            continue
        realistic, why = decl[name]
        rows.append({"regime": name, "kind": KINDS[0] if realistic else KINDS[1],
                     "description": REGIMES[name].description if name in REGIMES else "worst-case search findings",
                     "why": why})
    return pd.DataFrame(rows, columns=["regime", "kind", "description", "why"])


# -- counts --------------------------------------------------------------------------------


def counts(g: pd.DataFrame) -> dict:
    """passed / supported / unsupported of some results rows: supported are the judged cases
    (a verdict exists), passed those of them that are no failure; `undefined` cases (no finite
    truth) are in neither and counted apart."""
    status = g["status"]
    supported = int(status.isin(JUDGED).sum())
    failed = int(status.isin(FAILURES).sum())
    return {"passed": supported - failed, "supported": supported,
            "unsupported": int((status == UNSUPPORTED).sum()), "cases": len(g)}


def verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run x adapter x dtype x kind (realistic/adversarial): the counts and the
    worst judged status (statuses.worst_judged)."""
    rows = []
    for (run, adapter, dtype, kind), g in df.groupby(["run", "adapter", "dtype", "realism"], sort=True):
        rows.append({"run": run, "adapter": adapter, "dtype": dtype, "realism": kind, **counts(g),
                     "status": statuses.worst_judged(g["status"].unique())})
    return pd.DataFrame(rows, columns=["run", "adapter", "dtype", "realism", "passed", "supported", "unsupported",
                                       "cases", "status"])


#: Failures at least this bad are breakdowns (NaN/inf, an exception, a crash, a hang):
#: what the "avoid" rule and the breakdown table single out, by the status table's rank.
MILDEST_BREAKDOWN_ABOVE = "inaccurate"


def is_breakdown(status: str) -> bool:
    """A failure worse than `inaccurate` in the status table's rank (NaN/inf, raised, crashed)."""
    return status in FAILURES and statuses.rank(status) > statuses.rank(MILDEST_BREAKDOWN_ABOVE)


def realistic_failures(df: pd.DataFrame) -> pd.DataFrame:
    """Breakdowns on realistic inputs, one row per run x adapter x dtype x label kind: the
    hazards a reader's own model can hit, with the counts of that group, the regimes of
    its breakdowns and an example case. (Merely inaccurate cases are in the verdict and
    accuracy tables.)"""
    real = df[df["realism"] == KINDS[0]]
    rows = []
    for key, g in real.groupby(["run", "adapter", "dtype", "label_kind"], sort=True):
        bad = g[g["status"].map(is_breakdown)]
        if bad.empty:
            continue
        worst = statuses.worst(bad["status"].unique())
        example = bad[bad["status"] == worst].sort_values("case_id").iloc[0]
        regimes = {str(k): int(v) for k, v in bad["regime_group"].value_counts().sort_index().items()}
        rows.append(dict(zip(["run", "adapter", "dtype", "label_kind"], key), **counts(g), broken=len(bad),
                         regimes=regimes, status=worst, case_id=example["case_id"]))
    return pd.DataFrame(rows, columns=["run", "adapter", "dtype", "label_kind", "passed", "supported", "unsupported",
                                       "cases", "broken", "regimes", "status", "case_id"])


# -- the Zimmermann-style accuracy table -----------------------------------------------------


def error_metric(df: pd.DataFrame, quantity: str) -> tuple[str, str]:
    """The error column for `quantity` (loss/grad) and what it means: the ratio to the
    attainable error (a careful implementation's) where the results have it, else the ratio
    to the dtype's tolerance."""
    att = f"{quantity}_att_ratio"
    if att in df and df[att].notna().any():
        return att, "error / attainable error"
    return f"{quantity}_tol_ratio", "error / tolerance"


def _order_stat(values: np.ndarray, q: float) -> float:
    """The smallest value with at least a fraction q of the values at or below it (an actual
    case's value, inf included; no interpolation between cases)."""
    v = np.sort(values)
    return float(v[max(math.ceil(q * len(v)) - 1, 0)])


def zimmermann(df: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """Per run x dtype x adapter, over realistic measured cases with a finite truth: median,
    p99 and max of the error (loss or gradient), the case of the max, and `best_*` marks
    (the smallest value of each column within its run x dtype).

    A NaN/inf output where the truth is finite counts as an infinite error, so it cannot
    hide behind the finite ones. Careful (attainable) adapters first. The error measure is
    chosen per run (`measure`): a run made before the attainable ratio existed keeps its
    error / tolerance rather than losing every finite row to the newer run's column.
    """
    metric = {run: error_metric(g, quantity) for run, g in df.groupby("run")}
    nonfinite = f"n_{quantity}_nonfinite"
    m = df[(df["realism"] == KINDS[0]) & df["status"].isin(MEASURED) & ~df["invalid_labels"]]
    rows = []
    from harness.numerics import tolerances

    rank = {d: k for k, d in enumerate(tolerances.TABLE)}  # dtypes in the tolerance table's order
    groups = sorted(m.groupby(["run", "dtype"]), key=lambda kv: (kv[0][0], rank.get(kv[0][1], len(rank)), kv[0][1]))
    for (run, dtype), g in groups:
        for adapter in adapter_order(g["adapter"]):
            a = g[g["adapter"] == adapter]
            col, measure = metric[run]
            err = a[col].to_numpy(float, na_value=np.nan)
            err = np.where(a[nonfinite].to_numpy() > 0, np.inf, err)
            keep = ~np.isnan(err)
            err, ids = err[keep], a["case_id"].to_numpy()[keep]
            if not err.size:
                continue
            top = int(np.lexsort((ids, -err))[0])  # largest error; among equals the first id
            rows.append({"run": run, "dtype": dtype, "adapter": adapter, "cases": int(err.size),
                         "median": _order_stat(err, 0.5), "p99": _order_stat(err, 0.99), "max": float(err[top]),
                         "max_case": str(ids[top]), "measure": measure})
    out = pd.DataFrame(rows, columns=["run", "dtype", "adapter", "cases", "median", "p99", "max", "max_case",
                                      "measure"])
    for stat in ("median", "p99", "max"):
        best = out.groupby(["run", "dtype"])[stat].transform("min")
        out[f"best_{stat}"] = (out[stat] == best) & np.isfinite(out[stat].astype(float))  # empty: object columns
    return out


# -- which to use ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UseCase:
    """A reader's situation: the dtypes and label kinds of their inputs, and the device."""

    name: str
    dtypes: tuple[str, ...]
    label_kinds: tuple[str, ...]
    #: "cuda", "cpu", or None (any): the runs whose device this use case reads; when no run
    #: is on that device, every run with the dtypes is read (and labelled).
    device: str | None
    #: The pass that is timed for the speed cost.
    timed_pass: str = "forward_backward"
    #: Regimes whose absence from a run the table says (evidence the use case needs).
    needs: tuple[str, ...] = ()


USE_CASES: tuple[UseCase, ...] = (
    UseCase("bf16 LM training: integer labels, ignore_index padding", ("bfloat16",), ("index",), "cuda",
            needs=("ignored_finite",)),
    UseCase("fp16 training with label smoothing", ("float16",), ("smoothing",), "cuda"),
    UseCase("dense or soft labels (distillation, mixup), float32/bf16", ("float32", "bfloat16"), ("onehot", "soft"),
            None),
    UseCase("float64 science", ("float64",), ("index", "onehot", "soft", "smoothing"), None),
    UseCase("CPU inference, float32, integer labels", ("float32",), ("index",), "cpu", timed_pass="forward"),
)

#: How many of its supported in-scope cases an adapter may fail before it is to be avoided.
AVOID_SHARE = 0.1

#: Failures the rule does not hold against an adapter: `lossy` is within the textbook bound
#: (stable, but short of what a careful implementation attains, e.g. 19 ulps where 4 are
#: attainable). Counting it as a failure left every framework adapter on CPU "to avoid" and
#: only the `*.careful` references recommended, which answers no reader; its count stays in
#: every entry, so the accuracy a choice gives up is still on the page.
MILD_FAILURES = ("lossy",)

#: The rule, printed beside the table.
RULE = ("In scope: the run's realistic cases of the use case's dtypes and label kinds. A failure here is a status "
        f"worse than `{MILD_FAILURES[0]}` (inaccurate or worse); `{MILD_FAILURES[0]}` cases (stable, short of the "
        "attainable accuracy) are counted in each entry but held against no one. Recommended: the adapters that "
        "ran every in-scope case (none unsupported) with the fewest failing cases (ideally none); fastest first, "
        "with the time of each relative to the fastest recommended (the pass named, at the run's largest timed "
        "batch of the first timed dtype). Avoid: an adapter whose in-scope failures include a status worse than "
        f"`{MILDEST_BREAKDOWN_ABOVE}` (NaN/inf, an exception, a crash) or exceed {AVOID_SHARE:.0%} of the "
        "in-scope cases it supports. The others are neither; their number is given.")


def run_device(meta: dict) -> str:
    return "cuda" if str(meta.get("device", "cpu")).startswith("cuda") else "cpu"


def speeds(tp: pd.DataFrame | None) -> pd.DataFrame:
    """Per run x adapter x dtype x pass: median ms at the run's largest ok batch of that dtype and pass."""
    cols = ["run", "adapter", "dtype", "pass", "shape", "median_ms", "rows_per_second"]
    if tp is None or tp.empty:
        return pd.DataFrame(columns=cols)
    ok = tp[tp["status"] == "ok"].assign(dtype=lambda t: t["dtype"].astype(str),
                                         _n=lambda t: t["n_rows"].astype("int64") * t["n_classes"].astype("int64"))
    parts = []
    for (run, dtype, pass_), g in ok.groupby(["run", "dtype", "pass"], sort=True):
        top = g.sort_values(["_n", "n_classes"], ascending=False, kind="stable").iloc[0]
        sel = g[(g["n_rows"] == top["n_rows"]) & (g["n_classes"] == top["n_classes"])]
        parts.append(sel.assign(shape=f"{int(top['n_rows'])}x{int(top['n_classes'])}")[cols])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def rule_failures(g: pd.DataFrame) -> int:
    """RULE's failures among some results rows: failing statuses other than MILD_FAILURES."""
    status = g["status"]
    return int((status.isin(FAILURES) & ~status.isin(MILD_FAILURES)).sum())


def _to_avoid(g: pd.DataFrame, c: dict) -> bool:
    """RULE's avoid: a failure worse than `inaccurate`, or too many failures."""
    severe = any(is_breakdown(s) for s in g["status"].unique())
    failed = rule_failures(g)
    return severe or (c["supported"] > 0 and failed > AVOID_SHARE * c["supported"])


def which_to_use(df: pd.DataFrame, runs, tp: pd.DataFrame | None) -> pd.DataFrame:
    """One row per use case x run read: recommended and avoided adapters by RULE, with the
    counts behind each and the relative time of each choice."""
    devices = {run.label: run_device(run.meta) for run in runs}
    speed = speeds(tp)
    real = df[df["realism"] == KINDS[0]]
    rows = []
    for use in USE_CASES:
        with_dtype = [r.label for r in runs if df[(df["run"] == r.label) & df["dtype"].isin(use.dtypes)].shape[0]]
        chosen = [r for r in with_dtype if use.device is None or devices[r] == use.device] or with_dtype
        for run in chosen:
            scope = real[(real["run"] == run) & real["dtype"].isin(use.dtypes) & real["label_kind"].isin(use.label_kinds)]
            if scope.empty:
                continue
            timed = speed[(speed["run"] == run) & (speed["pass"] == use.timed_pass)]
            timed_dtype = next((d for d in use.dtypes if (timed["dtype"] == d).any()), None)
            t = timed[timed["dtype"] == timed_dtype]
            ms = dict(zip(t["adapter"], t["median_ms"]))
            entries, avoid = [], []
            for adapter, g in scope.groupby("adapter", sort=True):
                c = counts(g)
                failures = g.loc[g["status"].isin(FAILURES)]
                entry = {"adapter": adapter, **c, "failed": rule_failures(g),
                         "median_ms": float(ms.get(adapter, math.nan)),
                         "failures": {str(k): int(v) for k, v in failures["status"].value_counts().sort_index().items()},
                         "regimes": {str(k): int(v) for k, v in failures["regime_group"].value_counts().sort_index().items()}}
                (avoid if _to_avoid(g, c) else entries).append(entry)
            complete = [e for e in entries if e["supported"] and not e["unsupported"]]
            least = min((e["failed"] for e in complete), default=None)
            recommended = [e for e in complete if e["failed"] == least]
            fastest = min((e["median_ms"] for e in recommended if not math.isnan(e["median_ms"])), default=math.nan)
            for e in recommended + avoid:
                e["relative_time"] = e["median_ms"] / fastest if not math.isnan(fastest) else math.nan
            key = lambda e: (math.isnan(e["median_ms"]), 0.0 if math.isnan(e["median_ms"]) else e["median_ms"],
                             e["adapter"])
            missing = [r for r in use.needs if r not in set(df.loc[df["run"] == run, "regime_group"])]
            shape = t["shape"].iloc[0] if len(t) else ""
            rows.append({"use_case": use.name, "run": run, "dtypes": ", ".join(use.dtypes),
                         "label_kinds": ", ".join(use.label_kinds), "cases": len(scope),
                         "recommended": sorted(recommended, key=key), "avoid": sorted(avoid, key=key),
                         "others": len(scope["adapter"].unique()) - len(recommended) - len(avoid),
                         "timed": f"{use.timed_pass.replace('_', '+')}, {timed_dtype} {shape}" if shape else "not timed",
                         "missing": missing})
    return pd.DataFrame(rows, columns=["use_case", "run", "dtypes", "label_kinds", "cases", "recommended", "avoid",
                                       "others", "timed", "missing"])


# -- provenance -----------------------------------------------------------------------------


def completeness(runs, df: pd.DataFrame) -> list[dict]:
    """Per run: cases run of planned, and why not all (run.json's state and note)."""
    out = []
    for run in runs:
        planned = run.meta.get("n_cases")
        # the planned cases are the regime and corpus cases; search findings come on top
        mine = df[(df["run"] == run.label) & (df["source"] != "search")]
        ran = int(mine["case_id"].nunique())
        state = str(run.meta.get("state", ""))
        partial = state not in ("", "complete") or (isinstance(planned, int) and ran < planned)
        out.append({"run": run.label, "planned": planned, "ran": ran, "state": state, "partial": partial,
                    "note": str(run.meta.get("note", "") or "")})
    return out


def speed_accuracy(tp: pd.DataFrame | None, loss: pd.DataFrame, grad: pd.DataFrame) -> pd.DataFrame:
    """Per run x dtype x adapter: forward+backward rows/s at that run's own largest timed batch
    of that dtype (a GPU float32 point is not dropped because bfloat16 was timed bigger),
    beside the largest realistic error (loss or gradient, inf for NaN/inf) of the Zimmermann
    tables, and `pareto`: no other adapter of the panel is both faster and at most as wrong."""
    cols = ["run", "dtype", "adapter", "shape", "rows_per_second", "error", "measure", "pareto"]
    s = speeds(tp)
    s = s[s["pass"] == "forward_backward"]
    if s.empty:
        return pd.DataFrame(columns=cols)
    err = pd.concat([loss[["run", "dtype", "adapter", "max"]], grad[["run", "dtype", "adapter", "max"]]])
    err = err.assign(dtype=err["dtype"].astype(str)).groupby(["run", "dtype", "adapter"])["max"].max().rename("error")
    measure = {}  # per run: what the error is a ratio of (runs may differ: zimmermann)
    for run in set(loss["run"]) | set(grad["run"]):
        kinds = [t.loc[t["run"] == run, "measure"].iloc[0] for t in (loss, grad) if (t["run"] == run).any()]
        measure[run] = kinds[0] if len(set(kinds)) == 1 else f"loss: {kinds[0]}, gradient: {kinds[1]}"
    out = s.merge(err.reset_index(), on=["run", "dtype", "adapter"], how="inner")
    out["measure"] = out["run"].map(measure)
    out = out[cols[:-1]].sort_values(["run", "dtype", "adapter"]).reset_index(drop=True)
    pareto = []
    for r in out.itertuples(index=False):
        panel = out[(out["run"] == r.run) & (out["dtype"] == r.dtype)]
        dominated = ((panel["rows_per_second"] >= r.rows_per_second) & (panel["error"] <= r.error)
                     & ((panel["rows_per_second"] > r.rows_per_second) | (panel["error"] < r.error))).any()
        pareto.append(not dominated)
    out["pareto"] = pareto
    return out
