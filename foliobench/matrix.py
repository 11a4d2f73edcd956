"""The large-folio feature matrix: every subsystem (rows) x folio size (columns), one matrix per
backend (each simulator kernel profile, or the live kernel), each cell a verdict with its
evidence.

    doc = run_sim(["linux-6.1", "linux-6.18"], orders=[0, 2, 4, 9])
    print(render_markdown(doc))

The probes (workloads.matrix_probes) drive any Backend; the verdicts come from
foliobench.verdicts.matrix_verdict (thresholds defined there, once); this module runs the probes,
adds each cell's cost per byte against the same probe on 4K pages, and renders Markdown, HTML
(self-contained, colour-coded, evidence on hover) and JSON, saved under results/matrix/.
"""
import datetime as _dt
import html
import json
import math
import time

import simcore
from simcore import profiles as simprofiles
from simcore.units import parse_size
from workloads.backend import SimBackend, Unsupported
from workloads.base import git_commit
from workloads.matrix_probes import PROBES

from .verdicts import (
    BARELY,
    COST_RATIO_LIMIT,
    NOT_AT_ALL,
    PERFECTLY,
    SUB_OPTIMALLY,
    UNTESTED,
    VERDICT_RULES,
    matrix_verdict,
)

FORMAT = "foliobench-matrix/1"
SIZES = ("4K", "16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M")
SIZE_ORDERS = {s: o for s, o in zip(SIZES, (0, 2, 3, 4, 5, 6, 7, 8, 9))}
ORDER_SIZES = {o: s for s, o in SIZE_ORDERS.items()}
LIVE_ARENA = "512M"
FULL_NAME = "full"      # results/matrix/full.*: the last full default simulator matrix
SYMBOLS = {PERFECTLY: "✓", SUB_OPTIMALLY: "~", BARELY: "!", NOT_AT_ALL: "✗", UNTESTED: "?"}
COLOURS = {PERFECTLY: "#1a9850", SUB_OPTIMALLY: "#fee08b", BARELY: "#fc8d59",
           NOT_AT_ALL: "#d73027", UNTESTED: "#d9d9d9"}


def parse_sizes(text):
    """"4K,64K,2M" -> sorted orders; ValueError naming a size that is not a matrix column."""
    orders = set()
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nbytes = parse_size(item, "folio size")
        except ValueError:
            nbytes = None
        order = {4096 << o: o for o in SIZE_ORDERS.values()}.get(nbytes)
        if order is None:
            raise ValueError(f"folio size {item!r} is not a matrix column; allowed: "
                             f"{', '.join(SIZES)}")
        orders.add(order)
    if not orders:
        raise ValueError(f"--sizes {text!r} names no size; allowed: {', '.join(SIZES)}")
    return sorted(orders)


def _cell(probe, order, run, base_cost):
    """Run one probe at one order: {"verdict", "reason", "evidence"}."""
    reason = probe.not_applicable(order) if probe.not_applicable else None
    if reason:
        return {"verdict": UNTESTED, "reason": reason, "evidence": {}}
    try:
        evidence = run(probe, order)
    except Unsupported as exc:
        return {"verdict": UNTESTED, "reason": f"this backend cannot: {exc}", "evidence": {}}
    except OSError as exc:          # the live kernel refused a step: evidence of nothing
        return {"verdict": UNTESTED, "reason": f"the kernel refused a step: {exc}",
                "evidence": {}}
    per_byte = evidence["cost_ns"] / evidence["bytes"] if evidence["bytes"] else None
    evidence["cost_ns_per_byte"] = per_byte
    ratio = per_byte / base_cost if per_byte is not None and base_cost else None
    evidence["cost_ratio_vs_4k"] = ratio
    verdict, why = matrix_verdict(evidence["success"], evidence["kept_order"], ratio)
    return {"verdict": verdict, "reason": why, "evidence": evidence}


