"""Writing the report: figures rendered from the content, then the Markdown and HTML pages,
each file atomically. The ladder is content (DataFrames) -> figures and text (cells) ->
markdown / html (pages) -> this module (files); nothing below imports what is above it.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.report import figures, html as report_html, markdown as report_markdown, text as report_text
from harness.report.content import Report, _dtype_order, build, error_by
from harness.store.runfolder import write_atomic


def render_figures(report: Report) -> dict[str, bytes]:
    """Every figure of the report, by file name, as PNG bytes (only those with data to draw)."""
    from harness.report.verdicts import run_device

    styles = figures.adapter_styles(report.results["adapter"])
    kinds = report.results.groupby("regime_group")["realism"].agg(lambda k: "+".join(sorted({x[0].upper() for x in k}, reverse=True)))
    labels = [f"{r} ({kinds.get(r, '?')})" for r in report.regimes]
    out = {"status-heatmap.png": figures.status_heatmap(report.status_by_regime, report.regimes, labels)}
    points = report.points
    dtypes = _dtype_order(points["dtype"].astype(str)) if not points.empty else []
    if dtypes:
        out["error-vs-condition.png"] = figures.error_vs_condition(points, dtypes, styles)
        by_classes = error_by(points, "n_classes")
        classes = sorted(by_classes["n_classes"].unique())
        out["error-vs-class-count.png"] = figures.error_heatmap(
            by_classes, "n_classes", classes, [str(v) for v in classes], dtypes,
            "Error against class count V (regime cases)")
    if report.speed_accuracy is not None and not report.speed_accuracy.empty:
        devices = {run.label: run_device(run.meta) for run in report.runs}
        out["accuracy-vs-speed.png"] = figures.accuracy_vs_speed(report.speed_accuracy, devices)
    if report.throughput is not None and (report.throughput["status"] == "ok").any():
        out["time-memory-vs-classes.png"] = figures.time_memory_vs_classes(report.throughput, styles)
        out["bandwidth-vs-size.png"] = figures.bandwidth_vs_size(report.throughput, styles)
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
    report = build(paths)
    pngs = render_figures(report)
    blocks = [b for b in report_text.blocks(report, command or "cestab report " + " ".join(map(str, paths)))
              if b[0] != "figure" or b[1] in pngs]
    out_dir = Path(out_dir)
    try:
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the report folder {out_dir}: {exc.strerror or exc}") from None
    written = {}
    for name, png in pngs.items():
        path = out_dir / "figures" / name
        write_atomic(path, lambda p, data=png: _publish(p, p.write_bytes, data))
        written[name] = path
    md = report_markdown.render(blocks)
    page = report_html.render(blocks, pngs)
    for name, text in (("stability.md", md), ("stability.html", page)):
        write_atomic(out_dir / name, lambda p, t=text: _publish(p, p.write_text, t, encoding="utf-8"))
        written[name] = out_dir / name
    return written
