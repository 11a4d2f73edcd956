"""Plain-Python companion to bench_page_alloc.py: many samples without asv, one fresh process
per measurement, medians printed as a table (asv --quick takes a single sample).

    .venv/bin/python benchmarks/measure_page_alloc.py [--runs 3] [--rounds 30]

Measures, per mem size: the first Machine build in a fresh process ("cold": the process's
memory comes fresh from the kernel) and the median of later builds ("warm"), RSS bytes/page of
the first build, churn per-round time and ns/op (same rounds as AllocFreeChurn), and single
alloc()/free() calls per second (SingleCalls, 1G and 16G; also per second of this process's
CPU time, which a loaded machine disturbs less than wall time). Not an asv benchmark module:
asv imports it during discovery and finds nothing to run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _child(what, mem, rounds):
    sys.path.insert(0, HERE)
    import gc

    import bench_page_alloc as B

    import simcore

    B._warm_up()
    out = {}
    if what == "build":
        gc.collect()
        B._malloc_trim()
        rss0 = B._rss()
        t0 = time.perf_counter()
        m = simcore.Machine(mem=mem, seed=0)
        out["cold_s"] = time.perf_counter() - t0
        out["rss_bytes_per_page"] = (B._rss() - rss0) / m.nr_pages
        del m
        warm = []
        for _ in range(5):
            gc.collect()
            t0 = time.perf_counter()
            simcore.Machine(mem=mem, seed=0)
            warm.append(time.perf_counter() - t0)
        out["warm_s"] = statistics.median(warm)
    elif what == "churn":
        c = B.AllocFreeChurn()
        c.setup(mem)
        c._churn_round()                        # untimed first round
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            c._churn_round()
            times.append(time.perf_counter() - t0)
        # the gather/scatter of held PFN arrays, alone (part of the timed round, not allocator work)
        gs = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for o in B.FILL_ORDERS:
                h = c.held[o]
                idx = c.subsets[o][0]
                h[idx] = h[idx]
            gs.append(time.perf_counter() - t0)
        c.m.check()
        t = statistics.median(times)
        out.update(round_s=t, ops=c.ops_per_round, ns_per_op=t / c.ops_per_round * 1e9,
                   mops=c.ops_per_round / t / 1e6, gather_scatter_s=statistics.median(gs))
    elif what == "single":
        state, mem = mem.split(":")             # here `mem` is "state:mem", e.g. fresh:16G
        s = B.SingleCalls()
        s.setup(state, mem)
        times = []
        cpu = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            c0 = time.process_time()
            s.time_alloc_free_pair(state, mem)
            cpu.append(time.process_time() - c0)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        out.update(call_s=t, calls_per_s=2 * s.PAIRS / t,
                   cpu_calls_per_s=2 * s.PAIRS / statistics.median(cpu))
    print(json.dumps(out))


def _run(what, mem, rounds):
    res = subprocess.run([sys.executable, __file__, "--child", what, mem, str(rounds)],
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per measurement")
    ap.add_argument("--rounds", type=int, default=30, help="timed calls per process")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        what, mem, rounds = args.child
        _child(what, mem, int(rounds))
        return
    jobs = [("build", mem) for mem in ("1G", "16G", "64G")]
    jobs += [("churn", mem) for mem in ("1G", "16G", "64G")]
    jobs += [("single", f"{state}:{mem}") for state in ("fresh", "half-full")
             for mem in ("1G", "16G")]
    results = {}
    for _r in range(args.runs):          # interleave runs so drifting load hits every job alike
        for what, mem in jobs:
            results.setdefault((what, mem), []).append(_run(what, mem, args.rounds))
    med = {}
    for (what, mem), runs in results.items():
        med[what, mem] = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        spread = {k: (min(run[k] for run in runs), max(run[k] for run in runs)) for k in runs[0]}
        cells = ", ".join(f"{k}={v:.4g} [{spread[k][0]:.4g}..{spread[k][1]:.4g}]"
                          for k, v in med[what, mem].items())
        print(f"{what:6} {mem:9} {cells}")
    if ("churn", "1G") in med and ("churn", "64G") in med:
        ratio = med["churn", "64G"]["ns_per_op"] / med["churn", "1G"]["ns_per_op"]
        print(f"churn ns/op 64G/1G = {ratio:.2f}")


if __name__ == "__main__":
    main()
