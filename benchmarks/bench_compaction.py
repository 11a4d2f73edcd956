"""asv benchmarks of compaction and migration in simcore.

Target: a full m.compact() (compact_memory) of a 16 GiB machine fragmented in the mmtests
thpcompact pattern in <= 0.5 s under every strategy, scanning >= 10 million PFNs per second.
The track_ figures are deterministic (same seed, same work) and machine-independent.
"""
import time

import simcore
from simcore.metrics import compaction_metrics, delta
from workloads.fragment import thpcompact_pattern

STRATEGIES = ["legacy", "split", "folio"]


def _fragmented(strategy, mem="16G"):
    m = simcore.Machine(mem, seed=0, compaction=strategy)
    thpcompact_pattern(m)
    return m


class CompactMemory:
    """compact_memory on a 16 GiB thpcompact-fragmented machine, per strategy."""

    params = [STRATEGIES]
    param_names = ["strategy"]
    number = 1          # compaction changes the machine: one call per fresh setup
    repeat = (3, 10, 30.0)
    timeout = 300

    def setup(self, strategy):
        _fragmented(strategy, "64M").compact()        # load the compiled code outside timing
        self.m = _fragmented(strategy)

    def time_compact_memory(self, strategy):
        """Wall time of m.compact() (writing 1 to /proc/sys/vm/compact_memory)."""
        self.m.compact()

    def track_pfns_scanned_per_second(self, strategy):
        """Both scanners' PFNs per second of simulator wall time."""
        m = _fragmented(strategy)
        before = m.vmstat()
        t0 = time.perf_counter()
        m.compact()
        wall = time.perf_counter() - t0
        d = delta(m.vmstat(), before)
        return (d["compact_migrate_scanned"] + d["compact_free_scanned"]) / wall / 1e6

    track_pfns_scanned_per_second.unit = "M PFNs/s"


class CompactionOutcome:
    """Deterministic outcome of compact_memory per strategy (exact, machine-independent)."""

    params = [STRATEGIES]
    param_names = ["strategy"]
    timeout = 300

    def setup_cache(self):
        out = {}
        for strategy in STRATEGIES:
            m = _fragmented(strategy, "1G")
            before = m.vmstat()
            stats0 = m.migration_stats()
            m.compact()
            stats = {k: v - stats0[k] for k, v in m.migration_stats().items()}
            out[strategy] = compaction_metrics(delta(m.vmstat(), before), migration=stats)
            out[strategy]["score_after"] = m.fragmentation_score()
        return out

    def track_pages_migrated(self, out, strategy):
        return out[strategy]["pages_migrated"]

    track_pages_migrated.unit = "pages"

    def track_large_folio_split_rate(self, out, strategy):
        """Share of large folios split (not preserved) by migration; lower is better. 0 where
        no large folio was handled."""
        whole = out[strategy]["large_folios_migrated_whole"]
        split = out[strategy]["large_folios_split"]
        return split / (whole + split) if whole + split else 0.0

    track_large_folio_split_rate.unit = "fraction"

    def track_fragmentation_score_after(self, out, strategy):
        """The node's proactive-compaction score after compact_memory; lower is better."""
        return out[strategy]["score_after"]

    track_fragmentation_score_after.unit = "percent"
