"""Pictures of a run, as PNG files: a fragmentation map of physical memory and bar charts of
the figures every run reports.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state,
no display needed) and saved atomically: into a temporary file beside the target, then renamed
over it with os.replace().
"""
import io
import math
import pathlib

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from foliobench import results
from simcore.mmzone import MIGRATETYPE_NAMES, PAGE_SIZE, PAGEBLOCK_NR_PAGES

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), the darker
# ones, so that lightening a cell by its free share stays visible.
MIGRATETYPE_COLOURS = (
    "#D55E00",   # Unmovable: vermillion
    "#0072B2",   # Movable: blue
    "#009E73",   # Reclaimable: bluish green
    "#CC79A7",   # HighAtomic: reddish purple
    "#E69F00",   # CMA: orange
    "#000000",   # Isolate: black
)
GROUP_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442",
                 "#000000")

# A fully free pageblock is drawn this far towards white (1.0 would lose its migratetype).
FREE_LIGHTEN = 0.85

METRIC_UNITS = {
    "compaction_success_rate": "fraction",
    "highorder_success": "fraction",
    "migration_pages_per_s": "pages/s",
    "migration_gib_per_s": "GiB/s",
    "large_folio_preservation": "fraction",
    "compact_scan_efficiency": "%",
    "pages_migrated": "pages",
    "pages_migrate_failed": "pages",
    "fragindex_9_before": "x1000",
    "fragindex_9_after": "x1000",
    "unusable_9_before": "x1000",
    "unusable_9_after": "x1000",
    "migration_time_s": "s",
    "sim_wall_s": "s",
    "compact_stall": "events",
    "compact_success": "events",
    "compact_fail": "events",
    "highorder_requested": "allocations",
    "highorder_granted": "allocations",
    "large_folios_migrated_whole": "folios",
    "large_folios_split": "folios",
}

_DPI = 110
_PAGEBLOCK_BYTES = PAGEBLOCK_NR_PAGES * PAGE_SIZE


# --- saving -----------------------------------------------------------------------------------

def _save(fig, path):
    path = pathlib.Path(path)
    FigureCanvasAgg(fig)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=_DPI)
    return results.write_bytes(path.parent, path.name, png.getvalue())


# --- fragmentation map ------------------------------------------------------------------------

def _grid_width(n):
    """Blocks per row: the power of two nearest sqrt(n), the smaller on a tie (tall panels sit
    side by side); 8192 blocks (16 GiB) -> 64 per row, 128 rows of 128 MiB."""
    if n <= 1:
        return 1
    return int(2 ** math.floor(math.log2(math.sqrt(n)) + 0.5 - 1e-9))


def _check_panel(i, panel):
    if not isinstance(panel, dict) or "migratetype" not in panel or "free_share" not in panel:
        raise ValueError(f"panel {i} must be a dict with 'title', 'migratetype' and 'free_share'")
    mt = np.asarray(panel["migratetype"])
    free = np.asarray(panel["free_share"], dtype=float)
    if mt.ndim != 1 or free.shape != mt.shape or mt.size == 0:
        raise ValueError(f"panel {i}: 'migratetype' and 'free_share' must be 1-D arrays of the "
                         f"same non-zero length (one per pageblock), got {mt.shape} and "
                         f"{free.shape}")
    if not np.issubdtype(mt.dtype, np.integer):
        if not (np.issubdtype(mt.dtype, np.number) and np.all(mt == np.round(mt))):
            raise ValueError(f"panel {i}: 'migratetype' must hold integers")
        mt = mt.astype(np.int64)
    bad = (mt < 0) | (mt >= len(MIGRATETYPE_NAMES))
    if bad.any():
        names = ", ".join(f"{n} {name}" for n, name in enumerate(MIGRATETYPE_NAMES))
        raise ValueError(f"panel {i}: migratetype {mt[bad][0]} at pageblock "
                         f"{int(np.flatnonzero(bad)[0])} is not a migratetype ({names})")
    bad = ~((free >= 0) & (free <= 1))
    if bad.any():
        raise ValueError(f"panel {i}: free_share {free[bad][0]} at pageblock "
                         f"{int(np.flatnonzero(bad)[0])} is outside [0, 1]")
    return str(panel.get("title", f"panel {i + 1}")), mt, free


def _cell_colours(mt, free):
    """RGB per pageblock: the migratetype's colour, lightened towards white by the free share."""
    base = np.array([to_rgb(c) for c in MIGRATETYPE_COLOURS])[mt]
    k = (FREE_LIGHTEN * free)[:, None]
    return base * (1 - k) + k


def _size_unit(nbytes):
    return ("GiB", 1 << 30) if nbytes >= 2 << 30 else ("MiB", 1 << 20)


