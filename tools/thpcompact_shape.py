"""The thpcompact shape of issue 15 on the simulator, per strategy: the order-9 phase's
compaction and reclaim counters and the buddyinfo just before it (docs/reclaim.md).

    PYTHONPATH=$PWD .venv/bin/python tools/thpcompact_shape.py [--mem 4G] [--seed 0]
"""
import argparse

from workloads.backend import SimBackend
from workloads.base import resolve_params
from workloads.thp_heavy import ThpHeavy

PARAMS = {"mix": "64K:1", "fill": 0.33, "phase2": "order9", "second": 0.9}
COUNTERS = ("compact_stall", "compact_success", "compact_fail", "pgmigrate_success",
            "compact_daemon_wake", "allocstall_movable", "pgscan_direct", "pgsteal_direct",
            "pgscan_kswapd", "pgsteal_kswapd", "pageoutrun")


def measure(mem, seed, strategy):
    backend = SimBackend(mem=mem, seed=seed, strategy=strategy)
    machine = backend.machine
    alloc = backend.alloc
    seen = {}

    def watched(count, order, *args, **kw):
        if order == 9 and not seen:
            seen["buddyinfo"] = machine.buddyinfo().strip()
            seen["vmstat"] = dict(machine.vmstat())
        return alloc(count, order, *args, **kw)

    backend.alloc = watched
    figures = ThpHeavy().run(backend, resolve_params("thp-heavy", PARAMS), {})
    after = machine.vmstat()
    return figures, {k: after[k] - seen["vmstat"][k] for k in COUNTERS}, seen["buddyinfo"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mem", default="4G")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for strategy in ("legacy", "split", "folio"):
        figures, delta, buddy = measure(args.mem, args.seed, strategy)
        print(f"{strategy}: granted {figures['granted']}/{figures['requested']} "
              f"({figures['huge_pct']:.1f}%) {delta}")
        print(f"  buddyinfo before the order-9 phase: {buddy}")


if __name__ == "__main__":
    main()
