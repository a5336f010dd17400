"""The benchmark table's schema: every column of `bench.parquet` / `bench.csv`, in order.

The second table of a run folder (the first is the accuracy results, `columns.COLUMNS`).
One row per adapter x dtype x shape x pass ("forward" or "forward_backward") on one device;
it joins the accuracy results on `adapter` and `dtype` (and `run_id` when `cestab bench
--run-dir` wrote it into an accuracy run's folder). This list is the one place the columns
are named; the bench builds its rows from it and the report reads them by these names.
"""

from __future__ import annotations

import pandas as pd

from harness.store.columns import Column, frame

#: Bump when a column changes meaning or disappears.
BENCH_SCHEMA_VERSION = 1

#: The two timed passes; `min_bytes` counts the logits read once (forward) plus the gradient
#: written once (forward_backward).
PASSES = ("forward", "forward_backward")

#: ok, unsupported (declared, refused by the framework, or does not fit in memory), error,
#: crash, timeout, and skipped (the bench's own time budget ran out before it).
BENCH_STATUSES = ("ok", "unsupported", "error", "crash", "timeout", "skipped")

BENCH_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "string", "the run folder's name"),
    Column("time", "string", "UTC start of the bench, ISO 8601"),
    Column("host", "string", "machine hostname"),
    Column("device", "string", "cpu or cuda"),
    Column("device_name", "string", "CPU model, or the GPU's name"),
    Column("framework", "string", "numpy, scipy, torch, jax, tensorflow, keras, liger ..."),
    Column("framework_version", "string", "installed version of the framework's distribution"),
    Column("adapter", "string", "stable adapter id, framework.api[.mode] (joins the accuracy table)"),
    Column("dtype", "string", "dtype of the logits: float16, bfloat16, float32, float64"),
    Column("label_kind", "string", "labels the timed call takes (class indices, or the dense one-hot rows)"),
    Column("n_rows", "Int64", "N, rows in the batch"),
    Column("n_classes", "Int64", "V, classes per row"),
    Column("pass", "string", "forward (per-row losses) or forward_backward (losses and gradient of their sum)"),
    Column("status", "string", "ok, unsupported, error, crash, timeout, skipped"),
    Column("message", "string", "why the status; for ok rows, a noise warning if any"),
    Column("warmup_seconds", "float64", "the first call, compilation included, timed apart"),
    Column("compile_seconds", "float64", "compilation: ahead of time where separable, else first call minus the median"),
    Column("repeats", "Int64", "timed calls after the warm-up"),
    Column("median_ms", "float64", "median of the timed calls, milliseconds"),
    Column("iqr_ms", "float64", "interquartile range of the timed calls, milliseconds"),
    Column("min_ms", "float64", "fastest timed call, milliseconds"),
    Column("noisy", "boolean", "IQR above 10% of the median (torch.utils.benchmark's warning threshold)"),
    Column("rows_per_second", "float64", "N / median"),
    Column("min_bytes", "Int64", "least memory traffic: N*V*itemsize (forward), 2*N*V*itemsize (forward_backward)"),
    Column("gbps", "float64", "effective bandwidth, min_bytes / median, 1e9 bytes per second"),
    Column("device_gbps", "float64", "the device's copy bandwidth measured in the same bench (bytes read + written)"),
    Column("bandwidth_fraction", "float64", "gbps / device_gbps: 1.0 is a kernel that only streams its inputs and outputs"),
    Column("peak_memory_bytes", "Int64", "peak memory during the pass (warm-up and timed calls)"),
    Column("peak_memory_kind", "string", "cuda_max_allocated, xla_peak_bytes_in_use or rss (the worker's VmHWM)"),
    Column("memory_before_bytes", "Int64", "the same counter just before the pass: inputs and the framework itself"),
    Column("samples_ms", "string", "every timed call, milliseconds, as a JSON list"),
)

BENCH_NAMES: tuple[str, ...] = tuple(c.name for c in BENCH_COLUMNS)


def bench_frame(rows: list[dict]) -> pd.DataFrame:
    """A bench DataFrame with exactly the declared columns, order and dtypes."""
    return frame(rows, BENCH_COLUMNS)


def _cell(row) -> list[str]:
    if row["status"] != "ok":
        return [row["status"], "", "", "", ""]
    mark = "*" if row["noisy"] else ""
    frac = row["bandwidth_fraction"]
    return [
        f"{row['median_ms']:.3g}{mark}",
        f"{row['iqr_ms']:.2g}",
        f"{row['gbps']:.3g}",
        "" if pd.isna(frac) else f"{frac:.0%}",
        "" if pd.isna(row["peak_memory_bytes"]) else f"{row['peak_memory_bytes'] / 2**20:.0f}",
    ]


def format_compare(df: pd.DataFrame) -> str:
    """A Compare-style table per batch: median ms (* = noisy), IQR, GB/s, share of the
    measured copy bandwidth and peak memory (MiB), forward then forward+backward."""
    if df.empty:
        return "(no rows)"
    first = df.iloc[0]
    lines = [f"[ cestab bench: {first['device']}, {first['device_name']}, copy bandwidth {first['device_gbps']:.3g} GB/s ]"]
    sub = ["median ms", "IQR", "GB/s", "of copy", "peak MiB"]
    for (dtype, n, v), group in df.groupby(["dtype", "n_rows", "n_classes"], sort=False):
        lines.append(f"\n{dtype} {n}x{v}")
        table = {}
        for adapter, rows in group.groupby("adapter", sort=True):
            cells = []
            for pass_ in PASSES:
                r = rows[rows["pass"] == pass_]
                cells += _cell(r.iloc[0]) if len(r) else [""] * len(sub)
            table[adapter] = cells
        columns = pd.MultiIndex.from_product([["forward", "forward+backward"], sub])
        lines.append(pd.DataFrame.from_dict(table, orient="index", columns=columns).to_string())
    problems = df[~df["status"].isin(["ok"])].drop_duplicates(["adapter", "status", "message"])
    if len(problems):
        lines.append("\nnot timed:")
        lines += [f"  {r.adapter} {r.dtype} {r.n_rows}x{r.n_classes}: {r.status}: {r.message}" for r in problems.itertuples()]
    if df["noisy"].fillna(False).any():
        lines.append("* noisy: IQR above 10% of the median; rerun on a quieter machine before comparing those")
    return "\n".join(lines)
