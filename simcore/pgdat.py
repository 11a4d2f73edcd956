"""The node: every array of simulated state, bundled for compiled code (struct pglist_data).

Compiled functions take one `pgdat` argument (a numba StructRef) instead of a dozen arrays, which
keeps a call from Python cheap. The arrays stay numpy arrays, readable from Python as attributes.

Layout of the small tables (column indices are module constants):
- zones[z, Z_*]: one row per zone (struct zone): span, managed pages, free counters, watermarks,
  lowmem_reserve, and compaction's per-zone state.
- free_area[z, order, migratetype, FA_*]: head and tail PFN of each buddy list and its length.
- pcp: the per-CPU page lists and their settings (simcore.pcp).
- node[N_*]: node-wide state: the folio-handle free chain, pages per folio kind, simulated clock,
  kcompactd state.
"""
from collections import namedtuple

import numba
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
Z_NR_RESERVED_HIGHATOMIC = 21   # nr_reserved_highatomic: pages in MIGRATE_HIGHATOMIC blocks
Z_FREE_HIGHATOMIC = 22          # nr_free_highatomic: free pages on the HIGHATOMIC lists
# the part of nr_reserved_highatomic that stands for blocks no longer HIGHATOMIC: offlined, or
# given the caller's migratetype by an isolation undo before 6.17 (the kernel never takes
# them out of the count; simcore.highatomic.check() needs to know them)
Z_STALE_HIGHATOMIC = 23
NR_ZONE_FIELDS = 24

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
# current->capture_control of the one task we model (a direct compactor): 0 when none.
N_CAPTURE_ORDER = 6     # cc->order + 1 while a direct compaction may capture
N_CAPTURE_PFN = 7       # capc->page: the captured block's PFN + 1, 0 while none
N_CAPTURE_WHERE = 15    # cc->zone * MIGRATE_TYPES + cc->migratetype
N_KIND_PAGES = 8        # + folio kind: pages held by folios of that kind
N_HIGHATOMIC_POLICY = 16    # the profile's highatomic policy (simcore.highatomic)
N_CAPTURE_POLICY = 17       # the profile's capture policy (simcore.page_alloc.CAPTURE_POLICIES)
N_ISOLATION_POLICY = 18     # the profile's isolation policy (simcore.page_isolation)
N_DEFERRED_SPLIT_POLICY = 19    # the profile's deferred_split policy (simcore.deferred_split)
# the node fields a profile sets once at build: kept when a twin rebuilds the node (snapshot)
POLICY_FIELDS = (N_HIGHATOMIC_POLICY, N_CAPTURE_POLICY, N_ISOLATION_POLICY,
                 N_DEFERRED_SPLIT_POLICY)
NR_NODE_FIELDS = 20

from llvmlite import ir
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic, overload_attribute

from . import vm_event
from .mmzone import MIGRATE_TYPES, NR_KINDS, NR_PAGE_ORDERS, PAGE_DTYPE, ZONE_NAMES

NR_ZONES = len(ZONE_NAMES)
VARIABLE = -1   # a dimension that differs between machines (memory size, handle table)
# The node's arrays: name, dtype, shape.
ARRAYS = (
    ("mem_map", PAGE_DTYPE, (VARIABLE,)),
    ("pageblock_flags", np.uint8, (VARIABLE,)),
    ("free_area", np.int64, (NR_ZONES, NR_PAGE_ORDERS, MIGRATE_TYPES, 3)),
    ("zones", np.int64, (NR_ZONES, NR_ZONE_FIELDS)),
    ("node", np.int64, (NR_NODE_FIELDS,)),
    ("folio_pfn", np.int64, (VARIABLE,)),
    ("events", np.int64, (vm_event.NR_VM_EVENTS,)),
    ("mthp_stats", np.int64, (NR_PAGE_ORDERS, vm_event.NR_MTHP_STATS)),
    ("fallbacks", np.int64, (MIGRATE_TYPES, 2)),
    ("kind_is_lru", np.uint8, (NR_KINDS,)),
    ("kind_is_migratable", np.uint8, (NR_KINDS,)),
    ("pcp", np.int64, (VARIABLE,)),        # per-CPU page lists (layout in simcore.pcp)
    ("trace_log", np.int64, (VARIABLE,)),  # tracepoint log (simcore.tracelog): migrate_stats
)


