"""Trace one live compact_memory (root): python tools/trace_compact_memory.py OUT.npz

Takes a snapshot right before (OUT.npz, replayable with `foliobench replay OUT.npz --action
compact_memory`), then writes 1 to /proc/sys/vm/compact_memory with the compaction and
migration events on in a private tracefs instance (livekernel.fidelity.DeferralTrace; the
live-run lock is held and everything is removed at the end). Writes the raw trace to
OUT.trace and prints each compact_zone() run: status, where both scanners started and
ended, and the pages they scanned and took. docs/fidelity.md ("compact_memory, traced")
quotes three such runs.
"""
import pathlib
import sys

from livekernel import fidelity as lk
from livekernel import snapshot as lsnap
from livekernel.journal import SettingsJournal

EVENTS = ("compaction/mm_compaction_begin", "compaction/mm_compaction_end",
          "compaction/mm_compaction_isolate_migratepages",
          "compaction/mm_compaction_isolate_freepages",
          "compaction/mm_compaction_migratepages",
          "migrate/mm_migrate_pages")
BUFFER_KB = 65536          # per CPU: one compact_memory logs some 10,000 events


def main(out):
    out = pathlib.Path(out)
    lsnap.require_root()
    journal = SettingsJournal(state_dir="/run/foliobench")
    journal.lock_timeout = 300.0
    with journal:
        with lk.DeferralTrace(journal, events=EVENTS) as trace:
            if trace.dir is None:
                print("tracefs or the compaction events are not available", file=sys.stderr)
                return 1
            (trace.dir / "buffer_size_kb").write_text(str(BUFFER_KB))
            lsnap.write(str(out))
            (trace.dir / "trace").write_text("")
            lk.compact_memory(journal)
    out.with_suffix(".trace").write_text(trace.text)
    for run in lk.compaction_zones(trace.text):
        print(f"zone {run['zone_start']:#x}-{run['zone_end']:#x} {run['status']}: "
              f"migrate {run['migrate_begin']:#x}->{run['migrate_end']:#x} "
              f"scanned {run['migrate_scanned']} taken {run['migrate_taken']}; "
              f"free {run['free_begin']:#x}->{run['free_end']:#x} "
              f"scanned {run['free_scanned']} taken {run['free_taken']}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python tools/trace_compact_memory.py OUT.npz", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
