"""foliobench workloads: parameterized sequences of memory operations run against a backend.

    workloads.run("thp-heavy", strategies=["legacy", "folio"], mem="16G", seed=0) -> DataFrame
"""
from . import cma_reservations, highalloc, hotunplug_cycles, pagecache_churn, thp_heavy  # noqa
from .base import Param, Workload, get_workload, resolve_params, run, run_one, workloads

__all__ = ["run", "run_one", "workloads", "get_workload", "resolve_params", "Workload", "Param"]
