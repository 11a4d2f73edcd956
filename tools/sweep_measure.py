"""Measure foliobench sweep on this machine: cells per second on 1 and 2 local workers, the
scheduler's overhead per cell, peak memory per worker, and a projection to a 10,000-cell grid.

    PYTHONPATH=$PWD .venv/bin/python tools/sweep_measure.py [--mem 16G] [--seeds 4] [--json F]

The grid is highalloc x 3 strategies x `seeds` seeds at `mem`. Run it on a quiet machine: the
load average before and after is printed, and other processes on the cores slow the 2-worker
run more than the 1-worker one.
"""
import argparse
import io
import json
import os
import resource
import tempfile
import time

from foliobench import sweep
from foliobench.sweep_spec import parse_spec
from foliobench.sweep_store import SweepStore


def _noop(i):
    return i


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_sweep(spec, workers):
    """(wall from the first cell submitted to the last written, per-cell wall times, peak RSS
    per worker in MB), on a fresh local cluster warmed with one cell per worker first."""
    cells = spec.cells()
    n, limit = sweep.plan_local(cells, workers)
    with tempfile.TemporaryDirectory() as tmp, sweep.local_cluster(n, limit) as client:
        # warm every worker: imports and numba's cache loading are not per-cell costs
        warm = parse_spec({**spec.to_dict(), "mem": ["64M"], "seeds": list(range(workers))})
        client.gather([client.submit(sweep.run_cell, c.to_dict(), pure=False)
                       for c in warm.cells()[:workers]])
        store = SweepStore.create(tmp, spec)
        t0 = time.perf_counter()
        sweep.run_sweep(spec, store, scheduler=client.scheduler.address,
                        progress_stream=io.StringIO())
        wall = time.perf_counter() - t0
        import pandas as pd
        df = pd.read_parquet(store.path)
        peaks = client.run(_peak_rss_mb)
    return wall, df["cell_wall_s"].tolist(), df["cell_cpu_s"].tolist(), sorted(peaks.values())


def _cpu():
    return time.process_time()


def scheduler_overhead(tasks=2000):
    """(wall seconds, CPU seconds) per task for no-op tasks on a 1-worker local cluster: the
    per-cell cost of submitting, scheduling, running and gathering a result, without the cell.
    The CPU figure adds this process (client and scheduler) and the worker, so it does not
    depend on how busy the machine is."""
    with sweep.local_cluster(1, 1 << 30) as client:
        client.gather(client.map(_noop, range(50), pure=False))
        cpu0 = time.process_time() + sum(client.run(_cpu).values())
        t0 = time.perf_counter()
        client.gather(client.map(_noop, range(tasks), pure=False))
        wall = time.perf_counter() - t0
        cpu = time.process_time() + sum(client.run(_cpu).values()) - cpu0
        return wall / tasks, cpu / tasks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", default="16G")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--json")
    args = ap.parse_args()
    spec = parse_spec({"workloads": ["highalloc"], "mem": [args.mem],
                       "seeds": list(range(args.seeds))})
    load0 = os.getloadavg()
    out = {"mem": args.mem, "cells": len(spec.cells()), "load_before": load0}
    for w in (1, 2):
        wall, cell_walls, cell_cpus, peaks = timed_sweep(spec, w)
        n = len(cell_walls)
        out[f"workers_{w}"] = {"wall_s": wall, "cells_per_s": n / wall,
                               "mean_cell_s": sum(cell_walls) / n,
                               "mean_cell_cpu_s": sum(cell_cpus) / n,
                               # CPUs the cells got on average: 2.0 is both cores
                               "cpus_used": sum(cell_cpus) / wall,
                               "peak_rss_mb": peaks}
        r = out[f"workers_{w}"]
        print(f"{w} worker(s): {n} cells in {wall:.1f} s = {n / wall:.3f} cells/s, mean cell "
              f"{r['mean_cell_s']:.2f} s wall / {r['mean_cell_cpu_s']:.2f} s CPU, CPUs the "
              f"cells got {r['cpus_used']:.2f}, peak RSS per worker "
              f"{', '.join(f'{p:.0f}' for p in peaks)} MB", flush=True)
    out["speedup_1_to_2"] = out["workers_2"]["cells_per_s"] / out["workers_1"]["cells_per_s"]
    out["scheduler_overhead_s"], out["scheduler_overhead_cpu_s"] = scheduler_overhead()
    out["load_after"] = os.getloadavg()
    # on an unloaded core a cell takes its CPU time (the 2-worker figure: with every core
    # busy, cells run a little slower than alone)
    cell_s = out["workers_2"]["mean_cell_cpu_s"]
    over = out["scheduler_overhead_cpu_s"]
    # a 10,000-cell grid, a core per worker: the cells spread over the workers while the
    # scheduler handles every task in turn, so it caps the rate at 1/overhead cells per second
    out["projection_10000_s"] = {w: max(10000 * cell_s / w, 10000 * over) for w in (1, 8, 64)}
    print(f"speedup 1 -> 2 workers: {out['speedup_1_to_2']:.2f}x; scheduler overhead "
          f"{out['scheduler_overhead_s'] * 1000:.2f} ms wall, {over * 1000:.2f} ms CPU per "
          f"cell; load average before {load0[0]:.1f}, after {out['load_after'][0]:.1f}")
    for w, s in out["projection_10000_s"].items():
        print(f"10,000 {args.mem} cells on {w} workers: {s / 3600:.2f} h")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
