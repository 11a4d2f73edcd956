"""Speed figures of docs/kernel-paths.md ("Per-CPU page lists", Performance), for one tree.

Run it once per tree, alternating, from the tree's root and with the tree on PYTHONPATH:

    for i in 1 2 3 4 5 6; do for t in /tmp/pcp-before /work/wt-pcp; do
      (cd $t && PYTHONPATH=$t /work/main/.venv/bin/python /work/wt-pcp/tools/pcp_before_after.py)
    done; done

Prints one JSON line: 16G build time (median of 5), asv's AllocFreeChurn on 16G (median of 15
rounds), SingleCalls on 1G fresh and half full (median of 15 calls), 10,000 alloc(0)+free pairs
on a fresh 16G machine, and an order-0-only churn on 16G (65,536 random frees + allocs a round).
"""
import gc
import json
import os
import statistics
import sys
import time

import numpy as np


def main():
    sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
    import bench_page_alloc as B

    import simcore
    B._warm_up()
    out = {}
    builds = []
    for _ in range(5):
        gc.collect()
        t0 = time.perf_counter()
        simcore.Machine(mem="16G", seed=0)
        builds.append(time.perf_counter() - t0)
    out["build16G_s"] = statistics.median(builds)
    c = B.AllocFreeChurn()
    c.setup("16G")
    rates = []
    for _ in range(15):
        t0 = time.perf_counter()
        c._churn_round()
        rates.append(c.ops_per_round / (time.perf_counter() - t0))
    c.m.check()
    out["churn16G_mops"] = statistics.median(rates) / 1e6
    del c
    gc.collect()
    for state in ("fresh", "half-full"):
        s = B.SingleCalls()
        s.setup(state, "1G")
        ts = []
        for _ in range(15):
            t0 = time.perf_counter()
            s.time_alloc_free_pair(state, "1G")
            ts.append(time.perf_counter() - t0)
        out[f"single_{state}_Mcalls"] = 2 * s.PAIRS / statistics.median(ts) / 1e6
    m = simcore.Machine(mem="16G", seed=0)
    m.free(m.alloc(0))
    ts = []
    for _ in range(15):
        t0 = time.perf_counter()
        for _ in range(10_000):
            m.free(m.alloc(0))
        ts.append(time.perf_counter() - t0)
    out["single16G_fresh_Mcalls"] = 20_000 / statistics.median(ts) / 1e6
    del m
    m = simcore.Machine(mem="16G", seed=0)
    rng = np.random.default_rng(1)
    held = m.alloc_many(1 << 21, 0)
    rates = []
    for _ in range(12):
        idx = rng.choice(len(held), 1 << 16, replace=False)
        t0 = time.perf_counter()
        m.free_many(held[idx])
        new = m.alloc_many(len(idx), 0)
        rates.append(2 * len(idx) / (time.perf_counter() - t0))
        held[idx] = new
    out["order0_churn16G_mops"] = statistics.median(rates[2:]) / 1e6
    print(json.dumps(out))


if __name__ == "__main__":
    main()
