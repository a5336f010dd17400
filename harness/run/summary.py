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
    """Where a run's wall time went, phase by phase (`run.phases`), and the harness's share:
    one number, what it costs against what the implementations under test cost.

    The harness is everything that is neither the implementations' compute nor their
    compilation nor the framework imports of worker start-up: building cases and search rows,
    the reference, moving arrays between processes (ipc), judging, writing, and what no phase
    measured (other). Its share is counted in CPU seconds (`Phases.cpu_record`): what this
    process and the workers' round trips spent, against what the adapters' processes spent
    during the calls (compute and compilation, the compiler processes they wait for included).
    A share of 0.1 means judging costs a tenth of what the implementations cost.

    Why CPU seconds and not the phases' seconds: the phases are each thread's wall seconds,
    summed over the workers and the parent's threads (workers of different frameworks run at
    the same time, `--jobs`, and the parent judges one case while the workers compute the
    next). With more busy processes than cores, each of them counts its waits for a core
    too, so the phases add up to more than the machine spent (a default run on 2 cores: 42 s
    of harness phases, 25 CPU seconds of the parent). On a busy machine a run's wall time
    is its CPU seconds over its cores, so the CPU share is also about what the run would
    save without the harness. The phases still say where the time went, and which part of
    the harness's seconds the main thread waited for (`on the wall`: the judging threads'
    seconds ran beside the workers). A run without a CPU record (Ray's workers are other
    machines' processes, or a run folder from before the record) gets the share of the
    phases' seconds, marked as such.
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
    # of the harness's phases (the findings threads' waits on workers, `dispatch`, are not)
    beside = sum(v for k, v in timing.get("beside_seconds", {}).items() if k in HARNESS)
    wall_part = ""
    if beside:  # judged beside the workers: CPU the harness spent, but not wall time unless waited for
        on_wall = max(0.0, harness - beside + (phases or {}).get("waiting", 0.0))
        wall_part = f"; {beside:.1f} s of it ran beside the workers, so on the wall {on_wall:.1f} s"
    cpu = timing.get("cpu_seconds")
    if cpu:
        share = f"{cpu['harness'] / cpu['adapters']:.3f}" if cpu["adapters"] > 0 else "n/a"
        share_line = (f"harness share: {share} = harness {cpu['harness']:.1f} CPU s (this process {cpu['parent']:.1f} s,"
                      f" the workers' round trips {cpu['harness'] - cpu['parent']:.1f} s) / adapters {cpu['adapters']:.1f}"
                      f" CPU s (compute and compilation, their compilers' processes too); worker start-up"
                      f" {cpu['startup']:.1f} CPU s apart")
    else:
        share = f"{harness / (adapters + compiling):.3f}" if adapters + compiling > 0 else "n/a"
        share_line = (f"harness share: {share} = harness {harness:.1f} s / adapters and compilation"
                      f" {adapters + compiling:.1f} s (the phases' seconds: this run has no CPU record)")
    counts = timing.get("counts", {})
    search = ""
    if counts.get("search_rows"):
        pairs = max(1, counts.get("search_pairs", 1))
        search = (f"\nsearch: {counts['search_rows']} candidate rows in {counts.get('search_batches', 0)} batches,"
                  f" {counts['search_rows'] / pairs:.0f} rows per adapter x dtype")
        rates = timing.get("search_frameworks") or {}
        if rates:
            ranked = sorted(rates.items(), key=lambda item: -item[1]["rows_per_second"])
            search += ("; rows per second of each framework's round trips (compilation included): "
                       + ", ".join(f"{f} {r['rows_per_second']:,.0f}" for f, r in ranked))
    return (
        f"time: {timing['wall_seconds']:.1f} s wall; per phase, summed over workers and threads: adapters"
        f" {adapters:.1f} s, compilation {compiling:.1f} s, worker start-up {startup:.1f} s, harness {harness:.1f} s"
        f" ({parts}){wall_part}\n" + share_line + search
    )
