"""The twin's compaction runs next to a live kernel's, from their tracepoints.

`foliobench replay SNAPSHOT --action compact_memory --trace [--live-trace FILE]`: the twin
emits compaction:mm_compaction_begin/end and migrate:mm_migrate_pages
(Machine.trace_events(), simcore.tracepoints); a live trace is the text file that
tools/trace_compact_memory.py writes beside its snapshot (OUT.trace), read with
livekernel.fidelity.compaction_zones(). Both become per-zone runs of the same shape.
"""
from simcore import tracepoints

# what a migrate_pages batch is compared on (mode and reason print differently in old kernels)
BATCH_FIELDS = ("succeeded", "failed", "thp_succeeded", "thp_failed", "thp_split",
                "large_folio_split")


def twin_runs(machine):
    """The compaction runs a traced machine logged (simcore.tracepoints.compaction_zones)."""
    return tracepoints.compaction_zones(machine.trace_records())


def live_runs(path):
    """The compaction runs in a live trace's text (tools/trace_compact_memory.py's OUT.trace)."""
    from livekernel.fidelity import compaction_zones
    with open(path, encoding="utf-8", errors="replace") as f:
        return compaction_zones(f.read())


def pair_runs(live, twin):
    """(live run or None, twin run or None) pairs in zone order: a live run goes with the twin
    run whose zone overlaps it most (the twin has no ZONE_DMA, so the kernel's DMA and DMA32
    runs both overlap the twin's DMA32); a run that overlaps nothing stands alone."""
    def overlap(a, b):
        return min(a["zone_end"], b["zone_end"]) - max(a["zone_start"], b["zone_start"])
    best = {}
    for i, lr in enumerate(live):
        j = max(range(len(twin)), key=lambda k: overlap(lr, twin[k]), default=None)
        if j is not None and overlap(lr, twin[j]) > 0 and \
                (j not in best or overlap(lr, twin[j]) > overlap(live[best[j]], twin[j])):
            best[j] = i
    paired_live = set(best.values())
    pairs = [(live[best[j]] if j in best else None, run) for j, run in enumerate(twin)]
    pairs += [(lr, None) for i, lr in enumerate(live) if i not in paired_live]
    return sorted(pairs, key=lambda p: (p[0] or p[1])["zone_start"])


def _events(runs):
    """Each run as a flat sequence of comparable events: begin, its batches, end."""
    out = []
    for i, run in enumerate(runs):
        out.append((f"run {i} begin", {k: run[k] for k in
                                       ("zone_start", "zone_end", "migrate_begin", "free_begin")}))
        for j, batch in enumerate(run["batches"]):
            out.append((f"run {i} mm_migrate_pages {j}",
                        {k: batch.get(k) for k in BATCH_FIELDS}))
        out.append((f"run {i} end", {k: run[k] for k in ("migrate_end", "free_end", "status")}))
    return out


def first_divergence(live, twin):
    """The first event where two run lists part, the runs paired by zone (pair_runs()):
    {"event", "live", "twin"} (a missing event is None), or None when they agree event for
    event."""
    pairs = pair_runs(live, twin)
    a = _events([p[0] for p in pairs if p[0] is not None and p[1] is not None])
    b = _events([p[1] for p in pairs if p[0] is not None and p[1] is not None])
    unpaired = [p for p in pairs if p[0] is None or p[1] is None]
    for k in range(max(len(a), len(b))):
        ea = a[k] if k < len(a) else None
        eb = b[k] if k < len(b) else None
        if ea != eb:
            return {"event": (ea or eb)[0] if ea is None or eb is None or ea[0] == eb[0]
                    else f"{ea[0]} / {eb[0]}",
                    "live": ea[1] if ea else None, "twin": eb[1] if eb else None}
    if unpaired:
        lr, tr = unpaired[0]
        run = lr or tr
        return {"event": f"zone {run['zone_start']:#x}-{run['zone_end']:#x} "
                         f"only {'live' if lr else 'twin'}",
                "live": lr and _events([lr])[0][1], "twin": tr and _events([tr])[0][1]}
    return None


def first_batch_divergence(lr, tr):
    """The first mm_migrate_pages batch where two runs of one zone part, wherever their begin
    events put them: (index, live batch or None, twin batch or None), or None."""
    a = [{k: b.get(k) for k in BATCH_FIELDS} for b in lr["batches"]]
    b = [{k: x.get(k) for k in BATCH_FIELDS} for x in tr["batches"]]
    for j in range(max(len(a), len(b))):
        ba = a[j] if j < len(a) else None
        bb = b[j] if j < len(b) else None
        if ba != bb:
            return j, ba, bb
    return None


def _batch_totals(run):
    return {k: sum(b.get(k) or 0 for b in run["batches"]) for k in ("succeeded", "failed")}


def format_run(run):
    t = _batch_totals(run)
    return (f"zone {run['zone_start']:#x}-{run['zone_end']:#x} {run['status']}: "
            f"migrate {run['migrate_begin']:#x}->{run['migrate_end']:#x}, "
            f"free {run['free_begin']:#x}->{run['free_end']:#x}; "
            f"{len(run['batches'])} mm_migrate_pages, succeeded {t['succeeded']} "
            f"failed {t['failed']}")


def format_runs(twin, live=None):
    """Lines: the twin's runs, or each live run over the twin's with the first divergence."""
    if live is None:
        return [f"  twin {format_run(r)}" for r in twin]
    lines = []
    for lr, tr in pair_runs(live, twin):
        lines.append("    live " + (format_run(lr) if lr else "-"))
        lines.append("    twin " + (format_run(tr) if tr else "-"))
        if lr and tr:
            d = first_divergence([lr], [tr])
            lines.append("      parts at: " + ("nowhere" if d is None else
                                              f"{d['event'][6:]}: live {d['live']}, "
                                              f"twin {d['twin']}"))
            bd = first_batch_divergence(lr, tr)
            if bd is not None:
                lines.append(f"      first batch that differs: {bd[0]}: live {bd[1]}, "
                             f"twin {bd[2]}")
    d = first_divergence(live, twin)
    lines.append("  first divergence: none" if d is None else
                 f"  first divergence: {d['event']}: live {d['live']}, twin {d['twin']}")
    return lines
