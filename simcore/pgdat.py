"""The node: every array of simulated state, bundled for compiled code (struct pglist_data).

Compiled functions take one `pgdat` argument (a numba StructRef) instead of a dozen arrays, which
keeps a call from Python cheap. The arrays stay numpy arrays, readable from Python as attributes.

Layout of the small tables (column indices are module constants):
- zones[z, Z_*]: one row per zone (struct zone): span, managed pages, free counters, watermarks,
  lowmem_reserve, and compaction's per-zone state.
- free_area[z, order, migratetype, FA_*]: head and tail PFN of each buddy list and its length.
- node[N_*]: node-wide state: the folio-handle free chain, pages per folio kind, simulated clock,
  kcompactd state.
"""
import numpy as np
from numba.core import types
from numba.experimental import structref

# zones[] columns
Z_START = 0            # zone_start_pfn
Z_END = 1              # zone_end_pfn (exclusive)
Z_MANAGED = 2          # managed_pages
Z_FREE = 3             # NR_FREE_PAGES (isolated free pages are not counted, as in the kernel)
Z_FREE_CMA = 4         # NR_FREE_CMA_PAGES
Z_WMARK_MIN = 5
Z_WMARK_LOW = 6
Z_WMARK_HIGH = 7
Z_WMARK_PROMO = 8
Z_LOWMEM_RESERVE = 9   # three columns: lowmem_reserve[highest_zoneidx] for zone idx 0..2
Z_CMA_PAGES = 12       # cma_pages: pages in MIGRATE_CMA blocks
Z_COMPACT_CACHED_MIGRATE_ASYNC = 13   # compact_cached_migrate_pfn[0]
Z_COMPACT_CACHED_MIGRATE_SYNC = 14    # compact_cached_migrate_pfn[1]
Z_COMPACT_CACHED_FREE = 15            # compact_cached_free_pfn
Z_COMPACT_CONSIDERED = 16
Z_COMPACT_DEFER_SHIFT = 17
Z_COMPACT_ORDER_FAILED = 18
Z_COMPACT_BLOCKSKIP_FLUSH = 19
Z_NR_ISOLATE_PAGEBLOCK = 20
NR_ZONE_FIELDS = 21

# free_area[] last axis
FA_HEAD = 0
FA_TAIL = 1
FA_COUNT = 2

# node[] fields
N_HANDLE_FREE = 0       # first free folio handle, -1 when none is left
N_HANDLES_AVAIL = 1     # how many handles are free
N_NR_FOLIOS = 2
N_CLOCK_NS = 3          # simulated time
N_KCOMPACTD_NEXT_NS = 4
N_KCOMPACTD_BACKOFF = 5
N_KIND_PAGES = 8        # + folio kind: pages held by folios of that kind
NR_NODE_FIELDS = 16

_FIELDS = (
    "mem_map", "pageblock_flags", "free_area", "zones", "node", "folio_pfn", "events",
    "mthp_stats", "fallbacks", "kind_is_lru", "kind_is_migratable",
)


@structref.register
class PgDataType(types.StructRef):
    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class PgData(structref.StructRefProxy):
    """The node's arrays: one argument for compiled code, plain numpy attributes for Python
    (the same buffers: what compiled code writes, Python reads)."""

    def __new__(cls, *arrays):
        obj = structref.StructRefProxy.__new__(cls, *arrays)
        obj.__dict__.update(zip(_FIELDS, arrays))
        return obj


structref.define_proxy(PgData, PgDataType, list(_FIELDS))


def free_handle_code(next_free):
    """How a free slot of folio_pfn encodes the next free handle (always negative)."""
    return -2 - next_free


def grown_handle_table(folio_pfn, node, minimum):
    """A folio_pfn table with room for at least `minimum` more handles; chains the new slots in."""
    old = len(folio_pfn)
    new = max(2 * old, old + minimum, 1024)
    table = np.empty(new, dtype=np.int64)
    table[:old] = folio_pfn
    nxt = np.arange(old + 1, new + 1, dtype=np.int64)
    nxt[-1] = node[N_HANDLE_FREE]
    table[old:] = free_handle_code(nxt)
    node[N_HANDLE_FREE] = old
    node[N_HANDLES_AVAIL] += new - old
    return table
