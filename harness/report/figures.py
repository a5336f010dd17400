"""The report's figures: matplotlib (Agg), drawn from the report's DataFrames, as PNG bytes.

Byte-identical for the same input: fixed size and dpi, matplotlib's default style (not the
user's matplotlibrc), no "Software" or date metadata in the PNG. matplotlib is imported
here, inside the functions, so `import harness` stays light.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from harness.numerics.statuses import STATUSES, TABLE as STATUS_TABLE

DPI = 100

#: One colour per status (the status table's), shared by the heatmap and the HTML tables.
STATUS_COLOURS = {s.name: s.colour for s in STATUS_TABLE.values()}

#: Where ratios are drawn on the log axis: 0 at the floor, NaN/inf in a band above the ceiling.
FLOOR, CEILING, NONFINITE_Y = 1e-3, 1e6, 1e7

_MARKERS = "osD^v<>Ph*Xp"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return matplotlib, plt


def _png(fig) -> bytes:
    _, plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _style():
    matplotlib, _ = _pyplot()
    return matplotlib.rc_context(rc={**matplotlib.rcParamsDefault, "font.size": 9, "axes.titlesize": 10,
                                     "figure.dpi": DPI, "savefig.dpi": DPI, "svg.hashsalt": "cestab",
                                     "backend": "Agg"})


def adapter_styles(adapters) -> dict[str, dict]:
    """A fixed colour and marker per adapter (sorted ids), the same in every figure."""
    matplotlib, _ = _pyplot()
    cmap = matplotlib.colormaps["tab10"]  # 10 colours x 12 markers: unique pairs for 60 adapters
    names = sorted(set(adapters))
    spread = np.linspace(-0.3, 0.3, len(names)) if len(names) > 1 else [0.0]
    return {a: {"color": cmap(k % 10), "marker": _MARKERS[k % len(_MARKERS)], "band_offset": float(spread[k])}
            for k, a in enumerate(names)}


def _row_label(run: str, adapter: str, multi: bool) -> str:
    return f"{adapter}  [{run}]" if multi else adapter


def status_heatmap(table: pd.DataFrame, regimes: list[str], labels: list[str] | None = None) -> bytes:
    """Worst status per (run,) adapter x regime group; each cell says failing/cases. `labels`
    name the columns (default: the regimes), e.g. with their kind of input."""
    matplotlib, plt = _pyplot()
    multi = table["run"].nunique() > 1
    rows = table[["run", "adapter"]].drop_duplicates().sort_values(["run", "adapter"]).itertuples(index=False)
    rows = [tuple(r) for r in rows]
    index = {r: k for k, r in enumerate(rows)}
    col = {r: k for k, r in enumerate(regimes)}
    grid = np.full((len(rows), len(regimes)), np.nan)
    text = {}
    for t in table.itertuples(index=False):
        i, j = index[(t.run, t.adapter)], col[t.regime]
        grid[i, j] = STATUSES.index(t.status)
        text[i, j] = f"{t.failing}/{t.cases}" if t.failing else ""
    with _style():
        width = 3.2 + 0.62 * len(regimes) + (1.5 if multi else 0)
        height = 1.9 + 0.26 * len(rows)
        fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
        cmap = matplotlib.colors.ListedColormap([STATUS_COLOURS[s] for s in STATUSES]).with_extremes(bad="white")
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-0.5, vmax=len(STATUSES) - 0.5, aspect="auto",
                  interpolation="nearest")
        for (i, j), label in sorted(text.items()):
            dark = STATUS_TABLE[STATUSES[int(grid[i, j])]].dark
            ax.text(j, i, label, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_xticks(range(len(regimes)), labels or regimes, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(rows)), [_row_label(r, a, multi) for r, a in rows])
        ax.set_xticks(np.arange(-0.5, len(regimes)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        present = [s for s in STATUSES if s in set(table["status"])]
        handles = [matplotlib.patches.Patch(color=STATUS_COLOURS[s], label=s) for s in present]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8,
                  title="worst status\n(cell: failing/cases)", title_fontsize=8)
        ax.set_title("Status by adapter and regime (all dtypes; worst case shown; R realistic, A adversarial)")
        return _png(fig)


def _ratio_y(values, style=None) -> np.ndarray:
    """Ratios on the plotted axis; NaN/inf inside the top band, offset per adapter so they do not hide each other."""
    v = np.asarray(values, dtype=float)
    band = NONFINITE_Y * 10.0 ** (style["band_offset"] if style else 0.0)
    return np.where(np.isinf(v), band, np.clip(v, FLOOR, CEILING))


def _ratio_axis(ax) -> None:
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 2, NONFINITE_Y * 4)
    ticks = [FLOOR, 1e-2, 1e-1, 1, 10, 1e2, 1e3, 1e4, 1e5, CEILING, NONFINITE_Y]
    labels = [f"≤{FLOOR:g}", "0.01", "0.1", "1", "10", "100", "1e3", "1e4", "1e5", f"≥{CEILING:g}", "NaN/inf"]
    ax.set_yticks(ticks, labels)
    ax.minorticks_off()
    ax.axhline(1.0, color="#c62828", linewidth=1, linestyle="--")
    ax.axhspan(CEILING * 2, NONFINITE_Y * 4, color="#ffebee", zorder=0)
    ax.grid(True, which="major", color="#e0e0e0", linewidth=0.6)


def _short(x: float) -> str:
    """A ratio in at most 4 characters: 1.3, 84, 2e2, 6e14."""
    if x < 100:
        return f"{x:.2g}"
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def error_heatmap(table: pd.DataFrame, by: str, columns: list, labels: list[str], dtypes: list[str],
                  title: str) -> bytes:
    """Largest error/tolerance per (run,) adapter x `by` bin, one panel per dtype.

    Green below the tolerance, yellow at it, red above; black with "NaN" where an output was
    NaN/inf on a finite truth; white where the run has no case there.
    """
    matplotlib, plt = _pyplot()
    multi = table["run"].nunique() > 1
    rows = [tuple(r) for r in table[["run", "adapter"]].drop_duplicates().sort_values(["run", "adapter"]).itertuples(index=False)]
    index = {r: k for k, r in enumerate(rows)}
    col = {c: k for k, c in enumerate(columns)}
    norm = matplotlib.colors.LogNorm(FLOOR, 1 / FLOOR)
    cmap = matplotlib.colormaps["RdYlGn_r"].with_extremes(bad="white", under="#1a9850", over="#a50026")
    black = matplotlib.colors.ListedColormap(["#111111"]).with_extremes(bad=(0, 0, 0, 0))
    with _style():
        width = 2.6 + (1.8 if multi else 0) + len(dtypes) * (0.36 * len(columns) + 0.3)
        height = 2.3 + 0.24 * len(rows)
        fig, axes = plt.subplots(1, len(dtypes), figsize=(width, height), sharey=True, squeeze=False,
                                 layout="constrained")
        fig.suptitle(title, fontsize=11)
        image = None
        for ax, dtype in zip(axes[0], dtypes):
            grid = np.full((len(rows), len(columns)), np.nan)
            t = table[table["dtype"].astype(str) == dtype]
            for r in t.itertuples(index=False):
                grid[index[(r.run, r.adapter)], col[getattr(r, by)]] = r.tol_ratio
            finite = np.where(np.isinf(grid), np.nan, np.clip(grid, FLOOR, 1 / FLOOR))
            image = ax.imshow(np.ma.masked_invalid(finite), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
            ax.imshow(np.ma.masked_where(~np.isinf(grid), np.zeros_like(grid)), cmap=black, aspect="auto",
                      interpolation="nearest")
            for i, j in zip(*np.nonzero(np.isinf(grid))):
                ax.text(j, i, "NaN", ha="center", va="center", fontsize=5.5, color="white")
            for i, j in zip(*np.nonzero(np.isfinite(grid) & (grid > 1))):
                ax.text(j, i, _short(grid[i, j]), ha="center", va="center", fontsize=5.5,
                        color="white" if grid[i, j] > 30 else "black")
            ax.set_xticks(range(len(columns)), labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=7.5)
            ax.set_yticks(range(len(rows)), [_row_label(r, a, multi) for r, a in rows], fontsize=8)
            ax.set_xticks(np.arange(-0.5, len(columns)), minor=True)
            ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
            ax.grid(which="minor", color="white", linewidth=1)
            ax.tick_params(which="minor", length=0)
            ax.set_title(dtype)
        bar = fig.colorbar(image, ax=list(axes[0]), shrink=0.6, extend="both", pad=0.01)
        bar.set_label("largest error / tolerance (loss or gradient); black: NaN/inf", fontsize=8)
        return _png(fig)


def _spread_labels(ys: list[float], gap: float, lo: float = -math.inf, hi: float = math.inf) -> list[float]:
    """Label positions (in the axis's log10 units) at least `gap` apart, as close as they can
    stay to the points and inside [lo, hi]: sorted, pushed up where they collide, then pushed
    down from `hi` where the stack overran it. Only colliding labels move (a block shifted as
    a whole once carried two lone labels at the floor below the axes, onto the tick labels);
    when they cannot all fit, they are spread evenly over [lo, hi]."""
    order = sorted(range(len(ys)), key=lambda k: (ys[k], k))
    pos = [min(max(ys[k], lo), hi) for k in order]
    for n in range(1, len(pos)):  # upwards: each at least a gap above the one below
        pos[n] = max(pos[n], pos[n - 1] + gap)
    if pos and pos[-1] > hi:  # downwards from the top: each at least a gap below the one above
        pos[-1] = hi
        for n in range(len(pos) - 2, -1, -1):
            pos[n] = min(pos[n], pos[n + 1] - gap)
    if pos and pos[0] < lo:  # more labels than the axis holds at this gap
        step = (hi - lo) / max(len(pos) - 1, 1) if math.isfinite(hi - lo) else gap
        pos = [lo + n * step for n in range(len(pos))]
    placed = [0.0] * len(ys)
    for n, k in enumerate(order):
        placed[k] = pos[n]
    return placed


def _panels(plt, keys, title, ncols=2, panel_height=3.6):
    n = len(keys)
    ncols = min(n, ncols)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(12.5, 1.0 + panel_height * nrows), squeeze=False,
                             layout="constrained")
    fig.suptitle(title, fontsize=11)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def accuracy_vs_speed(points: pd.DataFrame, devices: dict[str, str]) -> bytes:
    """One panel per run (device) x dtype at that run's own largest timed batch of that dtype:
    forward+backward rows/s (x) against the largest realistic error (y); the Pareto frontier
    (nothing both faster and at most as wrong) drawn and its points in blue; every point
    labelled directly in a column right of the points, with a leader line (no legend to decode)."""
    _, plt = _pyplot()
    keys = [tuple(k) for k in points[["run", "dtype"]].drop_duplicates().itertuples(index=False)]
    heights = [max(3.4, 0.2 * int(((points["run"] == r) & (points["dtype"] == d)).sum())) for r, d in keys]
    with _style():
        fig, axes = plt.subplots(len(keys), 1, figsize=(12.5, 0.8 + sum(heights)), squeeze=False,
                                 layout="constrained", gridspec_kw={"height_ratios": heights})
        fig.suptitle("Accuracy against speed (forward+backward; realistic inputs): lower right is accurate and fast; "
                     "blue: the Pareto frontier", fontsize=11)
        for ax, (run, dtype), height in zip(axes[:, 0], keys, heights):
            t = points[(points["run"] == run) & (points["dtype"] == dtype)].sort_values("rows_per_second")
            y = _ratio_y(t["error"].to_numpy(float))
            x = t["rows_per_second"].to_numpy(float)
            front = t["pareto"].to_numpy(bool)
            ax.scatter(x[~front], y[~front], s=26, color="#90a4ae", edgecolors="black", linewidths=0.4, zorder=3)
            ax.scatter(x[front], y[front], s=34, color="#1565c0", edgecolors="black", linewidths=0.5, zorder=4)
            order = np.argsort(-x[front])  # fastest first: the frontier as a staircase
            fx, fy = x[front][order], y[front][order]
            if len(fx):
                sx, sy = [fx[0]], [fy[0]]
                for k in range(1, len(fx)):
                    sx += [fx[k], fx[k]]
                    sy += [sy[-1], fy[k]]
                ax.plot(sx, sy, color="#1565c0", linewidth=1, zorder=2)
            ax.set_xscale("log")
            lo, hi = (float(x.min()) / 1.5, float(x.max()) * 1.5) if len(x) else (1.0, 10.0)
            span = max(math.log10(hi / lo), 1.0)
            ax.set_xlim(lo, lo * 10 ** (span / 0.5))  # the points in the left half, the labels in the right
            _ratio_axis(ax)
            y_lo, y_hi = math.log10(FLOOR / 2), math.log10(NONFINITE_Y * 4)
            gap = (y_hi - y_lo) * LABEL_PX / _axes_height_px(ax)
            ly = 10 ** np.array(_spread_labels(list(np.log10(y)), gap, y_lo + gap / 2, y_hi - gap / 2))
            for xi, yi, lyi, name, on in zip(x, y, ly, t["adapter"], front):
                ax.annotate(name, (xi, yi), xytext=(0.53, lyi), textcoords=("axes fraction", "data"), va="center",
                            fontsize=7, color="#0d47a1" if on else "#424242", annotation_clip=False,
                            bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.8},
                            arrowprops={"arrowstyle": "-", "color": "#b0bec5", "linewidth": 0.5}).set_in_layout(False)
            shape = t["shape"].iloc[0] if len(t) else ""
            ax.set_title(f"{run} ({devices.get(run, '')}), {dtype}, batch {shape}")
            ax.set_xlabel("rows per second (median of repeats)")
            ax.set_ylabel("largest realistic\n" + (t["measure"].iloc[0] if len(t) else "error / tolerance"))
        return _png(fig)


def error_vs_condition(points: pd.DataFrame, dtypes: list[str], styles: dict) -> bytes:
    """A scatter per dtype: each case's largest error / tolerance against the tolerance's loss
    condition scale; realistic filled, adversarial hollow; NaN/inf in the top band."""
    _, plt = _pyplot()
    p = points[points["plain"] & points["cond_scale"].notna()]
    with _style():
        fig, axes = _panels(plt, dtypes, "Error against the tolerance's condition scale (loss + 2 + log2 V)")
        for ax, dtype in zip(axes, dtypes):
            t = p[p["dtype"].astype(str) == dtype]
            for kind, filled in (("adversarial", False), ("realistic", True)):
                k = t[t["realism"] == kind]
                y = _ratio_y(k["tol_ratio"].to_numpy(float))
                ax.scatter(np.minimum(k["cond_scale"].to_numpy(float), X_EDGE), y, s=10, marker="o", linewidths=0.6,
                           facecolors="#1565c0" if filled else "none", edgecolors="#1565c0" if filled else "#e65100",
                           alpha=0.55, label=f"{kind} ({len(k)})")
            ax.set_xscale("log")
            _log_xlim(ax, t["cond_scale"].to_numpy(float))
            _ratio_axis(ax)
            ax.set_title(dtype)
            edge = (t["cond_scale"].to_numpy(float) > X_EDGE).any()
            ax.set_xlabel("condition scale of the worst row (loss + 2 + log2 V)"
                          + (f"; above {X_EDGE:.0e} at the edge" if edge else ""))
            ax.set_ylabel("largest error / tolerance")
            ax.legend(loc="center right", fontsize=7, frameon=True)
        return _png(fig)


#: The largest condition scale a scatter draws where it lies; larger ones (float64 cases with a
#: loss near float64's range) are drawn at this edge: matplotlib's log ticker overflows on an
#: axis that reaches about 1e280 (its tick decades step past float64's largest value).
X_EDGE = 1e250


def _log_xlim(ax, x: np.ndarray) -> None:
    """Log x limits from the finite positive values (clipped to X_EDGE), with a little margin:
    left to itself matplotlib overflows for scales near 1e308 and draws a 1-to-10 axis under
    points that lie far outside it (the float64 panel of the committed report did)."""
    x = np.minimum(x[np.isfinite(x) & (x > 0)], X_EDGE)
    if not len(x):
        return
    lo, hi = math.log10(x.min()), math.log10(x.max())
    pad = max((hi - lo) * 0.04, 0.1)
    ax.set_xlim(10 ** max(lo - pad, -250.0), 10 ** min(hi + pad, math.log10(X_EDGE) + 10))


def _axes_height_px(ax) -> float:
    """The axes' drawn height in pixels, after the figure's layout (direct labels are left out of
    the layout, so placing them does not change it)."""
    ax.figure.canvas.draw()
    return max(ax.get_window_extent().height, 1.0)


#: Pixels between the centres of two direct labels, and the height a panel needs per label.
LABEL_PX = 11.0
LABEL_INCHES = LABEL_PX / (DPI * 0.7)


def _lines_with_labels(ax, series, height_in: float, label_from: float = 0.56) -> None:
    """Log-log lines (x, y, label, style) with their points in the left part of the axes and
    one label per line in a column on the right (axes fraction `label_from`), spread so that
    none overlaps another and none leaves the axes, each tied to its line's last point."""
    series = [s for s in series if len(s[0]) and np.isfinite(s[1]).any()]
    ax.set_xscale("log")
    ax.set_yscale("log")
    if not series:
        return
    for x, y, _, st in series:
        ax.plot(x, y, marker=st["marker"], color=st["color"], linewidth=1, markersize=4)
    xs = np.concatenate([s[0] for s in series])
    ys = np.concatenate([s[1][np.isfinite(s[1])] for s in series])
    x_lo, x_hi = math.log10(xs.min() / 1.4), math.log10(xs.max() * 1.4)
    span = max(x_hi - x_lo, 0.3)
    ax.set_xlim(10 ** x_lo, 10 ** (x_lo + span / (label_from - 0.04)))
    y_lo, y_hi = math.log10(ys.min() / 1.3), math.log10(ys.max() * 1.3)
    if y_hi - y_lo < 0.3:
        y_lo, y_hi = y_lo - 0.15, y_hi + 0.15
    ax.set_ylim(10 ** y_lo, 10 ** y_hi)
    px = _axes_height_px(ax)
    gap = (y_hi - y_lo) * LABEL_PX / px
    ax.set_ylim(10 ** y_lo, 10 ** y_hi)
    ends = [math.log10(s[1][np.isfinite(s[1])][-1]) for s in series]
    placed = _spread_labels(ends, gap, y_lo + gap / 2, y_hi - gap / 2)
    for (x, y, name, st), ly in zip(series, placed):
        last = np.flatnonzero(np.isfinite(y))[-1]
        ax.annotate(name, (x[last], y[last]), xytext=(label_from, 10 ** ly), textcoords=("axes fraction", "data"),
                    va="center", fontsize=6.3, color=st["color"], annotation_clip=False,
                    bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none"},  # a roofline passes behind
                    arrowprops={"arrowstyle": "-", "color": "#cfd8dc", "linewidth": 0.5}).set_in_layout(False)
    ax.grid(True, color="#e0e0e0", linewidth=0.6)


def time_memory_vs_classes(tp: pd.DataFrame, styles: dict) -> bytes:
    """Liger-style: forward+backward median ms and peak memory against V, one line per adapter,
    one pair of panels per run x dtype (the largest batch timed at each V); lines labelled."""
    _, plt = _pyplot()
    ok = tp[(tp["status"] == "ok") & (tp["pass"] == "forward_backward")].assign(dtype=lambda t: t["dtype"].astype(str))
    keys = [tuple(k) for k in ok[["run", "dtype"]].drop_duplicates().sort_values(["run", "dtype"]).itertuples(index=False)]
    default = {"color": "#424242", "marker": "o"}
    heights = [max(3.2, LABEL_INCHES * (ok[(ok["run"] == r) & (ok["dtype"] == d)]["adapter"].nunique() + 3))
               for r, d in keys]
    with _style():
        fig, axes = plt.subplots(len(keys), 2, figsize=(12.5, 0.8 + sum(heights)), squeeze=False,
                                 layout="constrained", gridspec_kw={"height_ratios": heights})
        fig.suptitle("Forward+backward time and peak memory against the class count V (largest batch per V)",
                     fontsize=11)
        for (ax_t, ax_m), (run, dtype), height in zip(axes, keys, heights):
            t = ok[(ok["run"] == run) & (ok["dtype"] == dtype)]
            t = t.assign(_n=t["n_rows"].astype("int64") * t["n_classes"].astype("int64"))
            top = t.sort_values("_n").groupby(["adapter", "n_classes"]).tail(1)
            for ax, col, scale, label in ((ax_t, "median_ms", 1.0, "median ms"),
                                          (ax_m, "peak_memory_bytes", 2.0 ** -20, "peak MiB")):
                series = []
                for adapter, g in top.groupby("adapter", sort=True):
                    g = g.sort_values("n_classes")
                    series.append((g["n_classes"].to_numpy(float), g[col].to_numpy(float, na_value=np.nan) * scale,
                                   adapter, styles.get(adapter, default)))
                _lines_with_labels(ax, series, height, label_from=0.42)  # half-width panels: a wider label column
                ax.set_xlabel("classes V")
                ax.set_ylabel(label)
                kinds = sorted(set(t["peak_memory_kind"].dropna().astype(str))) if col != "median_ms" else []
                ax.set_title(f"{run}, {dtype}: {label}" + (f" ({', '.join(kinds)})" if kinds else ""), loc="left")
        return _png(fig)


def bandwidth_vs_size(tp: pd.DataFrame, styles: dict) -> bytes:
    """quack-style: forward+backward achieved GB/s against the bytes the pass must move, one
    panel per run, with the device's measured copy bandwidth drawn as the roofline."""
    _, plt = _pyplot()
    ok = tp[(tp["status"] == "ok") & (tp["pass"] == "forward_backward")]
    runs = sorted(ok["run"].unique())
    default = {"color": "#424242", "marker": "o"}
    heights = [max(3.2, LABEL_INCHES * (ok[ok["run"] == r][["adapter", "dtype"]].drop_duplicates().shape[0] + 4))
               for r in runs]
    with _style():
        fig, axes = plt.subplots(len(runs), 1, figsize=(12.5, 0.8 + sum(heights)), squeeze=False,
                                 layout="constrained", gridspec_kw={"height_ratios": heights})
        fig.suptitle("Achieved bandwidth against size, forward+backward (dashed: the device's copy bandwidth)",
                     fontsize=11)
        for ax, run, height in zip(axes[:, 0], runs, heights):
            t = ok[ok["run"] == run]
            series = []
            for (adapter, dtype), g in t.groupby(["adapter", t["dtype"].astype(str)], sort=True):
                g = g.sort_values("min_bytes")
                series.append((g["min_bytes"].to_numpy(float) / 1e6, g["gbps"].to_numpy(float),
                               f"{adapter} {dtype}", styles.get(adapter, default)))
            roof = t["device_gbps"].dropna()
            if len(roof):  # the roofline joins the data range before the labels are spread
                r = float(roof.iloc[0])
                x0 = float(t["min_bytes"].min()) / 1e6
                series.append((np.array([x0]), np.array([r]), f"copy bandwidth {r:.3g} GB/s",
                               {"color": "#c62828", "marker": ""}))
            _lines_with_labels(ax, series, height)
            if len(roof):
                ax.axhline(float(roof.iloc[0]), color="#c62828", linestyle="--", linewidth=1)
            ax.set_title(f"{run}", loc="left")
            ax.set_xlabel("least bytes moved (MB)")
            ax.set_ylabel("achieved GB/s")
        return _png(fig)