def run_matrix(make_backend, orders, label, *, seed=0, meta=None, probes=PROBES, progress=None,
               reference=True):
    """One matrix: every probe x every order, each on a backend from make_backend(probe)
    (closed afterwards when it has close()). make_backend may raise Unsupported: the whole row
    is then untested with that reason. Order 0 runs as the cost reference, unless `reference`
    is False and 4K is not among the orders (the cost ratios are then unknown and the verdicts
    rest on success and kept order: what a guest under TCG, where a 4K cell costs minutes,
    does). progress: a file that gets one line per row with its wall and CPU time (the live
    matrix's stderr: where a guest's time goes)."""
    rows = []
    for probe in probes:
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        def run(probe, order):
            backend = make_backend(probe)
            try:
                return probe.run(backend, order, seed)
            finally:
                close = getattr(backend, "close", None)
                if close:
                    close()
        cells = {}
        base = _cell(probe, 0, run, None) if reference or 0 in orders else {"evidence": {}}
        base_ev = base["evidence"]
        base_cost = base_ev.get("cost_ns_per_byte") if base_ev else None
        for order in orders:
            cells[ORDER_SIZES[order]] = base if order == 0 else _cell(probe, order, run,
                                                                        base_cost)
        rows.append({"probe": probe.name, "label": probe.label, "doc": probe.doc,
                     "cells": cells})
        if progress is not None:
            print(f"matrix: {probe.name} ({', '.join(ORDER_SIZES[o] for o in orders)}) "
                  f"{time.perf_counter() - t_wall:.1f} s wall, "
                  f"{time.process_time() - t_cpu:.1f} s CPU", file=progress, flush=True)
    doc = {"label": label, "sizes": [ORDER_SIZES[o] for o in orders], "rows": rows}
    doc.update(meta or {})
    return doc


def sim_matrix(profile, orders, seed=0, probes=PROBES):
    """The matrix of one simulator kernel profile."""
    prof = simprofiles.get_profile(profile)

    def make(probe):
        return SimBackend(seed=seed, profile=prof.name, **probe.sim)

    meta = {"backend": "sim", "profile": prof.name, "kernel": prof.version,
            "description": prof.description, "policies": prof.policies(),
            "sources": {f: prof.source(f) for f in prof.policies()}}
    return run_matrix(make, orders, prof.name, seed=seed, meta=meta, probes=probes)


def run_sim(profiles=None, orders=None, seed=0, probes=PROBES):
    """The document: metadata and one matrix per simulator profile (default: all)."""
    names = list(profiles or simprofiles.profiles())
    for name in names:
        simprofiles.get_profile(name)
    orders = sorted(SIZE_ORDERS.values()) if orders is None else orders
    t0 = time.perf_counter()
    matrices = [sim_matrix(name, orders, seed, probes) for name in names]
    return document(matrices, backend="sim", seed=seed,
                    complete=full_selection(names, orders, probes),
                    wall_s=time.perf_counter() - t0)


def full_selection(profiles, orders, probes):
    """True for every simulator profile x every size x every subsystem: the matrix the history
    site links (save() keeps the last one as full.*)."""
    return (set(profiles) == set(simprofiles.profiles())
            and sorted(orders) == sorted(SIZE_ORDERS.values())
            and [p.name for p in probes] == [p.name for p in PROBES])


def document(matrices, **meta):
    doc = {"format": FORMAT, "created": _dt.datetime.now(_dt.timezone.utc)
           .isoformat(timespec="seconds"), "foliobench_version": simcore.__version__,
           "git_commit": git_commit(), "verdicts": dict(VERDICT_RULES),
           "cost_ratio_limit": COST_RATIO_LIMIT, "matrices": matrices}
    doc.update(meta)
    return doc


# --- rendering ----------------------------------------------------------------------------

def _pct(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0%}"


