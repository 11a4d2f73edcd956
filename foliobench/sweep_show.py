"""foliobench sweep show DIR: a sweep's summary tables and its plots.

Every figure against every numeric swept parameter (one line per strategy/profile/workload
combination, the mean over seeds, the seeds' min..max as a band), and for each pair of numeric
swept parameters a heatmap per series. PNGs go to DIR/_plots (the "_" keeps them out of the
Parquet dataset) through matplotlib's object API on the Agg canvas.
"""
import itertools
import pathlib

import pandas as pd
from matplotlib.figure import Figure

from . import report, results
from .sweep_store import SweepStore

HEADLINE = ("highorder_success", "compaction_success_rate", "large_folio_preservation",
            "pages_migrated", "unusable_9_after")
SERIES_AXES = ("workload", "strategy", "profile")
MAX_PLOTS = 200


def load(path):
    """(rows, manifest) of a sweep directory."""
    store = SweepStore(path)
    manifest = store.manifest()
    if not store.done_keys():
        return pd.DataFrame(), manifest
    df = pd.read_parquet(path)
    df["workload"] = df["workload"].astype(str)
    return df, manifest


def numeric_axis(df, axis):
    """The axis as numbers for an x axis (mem in GiB), or None when it is not numeric."""
    if axis == "mem":
        from simcore.units import parse_size
        return df[axis].map(lambda v: parse_size(v) / (1 << 30))
    col = df[axis]
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        return None
    return col.astype(float)


def _axis_label(axis):
    return "mem (GiB)" if axis == "mem" else axis.removeprefix("param_")


def summary(df, swept, figures):
    """Per combination of swept axes (not seeds): cells, failures, and each figure's mean and
    (with several seeds) its standard deviation over seeds."""
    keys = [a for a in swept if a != "seed"] or ["workload"]
    ok = df[df["error"].isna()] if "error" in df else df
    agg = {}
    for f in figures:
        agg[f] = ok.groupby(keys, dropna=False)[f].mean()
        if df["seed"].nunique() > 1:
            agg[f"{f}_sd"] = ok.groupby(keys, dropna=False)[f].std()
    table = pd.DataFrame(agg)
    counts = df.groupby(keys, dropna=False).agg(cells=("cell", "nunique"))
    if "error" in df:
        counts["failed"] = df[df["error"].notna()].groupby(keys, dropna=False)["cell"].nunique()
        counts["failed"] = counts["failed"].fillna(0).astype(int)
    return counts.join(table).reset_index()


def _series(df):
    """[(label, style keys, rows)]: one series per combination of the series axes that vary."""
    cols = [a for a in SERIES_AXES if a in df and df[a].nunique() > 1]
    if not cols:
        return [("", {}, df)]
    out = []
    for k, g in df.groupby(cols, sort=True):
        k = k if isinstance(k, tuple) else (k,)
        out.append((" / ".join(map(str, k)), dict(zip(cols, k, strict=True)), g))
    return out


def _styles(df):
    """Colour by strategy, line style by profile, marker by workload (each in sorted order)."""
    def index(axis):
        values = sorted(df[axis].unique()) if axis in df else []
        return {v: i for i, v in enumerate(values)}
    return index("strategy"), index("profile"), index("workload")


