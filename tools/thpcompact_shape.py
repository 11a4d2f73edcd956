"""The thpcompact shape of issue 15 on the simulator, per strategy: the order-9 phase's
compaction and reclaim counters and the buddyinfo just before it (docs/reclaim.md).

    PYTHONPATH=$PWD .venv/bin/python tools/thpcompact_shape.py [--mem 4G] [--seed 0]
        [--variant base|readahead|slab|history] [--strategy folio]

Variants (experiments on what spreads the free memory before the order-9 phase; the workload
itself is unchanged):
- base: thp-heavy as it is (the holes refilled with order-0 page cache).
- readahead: the refill in readahead-sized folios, equal pages at orders 0..5, as a filesystem
  with large folios reads (pagecache-churn's shape).
- slab: 8 reclaimable slab pages per 256 pages of refill (dentries and inodes of the files
  read), half of them freed at random before the order-9 phase (a slab shrink).
- history: before the workload, page cache read past 1.3 x memory in 1 MiB slices of
  readahead sizes, a random tenth of an older slice re-read now and then: the kernel's own
  reclaim (kswapd, direct) evicts it in LRU order while the workload runs.
"""
import argparse

import numpy as np

from workloads.backend import SimBackend
from workloads.base import resolve_params
from workloads.thp_heavy import ThpHeavy

PARAMS = {"mix": "64K:1", "fill": 0.33, "phase2": "order9", "second": 0.9}
COUNTERS = ("compact_stall", "compact_success", "compact_fail", "pgmigrate_success",
            "compact_daemon_wake", "allocstall_movable", "pgscan_direct", "pgsteal_direct",
            "pgscan_kswapd", "pgsteal_kswapd", "pageoutrun")
VARIANTS = ("base", "readahead", "slab", "history")
RA_ORDERS = 6            # readahead folio orders 0..5 (128K at most)


def read_history(backend, share=1.3, reread=0.1):
    """Page cache past `share` of memory, re-reading part of older slices (variant history)."""
    rng = backend.rng
    slices = []
    while len(slices) * 256 < share * backend.total_pages:
        slices.append(np.concatenate([
            backend.alloc(max(1, (256 // RA_ORDERS) >> o), o, "file", compact=False,
                          gfp="noretry") for o in range(RA_ORDERS)]))
        if len(slices) > 8 and rng.random() < 0.5:
            old = slices[int(rng.integers(len(slices) - 1))]
            backend.touch(old[rng.random(len(old)) < reread])


def measure(mem, seed, strategy, variant="base"):
    if variant not in VARIANTS:
        raise SystemExit(f"variant {variant!r} is unknown; allowed: {', '.join(VARIANTS)}")
    backend = SimBackend(mem=mem, seed=seed, strategy=strategy)
    machine = backend.machine
    if variant == "history":
        read_history(backend)
    alloc = backend.alloc
    seen = {}
    slab = []

    def watched(count, order, kind="anon", *args, **kw):
        if order == 9 and not seen:
            if slab:
                pages = np.concatenate(slab)
                backend.free(pages[backend.rng.random(len(pages)) < 0.5])
            seen["buddyinfo"] = machine.buddyinfo().strip()
            seen["vmstat"] = dict(machine.vmstat())
            seen["pcp"] = machine.pcp_pages()
        if order == 0 and kind == "file" and variant == "readahead":
            return np.concatenate([alloc((count // RA_ORDERS) >> o, o, kind, *args, **kw)
                                   for o in range(RA_ORDERS)])
        if order == 0 and kind == "file" and variant == "slab":
            got = []
            for i in range(0, count, 256):
                got.append(alloc(min(256, count - i), 0, kind, *args, **kw))
                slab.append(alloc(8, 0, "slab", "reclaimable", compact=False))
            return np.concatenate(got)
        return alloc(count, order, kind, *args, **kw)

    backend.alloc = watched
    figures = ThpHeavy().run(backend, resolve_params("thp-heavy", PARAMS), {})
    after = machine.vmstat()
    delta = {k: after[k] - seen["vmstat"][k] for k in COUNTERS}
    return figures, delta, seen["buddyinfo"], seen["pcp"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mem", default="4G")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="base", choices=VARIANTS)
    parser.add_argument("--strategy", action="append",
                        help="legacy, split or folio (repeatable; default all three)")
    args = parser.parse_args()
    for strategy in args.strategy or ("legacy", "split", "folio"):
        figures, delta, buddy, pcp = measure(args.mem, args.seed, strategy, args.variant)
        print(f"{strategy}: granted {figures['granted']}/{figures['requested']} "
              f"({figures['huge_pct']:.1f}%) {delta}")
        print(f"  buddyinfo before the order-9 phase: {buddy} (pcp pages {pcp})")


if __name__ == "__main__":
    main()
