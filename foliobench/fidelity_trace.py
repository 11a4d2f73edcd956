"""`foliobench fidelity --trace`: the tracepoints of a fidelity run's live action, stored with the
run in the corpus, next to the tracepoints the twin emits when it replays that run.

The live side: while the action runs, livekernel.record.EventRecorder records the compaction:*
events, migrate:mm_migrate_pages, kmem:mm_page_alloc_extfrag and kmem:mm_page_alloc/free into
typed columns; they are stored as <experiment>-<i>.trace.npz beside the run's snapshot.

    header: uint8 array, UTF-8 JSON: {"format": "foliobench-fidelity-trace", "version": 1,
            "kernel", "events": {name: {"system", "id", "fields": {field: dtype}}},
            "counts": {name: records recorded}, "stored": [names kept], "lost_events",
            "ts_base": ns, ...}
    ev.<event>.<column>: the kept events' columns; "ts" holds the differences between
            successive timestamps of that event (the first from ts_base), which compress far
            better than the timestamps themselves.

A run's trace must fit in MAX_TRACE_BYTES (the corpus stays under 20 MB): events are dropped
in DROP_ORDER (the page allocator's first) until it does; a dropped event keeps its count.

The twin side: Machine.trace_events() during the same action on the run's snapshot; both go
through foliobench.trace_fidelity's records and comparison (counts per event and status,
compaction runs with their scanners' pfns and outcome, migrate_pages batches, the first event
where they part). Nothing here knows what either side should produce.
"""
import io
import itertools
import json
import os
import pathlib
import zipfile

import numpy as np

from simcore import npzfile

from . import compaction_trace, trace_fidelity

FORMAT = "foliobench-fidelity-trace"
VERSION = 1
SUFFIX = ".trace.npz"
MAX_TRACE_BYTES = 1_200_000
# what a fidelity run records: (system, event) or (system, None) for the whole system
EVENTS = (("compaction", None), ("migrate", "mm_migrate_pages"),
          ("kmem", "mm_page_alloc_extfrag"), ("kmem", "mm_page_alloc"), ("kmem", "mm_page_free"))
# dropped first when a trace is too large: the busiest, least compared
DROP_ORDER = ("mm_page_alloc", "mm_page_free", "mm_compaction_fast_isolate_freepages",
              "mm_compaction_isolate_freepages", "mm_compaction_suitable",
              "mm_compaction_finished")
TWIN_CAPACITY = 1 << 19     # twin tracepoint records kept (40 MiB of log)


class TraceData:
    """A stored fidelity trace: header and {event: {column: array}} with absolute ts."""

    def __init__(self, header, events):
        self.header, self.events = header, events

    def count(self, name):
        return int((self.header.get("counts") or {}).get(name, 0))


def trace_name(snapshot_name):
    return snapshot_name[:-len(".npz")] + SUFFIX if snapshot_name.endswith(".npz") \
        else snapshot_name + SUFFIX


def _members(header, events, keep):
    members = {}
    for name in keep:
        for col, arr in events[name].items():
            if col == "ts":
                ts = arr.astype(np.int64) - header["ts_base"]
                arr = np.diff(ts, prepend=np.int64(0)).astype(np.int64)
            elif col == "cpu":
                arr = arr.astype(np.uint8)
            members[f"ev.{name}.{col}"] = np.ascontiguousarray(arr)
    body = dict(header, stored=list(keep))
    members["header"] = np.frombuffer(json.dumps(body).encode(), dtype=np.uint8)
    return members


def _encoded_size(members):
    buf = io.BytesIO()
    np.savez_compressed(buf, **members)
    return buf.tell()


def save(path, header, events, max_bytes=MAX_TRACE_BYTES):
    """Write a run's trace atomically: header (kernel, formats, lost events ...) and
    {event: {column: array}} with absolute "ts"; events dropped in DROP_ORDER until the file
    fits in max_bytes. Returns the header written."""
    starts = [int(c["ts"][0]) for c in events.values() if len(c["ts"])]
    header = dict(header, format=FORMAT, version=VERSION, ts_base=min(starts, default=0),
                  counts={n: int(len(c["ts"])) for n, c in events.items()})
    keep = [n for n in events if len(events[n]["ts"])]
    dropped = []
    members = _members(header, events, keep)
    for name in DROP_ORDER:
        if _encoded_size(members) <= max_bytes:
            break
        if name in keep:
            keep.remove(name)
            dropped.append(name)
            header["dropped_for_size"] = list(dropped)
            members = _members(header, events, keep)
    npzfile.save_atomic(path, ".fidelity-trace-", members)
    return json.loads(members["header"].tobytes().decode())


