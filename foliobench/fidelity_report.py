"""`foliobench fidelity` output: the terminal table, fidelity.md/.html/.json and a picture of
the live and twin buddyinfo after each experiment (fidelity.png), written atomically."""
import html
import io
import json

from . import fidelity_trace
from .fidelity_metrics import COUNTERS, POINTS, POINTS_BAR, RATIO_BAR

HEADER = ("experiment", "figure", "live median (min..max)", "twin", "distance", "in spread",
          "bar")


def _num(v, figure):
    if v is None:
        return "n/a"
    if figure == "unusable_after":
        return f"{v:.3f}"
    if figure in POINTS:
        return f"{v:.1f}%"
    return f"{v:,.0f}"


def _dist(d, figure):
    if d is None:
        return "n/a"
    if figure in POINTS:
        return f"{d:+.1f} pt"
    return f"x{d:.2f}"


def _yes(v):
    return "n/a" if v is None else ("yes" if v else "NO")


def live_runs_text(comparison):
    """How many live runs each experiment has ("4", or "3-4" when they differ)."""
    counts = sorted({len(e["live_runs"]) for e in comparison["experiments"]})
    if not counts:
        return "0"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def rows(comparison):
    """Table rows (tuples of text) for every experiment, strategy and figure."""
    out = []
    for exp in comparison["experiments"]:
        for strat in exp["strategies"]:
            for f in strat["figures"]:
                fig = f["figure"]
                live = f["live"]
                live_text = ("n/a" if live is None else
                             f"{_num(live[0], fig)} ({_num(live[1], fig)}..{_num(live[2], fig)})")
                out.append((f"{exp['name']} [{strat['strategy']}]", fig, live_text,
                            _num(f["twin"], fig), _dist(f["distance"], fig),
                            _yes(f["within_spread"]), _yes(f["meets_bar"])))
    return out


def summary(comparison):
    """{experiment: {"in_spread": (k, n), "bar": (k, n)}} over comparable figures of the first
    strategy."""
    out = {}
    for exp in comparison["experiments"]:
        figs = exp["strategies"][0]["figures"]
        spread = [f["within_spread"] for f in figs if f["within_spread"] is not None]
        bar = [f["meets_bar"] for f in figs if f["meets_bar"] is not None]
        out[exp["name"]] = {"in_spread": (sum(spread), len(spread)), "bar": (sum(bar), len(bar))}
    return out


def table(comparison):
    body = rows(comparison)
    widths = [max(len(r[i]) for r in body + [HEADER]) for i in range(len(HEADER))]
    line = "  ".join
    text = [f"fidelity: kernel {comparison['kernel']}, twin profile {comparison['profile']}, "
            f"{live_runs_text(comparison)} live runs per experiment",
            line(h.ljust(w) for h, w in zip(HEADER, widths))]
    prev = None
    for r in body:
        shown = r if r[0] != prev else ("",) + r[1:]
        prev = r[0]
        text.append(line(c.ljust(w) for c, w in zip(shown, widths)).rstrip())
    text.append(f"in spread: the twin lies within the live min..max. bar: within "
                f"{POINTS_BAR:g} points (shares, unusable index x100) or a factor of "
                f"{RATIO_BAR:g} ({', '.join(COUNTERS)}; floor 1).")
    for name, s in summary(comparison).items():
        text.append(f"  {name}: {s['in_spread'][0]}/{s['in_spread'][1]} figures in the live "
                    f"spread, {s['bar'][0]}/{s['bar'][1]} within the bar")
    for exp, strategy, twin in traced_runs(comparison):
        text.append("")
        text.extend(fidelity_trace.format_experiment(exp, strategy, twin["snapshot"],
                                                     twin["trace"]))
    if comparison.get("traced") and not any(True for _ in traced_runs(comparison)):
        text.append("tracepoints: no run of this corpus carries a trace (record some with "
                    "--record DIR --append --trace)")
    return "\n".join(text)


def traced_runs(comparison):
    """(experiment, strategy, twin run) of every twin run compared tracepoint by
    tracepoint."""
    for exp in comparison["experiments"]:
        for strat in exp["strategies"]:
            for twin in strat["twin_runs"]:
                if "trace" in twin:
                    yield exp["name"], strat["strategy"], twin


def markdown(comparison):
    head = "| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER) + "\n"
    body = "".join("| " + " | ".join(r) + " |\n" for r in rows(comparison))
    lines = [f"# Fidelity: kernel {comparison['kernel']} vs twin ({comparison['profile']})", "",
             f"Corpus recorded {comparison.get('recorded_at')}; "
             f"{live_runs_text(comparison)} live runs per experiment.", "", head + body]
    for name, s in summary(comparison).items():
        lines.append(f"- {name}: {s['in_spread'][0]}/{s['in_spread'][1]} in spread, "
                     f"{s['bar'][0]}/{s['bar'][1]} within the bar")
    traced = list(traced_runs(comparison))
    if traced:
        lines += ["", "## Tracepoints, live kernel vs twin", "",
                  "| run | event or figure | live | twin |", "|---|---|---|---|"]
        for exp, strategy, twin in traced:
            for row in fidelity_trace.markdown_rows(exp, strategy, twin["snapshot"],
                                                    twin["trace"]):
                lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    return "\n".join(lines) + "\n"


def html_page(comparison, picture=None):
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>\n"
                    for r in rows(comparison))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    img = f'<p><img src="{picture}" alt="buddyinfo after, live vs twin"></p>' if picture else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>foliobench fidelity"
            f"</title></head><body><h1>Fidelity: kernel {html.escape(str(comparison['kernel']))}"
            f" vs twin ({html.escape(comparison['profile'])})</h1>\n<table border='1'>"
            f"<tr>{head}</tr>\n{cells}</table>{img}</body></html>\n")


def to_json(comparison):
    return json.dumps(comparison, indent=1, default=float) + "\n"


def picture(comparison):
    """PNG bytes: per experiment, free pages per order in Normal after the action, live (first
    run) and twin (first strategy, first run)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    exps = comparison["experiments"]
    fig, axes = plt.subplots(1, len(exps), figsize=(4.2 * len(exps), 3.4), squeeze=False)
    for ax, exp in zip(axes[0], exps):
        live = exp["live_runs"][0]["buddyinfo_after"].get("Normal", [])
        twin = exp["strategies"][0]["twin_runs"][0]["buddyinfo_after"].get("Normal", [])
        orders = range(max(len(live), len(twin)))
        ax.bar([o - 0.2 for o in orders[:len(live)]], [n << o for o, n in enumerate(live)],
               width=0.4, label="live")
        ax.bar([o + 0.2 for o in orders[:len(twin)]], [n << o for o, n in enumerate(twin)],
               width=0.4, label=f"twin [{exp['strategies'][0]['strategy']}]")
        ax.set_title(f"{exp['name']}: Normal after")
        ax.set_xlabel("order")
        ax.set_ylabel("free pages")
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