def _fragmentation_figure(panels, title=None):
    if not panels:
        raise ValueError("fragmentation_map needs at least one panel")
    checked = [_check_panel(i, p) for i, p in enumerate(panels)]
    nmax = max(len(mt) for _, mt, _ in checked)
    width = _grid_width(nmax)
    rows = -(-nmax // width)
    ncols = min(len(checked), 4)
    nrows = -(-len(checked) // ncols)

    # Cells about 0.06 in (7 px) wide; the figure at least wide enough for the key; panels
    # stretched (aspect "auto") rather than letting fixed-aspect images overlap their labels.
    margin = 1.15                                            # y label and ticks, per panel
    panel_w = min(max(width * 0.06, 2.6), 5.5)
    fig_w = max(ncols * (panel_w + margin) + 0.6, 8.0)
    panel_w = (fig_w - 0.6) / ncols - margin
    panel_h = min(max(panel_w * rows / width, 1.5), 9.0)
    present = sorted(set(np.concatenate([np.unique(mt) for _, mt, _ in checked]).tolist()))
    key_h = 0.35 + 0.22 * len(present)
    fig = Figure(figsize=(fig_w, nrows * (panel_h + 1.2) + key_h + 1.3), layout="constrained")
    gs = fig.add_gridspec(nrows + 1, 1, height_ratios=[panel_h + 1.2] * nrows + [key_h + 0.9])
    grid = gs[:nrows, 0].subgridspec(nrows, ncols)

    total = nmax * _PAGEBLOCK_BYTES
    unit, scale = _size_unit(total)
    row_bytes = width * _PAGEBLOCK_BYTES
    for i, (name, mt, free) in enumerate(checked):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        img = np.ones((rows * width, 4))
        img[:, 3] = 0.0                                   # padding after the last block: blank
        img[:len(mt), :3] = _cell_colours(mt, free)
        img[:len(mt), 3] = 1.0
        ax.imshow(img.reshape(rows, width, 4), interpolation="nearest", aspect="auto",
                  extent=(0, width, rows, 0))
        ax.set_title(f"{name}\n{len(mt)} pageblocks, {free.mean():.0%} of pages free, "
                     f"{int((free >= 1).sum())} pageblocks wholly free", fontsize=9)
        # y: physical address of each row's first byte; x: offset inside the row
        yt = _ticks(rows)
        ax.set_yticks(yt)
        ax.set_yticklabels([_fmt_size(r * row_bytes / scale) for r in yt], fontsize=8)
        ax.set_ylabel(f"physical address of row start ({unit})", fontsize=8)
        xunit, xscale = _size_unit(row_bytes)
        xt = _ticks(width, 4)
        ax.set_xticks(xt)
        ax.set_xticklabels([_fmt_size(c * _PAGEBLOCK_BYTES / xscale) for c in xt], fontsize=8)
        ax.set_xlabel(f"offset in row ({xunit}); one cell = one "
                      f"{_PAGEBLOCK_BYTES >> 20} MiB pageblock", fontsize=8)
        ax.tick_params(length=2)

    # key: one strip per migratetype present, from fully used (left) to wholly free (right)
    side = 0.5 if ncols == 1 else 1.0             # the key spans the middle of the figure
    key = fig.add_subplot(gs[nrows, 0].subgridspec(1, 3, width_ratios=[side, 4, side])[0, 1])
    shares = np.linspace(0, 1, 101)
    strip = np.stack([_cell_colours(np.full(shares.size, m), shares) for m in present])
    key.imshow(strip, aspect="auto", interpolation="nearest", extent=(0, 1, len(present), 0))
    key.set_yticks(np.arange(len(present)) + 0.5)
    key.set_yticklabels([MIGRATETYPE_NAMES[m] for m in present], fontsize=8)
    key.set_xticks(np.linspace(0, 1, 5))
    key.set_xticklabels(["0", "0.25", "0.5", "0.75", "1"], fontsize=8)
    key.set_xlabel(f"free share of the pageblock (free pages / {PAGEBLOCK_NR_PAGES}):\n"
                   "0 = all pages in use, 1 = wholly free; lighter = freer", fontsize=9)
    key.set_title("key: colour = pageblock migratetype, lightness = free share", fontsize=9)
    key.legend(handles=[Patch(color=MIGRATETYPE_COLOURS[m], label=MIGRATETYPE_NAMES[m])
                        for m in present],
               loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False,
               title="migratetype", title_fontsize=8)
    fig.suptitle(title or "Pageblocks of physical memory: migratetype and free share",
                 fontsize=11)
    return fig


def _ticks(n, target=8):
    """About `target` tick positions in 0..n on a 1-2-4-8 step."""
    step = max(1, 2 ** math.ceil(math.log2(max(n / target, 1))))
    return list(range(0, n + 1, step))


def _fmt_size(x):
    return f"{x:g}" if x == int(x) else f"{x:.2f}".rstrip("0").rstrip(".")


def fragmentation_map(panels, path, title=None):
    """Draw one panel per entry of `panels` ({"title", "migratetype", "free_share"}, one value
    per pageblock) as a grid of cells, coloured by migratetype and lightened by free share;
    save as a PNG at path (atomically) and return the path."""
    return _save(_fragmentation_figure(panels, title), path)


# --- metric bars ------------------------------------------------------------------------------

def _metric_label(metric):
    unit = METRIC_UNITS.get(metric)
    return f"{metric} ({unit})" if unit else metric


def _fmt_value(v, _pos=None):
    """3 significant digits; from 10 thousand on as k, M, G, T. A whole number below 10
    thousand (a counter such as pages_migrated 2048) is written exactly."""
    if float(v).is_integer() and abs(v) < 1e4:
        return str(int(v))
    r = float(f"{v:.3g}")
    for threshold, scale, suffix in ((1e12, 1e12, "T"), (1e9, 1e9, "G"), (1e6, 1e6, "M"),
                                     (1e4, 1e3, "k")):
        if abs(r) >= threshold:
            return f"{r / scale:.3g}{suffix}"
    return f"{r:.0f}" if abs(r) >= 1e3 else f"{r:.3g}"


def _metric_bars_figure(df, metrics, group="strategy", title=None):
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metric_bars needs at least one metric")
    missing = [m for m in metrics + [group] if m not in df.columns]
    if missing:
        raise ValueError(f"no column {', '.join(map(repr, missing))} in the results "
                         f"(columns: {', '.join(map(str, df.columns))})")
    if df.empty:
        raise ValueError("metric_bars: the results table has no rows")
    keys = df[group].astype(object).where(df[group].notna(), "-").astype(str)
    groups = list(dict.fromkeys(keys))
    colours = {g: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, g in enumerate(groups)}
    x = np.arange(len(groups))

    ncols = min(len(metrics), 3)
    nrows = -(-len(metrics) // ncols)
    width = max(3.4, 0.75 * len(groups) + 1.6)
    fig = Figure(figsize=(ncols * width, nrows * 3.2 + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    spread = False
    for ax, metric in zip(axes, metrics):
        values = pd.to_numeric(df[metric], errors="coerce").astype(float)
        values = values.where(np.isfinite(values))
        stats = values.groupby(keys, sort=False).agg(["mean", "min", "max", "count"])
        stats = stats.reindex(groups)
        mean = stats["mean"].to_numpy()
        ok = np.isfinite(mean)
        lo, hi = stats["min"].to_numpy(), stats["max"].to_numpy()
        many = ok & (stats["count"].to_numpy() > 1)
        spread |= bool(many.any())
        ax.bar(x[ok], mean[ok], color=[colours[g] for g, o in zip(groups, ok) if o],
               width=0.65, zorder=2)
        if many.any():
            ax.errorbar(x[many], mean[many], yerr=[np.maximum(mean[many] - lo[many], 0),
                                                    np.maximum(hi[many] - mean[many], 0)],
                        fmt="none", ecolor="#333333", capsize=4, lw=1.2, zorder=3)
        top = np.nanmax(np.where(ok, np.fmax(hi, mean), np.nan)) if ok.any() else 1.0
        bottom = np.nanmin(np.where(ok, np.fmin(lo, mean), np.nan)) if ok.any() else 0.0
        top, bottom = max(top, 0.0), min(bottom, 0.0)
        if METRIC_UNITS.get(metric) == "fraction":
            top = max(top, 1.0)
        span = (top - bottom) or 1.0
        ax.set_ylim(bottom - (0.12 * span if bottom < 0 else 0), top + 0.15 * span)
        ax.axhline(0, color="#888888", lw=0.8, zorder=1)
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        for xi, m, low, h, good in zip(x, mean, lo, hi, ok):
            if good and m >= 0:      # value label beyond the bar's end and its whisker
                ax.annotate(_fmt_value(m), (xi, np.fmax(h, m)), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=8,
                            zorder=4)
            elif good:
                ax.annotate(_fmt_value(m), (xi, np.fmin(low, m)), xytext=(0, -3),
                            textcoords="offset points", ha="center", va="top", fontsize=8,
                            zorder=4)
            else:
                ax.text(xi, 0.04, "n/a", transform=trans, ha="center", va="bottom",
                        fontsize=9, color="#555555", style="italic")
        counts = stats["count"].fillna(0).astype(int).to_numpy()
        ax.set_xticks(x)
        ax.set_xticklabels([f"{g}\nn={c}" for g, c in zip(groups, counts)], fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel(_metric_label(metric), fontsize=9)
        ax.set_xlabel(group, fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        if max(abs(top), abs(bottom)) >= 1e4:
            ax.yaxis.set_major_formatter(FuncFormatter(_fmt_value))
        ax.grid(axis="y", color="#dddddd", lw=0.6, zorder=0)
        ax.set_axisbelow(True)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    note = "bar = mean over rows (seeds); n = rows with a value; n/a = no value"
    if spread:
        note += "; whiskers = min to max"
    fig.suptitle(title or f"Results by {group}", fontsize=11)
    fig.text(0.5, 0.0, note, ha="center", va="bottom", fontsize=8, color="#444444")
    fig.get_layout_engine().set(h_pad=0.12)
    return fig


def metric_bars(df, metrics, path, group="strategy", title=None):
    """One subplot per metric, one bar per value of `group` (mean over its rows), whiskers from
    min to max when a group has several rows, "n/a" where a group has no value. Saves a PNG at
    path (atomically) and returns the path."""
    return _save(_metric_bars_figure(df, metrics, group, title), path)
