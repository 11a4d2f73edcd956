"""Reclaim of migrated 64K mTHP on the simulator, per profile: what shrink_folio_list()'s split
of partially mapped folios and the deferred split shrinker do (docs/reclaim.md).

    PYTHONPATH=$PWD .venv/bin/python tools/deferred_split_reclaim.py [--mem 256M] [--seed 0]
        [--profiles linux-6.10,linux-6.12,linux-6.18] [--shape swap|noswap] [--off]

The shape: 64K anonymous folios over 60% of memory, every other one freed, compaction (which
migrates the rest, leaving them queued and flagged on 6.12+), then order-0 anonymous faults.
swap: a swap area of memory's size and faults of 1.2 x memory, so direct reclaim and kswapd
swap (shrink_folio_list()'s split). noswap: page cache over a fifth of memory first, then
faults until one fails, so the last direct reclaims find nothing and go down to priority 0 (the
shrinker). --off also runs each 6.12+ profile with the two reclaim paths switched off (flagged
folios swapped whole, no shrinker): the simulator before they were modelled. Prints, per run,
the 64K stats, swap and reclaim counters, and the process CPU time of the run.
"""
import argparse
import contextlib
import time

import simcore
from simcore import swap, vmscan
from simcore.profiles import get_profile
from simcore.units import parse_size

ORDER_64K = 4
VMSTAT = ("pswpout", "thp_split_page", "pgsteal_direct", "pgsteal_kswapd", "allocstall_movable",
          "pgmigrate_success")
MTHP = ("split_deferred", "nr_anon_partially_mapped", "split", "split_failed", "swpout",
        "swpout_fallback")


@contextlib.contextmanager
def reclaim_paths_off():
    """The simulator as before the two paths: no flag test in swap-out, an empty queue for
    shrink_slab() and shrink_node()."""
    class _NeverFlagged:
        @staticmethod
        def flagged(mem_map, pfn):
            return False
    class _NoQueue:
        @staticmethod
        def deferred_split_count(pgdat):
            return 0
    saved = swap.deferred_split, vmscan.deferred_split
    swap.deferred_split, vmscan.deferred_split = _NeverFlagged, _NoQueue
    try:
        yield
    finally:
        swap.deferred_split, vmscan.deferred_split = saved


def run(profile, mem, seed, shape):
    m = simcore.Machine(mem=mem, profile=profile, seed=seed, reclaim=True)
    if shape == "swap":
        m.swapon(mem)
    n = int(0.6 * m.nr_pages) >> ORDER_64K
    folios = m.alloc_many(n, ORDER_64K, compact=False)
    m.free_many(folios[::2])
    m.compact()
    if shape == "swap":
        faults = int(1.2 * m.nr_pages)
    else:
        m.alloc_many(m.nr_pages // 5, 0, "movable", "file", compact=False)
        faults = 2 * m.nr_pages
    got = 0
    while got < faults:
        step = len(m.alloc_many(min(4096, faults - got), 0))
        if not step:
            break
        got += step
    m.check()
    v = m.vmstat()
    st = m.mthp_stats()["hugepages-64kB"]
    table = m.pgdat.folio_pfn
    live = table[table >= 0]
    whole = int((m.pgdat.mem_map["order"][live] == ORDER_64K).sum())
    out = {"faults served": got}
    out.update({k: v[k] for k in VMSTAT})
    out.update({f"64K/{k}": st[k] for k in MTHP})
    out["64K folios resident"] = whole
    out["model_ms reclaim"] = round(m.model_ns["reclaim"] / 1e6, 3)
    out["model_ms swap_out"] = round(m.model_ns["swap_out"] / 1e6, 3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profiles", default="linux-6.10,linux-6.12,linux-6.18")
    ap.add_argument("--shape", choices=("swap", "noswap"), default="swap")
    ap.add_argument("--off", action="store_true")
    args = ap.parse_args()
    parse_size(args.mem, "mem")
    runs = []
    for profile in args.profiles.split(","):
        runs.append((profile, contextlib.nullcontext()))
        if args.off and get_profile(profile).deferred_split == "partially_mapped":
            runs.append((profile + " (off)", reclaim_paths_off()))
    for label, ctx in runs:
        t = time.process_time()
        with ctx:
            out = run(label.split()[0], args.mem, args.seed, args.shape)
        cpu = time.process_time() - t
        print(f"{label}: cpu {cpu:.2f}s")
        for k, val in out.items():
            print(f"  {k}: {val}")


if __name__ == "__main__":
    main()
