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

The other subsystems (swap, zswap, KSM, memory-failure, khugepaged, NUMA balancing) reuse the
fixed and copy costs where they migrate or copy, and add (order-of-magnitude figures, to be
replaced by `foliobench live calibrate` measurements like the others):
- split_fixed_ns = 2000, split_ns_per_page = 50: __folio_split() unmaps the folio (one TLB
  flush, like migration's fixed part), rewrites every struct page and remaps.
- swap_folio_fixed_ns = 5000: reclaiming one folio to swap: rmap walk and unmap with its TLB
  flush, swap-cache insertion and one bio, paid once per folio whatever its size.
- compress_ns_per_page = 1500, decompress_ns_per_page = 500: lzo-rle on 4 KiB at about 2.7
  GB/s and 8 GB/s, what zram and zswap pay per page on swap-out and swap-in.
- swapin_fault_ns = 1000: one swap-in fault (swap cache lookup, PTE install) per folio.
- ksm_merge_ns_per_page = 1000: KSM's checksum, memcmp against the stable tree and
  replace_page() with its TLB flush, per merged page.
"""
import numpy as np

DEFAULT_COSTS = {
    "migrate_folio_fixed_ns": 2000.0,
    "copy_ns_per_page": 400.0,
    "scan_ns_per_pfn": 10.0,
    "writeback_wait_ns": 1_000_000.0,
    "split_fixed_ns": 2000.0,
    "split_ns_per_page": 50.0,
    "swap_folio_fixed_ns": 5000.0,
    "compress_ns_per_page": 1500.0,
    "decompress_ns_per_page": 500.0,
    "swapin_fault_ns": 1000.0,
    "ksm_merge_ns_per_page": 1000.0,
}
COST_FIXED = 0
COST_COPY_PAGE = 1
COST_SCAN_PFN = 2
COST_WRITEBACK_WAIT = 3
COST_INDEX = {name: i for i, name in enumerate(DEFAULT_COSTS)}


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


def split_ns(costs, order):
    """Modelled time to split one folio of `order` (0 for order 0: nothing to split)."""
    if order == 0:
        return 0.0
    return float(costs[COST_INDEX["split_fixed_ns"]]
                 + costs[COST_INDEX["split_ns_per_page"]] * (1 << order))
