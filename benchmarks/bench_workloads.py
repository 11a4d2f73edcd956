"""Deterministic outcome of every workload at its quick size, per compaction strategy.

The simulator is deterministic, so these track_ values are exact and machine-independent: the
CI gate (benchmarks/gate.py) compares them with results/baseline.json and fails on any change.
asv assumes lower is better (asv issue #1617), so every figure here is one where lower is
better: failure and split rates, modelled nanoseconds per migrated page.
"""
import math

import workloads

STRATEGIES = ["legacy", "split", "folio"]
SEED = 0


def outcomes():
    """{(workload, strategy): result row} for every workload at quick size, seed 0."""
    out = {}
    for name in workloads.workloads():
        for strategy in STRATEGIES:
            out[(name, strategy)] = workloads.run_one(name, strategy, seed=SEED, quick=True)
    return out


def _one_minus(value):
    return 1.0 - value if not math.isnan(value) else math.nan


class WorkloadOutcome:
    """Quick-size workloads (1 GiB) under each strategy; exact figures, lower is better."""

    params = [workloads.workloads(), STRATEGIES]
    param_names = ["workload", "strategy"]
    timeout = 900

    def setup_cache(self):
        rows = outcomes()
        return {f"{w}|{s}": row for (w, s), row in rows.items()}

    def track_highorder_failure_rate(self, rows, workload, strategy):
        """Share of the workload's high-order requests not granted (1 - highorder_success)."""
        return _one_minus(rows[f"{workload}|{strategy}"]["highorder_success"])

    track_highorder_failure_rate.unit = "fraction"

    def track_compaction_failure_rate(self, rows, workload, strategy):
        """compact_fail / compact_stall (1 - mmtests' compaction efficiency); n/a without
        direct compaction."""
        return _one_minus(rows[f"{workload}|{strategy}"]["compaction_success_rate"])

    track_compaction_failure_rate.unit = "fraction"

    def track_migration_ns_per_page(self, rows, workload, strategy):
        """Modelled migration time per migrated base page (inverse of the throughput)."""
        row = rows[f"{workload}|{strategy}"]
        if not row["pages_migrated"]:
            return math.nan
        return row["migration_time_s"] * 1e9 / row["pages_migrated"]

    track_migration_ns_per_page.unit = "ns/page"

    def track_large_folio_split_rate(self, rows, workload, strategy):
        """Share of the large folios migration handled that were split rather than moved whole
        (1 - large-folio preservation)."""
        return _one_minus(rows[f"{workload}|{strategy}"]["large_folio_preservation"])

    track_large_folio_split_rate.unit = "fraction"