def evidence_text(cell):
    """One line a reader can check the verdict against."""
    ev = cell.get("evidence") or {}
    if not ev:
        return f"{cell['verdict']}: {cell['reason']}"
    parts = [f"{cell['verdict']}: {cell['reason']}",
             f"{ev['succeeded']}/{ev['attempted']} {ev['unit']}",
             f"sample {ev['sample']} folios"]
    if ev.get("kept_order") is not None:
        parts.append(f"kept order {_pct(ev['kept_order'])}")
    if ev.get("split_to"):
        parts.append("orders after: " + ", ".join(f"{o}: {n}" for o, n in
                                                  sorted(ev["split_to"].items(),
                                                         key=lambda kv: -int(kv[0]))))
    if ev.get("cost_ns_per_byte") is not None:
        ratio = ev.get("cost_ratio_vs_4k")
        parts.append(f"cost {ev['cost_ns_per_byte']:.3f} ns/byte"
                     + (f" ({ratio:.2f}x 4K)" if ratio is not None else ""))
    counters = ev.get("counters") or {}
    shown = {k: v for k, v in counters.items() if not k.startswith("time_ns/")
             and not k.startswith("pgalloc_") and k != "pgfree" and not k.startswith("nr_")}
    if shown:
        parts.append("counters: " + ", ".join(f"{k} {v:+g}" for k, v in sorted(shown.items())))
    return "; ".join(parts)


def render_markdown(doc):
    """Side-by-side history (one symbol per size) then one table per matrix, with a legend."""
    out = []
    matrices = doc["matrices"]
    legend = ", ".join(f"{SYMBOLS[v]} {v}" for v in SYMBOLS)
    if len(matrices) > 1:
        sizes = matrices[0]["sizes"]
        out.append(f"Side by side (one symbol per size: {' '.join(sizes)}; {legend}):\n")
        out.append("| subsystem | " + " | ".join(m["label"] for m in matrices) + " |")
        out.append("|---|" + "---|" * len(matrices))
        for i, row in enumerate(matrices[0]["rows"]):
            cells = ["`" + "".join(SYMBOLS[m["rows"][i]["cells"][s]["verdict"]] for s in sizes)
                     + "`" for m in matrices]
            out.append(f"| {row['label']} | " + " | ".join(cells) + " |")
        out.append("")
    for m in matrices:
        title = m["label"] + (f" (kernel {m['kernel']})" if m.get("kernel") else "")
        out.append(f"### {title}\n")
        out.append("| subsystem | " + " | ".join(m["sizes"]) + " |")
        out.append("|---|" + "---|" * len(m["sizes"]))
        notes = {}
        for row in m["rows"]:
            cells = []
            for s in m["sizes"]:
                cell = row["cells"][s]
                text = cell["verdict"]
                if cell["verdict"] == UNTESTED:
                    key = notes.setdefault(cell["reason"], len(notes) + 1)
                    text += f" [{key}]"
                cells.append(text)
            out.append(f"| {row['label']} | " + " | ".join(cells) + " |")
        for reason, key in notes.items():
            out.append(f"\n[{key}] {reason}")
        out.append("")
    out.append("Verdicts: " + "; ".join(f"**{v}**: {rule}" for v, rule in
                                        doc["verdicts"].items()) + ".")
    return "\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 2em}th,td{border:1px solid #999;padding:4px 8px}
