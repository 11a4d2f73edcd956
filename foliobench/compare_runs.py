"""Kernel-to-kernel (or build-to-build) comparison of saved runs, as mmtests' compare-kernels.

    foliobench compare-runs results/runs/A results/runs/B [...] [--min-effect 5] [--alpha 0.05]
                            [--format table|md|html|json] [-o DIR] [--fail-on-regression]

The first run is the baseline. For every workload and strategy that two runs share, and every
numeric figure of it, the seeds of a run (--repeat N) are samples: each run gets the mean and
the standard deviation, and each later run the change against the baseline in percent and
Welch's t-test (unequal variances). A change counts when it is significant (p < alpha) AND at
least --min-effect percent: significance alone flags the tiny differences of a deterministic
model, effect alone the noise of a live kernel. Counted changes are marked improvement or
regression by the figure's direction (DIRECTIONS; a figure without one is only "changed").
Runs of the simulator, of the live kernel and of guests compare alike.
"""
import datetime as _dt
import html
import json
import math
import pathlib

import numpy as np
import pandas as pd

FORMAT = "foliobench-compare-runs/1"
KEY = ("workload", "strategy")
NOT_FIGURES = {"seed"}
HIGHER = +1
LOWER = -1
# which way is better, by figure name; the rest are reported as "changed" only
DIRECTIONS = {
    "highorder_success": HIGHER, "compaction_success_rate": HIGHER,
    "compact_scan_efficiency": HIGHER, "migration_gib_per_s": HIGHER,
    "migration_pages_per_s": HIGHER, "large_folio_preservation": HIGHER,
    "large_folios_migrated_whole": HIGHER, "highorder_granted": HIGHER,
    "unusable_9_after": LOWER, "fragindex_9_after": LOWER, "sim_wall_s": LOWER,
    "migration_time_s": LOWER, "pages_migrate_failed": LOWER, "large_folios_split": LOWER,
    "compact_fail": LOWER, "compact_stall": LOWER,
}
IMPROVED, REGRESSED, CHANGED, SAME, UNTESTABLE = ("improvement", "regression", "changed",
                                                   "no change", "too few samples")


# --- statistics ---------------------------------------------------------------------------------

def _betacf(a, b, x, eps=1e-15, max_iter=500):
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    return h