@structref.register
class PgDataType(types.StructRef):
    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class PgData(structref.StructRefProxy):
    """The node's arrays: plain numpy attributes for Python, one cheap argument for compiled code.

    Compiled code gets `pgdat.arrays`, a PgView: a small tuple of the arrays' addresses and
    variable lengths, passed by value, whose attributes (pgdat.mem_map, ...) are unmanaged views
    of the same buffers (numba.carray). Managed arrays, or a reference-counted struct, would take
    and drop references at every call and field load; those atomic operations cost more than
    the allocator's own work. The Python object keeps the arrays alive."""

    def __new__(cls, *arrays):
        if len(arrays) != len(ARRAYS):
            raise TypeError(f"PgData takes {len(ARRAYS)} arrays")
        for arr, (name, dtype, shape) in zip(arrays, ARRAYS):
            if arr.dtype != np.dtype(dtype) or arr.ndim != len(shape) \
                    or not arr.flags.c_contiguous \
                    or any(want not in (VARIABLE, got) for want, got in zip(shape, arr.shape)):
                raise TypeError(f"pgdat.{name} must be a C-contiguous {np.dtype(dtype)} array "
                                f"of shape {shape}, not {arr.dtype} {arr.shape}")
        addrs = tuple(arr.ctypes.data for arr in arrays)
        lengths = (len(arrays[0]), len(arrays[1]), len(arrays[5]), len(arrays[11]),
                   len(arrays[12]))
        obj = structref.StructRefProxy.__new__(cls, addrs, lengths)
        obj.__dict__.update((name, arr) for (name, _, _), arr in zip(ARRAYS, arrays))
        # the same addresses and lengths once more, in one int64 block whose address is
        # `view`: the hot single-call entry points take that one integer (view_at() rebuilds
        # the PgView), since unboxing an int costs a fraction of unboxing the StructRef
        block = np.array(addrs + lengths, dtype=np.int64)
        obj.__dict__["_view_block"] = block
        obj.__dict__["view"] = block.ctypes.data
        return obj

    def replace(self, **arrays):
        """A PgData with some arrays swapped (e.g. a grown handle table), the rest shared."""
        return PgData(*(arrays.get(name, self.__dict__[name]) for name, _, _ in ARRAYS))


structref.define_proxy(PgData, PgDataType, ["addrs", "lengths"])

PgView = namedtuple("PgView", ["addrs", "lengths"])


@overload_attribute(PgDataType, "arrays")
def _pgdata_arrays(pgdat):
    def arrays(pgdat):
        return PgView(pgdat.addrs, pgdat.lengths)
    return arrays


@intrinsic
def _voidptr(typingctx, addr):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(nbtypes.voidptr))
    return nbtypes.voidptr(nbtypes.int64), codegen


@intrinsic
def prefetchw(typingctx, arr, index):
    """prefetchw() (include/linux/prefetch.h): start fetching the cache line of arr[index] for
    writing. A hint to the CPU only (llvm.prefetch: no effect on any value), so that the misses
    of a batch overlap instead of stalling one after another; `index` must lie inside `arr`."""
    if not isinstance(arr, nbtypes.Array) or arr.ndim != 1 \
            or not isinstance(index, nbtypes.Integer):
        return None

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], idxty, nbtypes.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [idx])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        # rw 1 (write), locality 3 (keep in all cache levels), cache type 1 (data)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()
    return nbtypes.void(arr, index), codegen


VIEW_BLOCK_LEN = 18
assert len(ARRAYS) + 5 == VIEW_BLOCK_LEN, "view_at() spells out every address and length"


@numba.njit(cache=True, nogil=True)
def view_at(addr):
    """The PgView of the PgData whose `view` is `addr` (its block: 13 addresses, 5 lengths)."""
    b = numba.carray(_voidptr(addr), VIEW_BLOCK_LEN, np.int64)
    return PgView((b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                   b[12]), (b[13], b[14], b[15], b[16], b[17]))


def _define_view(index, name, dtype, shape):
    if shape[0] == VARIABLE:
        which = {0: 0, 1: 1, 5: 2, 11: 3, 12: 4}[index]

        def view(pgdat):
            return numba.carray(_voidptr(pgdat.addrs[index]), pgdat.lengths[which], dtype)
    else:
        def view(pgdat):
            return numba.carray(_voidptr(pgdat.addrs[index]), shape, dtype)

    @overload_attribute(nbtypes.BaseNamedTuple, name)
    def _attribute(pgdat):
        if getattr(pgdat, "instance_class", None) is PgView:
            return view
        return None


for _index, (_name, _dtype, _shape) in enumerate(ARRAYS):
    _define_view(_index, _name, _dtype, _shape)


def free_handle_code(next_free):
    """How a free slot of folio_pfn encodes the next free handle (always negative)."""
    return -2 - next_free


HANDLE_CHUNK = 1 << 16


def chain_free_handles(table, start, last_next):
    """Make slots start.. of `table` free handles, each naming the next and the last one
    `last_next`; filled a chunk at a time, so that no temporary of the table's size is made
    (a twin's table holds millions of handles)."""
    end = len(table)
    for lo in range(start, end, HANDLE_CHUNK):
        hi = min(lo + HANDLE_CHUNK, end)
        table[lo:hi] = free_handle_code(np.arange(lo + 1, hi + 1, dtype=np.int64))
    if end > start:
        table[end - 1] = free_handle_code(last_next)


def grown_handle_table(folio_pfn, node, minimum):
    """A folio_pfn table with room for at least `minimum` more handles; chains the new slots in."""
    old = len(folio_pfn)
    new = max(2 * old, old + minimum, 1024)
    table = np.empty(new, dtype=np.int64)
    table[:old] = folio_pfn
    chain_free_handles(table, old, node[N_HANDLE_FREE])
    node[N_HANDLE_FREE] = old
    node[N_HANDLES_AVAIL] += new - old
    return table
