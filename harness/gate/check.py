"""The CI regression gate: did this framework upgrade or kernel change make softmax-CE worse?

A run (an existing run folder, or a fresh deterministic `--quick` run) is boiled down to one
group per adapter x dtype x regime (`aggregate`; corpus rows by entry, as "corpus:<id>") and
compared with a committed baseline of the same shape (`baseline`). A group regresses when

- its largest loss or gradient error in ulps exceeds the baseline's x (1 + rtol) + slack,
  and its largest error over the tolerance grew by as much (the slack counted in units of
  the dtype's tolerance; see `_grew` for the measurement behind this);
- it has non-finite results (NaN/inf where the truth is finite) where the baseline had none,
  or more of them, or more error/crash/timeout rows;
- its worst status got worse by `SEVERITY` (e.g. ok -> lossy, ok -> inaccurate, rejected -> silent).

The allowance is relative *and* absolute because the same code may still differ by an ulp or
so between CPUs: the quick run pins every framework to AVX2 kernels (and, like every worker, one thread)
(`portable`), but an existing run folder was made with native kernels, and libraries outside
those switches (glibc's libm) vary: rtol = 0.5 and slack = 2 ulps absorb that and still catch a change of a few
ulps on the 0.5-2 ulp errors of a good implementation (tests/test_check.py plants one).
An improvement beyond the same allowance is reported as a stale baseline, not a failure.
A group in the baseline but not in the run (its framework is not installed) is reported as
missing, a regression only with `strict`; a group new in the run is reported as new.

Worst-case search rows (source "search") are not compared: hypothesis explores differently
as soon as one output differs by an ulp, so its findings are not a stable quantity. The
quick run leaves the search out and runs every regime and the corpus on small shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.adapters import registry
from harness.gate import baseline as baseline_file
from harness.gate import portable
from harness.store import columns
from harness.store.runfolder import RunFolder
from harness.numerics import tolerances
from harness.errors import UsageError
from harness.numerics import statuses

DEFAULT_RTOL = 0.5
DEFAULT_SLACK = 2.0  # ulps

#: How bad each status is, for "did the worst status of a group get worse" (the status
#: table's `severity`).
SEVERITY = {s.name: s.severity for s in statuses.TABLE.values()}

#: Rows where no numbers came back (the implementation raised, its worker died or hung).
FAILED = statuses.names(broke=True)

#: What `--quick` runs when there is no baseline yet: every adapter, dtype, regime and label
#: kind, and the corpus, on one small shape (32 rows of 1000 classes: long enough sums,
#: rows enough for each regime's variety), seed 0, no search. Its cost is per case, not per
#: element (compilation, dispatch), so one shape halves the default run's time; and a small
#: shape keeps sums short enough that threading does not reorder them. A baseline records
#: its own options, and `--quick` reruns exactly those.
QUICK = {
    "adapters": None,
    "dtypes": None,
    "regimes": None,
    "shapes": [[32, 1000]],
    "label_kinds": None,
    "seed": 0,
    "corpus": True,
}

#: Packages whose version change may explain a change in an adapter's results, by framework.
EXPLAINS = {"jax": ("jax", "optax"), "keras": ("keras", "tensorflow"), "tensorflow": ("tensorflow", "keras")}

GROUP = list(baseline_file.KEY)


def worst_status(names) -> str:
    """The most severe status (ties broken by the status table's display order)."""
    return statuses.worst(names)


def group_regime(df: pd.DataFrame) -> pd.Series:
    """The regime of each row; corpus rows by their entry ("corpus:<entry id>")."""
    entry = df["case_id"].astype(str).str.split("/").str[1]
    return df["regime"].astype(object).where(df["source"] != "corpus", "corpus:" + entry)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per adapter x dtype x regime: worst status, status counts, largest ulps,
    non-finite and failed counts (search rows left out, see the module docstring)."""
    df = df[df["source"] != "search"].assign(regime=lambda d: group_regime(d))
    rows = []
    for (adapter, dtype, regime), g in df.groupby(GROUP, sort=True):
        counts = {str(k): int(v) for k, v in g["status"].value_counts().items()}
        rows.append({
            "adapter": adapter,
            "dtype": dtype,
            "regime": regime,
            "framework": str(g["framework"].iloc[0]),
            "framework_version": str(g["framework_version"].iloc[0]),
            "cases": len(g),
            "worst_status": worst_status(counts),
            "statuses": counts,
            "loss_ulps": _max(g["loss_ulps"]),
            "grad_ulps": _max(g["grad_ulps"]),
            "loss_tol": _max(g["loss_tol_ratio"]),
            "grad_tol": _max(g["grad_tol_ratio"]),
            "loss_att": _max(g["loss_att_ratio"]),
            "grad_att": _max(g["grad_att_ratio"]),
            "nonfinite": int(g["n_loss_nonfinite"].fillna(0).sum() + g["n_grad_nonfinite"].fillna(0).sum()),
            "failed": int(g["status"].isin(FAILED).sum()),
        })
    return pd.DataFrame(rows, columns=[*baseline_file.FIELDS, "framework_version"])


def _max(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").astype("float64")
    return float(v.max()) if v.notna().any() else math.nan


def read_run(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """A finished run folder's results and run.json; UsageError if it is not one."""
    folder = RunFolder.open(run_dir)
    meta = folder.read_meta()
    if meta.get("schema_version") != columns.SCHEMA_VERSION:
        raise UsageError(f"{run_dir}: results schema {meta.get('schema_version')!r}, this cestab reads {columns.SCHEMA_VERSION}")
    df = folder.read_table(RunFolder.RESULTS, "results table", ("adapter", "dtype", "regime", "source", "case_id", "status"))
    return df, meta


def options_of(meta: dict) -> dict:
    """The options a `--quick` rerun of a run needs (its search budget is dropped)."""
    opts = meta.get("options", {})
    if not isinstance(opts, dict):
        raise UsageError(f"run {meta.get('run_id')}: options must be an object")
    return {k: opts.get(k, v) for k, v in QUICK.items()}


def quick_run(options: dict, plugins=(), exclude=(), out_dir="runs", timeout=None, progress=False, command=None):
    """The deterministic run a baseline was made of: its options, no search, in workers.

    Baseline adapters that are not installed here are left out (and reported as missing);
    `exclude` leaves out adapters whose rows a plug-in stands in for (`--compare-as`).
    Plug-ins are never imported from the baseline file (that would run code named by a
    file): they come from the command line only.
    """
    from harness.run.runner import DEFAULT_TIMEOUT, run

    available = registry.all_adapters()
    ids = options.get("adapters")
    ids = sorted(available) if ids is None else list(ids)
    ids = [i for i in ids if i in available and i not in set(exclude)]
    if not ids and not plugins:
        raise UsageError("none of the baseline's adapters is installed here")
    with portable.pinned() as pinned_env:  # the same kernels on every x86 CPU (harness/gate/portable.py)
        df = run(
            adapters=ids or None,
            plugins=tuple(plugins),
            dtypes=options.get("dtypes"),
            regimes_=options.get("regimes"),
            shapes=[tuple(s) for s in options["shapes"]] if options.get("shapes") else None,
            label_kinds=options.get("label_kinds"),
            seed=int(options.get("seed") or 0),
            corpus=bool(options.get("corpus", True)),
            budget=None,
            out_dir=out_dir,
            timeout=timeout or DEFAULT_TIMEOUT,
            progress=progress,
            command=command,
        )
    _, meta = read_run(df.attrs["run_dir"])
    return df, dict(meta, run_dir=df.attrs["run_dir"], portable_environment=pinned_env)


def allowance(base: float, rtol: float, slack: float) -> float:
    """The most ulps a group may show without regressing from `base` ulps."""
    return base * (1 + rtol) + slack


def _judge(b: dict, n: dict, rtol: float, slack: float) -> tuple[list[str], list[str]]:
    """(why it regressed, why the baseline is stale) for one group present in both."""
    worse, better = [], []
    sb, sn = SEVERITY[b["worst_status"]], SEVERITY[n["worst_status"]]
    if sn > sb and not _at_the_attainable_edge(b, n, rtol):
        worse.append(f"status {b['worst_status']} -> {n['worst_status']}")
    elif sn < sb and not _at_the_attainable_edge(n, b, rtol):
        better.append(f"status {b['worst_status']} -> {n['worst_status']}")
    for what in ("loss", "grad"):
        old, new = baseline_file.number(b[f"{what}_ulps"]), baseline_file.number(n[f"{what}_ulps"])
        if math.isnan(old) or math.isnan(new):
            continue  # no finite figure on one side: the status says what happened
        old_tol, new_tol = baseline_file.number(b[f"{what}_tol"]), baseline_file.number(n[f"{what}_tol"])
        tol_slack = slack / tolerances.get(b["dtype"]).ulps
        if new > allowance(old, rtol, slack) and _grew(old_tol, new_tol, rtol, tol_slack):
            worse.append(f"{what} {_ulps(old)} -> {_ulps(new)} ulps (allowed {_ulps(allowance(old, rtol, slack))})")
        elif old > allowance(new, rtol, slack) and _grew(new_tol, old_tol, rtol, tol_slack):
            better.append(f"{what} {_ulps(old)} -> {_ulps(new)} ulps")
    for what, label in (("nonfinite", "non-finite values"), ("failed", "error/crash/timeout rows")):
        old, new = b[what], int(n[what])
        if new > old:
            worse.append(f"{label} {old} -> {new}" + (" (baseline had none)" if old == 0 else ""))
        elif new < old:
            better.append(f"{label} {old} -> {new}")
    return worse, better


def _at_the_attainable_edge(before: dict, after: dict, rtol: float) -> bool:
    """An ok -> lossy change whose attainable ratio stays within 1 + rtol: the same code
    lands either side of the attainable bound from one x86 CPU to the next (AVX2 and
    AVX-512 kernels of exp, log and sums differ by an ulp or so, and the bound is tight by
    design: careful float32 code reaches 0.9 of it), so only a clear crossing counts."""
    if (before["worst_status"], after["worst_status"]) != ("ok", "lossy"):
        return False
    ratios = [baseline_file.number(after.get(k)) for k in ("loss_att", "grad_att")]
    worst = max((r for r in ratios if not math.isnan(r)), default=math.inf)
    return worst <= 1.0 + rtol


def _grew(old_tol: float, new_tol: float, rtol: float, tol_slack: float) -> bool:
    """Whether the largest error over its tolerance grew by the same allowance (`tol_slack`:
    the slack in units of the dtype's tolerance, slack / ulps of `tolerances.TABLE`); True
    when either side is unknown, so the ulp figure alone decides.

    Why both measures: the largest ulp error of a gradient usually sits on an
    ill-conditioned element (p - y with p near 1, whose tiny truth has an ulp far below what
    the arithmetic resolves). There it doubled between PyTorch's AVX2 and AVX-512 kernels on
    the same machine (measured: 17 -> 33 and 1.1e5 -> 2.5e5 ulps) while the tolerance ratio
    went from 0.3 to 0.58, well within tolerance. The ratio weighs each element by what its
    dtype and condition allow: a real loss of accuracy moves both measures, CPU noise one.
    """
    if math.isnan(old_tol) or math.isnan(new_tol):
        return True
    return new_tol > old_tol * (1 + rtol) + tol_slack


def _ulps(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def version_changes(framework: str, base_versions: dict, now_versions: dict) -> str:
    """'torch 2.13.0 -> 2.14.0' for the packages behind `framework` whose version changed."""
    out = []
    for pkg in EXPLAINS.get(framework, (framework,)):
        old, new = base_versions.get(pkg), now_versions.get(pkg)
        if old and new and old != new:
            out.append(f"{pkg} {old} -> {new}")
    return ", ".join(out)


#: Report columns, in order: the group, the verdict and why, then both sides' figures.
REPORT_COLUMNS = [
    *GROUP, "verdict", "why", "version_change",
    "base_status", "now_status", "base_loss_ulps", "now_loss_ulps", "base_grad_ulps", "now_grad_ulps",
    "base_nonfinite", "now_nonfinite", "base_failed", "now_failed",
]
#: Verdicts, in the order the report lists them.
VERDICTS = ("regression", "missing", "new", "improved", "same")


def compare(base: dict, now: pd.DataFrame, now_meta: dict, rtol: float = DEFAULT_RTOL,
            slack: float = DEFAULT_SLACK, strict: bool = False) -> pd.DataFrame:
    """One row per group of either side (`REPORT_COLUMNS`) with its verdict, best first
    sorted by `VERDICTS`: regression, missing (regression with `strict`), new, improved
    (the baseline is stale), same."""
    old = {tuple(g[k] for k in GROUP): g for g in base["groups"]}
    cur = {tuple(r[k] for k in GROUP): baseline_file.encode(r) for r in now.to_dict("records")}
    base_versions, now_versions = base.get("versions", {}), now_meta.get("versions", {})
    in_run = set(now_meta.get("adapters", {})) | set(now["adapter"])
    unavailable = now_meta.get("unavailable_frameworks", {})
    rows = []
    for key in sorted(old.keys() | cur.keys()):
        b, n = old.get(key), cur.get(key)
        row = dict(zip(GROUP, key))
        framework = (n or b)["framework"]
        row["version_change"] = version_changes(framework, base_versions, now_versions)
        for side, g in (("base", b), ("now", n)):
            row[f"{side}_status"] = g["worst_status"] if g else None
            for what in ("loss_ulps", "grad_ulps"):
                row[f"{side}_{what}"] = baseline_file.number(g[what]) if g else math.nan
            for what in ("nonfinite", "failed"):
                row[f"{side}_{what}"] = int(g[what]) if g else None
        if b is None:
            row.update(verdict="new", why="not in the baseline")
        elif n is None:
            if key[0] not in in_run:
                why = "adapter not in this run"
                if framework in unavailable:
                    why += f" ({unavailable[framework]})"
            else:
                why = "group not in this run"
            row.update(verdict="regression" if strict else "missing", why=why + (" (--strict)" if strict else ""))
        else:
            worse, better = _judge(b, n, rtol, slack)
            if worse:
                row.update(verdict="regression", why="; ".join(worse))
            elif better:
                row.update(verdict="improved", why="; ".join(better) + " (stale baseline)")
            else:
                row.update(verdict="same", why="")
        rows.append(row)
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    order = report["verdict"].map({v: i for i, v in enumerate(VERDICTS)})
    return report.assign(_o=order).sort_values(["_o", *GROUP], kind="stable").drop(columns="_o").reset_index(drop=True)


def parse_aliases(items) -> dict[str, str]:
    """`--compare-as RUN_ADAPTER=BASELINE_ADAPTER` pairs as a dict."""
    out = {}
    for item in items or ():
        new, sep, old = item.partition("=")
        if not sep or not new or not old:
            raise UsageError(f"--compare-as wants RUN_ADAPTER=BASELINE_ADAPTER, got {item!r}")
        out[new] = old
    return out


@dataclass
class Gate:
    """The outcome of one `cestab check`: the report and what it was made from."""

    report: pd.DataFrame
    baseline_path: str
    run_dir: str | None
    rtol: float
    slack: float
    notes: list[str] = field(default_factory=list)
    updated: bool = False  # the baseline was rewritten from this run

    def count(self, verdict: str) -> int:
        return int((self.report["verdict"] == verdict).sum())

    @property
    def exit_code(self) -> int:
        """0: no regression (or the baseline was just rewritten); 1: a regression."""
        return 0 if self.updated or not self.count("regression") else 1


def gate(baseline_path, run_dir=None, quick=False, rtol=DEFAULT_RTOL, slack=DEFAULT_SLACK, strict=False,
         plugins=(), aliases=None, update=False, out_dir="runs", timeout=None, progress=False, command=None) -> Gate:
    """Compare a run folder (or a fresh `quick` run of the baseline's options) with a baseline.

    `aliases` maps run adapters onto baseline adapters ("compare my kernel's run with
    torch.cross_entropy's baseline"); the baseline adapter's own rows, if run, are dropped.
    `update` rewrites the baseline from this run (atomically) after reporting the changes.
    """
    if (run_dir is None) == (not quick):
        raise UsageError("give a RUN_DIR to check, or --quick for a fresh run (not both)")
    if not (rtol >= 0 and slack >= 0):
        raise UsageError("rtol and slack must be non-negative")
    aliases = dict(aliases or {})
    if update and aliases:
        raise UsageError("--compare-as cannot be combined with --update-baseline")
    notes = []
    if update:  # before the run: a read-only baseline found after a 4-minute --quick run loses it
        _check_writable(baseline_path)
    try:
        base = baseline_file.load(baseline_path)
    except UsageError as exc:
        if not update:
            raise
        base = None
        if Path(baseline_path).exists():
            notes.append(f"old baseline unreadable, replaced: {exc}")
    if quick:
        options = base["options"] if base else QUICK
        from harness.store import validate

        options = validate.run_options(options, f"baseline {baseline_path}", required=(), defaults=QUICK)
        df, meta = quick_run(options, plugins, exclude=set(aliases.values()), out_dir=out_dir,
                             timeout=timeout, progress=progress, command=command)
    else:
        if plugins:
            raise UsageError("--adapter runs an implementation: use it with --quick, not with a RUN_DIR")
        df, meta = read_run(run_dir)
        options = options_of(meta)
    run_dir = str(meta.get("run_dir", run_dir))
    n_search = int((df["source"] == "search").sum())
    if n_search:
        notes.append(f"{n_search} worst-case search rows not compared (a search explores differently once any output differs)")
    if aliases:
        unknown = sorted(set(aliases) - set(df["adapter"]))
        if unknown:
            raise UsageError(f"--compare-as: adapter {unknown[0]!r} is not in the run")
        df = df[~df["adapter"].isin(set(aliases.values()) - set(aliases))]
        df = df.assign(adapter=df["adapter"].replace(aliases))
        meta = dict(meta, adapters={aliases.get(k, k): v for k, v in meta.get("adapters", {}).items()})
        notes.append("compared as: " + ", ".join(f"{k} = baseline's {v}" for k, v in sorted(aliases.items())))
    now = aggregate(df)
    empty = {"groups": [], "versions": {}}
    report = compare(base or empty, now, meta, rtol, slack, strict)
    if base:
        notes[:0] = _provenance(base, meta)
    result = Gate(report, str(baseline_path), run_dir, rtol, slack, notes)
    if update:
        baseline_file.write(baseline_path, baseline_file.make(now.to_dict("records"), meta, options))
        result.updated = True
    return result


def _check_writable(path) -> None:
    """UsageError unless the baseline can be replaced (see `validate.writable`)."""
    from harness.store import validate

    validate.writable(path, "baseline")


def _provenance(base: dict, meta: dict) -> list[str]:
    """Lines on what differs between the baseline's making and this run: versions, CPU."""
    out = []
    old, new = base.get("versions", {}), meta.get("versions", {})
    changed = [f"{k} {old[k]} -> {new[k]}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]
    if changed:
        out.append("versions changed since the baseline: " + ", ".join(changed))
    cpu_old, cpu_new = base.get("machine", {}).get("cpu"), meta.get("environment", {}).get("cpu")
    if cpu_old and cpu_new and cpu_old != cpu_new:
        out.append(f"baseline made on {cpu_old}; this run on {cpu_new}")
    return out
