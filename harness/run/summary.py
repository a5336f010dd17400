"""The end-of-run summary: per adapter x dtype, worst errors and counts per status."""

from __future__ import annotations

import pandas as pd

from harness.numerics.statuses import STATUSES


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per adapter x dtype: max loss ulps, max grad ulps, then a count per status."""
    keys = ["adapter", "dtype"]
    worst = df.groupby(keys, sort=True).agg(
        loss_ulps_max=("loss_ulps", "max"),
        grad_ulps_max=("grad_ulps", "max"),
        cases=("case_id", "size"),
    )
    counts = pd.crosstab([df["adapter"], df["dtype"]], df["status"])
    counts = counts.reindex(columns=[s for s in STATUSES if s in counts.columns])
    return worst.join(counts).fillna(0)


def format_summary(table: pd.DataFrame) -> str:
    fmt = table.copy()
    for col in ("loss_ulps_max", "grad_ulps_max"):
        fmt[col] = fmt[col].map(lambda x: f"{x:.3g}")
    return fmt.to_string()


def format_timing(timing: dict) -> str:
    """Where a run's wall time went, and the harness's own cost against the adapters' time.

    The harness's share is what is left of the wall time after adapter calls, compilation
    and worker start-up: building cases, the reference (shown apart), metrics, moving
    arrays between processes, writing tables. A ratio above 1 means cestab spends more time
    judging than the implementations spend computing.
    """
    adapters, compiling = timing["adapter_seconds"], timing["compile_seconds"]
    startup = sum(timing.get("worker_startup_seconds", {}).values())
    harness = max(0.0, timing["wall_seconds"] - adapters - compiling - startup)
    ratio = f"{harness / adapters:.2g}" if adapters > 0 else "n/a"
    return (
        f"time: {timing['wall_seconds']:.1f} s = adapters {adapters:.1f} s + compilation {compiling:.1f} s"
        f" + worker start-up {startup:.1f} s + harness {harness:.1f} s (reference {timing['reference_seconds']:.1f} s);"
        f" harness overhead / adapter time = {ratio}"
    )