def load(path):
    """A TraceData; ValueError naming the file when it is truncated, foreign, of another
    version, or its columns disagree with its counts."""
    what = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            members = {m: npz[m] for m in npz.files}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{what} is not a readable fidelity trace ({exc})") from None
    try:
        header = json.loads(members.pop("header").tobytes().decode())
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{what} is not a fidelity trace (no readable header)") from None
    npzfile.check_header(header, what, "fidelity trace", FORMAT, VERSION)
    events = {}
    for key, arr in members.items():
        _, name, col = key.split(".", 2)
        events.setdefault(name, {})[col] = arr
    for name in header.get("stored", []):
        cols = events.get(name, {})
        want = header["counts"].get(name)
        if "ts" not in cols or {len(a) for a in cols.values()} != {want}:
            raise ValueError(f"{what}: event {name} should have {want} records")
        cols["ts"] = np.cumsum(cols["ts"]) + header["ts_base"]
    return TraceData(header, events)


# ---- the comparison -----------------------------------------------------------------------

def live_summary(data):
    """What the stored trace says beyond the compared events: every recorded event's count
    (kept or dropped for size) and the lost events."""
    return {"counts": dict(data.header.get("counts", {})),
            "dropped_for_size": list(data.header.get("dropped_for_size", [])),
            "lost_events": int(data.header.get("lost_events", 0))}


def _one_run_per_zone(runs):
    starts = [r["zone_start"] for r in runs]
    return len(starts) == len(set(starts))


def compare_run(data, twin_records, twin_lost=0):
    """One run's live trace (TraceData) against the twin's records: trace_fidelity.compare()
    plus the runs paired by zone when each side compacted each zone at most once (as
    compact_memory does), else in the order they ran."""
    cmp = trace_fidelity.compare(trace_fidelity.live_records(data), twin_records)
    live_runs, twin_runs = cmp["live_runs"], cmp["twin_runs"]
    if _one_run_per_zone(live_runs) and _one_run_per_zone(twin_runs):
        cmp["pairing"] = "zone"
        cmp["first_divergence"] = compaction_trace.first_divergence(
            live_runs, _on_live_zones(live_runs, twin_runs))
    else:
        cmp["pairing"] = "order"
    cmp["live_recorded"] = live_summary(data)
    cmp["twin_lost"] = int(twin_lost)
    return cmp


def _on_live_zones(live_runs, twin_runs):
    """The twin's runs with a zone that starts below the live zone it pairs with (the twin
    folds ZONE_DMA into DMA32) given the live zone's start, where both migrate scanners began
    at their zone's start: that difference is the zone layout, not compaction, and would
    otherwise be every such comparison's first divergence."""
    out = []
    pairs = {id(t): lr for lr, t in compaction_trace.pair_runs(live_runs, twin_runs)
             if lr is not None and t is not None}
    for run in twin_runs:
        lr = pairs.get(id(run))
        if lr is not None and run["zone_start"] < lr["zone_start"] < run["zone_end"] \
                and run["zone_end"] == lr["zone_end"] \
                and run["migrate_begin"] == run["zone_start"] \
                and lr["migrate_begin"] == lr["zone_start"]:
            run = dict(run, zone_start=lr["zone_start"], migrate_begin=lr["migrate_begin"])
        out.append(run)
    return out


def twin_trace_on(machine):
    machine.trace_events(True, capacity=TWIN_CAPACITY)


def twin_result(machine, data):
    """The comparison for a traced twin that has just replayed the run of `data`."""
    return compare_run(data, machine.trace_records(), machine.trace_lost())


def _pairs(cmp):
    """(live run, twin run) pairs as the comparison paired them (None where one is missing)."""
    if cmp["pairing"] == "zone":
        return compaction_trace.pair_runs(cmp["live_runs"], cmp["twin_runs"])
    return list(itertools.zip_longest(cmp["live_runs"], cmp["twin_runs"]))


