"""Deterministic operation traces: a fixed seeded sequence of every Machine operation kind, per
compaction strategy and kernel profile, and the end state it leaves.

The five workloads exercise a few paths heavily; these traces touch every operation (alloc,
free, split, compact, tick, migrate, CMA, memory hot(un)plug, swap, zswap, KSM, memory failure,
collapse, NUMA migration, page flags, anon faults, refused misuse), so any change of simulated
behaviour moves the end-state digest or a counter here. The CI gate (benchmarks/gate.py)
compares every value with results/baseline.json and names the trace and counter that moved.

asv's track_ values must be numbers: a digest is given as its first 12 hex digits read as an
integer (exact in a float64). Lower is not better for these: any move is a change.

asv sees one value per (strategy, profile): track_state, every value of VALUES folded into one
digest, so an asv pass runs 9 benchmark processes instead of 225 (one per strategy, profile and
value; most of the test suite's asv time). The gate's --direct mode (and the baseline) records
each value on its own, as track_value(strategy, profile, value) from gate_values(), so a move
is named by the counter that moved.
"""
import hashlib

import numpy as np

# Literal, not read from foliobench.soak: asv runs each (strategy, profile) combination in a
# process of its own, and importing simcore there would cost a second or two each.
# setup_cache() checks that these equal the soak's lists.
STRATEGIES = ["legacy", "split", "folio"]
PROFILES = ["linux-6.1", "linux-6.12", "linux-6.18"]
TRACE_SEED = 12
TRACE_LENGTH = 600
# What each trace reports: the digests, then counters that name the subsystem that moved.
VALUES = ["digest", "node1_digest", "allocated_pages", "free_pages", "folios", "refused",
          "violations", "pgmigrate_success", "pgmigrate_fail", "compact_stall",
          "compact_success", "compact_daemon_wake", "thp_split_page", "thp_fault_alloc",
          "pswpout", "pswpin", "zswpout", "swap_used", "cma_alloc_success", "cma_alloc_fail",
          "numa_pages_migrated", "ksm_pages_shared", "memory_failure_recovered",
          "thp_collapse_alloc", "migration_time_ns"]


def trace_ops():
    """The trace: one operation of every kind (every misuse too), then TRACE_LENGTH random
    ones, all from one seeded Generator; the same for every strategy and profile."""
    from foliobench import soak
    rng = np.random.default_rng(TRACE_SEED)
    draw = soak.Draws(rng)
    ops = [soak.draw_op(draw, name) for name in soak.OP_NAMES if name != "misuse"]
    ops += [("misuse", i, draw.pick(), draw.pick()) for i in range(len(soak.MISUSE))]
    return ops + soak.generate(rng, TRACE_LENGTH)


def digest_number(hexdigest):
    return int(hexdigest[:12], 16)


def state_number(values):
    """Every value of a trace's end state folded into one number (the first 12 hex digits of a
    SHA-256 over the values by name): any value that moves moves it."""
    text = repr([(name, float(values[name])) for name in VALUES])
    return digest_number(hashlib.sha256(text.encode()).hexdigest())


def run_trace(strategy, profile, ops=None):
    """{value name: number} at the end of the trace on a fresh machine of `strategy` and
    `profile` (soak layout 0: 64 MiB with a CMA area and 8 MiB memory blocks)."""
    from foliobench import soak
    run = soak.Runner(soak.Config(strategy, profile, layout=0, seed=TRACE_SEED))
    refused = violations = 0
    for op in trace_ops() if ops is None else ops:
        try:
            refused += bool(run.apply(op))
        except soak.Violation:
            violations += 1           # a simulator bug; counted so that fixing it shows here
    m = run.m
    vm = m.vmstat()
    sub = m.subsystem_stats()
    out = {
        "digest": digest_number(m.digest()), "node1_digest": digest_number(run.node1.digest()),
        "allocated_pages": m.allocated_pages(), "free_pages": m.free_pages(),
        "folios": len(m.folios()["pfn"]), "refused": refused, "violations": violations,
        "swap_used": sub.get("swap/used", 0), "ksm_pages_shared": sub["ksm/pages_shared"],
        "memory_failure_recovered": sub["memory_failure/recovered"],
        "migration_time_ns": m.migration_stats()["time_ns"],
    }
    for name in VALUES:
        if name not in out:
            out[name] = vm[name]
    return out


class TraceOutcome:
    """End state of the deterministic operation trace per strategy and profile (exact)."""

    params = [STRATEGIES, PROFILES]
    param_names = ["strategy", "profile"]
    timeout = 600
    # gate.direct() records gate_values() under this name, one value per counter
    gate_name = "track_value"

    def setup_cache(self):
        from foliobench import soak
        if STRATEGIES != list(soak.STRATEGIES) or PROFILES != list(soak.PROFILES):
            raise RuntimeError("bench_traces: STRATEGIES/PROFILES differ from foliobench.soak's")
        ops = trace_ops()
        return {f"{s}|{p}": run_trace(s, p, ops) for s in STRATEGIES for p in PROFILES}

    def track_state(self, traces, strategy, profile):
        """Every end-state value of the trace folded into one number (state_number())."""
        return state_number(traces[f"{strategy}|{profile}"])

    track_state.unit = "value"

    def gate_values(self, traces, strategy, profile):
        """{value name: number}: the end-state values one by one (digest prefixes and
        counters), for the gate's --direct mode; not an asv benchmark (no track_ prefix)."""
        return traces[f"{strategy}|{profile}"]
