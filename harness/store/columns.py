"""The results schema: every column of the results table, in order, with its meaning.

This list is the one place the columns are named; the runner builds rows from it, and
the summary, the report, the CI gate and the stability tests read them by these names. One row per
case x adapter (tidy). Metrics are maxima over the case's defined rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: Bump when a column changes meaning or disappears; baselines record it.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # pandas dtype: "string", "Int64" (nullable), "float64", "boolean"
    doc: str


COLUMNS: tuple[Column, ...] = (
    Column("run_id", "string", "the run folder's name"),
    Column("time", "string", "UTC start of the run, ISO 8601"),
    Column("host", "string", "hostname of the machine that ran the run (the driver, with --executor ray)"),
    Column("node_id", "string", "where the row was computed: a Ray node id, \"local\" for the local executor"),
    Column("node_host", "string", "hostname of the machine the row was computed on"),
    Column("device", "string", "cpu, or cuda:N"),
    Column("framework", "string", "numpy, scipy, torch, jax, tensorflow ..."),
    Column("framework_version", "string", "installed version of the framework's distribution"),
    Column("adapter", "string", "stable adapter id, framework.api[.mode]"),
    Column("dtype", "string", "tested dtype: float16, bfloat16, float32, float64"),
    Column("out_dtype", "string", "dtype of the loss the adapter returned"),
    Column("regime", "string", "the named regime (or corpus/search/user) the case comes from"),
    Column("source", "string", "regime, search, corpus or user"),
    Column("label_kind", "string", "index, onehot, soft or smoothing"),
    Column("n_rows", "Int64", "N, rows in the batch"),
    Column("n_classes", "Int64", "V, classes per row"),
    Column("case_id", "string", "stable id of the case: regime/dtype/NxV/kind/seed"),
    Column("seed", "Int64", "the run's seed the case was drawn with"),
    Column("status", "string", "one of numerics.statuses.STATUSES (ok, rejected, lossy, inaccurate, silent, nonfinite, error, crash, timeout, unsupported, undefined)"),
    Column("message", "string", "why the status: the exception, the reason, what was out of tolerance"),
    Column("loss_abs_err", "float64", "max |loss - true loss|"),
    Column("loss_rel_err", "float64", "max |loss - true| / |true|"),
    Column("loss_ulps", "float64", "max loss error in ulps of the tested dtype at the true value"),
    Column("loss_tol_ratio", "float64", "max loss error / its textbook tolerance (> 1: outside; tolerances.TABLE)"),
    Column("loss_att_ratio", "float64", "max loss error / the attainable bound (> 1: worse than a careful implementation; bounds)"),
    Column("loss_worst_row", "Int64", "row of the worst loss (by tolerance ratio)"),
    Column("grad_abs_err", "float64", "max |grad - (p - y)|"),
    Column("grad_rel_norm", "float64", "||grad - (p - y)||_2 / ||p - y||_2 over the defined rows"),
    Column("grad_ulps", "float64", "max gradient error in ulps of the tested dtype at the true value"),
    Column("grad_tol_ratio", "float64", "max gradient error / its textbook tolerance (> 1: outside; tolerances.TABLE)"),
    Column("grad_att_ratio", "float64", "max gradient error / the attainable bound (> 1: worse than a careful implementation; bounds)"),
    Column("grad_worst", "string", "row,class of the worst gradient element (by tolerance ratio)"),
    Column("n_loss_nonfinite", "Int64", "losses NaN/inf where the truth is finite"),
    Column("n_grad_nonfinite", "Int64", "gradient elements NaN/inf where the truth is finite"),
    Column("n_loss_bad", "Int64", "losses outside both bounds (inaccurate)"),
    Column("n_grad_bad", "Int64", "gradient elements outside both bounds (inaccurate)"),
    Column("n_loss_lossy", "Int64", "losses outside the attainable bound but within the textbook one"),
    Column("n_grad_lossy", "Int64", "gradient elements outside the attainable bound but within the textbook one"),
    Column("n_flushed", "Int64", "losses and gradient elements with a subnormal truth returned as 0 (flush to zero)"),
    Column("n_rows_undefined", "Int64", "rows with no finite truth (+inf, NaN, all -inf)"),
    Column("case_file", "string", "the saved .npz of a search finding: replay with `cestab repro`"),
    Column("reference_precision", "string", "float64, or x87-extended for float64 cases"),
    Column("adapter_seconds", "float64", "wall time of the adapter call, compilation excluded (not a benchmark)"),
    Column("compile_seconds", "float64", "compilation/tracing before the call, where the adapter separates it"),
    Column("reference_seconds", "float64", "wall time of the reference for this case"),
)

NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)

#: Columns that differ between two runs of the same inputs (timing and provenance).
VOLATILE = ("run_id", "time", "host", "node_id", "node_host", "adapter_seconds", "compile_seconds", "reference_seconds")


def frame(rows: list[dict], declared: tuple[Column, ...] = COLUMNS) -> pd.DataFrame:
    """A DataFrame with exactly the `declared` columns (the results' by default), in their
    order and with their dtypes."""
    df = pd.DataFrame(rows, columns=[c.name for c in declared])
    return df.astype({c.name: c.dtype for c in declared})
