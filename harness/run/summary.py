"""The end-of-run summary: per adapter x dtype, worst errors and counts per status."""

from __future__ import annotations

import pandas as pd

from harness.numerics.statuses import STATUSES
from harness.run.phases import HARNESS


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
    """Where a run's wall time went, phase by phase (`run.phases`), and the harness's own
    cost against the adapters' time.

    The harness's share is everything that is neither the implementations' compute nor
    their compilation nor the framework imports of worker start-up: building cases and
    search rows, the reference, moving arrays between processes (ipc), judging, writing,
    and what no phase measured (other). A ratio above 1 means cestab spends more time
    judging than the implementations spend computing. Workers of different frameworks run
    at the same time (`--jobs`), so adapter, compile and start-up seconds are summed over
    workers and may add up to more than the wall time. The parent judges a case while the
    workers compute the next (`run.phases`): that part of the harness's seconds is CPU it
    spends, not wall time, except where the run waited for it; the second ratio counts only
    the harness seconds on the wall.

    Those are each thread's wall seconds: with more busy processes than cores they count
    the waits for a core too (a default run on 2 cores: 129 s of harness phases, 70 CPU
    seconds of the parent). The `cpu:` line counts CPU seconds instead (`Phases.cpu_record`):
    what the adapters' processes spent during the calls, against what this process and the
    workers' round trips spent; it is the share to read on a machine with fewer cores than
    workers.
    """
    adapters, compiling = timing["adapter_seconds"], timing["compile_seconds"]
    startup = sum(timing.get("worker_startup_seconds", {}).values())
    phases = timing.get("phases")
    if phases is None:  # a run folder from before per-phase timing
        harness = max(0.0, timing["wall_seconds"] - adapters - compiling - startup)
        parts = f"reference {timing['reference_seconds']:.1f} s"
    else:
        harness = timing.get("harness_seconds", 0.0)
        parts = ", ".join(f"{name} {phases.get(name, 0.0):.1f} s"
                          for name in ("generation", "reference", "ipc", "metrics", "writing", "other"))
    ratio = f"{harness / adapters:.2g}" if adapters > 0 else "n/a"
    # of the harness's phases (the findings threads' waits on workers, `dispatch`, are not)
    beside = sum(v for k, v in timing.get("beside_seconds", {}).items() if k in HARNESS)
    if beside:  # judged beside the workers: CPU the harness spent, but not wall time unless waited for
        on_wall = max(0.0, harness - beside + (phases or {}).get("waiting", 0.0))
        ratio += (f"; {beside:.1f} s of it ran beside the workers, so on the wall"
                  f" {on_wall:.1f} s = {on_wall / adapters:.2g}" if adapters > 0 else "")
    counts = timing.get("counts", {})
    search = ""
    if counts.get("search_rows"):
        pairs = max(1, counts.get("search_pairs", 1))
        search = (f"\nsearch: {counts['search_rows']} candidate rows in {counts.get('search_batches', 0)} batches,"
                  f" {counts['search_rows'] / pairs:.0f} rows per adapter x dtype")
    cpu = timing.get("cpu_seconds")
    cpu_line = ""
    if cpu:
        share = f"{cpu['harness'] / cpu['adapters']:.2g}" if cpu["adapters"] > 0 else "n/a"
        cpu_line = (f"\ncpu: adapters {cpu['adapters']:.1f} s (compute and compilation, their compilers' processes too),"
                    f" harness {cpu['harness']:.1f} s (this process {cpu['parent']:.1f} s, the workers' round trips"
                    f" {cpu['harness'] - cpu['parent']:.1f} s), worker start-up {cpu['startup']:.1f} s;"
                    f" harness / adapters = {share}")
    return (
        f"time: {timing['wall_seconds']:.1f} s wall; adapters {adapters:.1f} s, compilation {compiling:.1f} s,"
        f" worker start-up {startup:.1f} s (summed over workers); harness {harness:.1f} s ({parts});"
        f" harness overhead / adapter time = {ratio}" + cpu_line + search
    )