def line_figure(df, axis, figure, title):
    """`figure` against `axis`: a line per series (mean over seeds and any other axis), the
    seeds' spread (min..max of the per-seed means) as a band."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    colours, styles, markers = _styles(df)
    for label, keys, g in _series(df):
        g = g.assign(_x=numeric_axis(g, axis))
        per_seed = g.groupby(["_x", "seed"])[figure].mean().unstack("seed")
        colour = report.GROUP_COLOURS[colours.get(keys.get("strategy"), 0)
                                      % len(report.GROUP_COLOURS)]
        nth = styles.get(keys.get("profile"), 0)
        marker = "osD^v"[markers.get(keys.get("workload"), 0) % 5]
        # later profiles thinner and dashed on top, so that equal lines stay visible
        ax.plot(per_seed.index, per_seed.mean(axis=1), ("-", "--", ":", "-.")[nth % 4],
                marker=marker, ms=4 if nth == 0 else 2.5, lw=max(3.0 - 1.2 * nth, 1.0),
                alpha=0.55 if nth == 0 and styles else 1.0, color=colour, label=label or figure)
        if per_seed.shape[1] > 1:
            ax.fill_between(per_seed.index, per_seed.min(axis=1), per_seed.max(axis=1),
                            color=colour, alpha=0.12, linewidth=0)
    ax.set_xlabel(_axis_label(axis))
    ax.set_ylabel(report._metric_label(figure))
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, frameon=False, handlelength=3.5)
    fig.tight_layout()
    return fig


def heatmap_figure(df, xaxis, yaxis, figure, title):
    """`figure` over two parameters, one panel per series (mean over seeds)."""
    series = _series(df)
    cols = min(3, len(series))
    rows = -(-len(series) // cols)
    fig = Figure(figsize=(3.2 * cols + 0.8, 2.8 * rows + 0.6))
    vmin, vmax = df[figure].min(), df[figure].max()
    image = None
    for i, (label, _keys, g) in enumerate(series):
        ax = fig.add_subplot(rows, cols, i + 1)
        g = g.assign(_x=numeric_axis(g, xaxis), _y=numeric_axis(g, yaxis))
        grid = g.groupby(["_y", "_x"])[figure].mean().unstack("_x")
        image = ax.imshow(grid.to_numpy(dtype=float), origin="lower", aspect="auto",
                          vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_xticks(range(len(grid.columns)), [f"{v:g}" for v in grid.columns], fontsize=7)
        ax.set_yticks(range(len(grid.index)), [f"{v:g}" for v in grid.index], fontsize=7)
        ax.set_xlabel(_axis_label(xaxis), fontsize=8)
        if i % cols == 0:
            ax.set_ylabel(_axis_label(yaxis), fontsize=8)
        ax.set_title(label or figure, fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=fig.axes, label=report._metric_label(figure), shrink=0.8)
    fig.suptitle(title, fontsize=9)
    return fig


def write_plots(df, swept, figures, out, name):
    """Write the line plots and heatmaps; the paths written."""
    ok = df[df["error"].isna()] if "error" in df else df
    numeric = [a for a in swept if a not in SERIES_AXES and a != "seed"
               and numeric_axis(ok, a) is not None]
    written = []
    for figure in figures:
        if ok[figure].isna().all():
            continue
        for axis in numeric:
            others = [a for a in numeric if a != axis]
            title = f"{name}: {figure} vs {_axis_label(axis)}" + \
                (f" (mean over {', '.join(map(_axis_label, others))})" if others else "")
            written.append(report._save(line_figure(ok, axis, figure, title),
                                        out / f"{figure}-vs-{_axis_label(axis)}.png"))
        for xa, ya in itertools.combinations(numeric, 2):
            title = f"{name}: {figure}, mean over seeds"
            written.append(report._save(heatmap_figure(ok, xa, ya, figure, title),
                                        out / f"{figure}-{_axis_label(xa)}-x-"
                                              f"{_axis_label(ya)}.png"))
        if len(written) > MAX_PLOTS:
            break
    return written


def show(path, figures=None, plots=None, fmt="table", out=print):
    path = pathlib.Path(path)
    df, manifest = load(path)
    spec = SweepStore(path).spec()
    total = manifest["cells"]
    if df.empty:
        out(f"{path}: 0/{total} cells finished")
        return 0
    failed = df.loc[df["error"].notna(), "cell"].nunique() if "error" in df else 0
    out(f"{path}: {df['cell'].nunique()}/{total} cells finished, {failed} failed, "
        f"{spec.repeats} repeat(s) each; pd.read_parquet({str(path)!r})")
    unknown = [f for f in figures or () if f not in df.columns]
    if unknown:
        raise ValueError(f"figure {unknown[0]!r} is not a column of this sweep; numeric columns: "
                         + ", ".join(c for c in df.columns
                                     if pd.api.types.is_numeric_dtype(df[c])))
    figures = list(figures or [f for f in HEADLINE if f in df.columns])
    swept = [a for a in spec.swept() if a in df.columns]
    out(results.format_table(summary(df, swept, figures), fmt).rstrip("\n"))
    if failed:
        errs = df[df["error"].notna()].drop_duplicates("cell")
        out(f"\nfailed cells ({failed}):")
        for _, r in errs.head(10).iterrows():
            coords = ", ".join(f"{a}={r[a]}" for a in swept if a in r)
            out(f"  {r['cell']} {coords}: {r['error']}")
    target = pathlib.Path(plots) if plots else path / "_plots"
    name = f"{', '.join(spec.workloads)} ({', '.join(spec.mem)})"
    written = write_plots(df, swept, figures, target, name)
    if written:
        out(f"\nplots ({len(written)}): {target}/")
    elif fmt == "table":
        out("\nno numeric swept parameter: nothing to plot a figure against")
    return 0