def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0 (got {a}, {b})")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1 (got {x})")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    # the continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t, df):
    """P(|T| >= |t|) for Student's t with df degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if math.isinf(t):
        return 0.0
    if math.isnan(t) or df <= 0:
        return math.nan
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def welch(a, b):
    """Welch's t-test of two samples: (t, degrees of freedom, two-sided p). p is nan with fewer
    than two samples on a side; identical constant samples give p = 1, different constant ones
    p = 0 (the difference is exact)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = b.mean() - a.mean()
    if va + vb == 0:
        return (0.0, math.inf, 1.0) if diff == 0 else (math.copysign(math.inf, diff),
                                                        math.inf, 0.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, df, t_two_sided_p(t, df)


# --- comparison ---------------------------------------------------------------------------------

def _figures(df):
    return [c for c in df.columns if c not in NOT_FIGURES and c not in KEY
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]


def verdict(figure, base, other, p, alpha, min_effect_pct):
    """The verdict of one figure in one run against the baseline."""
    if math.isnan(p):
        return UNTESTABLE
    change = _change_pct(base, other)
    big = (abs(change) >= min_effect_pct) if not math.isnan(change) else other != base
    if p >= alpha or not big:
        return SAME
    direction = DIRECTIONS.get(figure)
    if direction is None:
        return CHANGED
    return IMPROVED if (other - base) * direction > 0 else REGRESSED


def _change_pct(base, other):
    if base == 0:
        return 0.0 if other == 0 else math.copysign(math.inf, other)
    return (other - base) / abs(base) * 100.0


def compare(runs, names=None, alpha=0.05, min_effect_pct=5.0):
    """runs: [DataFrame] (the first is the baseline); names: a label per run. The comparison
    document: one row per (workload, strategy, figure) the baseline shares with a later run."""
    if len(runs) < 2:
        raise ValueError("compare-runs needs at least two runs (the first is the baseline)")
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha {alpha} must be in (0, 1)")
    if min_effect_pct < 0:
        raise ValueError(f"--min-effect {min_effect_pct} must be non-negative")
    names = list(names or [f"run{i}" for i in range(len(runs))])
    base_df = runs[0]
    rows = []
    for key, base_group in base_df.groupby(list(KEY), sort=True):
        for fig in _figures(base_df):
            base_vals = base_group[fig].dropna().to_numpy(float)
            if not len(base_vals):
                continue
            row = {"workload": key[0], "strategy": key[1], "figure": fig,
                   "direction": {HIGHER: "higher", LOWER: "lower"}.get(DIRECTIONS.get(fig),
                                                                      "-"),
                   "runs": [_stats(base_vals)]}
            for df in runs[1:]:
                mask = (df["workload"] == key[0]) & (df["strategy"] == key[1])
                vals = df.loc[mask, fig].dropna().to_numpy(float) if fig in df.columns else []
                if not len(vals):
                    row["runs"].append(None)
                    continue
                st = _stats(vals)
                t, dof, p = welch(base_vals, vals)
                st.update(change_pct=_change_pct(base_vals.mean(), vals.mean()), t=t, df=dof,
                          p=p, verdict=verdict(fig, base_vals.mean(), vals.mean(), p, alpha,
                                               min_effect_pct))
                row["runs"].append(st)
            if any(r is not None for r in row["runs"][1:]):
                rows.append(row)
    counts = {v: sum(1 for r in rows for s in r["runs"][1:] if s and s["verdict"] == v)
              for v in (IMPROVED, REGRESSED, CHANGED, SAME, UNTESTABLE)}
    return {"format": FORMAT, "created": _dt.datetime.now(_dt.timezone.utc)
            .isoformat(timespec="seconds"), "runs": names, "alpha": alpha,
            "min_effect_pct": min_effect_pct, "rows": rows, "counts": counts}


def _stats(vals):
    return {"n": int(len(vals)), "mean": float(np.mean(vals)),
            "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan}


def regressions(doc):
    return [(r, s) for r in doc["rows"] for s in r["runs"][1:] if s and s["verdict"] == REGRESSED]


# --- rendering ----------------------------------------------------------------------------------

MARKS = {IMPROVED: "+", REGRESSED: "-", CHANGED: "*", SAME: "", UNTESTABLE: "?"}


def _num(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def _cell(stat, base=False):
    if stat is None:
        return "(absent)"
    text = f"{_num(stat['mean'])} ± {_num(stat['std'])}"
    if base:
        return text
    mark = MARKS[stat["verdict"]]
    return f"{text} ({_num(stat['change_pct'])}%, p={_num(stat['p'])}){' ' + mark if mark else ''}"


def table_rows(doc):
    out = []
    for r in doc["rows"]:
        line = [r["workload"], r["strategy"], r["figure"], r["direction"],
                _cell(r["runs"][0], base=True)]
        line += [_cell(s) for s in r["runs"][1:]]
        out.append(line)
    return out


def _header(doc):
    return ["workload", "strategy", "figure", "better"] + \
        [f"{n} (baseline)" if i == 0 else n for i, n in enumerate(doc["runs"])]


def _summary(doc):
    c = doc["counts"]
    return (f"{c[IMPROVED]} improvements (+), {c[REGRESSED]} regressions (-), {c[CHANGED]} "
            f"other changes (*), {c[SAME]} unchanged, {c[UNTESTABLE]} with too few samples; a "
            f"change is p < {doc['alpha']} (Welch's t-test) and at least "
            f"{doc['min_effect_pct']:g}% (mean ± standard deviation over seeds)")


def render_table(doc, only_changes=False):
    rows = [r for r, keep in zip(table_rows(doc), _changed_mask(doc), strict=True)
            if keep or not only_changes]
    df = pd.DataFrame(rows, columns=_header(doc))
    body = df.to_string(index=False) if rows else "(no shared workload and figure)"
    return body + "\n\n" + _summary(doc) + "\n"


def _changed_mask(doc):
    return [any(s and s["verdict"] not in (SAME, UNTESTABLE) for s in r["runs"][1:])
            for r in doc["rows"]]


def render_markdown(doc):
    head = _header(doc)
    lines = ["# foliobench compare-runs", "", _summary(doc), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(doc)]
    return "\n".join(lines) + "\n"


def render_html(doc):
    colours = {IMPROVED: "#c7e9c0", REGRESSED: "#fcbba1", CHANGED: "#fee08b"}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _header(doc))
    body = []
    for r, cells in zip(doc["rows"], table_rows(doc), strict=True):
        tds = [f"<td>{html.escape(c)}</td>" for c in cells[:5]]
        for s, c in zip(r["runs"][1:], cells[5:], strict=True):
            colour = colours.get(s["verdict"]) if s else None
            style = f' style="background:{colour}"' if colour else ""
            tds.append(f"<td{style}>{html.escape(c)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return ("<!doctype html><meta charset=utf-8><title>foliobench compare-runs</title>"
            "<style>table{border-collapse:collapse;font:13px sans-serif}"
            "td,th{border:1px solid #ccc;padding:2px 6px}</style>"
            f"<h1>foliobench compare-runs</h1><p>{html.escape(_summary(doc))}</p>"
            f"<table><tr>{head}</tr>{''.join(body)}</table>\n")


def render_json(doc):
    from foliobench.results import _dumps
    return _dumps(doc)


RENDERERS = {"table": render_table, "md": render_markdown, "html": render_html,
             "json": render_json}


def plot(doc, path):
    """Change in percent of every counted or directed figure, one bar per later run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from foliobench import results
    rows = [r for r in doc["rows"] if r["direction"] != "-"] or doc["rows"]
    labels = [f"{r['workload']}/{r['strategy']}: {r['figure']}" for r in rows]
    n_runs = len(doc["runs"]) - 1
    fig, ax = plt.subplots(figsize=(9, 0.28 * max(len(rows), 4) * max(n_runs, 1) + 1.5))
    height = 0.8 / max(n_runs, 1)
    colours = {IMPROVED: "#1a9850", REGRESSED: "#d73027", CHANGED: "#fdae61"}
    for j in range(n_runs):
        ys, xs, cs = [], [], []
        for i, r in enumerate(rows):
            s = r["runs"][j + 1]
            if not s or not math.isfinite(s["change_pct"]):
                continue
            ys.append(i + j * height)
            xs.append(s["change_pct"])
            cs.append(colours.get(s["verdict"], "#bdbdbd"))
        ax.barh(ys, xs, height=height, color=cs, label=doc["runs"][j + 1])
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
    ax.set_yticklabels(labels, fontsize=7)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"change vs {doc['runs'][0]} (%); green improvement, red regression, grey "
                  f"not significant or under {doc['min_effect_pct']:g}%")
    ax.invert_yaxis()
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    path = pathlib.Path(path)
    return results.write_bytes(path.parent, path.name, buf.getvalue())


def save(doc, root):
    from foliobench import results
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = pathlib.Path(root) / "compare"
    out, n = base / stamp, 1
    while out.exists():
        n += 1
        out = base / f"{stamp}-{n}"
    texts = {"md": render_markdown(doc), "html": render_html(doc), "json": render_json(doc)}
    json.loads(texts["json"])
    for fmt, text in texts.items():
        results.write_text(out, f"compare.{fmt}", text)
    plot(doc, out / "compare.png")
    return out


# --- command line -------------------------------------------------------------------------------

def add_parser(sub):
    p = sub.add_parser("compare-runs", help="compare saved runs (kernels, builds, backends): "
                                            "mean, std, change, Welch's t-test")
    p.add_argument("runs", nargs="+", metavar="DIR", help="run directories (the first is the "
                                                          "baseline)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--min-effect", type=float, default=5.0,
                   help="smallest change in percent that counts (default 5)")
    p.add_argument("--format", choices=tuple(RENDERERS), default="table")
    p.add_argument("--changes-only", action="store_true", help="table: only rows that changed")
    p.add_argument("-o", "--out", help="results root (default: the repository's results/)")
    p.add_argument("--no-save", action="store_true", help="print only, write nothing")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when any figure regressed")
    p.set_defaults(func=main)
    return p


def _name(path, taken):
    name = pathlib.Path(path).resolve().name
    if name in ("results.json", "results.csv"):
        name = pathlib.Path(path).resolve().parent.name
    out, n = name, 1
    while out in taken:
        n += 1
        out = f"{name}#{n}"
    return out


def main(args):
    import sys

    from foliobench import results
    from foliobench.cli import REPO_RESULTS
    if len(args.runs) < 2:
        raise ValueError("compare-runs needs at least two runs (the first is the baseline)")
    frames, names = [], []
    for path in args.runs:
        df, _ = results.load_run(path)
        frames.append(df)
        names.append(_name(path, names))
    if args.out and not args.no_save:
        results.check_output_dir(pathlib.Path(args.out) / "compare", "-o/--out")
    doc = compare(frames, names, alpha=args.alpha, min_effect_pct=args.min_effect)
    if not doc["rows"]:
        raise ValueError("the runs share no workload and strategy with the baseline "
                         f"({args.runs[0]})")
    text = render_table(doc, args.changes_only) if args.format == "table" else \
        RENDERERS[args.format](doc)
    print(text, end="")
    if not args.no_save:
        out = save(doc, pathlib.Path(args.out) if args.out else REPO_RESULTS)
        print(f"saved: {out}", file=sys.stderr)
    bad = regressions(doc)
    if args.fail_on_regression and bad:
        print(f"foliobench: {len(bad)} regressions (e.g. {bad[0][0]['workload']} "
              f"{bad[0][0]['figure']} {_num(bad[0][1]['change_pct'])}%)", file=sys.stderr)
        return 1
    return 0
