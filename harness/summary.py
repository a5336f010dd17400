"""The end-of-run summary: per adapter x dtype, worst errors and counts per status."""

from __future__ import annotations

import pandas as pd

from .tolerances import STATUSES


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
