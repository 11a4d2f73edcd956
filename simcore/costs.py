"""The cost model: modelled time of what the kernel does, in nanoseconds. All defaults live here.

Migrating a folio costs a fixed part (isolate, unmap with its TLB flush, rmap walk, remap,
putback) paid once per folio whatever its size, plus copying its bytes. A large folio therefore
pays the fixed part once where 2^order base pages pay it 2^order times.

Sources of the defaults (the live backend's `foliobench live calibrate` measures them on a
real kernel and writes a replacement):
- migrate_folio_fixed_ns = 2000: the kernel's compact_memory on a 24 GiB VM migrated about
  38,000 base pages and scanned 1.3 million PFNs in about 0.1 s (kernel-mm-notes): about
  2.6 us per migrated page all in; take away the copy and the scanning and about 2 us remain.
- copy_ns_per_page = 400: copying 4 KiB at about 10 GB/s (one core's memcpy bandwidth).
- scan_ns_per_pfn = 10: scanner time per PFN looked at (the same measurement: 1.3 million PFNs
  in well under the 0.1 s total).
- writeback_wait_ns = 1_000_000: a synchronous migration waiting for one folio's writeback (a
  1 ms device write).
"""
import numpy as np

DEFAULT_COSTS = {
    "migrate_folio_fixed_ns": 2000.0,
    "copy_ns_per_page": 400.0,
    "scan_ns_per_pfn": 10.0,
    "writeback_wait_ns": 1_000_000.0,
}
COST_FIXED = 0
COST_COPY_PAGE = 1
COST_SCAN_PFN = 2
COST_WRITEBACK_WAIT = 3


def cost_array(overrides=None):
    """The cost model as the float64 array compiled code reads; unknown names raise ValueError."""
    costs = dict(DEFAULT_COSTS)
    for name, value in (overrides or {}).items():
        if name not in costs:
            raise ValueError(f"cost {name!r} is unknown; allowed: {', '.join(DEFAULT_COSTS)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"cost {name} = {value!r} must be a non-negative number")
        costs[name] = float(value)
    return np.array(list(costs.values()), dtype=np.float64)


def migration_ns(costs, order):
    """Modelled time to migrate one folio of `order`."""
    return costs[COST_FIXED] + costs[COST_COPY_PAGE] * (1 << order)
