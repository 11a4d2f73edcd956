"""A recorded trace's compaction next to its twin's, event by event.

`foliobench replay TRACE --trace`: the live side is what the kernel recorded
(`foliobench live record`: compaction:*, migrate:mm_migrate_pages, kmem:mm_page_alloc_extfrag,
as typed columns); the twin side is what the simulator's tracepoints logged while it replayed
the trace's allocations and frees (simcore.tracepoints). Both become records of the same shape,
then the same comparisons: counts per event and per compaction status, compaction runs with
their scanners' start and end pfns and outcome, their mm_migrate_pages batches, and the first
event where the two part (foliobench.compaction_trace).
"""
import itertools

import numpy as np

from simcore import tracepoints

from . import compaction_trace

# what both sides emit, by the kernel's names
COMPARED = {
    "mm_compaction_begin": tracepoints.COMPACTION_BEGIN,
    "mm_compaction_end": tracepoints.COMPACTION_END,
    "mm_migrate_pages": tracepoints.MIGRATE_PAGES,
    "mm_page_alloc_extfrag": tracepoints.PAGE_ALLOC_EXTFRAG,
    "mm_compaction_isolate_migratepages": tracepoints.ISOLATE_MIGRATEPAGES,
    "mm_compaction_isolate_freepages": tracepoints.ISOLATE_FREEPAGES,
}
KERNEL_REASONS = tracepoints.KERNEL_REASONS


def _name(code, names):
    code = int(code)
    return names[code] if 0 <= code < len(names) else str(code)


def _convert(rec):
    """A live record's enum fields by the names simcore.tracepoints uses."""
    if "status" in rec:
        rec["status"] = _name(rec["status"], tracepoints.STATUS_NAMES)
    if "sync" in rec:
        rec["sync"] = bool(rec["sync"])
    if "mode" in rec and rec["event"] == tracepoints.MIGRATE_PAGES:
        rec["mode"] = _name(rec["mode"], tracepoints.MODE_NAMES)
        rec["reason"] = _name(rec["reason"], KERNEL_REASONS)
    return rec


def live_records(trace):
    """The compared events of a recorded trace (simcore.trace_file.Trace), in time order, as
    simcore.tracepoints records: {"event": "system:name", field: value, ...}."""
    parts = []
    for name, event in COMPARED.items():
        cols = trace.events.get(name)
        if not cols or not len(cols["ts"]):
            continue
        fields = [c for c in cols if c not in ("ts", "cpu")]
        ts = cols["ts"].astype(np.int64)
        for i in range(len(ts)):
            rec = {"event": event}
            rec.update((f, int(cols[f][i])) for f in fields)
            parts.append((int(ts[i]), len(parts), rec))
    parts.sort(key=lambda p: (p[0], p[1]))
    return [_convert(rec) for _, _, rec in parts]


def summary(records):
    """Counts per event, compaction runs' outcomes, migrate_pages totals."""
    counts = {name: 0 for name in COMPARED}
    short = {v: k for k, v in COMPARED.items()}
    status = {}
    moved = {"succeeded": 0, "failed": 0}
    for rec in records:
        name = short.get(rec["event"])
        if name is None:
            continue
        counts[name] += 1
        if rec["event"] == tracepoints.COMPACTION_END:
            status[rec["status"]] = status.get(rec["status"], 0) + 1
        elif rec["event"] == tracepoints.MIGRATE_PAGES:
            moved["succeeded"] += rec["succeeded"]
            moved["failed"] += rec["failed"]
    return {"counts": counts, "status": status, "migrate_pages": moved}


def first_divergence(live_runs, twin_runs):
    """The first event where two sequences of compaction runs part, the runs taken in the
    order they happened (a replay has many runs per zone, so they pair by position, not by
    zone as compact_memory's do): {"event", "live", "twin"} (None for a missing event), or
    None when they agree event for event."""
    a = compaction_trace._events(live_runs)
    b = compaction_trace._events(twin_runs)
    for ea, eb in itertools.zip_longest(a, b):
        if ea != eb:
            name = (ea or eb)[0] if ea is None or eb is None or ea[0] == eb[0] \
                else f"{ea[0]} / {eb[0]}"
            return {"event": name, "live": ea[1] if ea else None, "twin": eb[1] if eb else None}
    return None


def compare(live, twin):
    """{"live": summary, "twin": summary, "live_runs", "twin_runs", "first_divergence"}."""
    live_runs = tracepoints.compaction_zones(live)
    twin_runs = tracepoints.compaction_zones(twin)
    return {"live": summary(live), "twin": summary(twin), "live_runs": live_runs,
            "twin_runs": twin_runs, "first_divergence": first_divergence(live_runs, twin_runs)}


def format_comparison(strategy, cmp, max_runs=6):
    """Lines for one strategy's comparison."""
    live, twin = cmp["live"], cmp["twin"]
    lines = [f"{strategy}: tracepoints, live kernel vs twin"]
    for name in COMPARED:
        lines.append(f"  {name:>36} {live['counts'][name]:>9} {twin['counts'][name]:>9}")
    statuses = sorted(set(live["status"]) | set(twin["status"]))
    for s in statuses:
        lines.append(f"  {'mm_compaction_end status=' + s:>36} {live['status'].get(s, 0):>9} "
                     f"{twin['status'].get(s, 0):>9}")
    for k in ("succeeded", "failed"):
        lines.append(f"  {'mm_migrate_pages pages ' + k:>36} {live['migrate_pages'][k]:>9} "
                     f"{twin['migrate_pages'][k]:>9}")
    pairs = list(itertools.zip_longest(cmp["live_runs"], cmp["twin_runs"]))
    lines.append(f"  compaction runs: live {len(cmp['live_runs'])}, twin {len(cmp['twin_runs'])}"
                 + (f" (the first {max_runs})" if len(pairs) > max_runs else ""))
    for lr, tr in pairs[:max_runs]:
        lines.append("    live " + (compaction_trace.format_run(lr) if lr else "-"))
        lines.append("    twin " + (compaction_trace.format_run(tr) if tr else "-"))
    d = cmp["first_divergence"]
    lines.append("  first divergence: none" if d is None else
                 f"  first divergence: {d['event']}: live {d['live']}, twin {d['twin']}")
    return lines
