"""Command-line verbs of the digital twin: live snapshot and replay (see docs/twin.md)."""
import pathlib


class _Refused(ValueError):
    """Reported by cli.main as one line, exit code 2."""


def _live_snapshot(args):
    from livekernel import snapshot
    output = pathlib.Path(args.output)
    if output.is_dir():
        raise _Refused(f"-o/--output {args.output!r} is a directory; give a file name")
    if not output.parent.is_dir():
        raise _Refused(f"-o/--output: directory {str(output.parent)!r} does not exist")
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

