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

from .tolerances import STATUSES

DPI = 100

#: One colour per status, shared by the heatmap and the HTML tables.
STATUS_COLOURS = {
    "ok": "#4caf50",
    "rejected": "#a5d6a7",
    "lossy": "#d4e157",
    "inaccurate": "#ffb300",
    "silent": "#ab47bc",
    "nonfinite": "#e53935",
    "error": "#8e0000",
    "crash": "#212121",
    "timeout": "#6d4c41",
    "unsupported": "#cfd8dc",
    "undefined": "#eceff1",
}
assert set(STATUS_COLOURS) == set(STATUSES)

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


def status_heatmap(table: pd.DataFrame, regimes: list[str]) -> bytes:
    """Worst status per (run,) adapter x regime group; each cell says failing/cases."""
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
            dark = STATUSES[int(grid[i, j])] in ("nonfinite", "error", "crash", "timeout", "silent")
            ax.text(j, i, label, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_xticks(range(len(regimes)), regimes, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(rows)), [_row_label(r, a, multi) for r, a in rows])
        ax.set_xticks(np.arange(-0.5, len(regimes)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        present = [s for s in STATUSES if s in set(table["status"])]
        handles = [matplotlib.patches.Patch(color=STATUS_COLOURS[s], label=s) for s in present]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8,
                  title="worst status\n(cell: failing/cases)", title_fontsize=8)
        ax.set_title("Status by adapter and regime (all dtypes; worst case shown)")
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


def _dtype_axes(plt, dtypes, title):
    n = len(dtypes)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(11.5, 1.2 + 3.3 * nrows), squeeze=False, layout="constrained")
    fig.suptitle(title, fontsize=11)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


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


def _figure_legend(fig, axes) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        names = sorted(handles)
        fig.legend([handles[n] for n in names], names, loc="outside lower center", ncols=3, fontsize=7.5,
                   frameon=False)


def accuracy_vs_speed(speed: pd.DataFrame, dtypes: list[str], styles: dict) -> bytes:
    """Throughput (x) against the largest error/tolerance (y), one panel per dtype: bottom right is best."""
    _, plt = _pyplot()
    multi = speed["run"].nunique() > 1
    shapes = ", ".join(f"{run} {shape}" for run, shape in speed[["run", "shape"]].drop_duplicates().itertuples(index=False))
    with _style():
        fig, axes = _dtype_axes(plt, dtypes, f"Accuracy against speed (forward+backward; {shapes}): "
                                             "lower right is accurate and fast")
        for ax, dtype in zip(axes, dtypes):
            t = speed[speed["dtype"].astype(str) == dtype].sort_values(["run", "adapter"])
            for row in t.itertuples(index=False):
                style = styles[row.adapter]
                y = math.inf if row.nonfinite_cases else row.tol_ratio_max
                ax.scatter([row.rows_per_second], _ratio_y([y], style), marker=style["marker"], color=style["color"],
                           s=36, edgecolors="black", linewidths=0.4, label=_row_label(row.run, row.adapter, multi))
                if len(t) <= 8:  # beyond that the labels overlap; the legend names every point
                    ax.annotate(f"{row.run}: {row.adapter}" if multi else row.adapter,
                                (row.rows_per_second, _ratio_y([y], style)[0]), xytext=(6, 0), va="center",
                                textcoords="offset points", fontsize=6.5, color="#424242")
            ax.set_xscale("log")
            if len(t):  # room around the points (and for their labels), at least one decade wide
                lo, hi = float(t["rows_per_second"].min()), float(t["rows_per_second"].max())
                ax.set_xlim(lo / 2, max(hi * 4, lo * 10))
            _ratio_axis(ax)
            ax.set_title(dtype)
            ax.set_xlabel("rows per second (median of repeats)")
            ax.set_ylabel("largest error / tolerance")
        _figure_legend(fig, axes)
        return _png(fig)
