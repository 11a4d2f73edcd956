"""Command-line verbs of recorded traces: `live record` and `replay TRACE` (docs/traces.md)."""
import json
import math
import pathlib
import sys

from . import trace_fidelity
from .twin_cli import _Refused, output_file

# counters shown next to what the live kernel did while the trace was recorded
LIVE_COUNTERS = ("pgalloc_dma32", "pgalloc_normal", "pgfree", "compact_stall", "compact_success",
                 "compact_fail", "compact_migrate_scanned", "compact_free_scanned",
                 "pgmigrate_success", "pgmigrate_fail", "thp_fault_alloc", "thp_fault_fallback",
                 "pgsteal_kswapd", "pgsteal_direct")


def _live_record(args):
    from livekernel import record
    output = output_file(args.output)
    command = list(args.command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    if args.duration is not None and not math.isfinite(args.duration):
        raise _Refused(f"--duration {args.duration} is not a number of seconds")
    rec = record.record(str(output), command or None, args.duration, args.buffer_kb,
                        measure=not args.no_baseline,
                        say=lambda text: print(text, file=sys.stderr))
    o = rec.overhead
    print(f"recorded: {rec.path}: {rec.size / 1e6:.2f} MB, {rec.events} events in "
          f"{rec.seconds:.2f} s traced, the snapshot's read included "
          f"({rec.events / max(rec.seconds, 1e-9):,.0f} events/s), "
          f"lost events {rec.lost}")
    print("events: " + ", ".join(f"{n} {c}" for n, c in rec.counts.items() if c))
    overhead = f"recording overhead: reader threads {o['reader_cpu_s']:.2f} CPU s " \
               f"({100 * o['reader_cpu_share']:.1f}% of the traced time)"
    if "baseline_wall_s" in o:
        overhead += f"; the command took {o['wall_s']:.2f} s recorded vs " \
                    f"{o['baseline_wall_s']:.2f} s not (mean of " \
                    f"{' and '.join(f'{b:.2f}' for b in o['baseline_runs_s'])} s before and " \
                    f"after; {o['wall_ratio']:.2f}x); its CPU time {o['cpu_s']:.2f} s vs " \
                    f"{o['baseline_cpu_s']:.2f} s ({o['cpu_ratio']:.2f}x)"
    print(overhead)
    if rec.exit_code:
        print(f"note: the command exited with code {rec.exit_code}", file=sys.stderr)
    return 1 if rec.lost else 0


def add_live_parsers(live_sub):
    rec = live_sub.add_parser("record", help="snapshot memory, then record the page-allocator, "
                                             "compaction, migration and reclaim tracepoints "
                                             "(root)")
    rec.add_argument("-o", "--output", default="trace.npz",
                     help="trace file (default trace.npz), written atomically")
    rec.add_argument("--duration", type=float, help="record for this many seconds (no command)")
    rec.add_argument("--buffer-kb", type=int, default=32768,
                     help="ring buffer per CPU in KiB (default 32768)")
    rec.add_argument("--no-baseline", action="store_true",
                     help="do not run the command unrecorded (once before, once after) to "
                          "measure the overhead")
    rec.add_argument("command", nargs="...", help="-- COMMAND [ARG ...] to run while recording")
    rec.set_defaults(func=_live_record)


def _members(path):
    import zipfile
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return []


def is_trace(path):
    """True when `path` is a foliobench trace (a snapshot or anything else is not)."""
    return any(n.startswith("ev.") for n in _members(path))


def is_snapshot(path):
    return "kpf_values.npy" in _members(path)


def replay_trace(path, strategies, profile=None, trace_events=False):
    """Rows: the trace replayed on its twin under each strategy (workloads.trace). With
    `trace_events`, each row's "tracepoints" compares the recorded compaction, migration and
    fallback events with the twin's (foliobench.trace_fidelity)."""
    from simcore import profiles
    from workloads.base import run_one
    from workloads.trace import load_trace, trace_workload
    trace = load_trace(path)
    cls = trace_workload(path)
    profile = profile or trace.header.get("profile") \
        or matching_profile(trace.kernel, profiles.profiles())
    rows, divergences = [], []
    live = trace_fidelity.live_records(trace) if trace_events else None
    for strategy in strategies:
        keep = {}
        row = run_one(cls, strategy, keep=keep,
                      backend_factory=_factory(trace, profile, trace_events))
        row["profile"] = profile
        if trace_events:
            row["tracepoints"] = trace_fidelity.compare(live, keep.get("trace_records", []))
            row["trace_lost"] = keep.get("trace_lost", 0)
        rows.append(row)
        divergences.append(keep.get("first_divergence"))
    return trace, rows, divergences


def _factory(trace, profile, trace_events=False):
    import functools

    from workloads.trace import TwinSimBackend
    return functools.partial(TwinSimBackend, snapshot=trace.snapshot, profile=profile,
                             trace=trace_events)


def matching_profile(kernel, names):
    """The simcore profile of the recording kernel's release (linux-6.18 for 6.18.44-...), or
    the newest when none matches."""
    major_minor = ".".join(str(kernel).split("-")[0].split(".")[:2])
    want = f"linux-{major_minor}"
    return want if want in names else None


def live_deltas(header):
    before, after = header.get("vmstat_before") or {}, header.get("vmstat_after") or {}
    return {c: after.get(c, 0) - before.get(c, 0) for c in LIVE_COUNTERS if c in before}


def format_replay(trace, rows, divergences):
    h = trace.header
    lines = [f"trace: kernel {trace.kernel}, {h.get('records')} records in "
             f"{h.get('traced_s', h.get('seconds'))} s, "
             f"{trace.count('mm_page_alloc')} allocations, {trace.count('mm_page_free')} frees, "
             f"lost events {h.get('lost_events')}"]
    cols = ["allocs", "allocs_granted", "pages_allocated", "pages_freed", "same_pfn_share",
            "large_allocs", "large_same_pfn_share",
            "frees_matched", "frees_of_start_state", "frees_unmatched", "frees_migrated",
            "frees_compaction_released", "frees_of_moved", "migration_frees_unowned",
            "folios_split", "compact_stall", "compact_success",
            "pages_migrated", "highorder_success", "unusable_9_after"]
    head = f"{'':>26}" + "".join(f"{r['strategy'] + ' [' + str(r['profile']) + ']':>26}"
                                 for r in rows)
    lines.append(head)
    for c in cols:
        vals = []
        for r in rows:
            v = r.get(c, r.get(f"vmstat_{c}", float("nan")))
            vals.append(f"{v:>26.4g}" if isinstance(v, float) else f"{v!s:>26}")
        lines.append(f"{c:>26}" + "".join(vals))
    for r, d in zip(rows, divergences):
        if d:
            sim = d["simulated_pfn"]
            lines.append(f"{r['strategy']}: first divergence at request {d['index']}: order "
                         f"{d['order']} recorded at pfn {d['recorded_pfn']:#x}, simulated "
                         + (f"at {sim:#x}" if sim is not None else "failed"))
    live = live_deltas(h)
    if live:
        lines.append("live kernel during the recording (vmstat deltas, whole machine): "
                     + ", ".join(f"{k} {v}" for k, v in live.items()))
    return "\n".join(lines)


def _replay_trace(args):
    from . import results
    path = pathlib.Path(args.snapshot)
    if args.action:
        raise _Refused("--action applies to a snapshot; a trace replays its own requests")
    if getattr(args, "live_trace", None):
        raise _Refused("--live-trace applies to a snapshot replayed with --action; a recorded "
                       "trace holds its own live events (use --trace)")
    if args.deferred != "absent":
        raise _Refused("--deferred applies to a snapshot; a trace replays on its snapshot as "
                       "captured")
    if is_snapshot(path):
        raise _Refused(f"{args.snapshot} is a snapshot: replay it with --action (a trace file "
                       f"from 'foliobench live record' replays its own requests)")
    if args.output:
        results.check_output_dir(pathlib.Path(args.output).parent, "-o/--output")
    from simcore.strategies import get_strategy
    strategies = args.strategy or ["legacy", "split", "folio"]
    for s in strategies:
        get_strategy(s)
    trace, rows, divergences = replay_trace(str(path), strategies, args.profile,
                                            trace_events=getattr(args, "trace", False))
    print(format_replay(trace, rows, divergences))
    for row in rows:
        if "tracepoints" in row:
            print("\n".join(trace_fidelity.format_comparison(row["strategy"],
                                                             row["tracepoints"])))
            if row["trace_lost"]:
                print(f"  twin tracepoint records lost (log full): {row['trace_lost']}")
    if args.output:
        out = pathlib.Path(args.output)
        doc = {"rows": rows, "first_divergence": divergences,
               "live_vmstat_delta": live_deltas(trace.header)}
        results.write_text(out.parent, out.name, json.dumps(doc, indent=1, default=str) + "\n")
        print(f"written: {out}")
    return 0
