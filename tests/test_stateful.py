"""Stateful property test: hypothesis drives every public Machine operation in any order, under
each compaction strategy and profile, and after every step checks m.check() and the page ledger
of foliobench.soak (allocated + free = managed from mem_map and the counters; swapped pages
against the swap records; poison; event counters (not the gauges) never decrease; compact_success +
compact_fail = compact_stall; pgmigrate_* = migration_stats()). A call refused with ValueError
must leave the machine's digest unchanged.

Budget: the "ci" hypothesis profile (default) stays well under a minute; set
FOLIOBENCH_HYPOTHESIS=soak for a long run (thousands of steps).
"""
import os

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from foliobench import soak

settings.register_profile("ci", max_examples=12, stateful_step_count=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("soak", max_examples=400, stateful_step_count=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("FOLIOBENCH_HYPOTHESIS", "ci")

pick = st.integers(0, 1 << 30)
picks = st.lists(pick, min_size=1, max_size=6).map(tuple)
order = st.sampled_from(soak.ORDERS)


class MachineOperations(RuleBasedStateMachine):
    """One Machine (and a second NUMA node) under random operations."""

    @initialize(strategy=st.sampled_from(soak.STRATEGIES), profile=st.sampled_from(soak.PROFILES),
                layout=st.integers(0, len(soak.LAYOUTS) - 1), seed=st.integers(0, 2**31),
                reclaim=st.booleans())
    def build(self, strategy, profile, layout, seed, reclaim):
        self.run = soak.Runner(soak.Config(strategy, profile, layout, seed, reclaim))

    def _do(self, *op):
        m = self.run.m
        before = m.digest()
        if self.run.apply(op):
            assert m.digest() == before, f"refused {self.run.log[-1]} changed the digest"

    @rule(o=order, mt=st.integers(0, 2), kind=st.integers(0, 7), flag=st.integers(0, 11))
    def alloc(self, o, mt, kind, flag):
        self._do("alloc", o, mt, kind, flag)

    @rule(count=st.integers(0, 3000), o=order, mt=st.integers(0, 2), kind=st.integers(0, 7))
    def alloc_many(self, count, o, mt, kind):
        self._do("alloc_many", count, o, mt, kind)

    @rule(count=st.integers(1, 200), o=st.sampled_from((0, 1, 2, 3, 3, 4, 9)))
    def atomic(self, count, o):     # GFP_ATOMIC: highatomic reserves made and used
        self._do("atomic", count, o)

    @rule(p=pick)
    def free(self, p):
        self._do("free", p)

    @rule(ps=picks)
    def free_many(self, ps):
        self._do("free_many", ps)

    @rule(p=pick, new_order=st.sampled_from((0, 1, 2, 4, 9)))
    def split(self, p, new_order):
        self._do("split", p, new_order)

    @rule()
    def compact(self):
        self._do("compact")

    @rule(ms=st.sampled_from((10, 500, 1000, 40000)))
    def tick(self, ms):
        self._do("tick", ms)

    @rule(ps=picks, mode=st.integers(0, 2))
    def migrate(self, ps, mode):
        self._do("migrate", ps, mode)

    @rule(nr=st.sampled_from((1, 512, 1024, 2048)))
    def cma_alloc(self, nr):
        self._do("cma_alloc", nr)

    @rule(p=pick)
    def cma_release(self, p):
        self._do("cma_release", p)

    @rule(block=st.integers(0, 15))
    def offline_memory_block(self, block):
        self._do("offline", block)

    @rule(block=st.integers(0, 15))
    def online_memory_block(self, block):
        self._do("online", block)

    @rule(size=st.integers(0, len(soak.SWAP_SIZES_MB) - 1))
    def swapon(self, size):
        self._do("swapon", size)

    @rule(ps=picks)
    def swap_out(self, ps):
        self._do("swap_out", ps)

    @rule(p=pick)
    def swap_in(self, p):
        self._do("swap_in", p)

    @rule(on=st.integers(0, 1))
    def zswap_enable(self, on):
        self._do("zswap_enable", on)

    @rule(a=pick, b=pick)
    def ksm_merge(self, a, b):
        self._do("ksm_merge", a, b)

    @rule(p=pick, offset=pick)
    def memory_failure(self, p, offset):
        self._do("memory_failure", p, offset)

    @rule(p=pick)
    def collapse(self, p):
        self._do("collapse", p)

    @rule(ps=picks)
    def numa_migrate(self, ps):
        self._do("numa_migrate", ps)

    @rule(ps=picks, flag=st.integers(0, len(soak.FLAGS) - 1), on=st.integers(0, 1))
    def set_flags(self, ps, flag, on):
        self._do("set_flags", ps, flag, on)

    @rule(count=st.integers(1, 300), orders=st.sets(st.sampled_from((2, 4, 5, 9)), max_size=2))
    def fault_anon(self, count, orders):
        self._do("fault_anon", count, tuple(sorted(orders)))

    @rule(n=st.integers(0, 3))
    def cpu(self, n):               # Machine.cpu = n: the task moves to another CPU
        self._do("on_cpu", n)

    @rule()
    def drain_all_pages(self):
        self._do("drain")
    @rule(ps=picks)
    def touch(self, ps):
        self._do("touch", ps)

    @rule(nr=st.sampled_from((1, 32, 512, 4096)))
    def reclaim_pages(self, nr):
        self._do("reclaim_pages", nr)

    @rule(what=st.integers(0, len(soak.MISUSE) - 1), a=pick, b=pick)
    def misuse(self, what, a, b):
        self._do("misuse", what, a, b)

    @invariant()
    def ledger(self):
        if hasattr(self, "run"):
            self.run.verify()


MachineOperations.TestCase.settings = settings.get_profile(PROFILE)
TestMachineOperations = MachineOperations.TestCase


def test_every_public_operation_has_a_rule():
    """A new public Machine method that changes state needs a rule here and in the soak."""
    import simcore
    queries = {"folio", "folios", "handles_of", "handle_pfn", "zones", "zoneinfo", "nr_free",
               "pageblock_map", "nr_pageblocks", "free_pages", "allocated_pages",
               "managed_pages", "vmstat", "mthp_stats", "buddyinfo", "pagetypeinfo",
               "extfrag_index", "unusable_index", "fragmentation_index", "unusable_free_index",
               "fragmentation_score", "check", "digest", "migration_stats", "memory_blocks",
               "subsystem_stats", "pcp_pages", "handle_generation", "lru_sizes",
               # tracepoints (issue 14): observe the operations, change no memory state
               "trace_events", "trace_records", "trace_lost", "trace_page_events"}
    constructors = {"from_snapshot"}       # builds a new machine; changes none
    public = {n for n in dir(simcore.Machine) if not n.startswith("_")} - queries - constructors
    rules = {n for n in dir(MachineOperations) if not n.startswith("_")}
    assert public <= rules, sorted(public - rules)
