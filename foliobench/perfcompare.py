"""A pyperf benchmark of one workload under one compaction strategy (used by `foliobench
compare`, which runs it once per strategy). pyperf spawns worker processes running this same
module, calibrates the loop count, runs warmups and writes its JSON with -o.

    python -m foliobench.perfcompare --strategy folio --workload thp-heavy -o folio.json --fast
"""
import time

import pyperf

from workloads.base import run_one


def _add_cmdline_args(cmd, args):
    cmd.extend(["--strategy", args.strategy, "--workload", args.workload, "--seed",
                str(args.seed)])


def time_workload(loops, workload, strategy, seed):
    """Wall time of `loops` quick runs of the workload (machine build included)."""
    t0 = time.perf_counter()
    for _ in range(loops):
        run_one(workload, strategy, seed=seed, quick=True)
    return time.perf_counter() - t0


def main():
    runner = pyperf.Runner(add_cmdline_args=_add_cmdline_args)
    runner.argparser.add_argument("--strategy", required=True)
    runner.argparser.add_argument("--workload", default="thp-heavy")
    runner.argparser.add_argument("--seed", type=int, default=0)
    args = runner.parse_args()
    runner.metadata["foliobench_workload"] = args.workload
    runner.metadata["foliobench_strategy"] = args.strategy
    runner.bench_time_func(args.workload, time_workload, args.workload,
                           args.strategy, args.seed)


if __name__ == "__main__":
    main()