def _run_line(run):
    return compaction_trace.format_run(run) if run else "-"


def format_experiment(name, strategy, snapshot, cmp, max_runs=4):
    """Terminal lines for one run's comparison."""
    live, twin = cmp["live"], cmp["twin"]
    rec = cmp["live_recorded"]
    lines = [f"{name} [{strategy}] {snapshot}: tracepoints, live kernel vs twin"
             f" (live lost {rec['lost_events']}, twin lost {cmp['twin_lost']})",
             f"  {'event':>44} {'live':>9} {'twin':>9}"]
    for ev in trace_fidelity.COMPARED:
        lines.append(f"  {ev:>44} {live['counts'][ev]:>9} {twin['counts'][ev]:>9}")
    for s in sorted(set(live["status"]) | set(twin["status"])):
        lines.append(f"  {'mm_compaction_end status=' + s:>44} {live['status'].get(s, 0):>9} "
                     f"{twin['status'].get(s, 0):>9}")
    for k in ("succeeded", "failed"):
        lines.append(f"  {'mm_migrate_pages pages ' + k:>44} {live['migrate_pages'][k]:>9} "
                     f"{twin['migrate_pages'][k]:>9}")
    others = {k: v for k, v in rec["counts"].items()
              if k not in trace_fidelity.COMPARED and v}
    if others:
        dropped = set(rec["dropped_for_size"])
        lines.append("  live only, not compared: " + ", ".join(
            f"{k} {v}" + (" (count only)" if k in dropped else "")
            for k, v in sorted(others.items())))
    pairs = _pairs(cmp)
    lines.append(f"  compaction runs (paired by {cmp['pairing']}): live "
                 f"{len(cmp['live_runs'])}, twin {len(cmp['twin_runs'])}"
                 + (f"; the first {max_runs}" if len(pairs) > max_runs else ""))
    for lr, tr in pairs[:max_runs]:
        lines.append("    live " + _run_line(lr))
        lines.append("    twin " + _run_line(tr))
        if lr and tr:
            bd = compaction_trace.first_batch_divergence(lr, tr)
            if bd is not None:
                lines.append(f"      first mm_migrate_pages batch that differs: {bd[0]}: "
                             f"live {bd[1]}, twin {bd[2]}")
    d = cmp["first_divergence"]
    lines.append("  first divergence: none" if d is None else
                 f"  first divergence: {d['event']}: live {d['live']}, twin {d['twin']}")
    return lines


def markdown_rows(name, strategy, snapshot, cmp, max_runs=20):
    """Rows of (experiment, figure, live, twin) for fidelity.md (the first `max_runs`
    compaction runs; fidelity.json has them all)."""
    live, twin = cmp["live"], cmp["twin"]
    label = f"{name} [{strategy}] {snapshot}"
    out = [(label, ev, str(live["counts"][ev]), str(twin["counts"][ev]))
           for ev in trace_fidelity.COMPARED]
    for s in sorted(set(live["status"]) | set(twin["status"])):
        out.append((label, f"mm_compaction_end status={s}", str(live["status"].get(s, 0)),
                    str(twin["status"].get(s, 0))))
    for k in ("succeeded", "failed"):
        out.append((label, f"mm_migrate_pages pages {k}", str(live["migrate_pages"][k]),
                    str(twin["migrate_pages"][k])))
    pairs = _pairs(cmp)
    for i, (lr, tr) in enumerate(pairs[:max_runs]):
        out.append((label, f"compaction run {i}", _run_line(lr), _run_line(tr)))
    if len(pairs) > max_runs:
        out.append((label, f"compaction runs {max_runs}-{len(pairs) - 1}",
                    "in fidelity.json", ""))
    d = cmp["first_divergence"]
    out.append((label, "first divergence", "none" if d is None else
                f"{d['event']}: {d['live']}", "" if d is None else str(d["twin"])))
    return out


def names_of(events_dir):
    """(system, event) of EVENTS that the tracefs at `events_dir` has."""
    out = []
    for system, name in EVENTS:
        if name is None:
            d = pathlib.Path(events_dir, system)
            if d.is_dir():
                out += [(system, p.name) for p in sorted(d.iterdir())
                        if (p / "format").is_file()]
        elif os.path.isfile(os.path.join(events_dir, system, name, "format")):
            out.append((system, name))
    return out
