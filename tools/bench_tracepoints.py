"""Time Machine.compact() with the simulator's tracepoints off or on (docs/traces.md).

Usage: python tools/bench_tracepoints.py off|on   (off also runs on code without tracepoints)
"""
import sys
import time

from simcore.machine import Machine


def main(mode):
    times = []
    for seed in range(5):
        m = Machine("256M", seed=seed)
        pfns = m.alloc_many(40000, 0, "movable", "anon")
        m.free_many(pfns[m.rng.random(len(pfns)) < 0.5])
        if mode == "on":
            m.trace_events(True)
        before = m.vmstat()["pgmigrate_success"]
        start = time.perf_counter()
        m.compact()
        times.append(time.perf_counter() - start)
    records = len(m.trace_records()) if hasattr(m, "trace_records") else "-"
    print(f"{mode}: compact() min {min(times) * 1e3:.1f} ms, median "
          f"{sorted(times)[2] * 1e3:.1f} ms; migrated "
          f"{m.vmstat()['pgmigrate_success'] - before}, records {records}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("off", "on"):
        print("usage: python tools/bench_tracepoints.py off|on", file=sys.stderr)
        raise SystemExit(2)
    main(sys.argv[1])
