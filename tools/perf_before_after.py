"""Speed figures of docs/performance.md ("Issue 15 targets"), for one tree: run it once per
tree, alternating, with that tree's simcore on PYTHONPATH (the benchmark classes come from
this file's own tree, so both trees run the same measuring code):

    for i in 1 2 3; do for t in /path/to/before /path/to/after; do
      (cd $t && PYTHONPATH=$t .venv/bin/python /path/to/after/tools/perf_before_after.py)
    done; done

Prints one JSON line. Each figure comes twice: by wall time (perf_counter) and by this
process's CPU time (process_time), which a machine shared with other jobs disturbs less
(stolen time is not counted; cache and memory-bandwidth contention still is). Figures: 16G
build (median of 5), SingleCalls pairs on 1G and 16G, fresh and half full (median of 15
calls of 10,000 pairs), asv's AllocFreeChurn on 16G (median of 15 rounds).
"""
import gc
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _timed(fn, n):
    wall, cpu = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return statistics.median(wall), statistics.median(cpu)


def main():
    sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
    import bench_page_alloc as B

    import simcore
    B._warm_up()
    out = {"simcore": os.path.dirname(simcore.__file__)}
    gc.collect()
    wall, cpu = _timed(lambda: simcore.Machine(mem="16G", seed=0), 5)
    out.update(build16G_s=wall, build16G_cpu_s=cpu)
    for mem in ("1G", "16G"):
        for state in ("fresh", "half-full"):
            s = B.SingleCalls()
            s.setup(state, mem)
            wall, cpu = _timed(s._pairs, 15)
            out[f"single_{state}_{mem}_Mcalls"] = 2 * s.PAIRS / wall / 1e6
            out[f"single_{state}_{mem}_cpu_Mcalls"] = 2 * s.PAIRS / cpu / 1e6
            del s
            gc.collect()
    c = B.AllocFreeChurn()
    c.setup("16G")
    wall, cpu = _timed(c._churn_round, 15)
    out.update(churn16G_mops=c.ops_per_round / wall / 1e6,
               churn16G_cpu_mops=c.ops_per_round / cpu / 1e6)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
