"""Command-line verbs of the digital twin: live snapshot and replay (see docs/twin.md)."""
import pathlib


class _Refused(ValueError):
    """Reported by cli.main as one line, exit code 2."""


def output_file(value):
    """-o/--output of a live capture (snapshot, trace) as a path, refused before any reading
    when it names a directory or a directory that does not exist."""
    output = pathlib.Path(value)
    if output.is_dir():
        raise _Refused(f"-o/--output {value!r} is a directory; give a file name")
    if not output.parent.is_dir():
        raise _Refused(f"-o/--output: directory {str(output.parent)!r} does not exist")
    return output


def _live_snapshot(args):
    from livekernel import snapshot
    output = output_file(args.output)
    try:
        snap, seconds, size = snapshot.write(str(output))
    except snapshot.SnapshotError as exc:
        raise _Refused(str(exc)) from None
    print(f"snapshot: {output} ({snap.nr_pfns} PFNs, kernel {snap.kernel}): "
          f"{size / 1e6:.2f} MB in {seconds:.2f} s")
    return 0


def add_live_parsers(live_sub):
    snap = live_sub.add_parser("snapshot", help="capture this machine's physical memory "
                                                "(read-only, root) for a digital twin")
    snap.add_argument("-o", "--output", default="snapshot.npz",
                      help="snapshot file (default snapshot.npz), written atomically")
    snap.set_defaults(func=_live_snapshot)




def _replay(args):
    import json

    from . import replay, results, trace_cli
    path = pathlib.Path(args.snapshot)
    if not path.is_file():
        raise _Refused(f"snapshot {args.snapshot!r} is not a file")
    if trace_cli.is_trace(path) or not args.action:
        return trace_cli._replay_trace(args)
    replay.parse_action(args.action)                   # refuse a bad action before loading
    if args.live_trace and not args.trace:
        raise _Refused("--live-trace needs --trace")
    live = None
    if args.live_trace:
        from . import compaction_trace
        if not pathlib.Path(args.live_trace).is_file():
            raise _Refused(f"--live-trace {args.live_trace!r} is not a file")
        live = compaction_trace.live_runs(args.live_trace)
        if not live:
            raise _Refused(f"--live-trace {args.live_trace!r} holds no mm_compaction_begin/end "
                           "pair (a text trace from tools/trace_compact_memory.py is expected)")
    if args.output:
        results.check_output_dir(pathlib.Path(args.output).parent, "-o/--output")
    rows = replay.replay(str(path), args.action, args.strategy or [None], args.profile,
                         args.deferred, trace=args.trace)
    print(replay.format_rows(rows))
    if args.trace:
        _print_traced(rows, live)
    if args.output:
        out = pathlib.Path(args.output)
        results.write_text(out.parent, out.name, json.dumps(rows, indent=1) + "\n")
        print(f"written: {out}")
    return 0


def _print_traced(rows, live):
    from . import compaction_trace
    for row in rows:
        lost = f", {row['trace_lost']} records lost" if row["trace_lost"] else ""
        print(f"{row['strategy']} [{row['profile']}]: compaction runs, traced{lost}")
        print("\n".join(compaction_trace.format_runs(row["compaction_runs"], live)))
        if live is not None:
            row["live_compaction_runs"] = live


def add_parsers(sub):
    from . import replay
    rep = sub.add_parser("replay", help="apply a kernel operation to a snapshot's digital twin, "
                                        "or replay a recorded trace, under each strategy")
    rep.add_argument("snapshot", help="a file from 'foliobench live snapshot' (with --action) "
                                      "or 'foliobench live record' (docs/traces.md)")
    rep.add_argument("--action", help=replay.ACTION_HELP + " (snapshots only)")
    rep.add_argument("--strategy", action="append",
                     help="compaction strategy (repeatable; default the profile's)")
    rep.add_argument("--profile", help="kernel profile (default the newest)")
    rep.add_argument("--deferred", choices=("absent", "free"), default="absent",
                     help="memory the kernel had not initialised yet: left out (default) or free")
    rep.add_argument("--trace", action="store_true",
                     help="print the twin's compaction runs from its tracepoints "
                          "(mm_compaction_begin/end, mm_migrate_pages); for a recorded trace, "
                          "compare them, the scanners' isolate events and "
                          "mm_page_alloc_extfrag with the recorded ones")
    rep.add_argument("--live-trace", metavar="FILE",
                     help="with --trace: a live trace's text (tools/trace_compact_memory.py "
                          "OUT.trace) to print beside the twin's, with the first divergence")
    rep.add_argument("-o", "--output", help="also write the rows as JSON here")
    rep.set_defaults(func=_replay)


def snapshot_factory(path, arena=None):
    """The backend factory of `run --snapshot` and the captured machine's size (the rows' mem):
    checks the file once before any run. arena: --mem, the workload's size and budget on the
    twin (as beside a live run of that arena); None sizes it to the whole twin."""
    from simcore import snapshot_file
    from simcore.units import format_size, parse_size

    from .replay import twin_factory
    if not pathlib.Path(path).is_file():
        raise _Refused(f"--snapshot {path!r} is not a file")
    snap = snapshot_file.load(path)
    pages = None if arena is None else parse_size(arena, "--mem") // 4096
    return twin_factory(path, arena_pages=pages), format_size(snap.nr_pfns * 4096)