th{background:#eee}td.v{text-align:center;cursor:help;white-space:nowrap}
""" + "".join(f"td.{v.replace(' ', '-')}{{background:{c}}}" for v, c in COLOURS.items())


def render_html(doc):
    """A self-contained page: one colour-coded table per matrix, the evidence in each cell's
    title (hover), the verdict rules and the profile's policies below."""
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             "<title>foliobench: large-folio feature matrix</title>",
             f"<style>{_CSS}</style></head><body>",
             "<h1>Large-folio feature matrix</h1>",
             f"<p>{e(doc.get('backend', ''))} backend, created {e(doc['created'])}, "
             f"commit {e(str(doc.get('git_commit')))}. Hover a cell for its evidence.</p>",
             "<ul>" + "".join(f"<li><b>{e(v)}</b>: {e(rule)}</li>"
                              for v, rule in doc["verdicts"].items()) + "</ul>"]
    for m in doc["matrices"]:
        title = m["label"] + (f" (kernel {m['kernel']})" if m.get("kernel") else "")
        parts.append(f"<h2>{e(title)}</h2>")
        if m.get("description"):
            parts.append(f"<p>{e(m['description'])}</p>")
        parts.append("<table><tr><th>subsystem</th>" + "".join(f"<th>{e(s)}</th>"
                                                               for s in m["sizes"]) + "</tr>")
        for row in m["rows"]:
            parts.append(f"<tr><th title='{e(row['doc'], quote=True)}'>{e(row['label'])}</th>")
            for s in m["sizes"]:
                cell = row["cells"][s]
                cls = cell["verdict"].replace(" ", "-")
                parts.append(f"<td class='v {cls}' title='{e(evidence_text(cell), quote=True)}'>"
                             f"{e(cell['verdict'])}</td>")
            parts.append("</tr>")
        parts.append("</table>")
        if m.get("policies"):
            parts.append("<details><summary>policies</summary><ul>" + "".join(
                f"<li><code>{e(k)}</code> = {e(v)}"
                + (f": {e(m['sources'].get(k, ''))}" if m.get("sources", {}).get(k) else "")
                + "</li>" for k, v in m["policies"].items()) + "</ul></details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_json(doc):
    from foliobench.results import _dumps
    return _dumps(doc)


RENDERERS = {"md": render_markdown, "html": render_html, "json": render_json}


def save(doc, root, label):
    """results/matrix/<UTC timestamp>-<label>/matrix.{md,html,json} and
    results/matrix/latest.{md,html,json}, plus full.{md,html,json} when the run was the full
    default simulator matrix (the one the history site links), each written atomically.
    Returns the directory."""
    from foliobench import results
    base = root / "matrix"
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir, n = base / f"{stamp}-{label}", 1
    while run_dir.exists():
        n += 1
        run_dir = base / f"{stamp}-{label}-{n}"
    texts = {fmt: render(doc) for fmt, render in RENDERERS.items()}
    json.loads(texts["json"])
    for fmt, text in texts.items():
        results.write_text(run_dir, f"matrix.{fmt}", text)
    for fmt, text in texts.items():
        results.write_text(base, f"latest.{fmt}", text)
        if doc.get("complete"):
            results.write_text(base, f"{FULL_NAME}.{fmt}", text)
    return run_dir


# --- command line ---------------------------------------------------------------------------

def _swap_kind(text):
    from livekernel.swap import check_kind
    return check_kind(text)


def _backend(text):
    if text in ("sim", "live") or (text.startswith("guest:") and len(text) > len("guest:")):
        return text
    raise ValueError(f"--backend {text!r}: allowed sim, live, guest:RELEASE")


def add_parser(sub):
    """`foliobench matrix`: the subcommand's arguments."""
    p = sub.add_parser("matrix", help="the large-folio feature matrix: every subsystem x folio "
                                      "size, per simulator kernel profile or the live kernel")
    p.add_argument("--backend", type=_backend, default="sim",
                   help="sim (default), live (the running kernel, root) or guest:RELEASE (a "
                        "disposable guest kernel, e.g. guest:6.1; see foliobench guest)")
    p.add_argument("--live", dest="backend", action="store_const", const="live",
                   help="same as --backend live (as for run)")
    p.add_argument("--profile", action="append", metavar="NAME",
                   help="simulator kernel profile (repeatable; default: all of "
                        + ", ".join(simprofiles.profiles()) + ")")
    p.add_argument("--sizes", default=",".join(SIZES), help="folio sizes, e.g. 4K,64K,2M")
    p.add_argument("--probe", action="append", metavar="NAME",
                   help="only these subsystems (repeatable; default all: "
                        + ", ".join(p.name for p in PROBES) + ")")
    p.add_argument("--format", choices=tuple(RENDERERS), default="md",
                   help="what to print (md, html, json); all three are saved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mem", default=None,
                   help=f"live: the arena size (default {LIVE_ARENA}; a cell uses at most "
                        f"256 MiB of it, but direct compaction fills it; in a disposable guest "
                        f"the default is 90%% of MemAvailable, so it fills the guest)")
    p.add_argument("--allow-offline", action="store_true",
                   help="live: the hot-unplug probe may offline removable memory blocks")
    p.add_argument("--allow-poison", action="store_true",
                   help="live: the memory-failure probe may soft-offline pages (MADV_SOFT_OFFLINE"
                        " takes them out of service until reboot)")
    p.add_argument("--allow-zswap", action="store_true",
                   help="live: the zswap probe may switch zswap on (once it has been on, the "
                        "kernel swaps in only order-0 folios until reboot)")
    p.add_argument("--swap", type=_swap_kind, default="file",
                   help="live: the temporary swap area: a swap file in --live-dir (default) or a "
                        "zram device of the run's own (synchronous, like the simulator's), or "
                        "in a guest /dev/DEVICE, a whole block device (--swap-disk)")
    p.add_argument("--no-cost-reference", action="store_true",
                   help="live: skip the 4K run each row makes as the cost reference when 4K is "
                        "not among --sizes (cost ratios n/a; verdicts on success and kept order "
                        "only); a guest under TCG spends minutes on a 4K cell")
    p.add_argument("--live-dir", default="/var/tmp",
                   help="live: where the temporary swap file and page-cache files go (a disk "
                        "filesystem)")
    p.add_argument("-o", "--out", help="results root (default: the repository's results/)")
    p.add_argument("--no-save", action="store_true", help="print only, write nothing")
    p.set_defaults(func=main)
    return p


def _live(args, orders, probes=PROBES):
    """The live kernel's matrix through livekernel's session and journal (thin: the session
    checks root and the memory cap and restores every setting afterwards)."""
    try:
        from livekernel.session import LiveSession
    except ImportError:
        raise ValueError("live backend not available") from None
    import platform
    import sys
    release = platform.release()
    from livekernel.backend import SYSCTLS
    from livekernel.session import in_guest
    # in a disposable guest the arena defaults to the session's lifted cap (the whole guest)
    mem = args.mem or (None if in_guest() else LIVE_ARENA)
    with LiveSession(mem=mem, allow_offline=args.allow_offline,
                     allow_poison=args.allow_poison, allow_zswap=args.allow_zswap,
                     workdir=args.live_dir,
                     swap_kind=args.swap) as live:
        def make(probe):
            # the probe's sysctls (extfrag_threshold, compaction_proactiveness) go through
            # the journal for that probe's backend only
            return live.factory(seed=args.seed, **{k: v for k, v in probe.sim.items()
                                                   if k in SYSCTLS})
        t0 = time.perf_counter()
        m = run_matrix(make, orders, f"live {release}", seed=args.seed, probes=probes,
                       meta={"backend": "live", "kernel": release, "swap": args.swap,
                             "cost_reference": not args.no_cost_reference},
                       progress=sys.stderr, reference=not args.no_cost_reference)
    return document([m], backend="live", seed=args.seed, wall_s=time.perf_counter() - t0)


def main(args):
    import pathlib
    import sys
    orders = parse_sizes(args.sizes)
    from workloads.matrix_probes import get_probe
    probes = [get_probe(n) for n in dict.fromkeys(args.probe)] if args.probe else PROBES
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed} must be a non-negative integer")
    if args.out and not args.no_save:
        from foliobench import results
        results.check_output_dir(pathlib.Path(args.out) / "matrix", "-o/--out")
    if args.backend.startswith("guest:"):
        if args.profile:
            raise ValueError("--profile selects simulator profiles; a guest runs its kernel")
        from foliobench.guest import guest_matrix
        doc = guest_matrix(args.backend.split(":", 1)[1], args, probes)
    elif args.backend == "live":
        if args.profile:
            raise ValueError("--profile selects simulator profiles; the live backend is the "
                             "running kernel")
        doc = _live(args, orders, probes)
    elif (args.allow_offline or args.allow_poison or args.allow_zswap or args.swap != "file"
          or args.no_cost_reference):
        raise ValueError("--allow-offline, --allow-poison, --allow-zswap, --swap and "
                         "--no-cost-reference apply to --backend live")
    else:
        for name in args.profile or ():
            simprofiles.get_profile(name)
        doc = run_sim(args.profile, orders, args.seed, probes)
    print(RENDERERS[args.format](doc), end="")
    if not args.no_save:
        from foliobench.cli import REPO_RESULTS
        root = pathlib.Path(args.out) if args.out else REPO_RESULTS
        out = save(doc, root, doc["backend"] if doc["backend"] != "guest" else
                   "guest-" + doc["matrices"][0]["kernel"])
        print(f"saved: {out} (and {root / 'matrix'}/latest.*)", file=sys.stderr)
    return 0
