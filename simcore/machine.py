"""Machine: one simulated NUMA node of physical memory and the public API over it.

    m = Machine(mem="16G", seed=0)
    pfn = m.alloc(9, migratetype="movable", kind="anon")    # None where the kernel would fail
    m.free(pfn)

Sizing follows mm/page_alloc.c: zones DMA32 (the first 4 GiB), Normal (the rest) and an optional
ZONE_MOVABLE at the top; min_free_kbytes from calculate_min_free_kbytes() (raised as khugepaged's
set_recommended_min_free_kbytes() does when THP is enabled); watermarks from
__setup_per_zone_wmarks(); lowmem_reserve from setup_per_zone_lowmem_reserve().
"""
import hashlib

import numba
import numpy as np

from . import boost as _boost
from . import compaction as _compaction
from . import (
    debug_vm,
    freescan,
    highatomic,
    khugepaged,
    ksm,
    memory_failure,
    migrate,
    numa,
    page_alloc,
    page_isolation,
    pcp,
    swap,
    tracelog,
    vmscan,
    vmstat,
    zswap,
)
from . import deferred_split as _deferred_split
from . import gfp as _gfp
from . import handles as _handles
from . import profiles as _profiles
from . import tracepoints as _tracepoints
from . import vm_event as ev
from .costs import cost_array
from .mmzone import (
    DMA32_LIMIT_BYTES,
    FALLBACK_TABLE,
    HPAGE_PMD_ORDER,
    KIND_ANON,
    KIND_FILE,
    KIND_IS_LRU,
    KIND_IS_MIGRATABLE,
    KIND_NAMES,
    KIND_PAGETABLE,
    KIND_SHMEM,
    KIND_SLAB,
    KINDS,
    LOWMEM_RESERVE_RATIO,
    MAX_PAGE_ORDER,
    MIGRATE_CMA,
    MIGRATE_HIGHATOMIC,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_TYPES,
    MIGRATETYPE_NAMES,
    NR_KINDS,
    NR_PAGE_ORDERS,
    PAGE_BUDDY,
    PAGE_DTYPE,
    PAGE_FLAG_NAMES,
    PAGE_HEAD,
    PAGE_SHIFT,
    PAGE_SIZE,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    PB_MIGRATETYPE_MASK,
    PG_HWPOISON,
    ZONE_DMA32,
    ZONE_MOVABLE,
    ZONE_NAMES,
    ZONE_NORMAL,
)
from .pgdat import (
    ARRAYS as PGDAT_ARRAYS,
)
from .pgdat import (
    FA_COUNT,
    N_CAPTURE_POLICY,
    N_DEFERRED_SPLIT_POLICY,
    N_HANDLE_FREE,
    N_HANDLES_AVAIL,
    N_HIGHATOMIC_POLICY,
    N_ISOLATION_POLICY,
    N_KIND_PAGES,
    N_NR_FOLIOS,
    NR_NODE_FIELDS,
    NR_ZONE_FIELDS,
    Z_CMA_PAGES,
    Z_COMPACT_CACHED_FREE,
    Z_END,
    Z_FREE,
    Z_FREE_CMA,
    Z_FREE_HIGHATOMIC,
    Z_LOWMEM_RESERVE,
    Z_MANAGED,
    Z_NR_RESERVED_HIGHATOMIC,
    Z_STALE_HIGHATOMIC,
    Z_START,
    Z_WMARK_HIGH,
    Z_WMARK_LOW,
    Z_WMARK_MIN,
    Z_WMARK_PROMO,
    PgData,
    grown_handle_table,
)
from .strategies import get_strategy
from .units import format_size, parse_size

# The migratetypes a request can ask for (gfp_migratetype()); CMA, HighAtomic and Isolate are
# properties of pageblocks, never of a request.
REQUEST_MIGRATETYPES = {name.lower(): mt for mt, name in enumerate(MIGRATETYPE_NAMES)
                        if mt < MIGRATE_PCPTYPES}
MIN_MEM = 16 << 20
_ALLOC_WMARK_LOW = page_alloc.ALLOC_WMARK_LOW
# alloc()'s default migratetype and kind: its fast path knows them by identity
_MOVABLE = "movable"
_ANON = "anon"
_NO_FLAGS = 0
KCOMPACTD_INTERVAL_NS = 500_000_000   # HPAGE_FRAG_CHECK_INTERVAL_MSEC
VMSTAT_INTERVAL_NS = 1_000_000_000    # sysctl_stat_interval (HZ): vmstat_update() per CPU
# decay_pcp_high() takes an eighth of the way to high_min a round: after 64 rounds high is at
# high_min whatever it was, so a long tick runs at most that many
MAX_DECAY_ROUNDS = 64
# compact_zone() results after which kcompactd_do_work() drains the zone's per-CPU lists
KCOMPACTD_DRAIN_RESULTS = ("complete", "partial_skipped")
MIN_KERNEL_MEM = 4 << 20   # one MAX_PAGE_ORDER block outside ZONE_MOVABLE and CMA
MAX_MEM = 1 << 40
# vm.min_free_kbytes is an int sysctl (proc_dointvec_minmax, minimum 0)
MAX_MIN_FREE_KBYTES = (1 << 31) - 1
_ERRORS = {
    page_alloc.E_NOT_HEAD: "is not the head of an allocated folio",
    page_alloc.E_RANGE: "is outside the machine's memory",
    page_alloc.E_DUPLICATE: "appears twice in one call",
    page_alloc.E_ISOLATED: "is isolated by a migration in progress",
    page_alloc.E_HUGETLB: "is a hugetlb folio, which is never split",
    page_alloc.E_HWPOISON: "is a hardware-poisoned page, which memory_failure() keeps for good",
}


class InvariantError(AssertionError):
    """Machine.check() found simulated memory in a state the kernel never reaches."""


def _choice(value, table, what):
    try:
        return table[value]
    except (KeyError, TypeError):
        allowed = ", ".join(table)
        raise ValueError(f"{what} {value!r} is unknown; allowed: {allowed}") from None


def _order(order, what="order", low=0):
    if type(order) is not int and not isinstance(order, np.integer):
        raise ValueError(f"{what} {order!r} is not an integer from {low} to {MAX_PAGE_ORDER}")
    if not low <= order <= MAX_PAGE_ORDER:
        raise ValueError(f"{what} {order} is out of range; allowed: {low}..{MAX_PAGE_ORDER}")
    return int(order)


def page_flags(flags):
    """A page-flag bitmask from an int, a name, or an iterable of names ("pinned", "dirty", ...)."""
    if isinstance(flags, (int, np.integer)) and not isinstance(flags, bool):
        if not 0 <= flags < 256:
            raise ValueError(f"flags {flags!r} is not a page-flag bitmask (0..255)")
        return int(flags)
    if isinstance(flags, str):
        flags = (flags,)
    mask = 0
    for name in flags:
        mask |= _choice(name, PAGE_FLAG_NAMES, "page flag")
    return mask


class Machine:
    """Physical memory of one node: mem_map, pageblocks, zones with buddy free lists, counters.

    mem: total memory ("16G", "512M", or bytes; a multiple of 2 MiB, 16M..1T).
    seed: seeds `self.rng`, the numpy Generator every random choice made on this machine uses.
    movable: size of ZONE_MOVABLE at the top of memory (like movablecore=), default none.
    cma: size of a CMA area (MIGRATE_CMA pageblocks) at the top of the highest non-movable zone.
    min_free_kbytes: vm.min_free_kbytes; default as the kernel computes it.
    thp: THP enabled, which raises min_free_kbytes as khugepaged does (default True).
    profile: the kernel release whose large-folio behaviour to model (simcore.profiles:
        "linux-6.1" .. "linux-6.18"; default the newest): compaction strategy, swap, zswap,
        KSM, memory-failure, khugepaged and NUMA-balancing policies.
    compaction: the compaction strategy by name (simcore.strategies(); default the profile's,
        "folio" for the newest), overriding the profile's.
    extfrag_threshold, compaction_proactiveness: the vm sysctls (defaults 500 and 20).
    costs: overrides of the migration cost model (simcore.costs.DEFAULT_COSTS).
    memory_block: memory block size for hot(un)plug (block_size_bytes; default 128M).
    cpus: CPUs of the node, each with its per-CPU page lists (simcore.pcp; default 2).
        Allocations and frees run on the CPU their call names (`cpu=`), else on the CPU of the
        previous call that named one (initially 0), as a task stays on its CPU.
    percpu_pagelist_high_fraction: the vm sysctl: 0 (default) sizes pcp high from the low
        watermark (auto-tuned where the profile's kernel does); 8 or more fixes it at
        managed / fraction / CPUs.
    reclaim: model page reclaim (simcore.vmscan): LRU lists, direct reclaim in the allocation
        slow path, kswapd, the OOM outcome. Off by default, which keeps the allocator's older
        behaviour (a failed allocation after compaction returns None); the workloads' backend
        turns it on. With it on, reclaim frees folios their owner still names: see
        handle_generation().
    watermark_boost_factor: vm.watermark_boost_factor (default 15000; 0 turns boosting off),
        with reclaim on (simcore.boost).
    compact_unevictable_allowed: vm.compact_unevictable_allowed (1, the default: compaction
        migrates mlocked and unevictable folios; 0: isolate_migratepages_block() skips them,
        as on PREEMPT_RT kernels; alloc_contig_range() takes them either way).
    """

    def __init__(self, mem="4G", seed=0, *, movable=0, cma=0, min_free_kbytes=None, thp=True,
                 compaction=None, profile=None, extfrag_threshold=500, compaction_proactiveness=20,
                 costs=None, memory_block="128M", cpus=2,
                 percpu_pagelist_high_fraction=0, reclaim=False, watermark_boost_factor=15000,
                 compact_unevictable_allowed=1):
        total = parse_size(mem, "mem")
        movable = parse_size(movable, "movable")
        cma = parse_size(cma, "cma")
        if not MIN_MEM <= total <= MAX_MEM or total % (PAGEBLOCK_NR_PAGES * PAGE_SIZE):
            raise ValueError(f"mem {mem!r} must be a multiple of 2M between "
                             f"{format_size(MIN_MEM)} and {format_size(MAX_MEM)}")
        for what, size in (("movable", movable), ("cma", cma)):
            if size % (PAGEBLOCK_NR_PAGES * PAGE_SIZE):
                raise ValueError(f"{what} {size!r} must be a multiple of 2M (a pageblock)")
        if total - movable - cma < MIN_KERNEL_MEM:
            raise ValueError(f"movable + cma ({format_size(movable + cma)}) must leave at least "
                             f"{format_size(MIN_KERNEL_MEM)} of mem ({format_size(total)}) for "
                             f"the kernel's own allocations")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed {seed!r} must be a non-negative integer")
        self.profile = _profiles.newest() if profile is None else _profiles.get_profile(profile)
        self.strategy = get_strategy(self.profile.compaction if compaction is None else compaction)
        for what, value, high in (("extfrag_threshold", extfrag_threshold, 1000),
                                  ("compaction_proactiveness", compaction_proactiveness, 100),
                                  ("compact_unevictable_allowed", compact_unevictable_allowed, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or not 0 <= value <= high:
                raise ValueError(f"{what} {value!r} must be an integer from 0 to {high}")
        self.costs = cost_array(costs)
        self.cpus, self.percpu_pagelist_high_fraction = _pcp_settings(
            cpus, percpu_pagelist_high_fraction)
        block = parse_size(memory_block, "memory_block")
        if block < PAGEBLOCK_NR_PAGES * PAGE_SIZE or block & (block - 1):
            raise ValueError(f"memory_block {memory_block!r} must be a power of two of at least 2M")
        self.memory_block_pages = block // PAGE_SIZE
        self.mem = total
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        nr_pages = total // PAGE_SIZE
        self.nr_pages = nr_pages

        zones = np.zeros((len(ZONE_NAMES), NR_ZONE_FIELDS), dtype=np.int64)
        movable_start = nr_pages - movable // PAGE_SIZE
        dma32_end = min(DMA32_LIMIT_BYTES // PAGE_SIZE, movable_start)
        spans = ((0, dma32_end), (dma32_end, movable_start), (movable_start, nr_pages))
        for z, (start, end) in enumerate(spans):
            zones[z, Z_START] = zones[z, Z_END] = start
            if end > start:
                zones[z, Z_END] = end
                zones[z, Z_MANAGED] = end - start
        pageblock_flags = np.full(nr_pages // PAGEBLOCK_NR_PAGES, MIGRATE_MOVABLE, dtype=np.uint8)
        if cma:
            cma_zone = ZONE_NORMAL if zones[ZONE_NORMAL, Z_MANAGED] else ZONE_DMA32
            cma_end = zones[cma_zone, Z_END]
            cma_start = cma_end - cma // PAGE_SIZE
            if cma_start < zones[cma_zone, Z_START]:
                raise ValueError(f"cma {format_size(cma)} does not fit in zone "
                                 f"{ZONE_NAMES[cma_zone]}")
            pageblock_flags[cma_start // PAGEBLOCK_NR_PAGES:
                            cma_end // PAGEBLOCK_NR_PAGES] = MIGRATE_CMA
            zones[cma_zone, Z_CMA_PAGES] = cma_end - cma_start
            self.cma_range = (int(cma_start), int(cma_end))
        else:
            self.cma_range = (0, 0)
        self.min_free_kbytes = self._setup_watermarks(zones, min_free_kbytes, thp)
        for z in range(len(ZONE_NAMES)):
            zones[z, Z_COMPACT_CACHED_FREE] = zones[z, Z_END] - PAGEBLOCK_NR_PAGES

        mem_map = np.zeros(nr_pages, dtype=PAGE_DTYPE)
        free_area = np.full((len(ZONE_NAMES), NR_PAGE_ORDERS, MIGRATE_TYPES, 3), -1, dtype=np.int64)
        free_area[..., FA_COUNT] = 0
        node = np.zeros(NR_NODE_FIELDS, dtype=np.int64)
        node[N_HANDLE_FREE] = -1
        node[N_HIGHATOMIC_POLICY] = highatomic.HIGHATOMIC_POLICIES[self.profile.highatomic]
        node[N_CAPTURE_POLICY] = page_alloc.CAPTURE_POLICIES[self.profile.capture]
        node[N_ISOLATION_POLICY] = page_isolation.ISOLATION_POLICIES[self.profile.isolation]
        node[N_DEFERRED_SPLIT_POLICY] = \
            _deferred_split.DEFERRED_SPLIT_POLICIES[self.profile.deferred_split]
        folio_pfn = grown_handle_table(np.empty(0, dtype=np.int64), node, 1024)
        # the migrate_pages() counters, and the tracepoint log after them when tracing is on
        # (simcore.tracelog): pgdat.trace_log is the same array
        self.migrate_stats = np.zeros(migrate.NR_MS, dtype=np.int64)
        self.pgdat = PgData(
            mem_map, pageblock_flags, free_area, zones, node, folio_pfn,
            np.zeros(ev.NR_VM_EVENTS, dtype=np.int64),
            np.zeros((NR_PAGE_ORDERS, ev.NR_MTHP_STATS), dtype=np.int64),
            FALLBACK_TABLE, KIND_IS_LRU, KIND_IS_MIGRATABLE, pcp.new_pcp_array(self.cpus),
            self.migrate_stats,
        )
        self._setup_pagesets()
        page_alloc.entry_free_area_init(self.pgdat)
        self.knobs = np.zeros(_compaction.NR_KNOBS, dtype=np.int64)
        self.knobs[:3] = self.strategy.knobs()
        self.knobs[_compaction.K_EXTFRAG_THRESHOLD] = extfrag_threshold
        self.knobs[_compaction.K_PROACTIVENESS] = compaction_proactiveness
        self.knobs[_compaction.K_UNEVICTABLE_ALLOWED] = compact_unevictable_allowed
        self._cc, self._pool, self._migratepages = freescan.new_compact_control()
        self.page_event_log = None          # simcore.page_trace, on with trace_page_events()
        self.clock_ns = 0
        self._cma_allocations = {}          # start pfn -> nr_pages
        self._offline_blocks = set()
        self._kcompactd_next_ns = KCOMPACTD_INTERVAL_NS
        self._vmstat_next_ns = VMSTAT_INTERVAL_NS
        self.swap_device = None
        self.zswap = zswap.Zswap(self.profile.zswap_store)
        self.ksm = ksm.KsmState()
        self.memory_failure_counts = memory_failure.MemoryFailureStats()
        self.hwpoisoned = set()
        # modelled time (ns) of the subsystems outside migrate_pages(), by subsystem
        self.model_ns = dict.fromkeys(("swap_out", "swap_in", "ksm", "memory_failure",
                                       "collapse", "numa", "reclaim"), 0.0)
        # reclaim (simcore.vmscan): the LRU lists and kswapd; see the reclaim argument
        self.reclaim = bool(reclaim)
        self.lru = vmscan.Lru()
        self.boost = _boost.Boost(watermark_boost_factor)
        self._slowpath, self._slowpath_many, self._compact_node = self.strategy.entries()
        self._bind()

    @classmethod
    def from_snapshot(cls, snapshot, *, profile=None, compaction=None, seed=0, deferred="absent",
                      reclaim=False):
        """A digital twin: a Machine whose memory is a captured one (`foliobench live snapshot`).

        snapshot: a snapshot file's path, its bytes, or a simcore.snapshot_file.Snapshot.
        profile, compaction, seed, reclaim: as for Machine() (with reclaim, every captured LRU
        folio is on its type's list, active where kpageflags had KPF_ACTIVE, each list in PFN
        order: the kernel does not export the lists' order). deferred: "absent" keeps memory whose
        struct pages the kernel had not initialised yet out of the zones, as at capture time;
        "free" gives it to the buddy allocator. The twin passes check(); what the
        reconstruction could not settle, and how its buddyinfo differs from the captured one,
        is in `machine.snapshot_report` (see simcore.snapshot). ValueError for a file that is
        not a complete snapshot, or a machine too large for this host (with the memory needed).
        """
        from . import snapshot as _snapshot
        return _snapshot.twin(snapshot, profile=profile, compaction=compaction, seed=seed,
                              deferred=deferred, reclaim=reclaim)

    # -- construction helpers --------------------------------------------------------------

    @staticmethod
    def _setup_watermarks(zones, min_free_kbytes, thp):
        managed = [int(v) for v in zones[:, Z_MANAGED]]
        lowmem_pages = managed[ZONE_DMA32] + managed[ZONE_NORMAL]
        if min_free_kbytes is None:
            min_free_kbytes = page_alloc.calculate_min_free_kbytes(
                lowmem_pages << (PAGE_SHIFT - 10))
            if thp:
                populated = sum(1 for m in managed[:ZONE_MOVABLE] if m)
                min_free_kbytes = max(min_free_kbytes, page_alloc.recommended_min_free_kbytes(
                    populated, lowmem_pages))
        elif isinstance(min_free_kbytes, bool) \
                or not isinstance(min_free_kbytes, (int, np.integer)) \
                or not 0 <= min_free_kbytes <= MAX_MIN_FREE_KBYTES:
            raise ValueError(f"min_free_kbytes {min_free_kbytes!r} must be an integer from 0 to "
                             f"{MAX_MIN_FREE_KBYTES} (vm.min_free_kbytes is an int sysctl)")
        marks = page_alloc.setup_per_zone_wmarks(managed, int(min_free_kbytes), ZONE_MOVABLE)
        zones[:, Z_WMARK_MIN:Z_WMARK_PROMO + 1] = marks
        zones[:, Z_LOWMEM_RESERVE:Z_LOWMEM_RESERVE + len(ZONE_NAMES)] = \
            page_alloc.setup_per_zone_lowmem_reserve(managed, LOWMEM_RESERVE_RATIO)
        return int(min_free_kbytes)

    def _setup_pagesets(self):
        """zone_pcp_update(): batch and high of every CPU's lists from the zones' current
        managed pages and low watermarks."""
        z = self.pgdat.zones
        pcp.setup_pagesets(self.pgdat.pcp, z[:, Z_MANAGED], z[:, Z_WMARK_LOW], self.cpus,
                           self.profile.pcp, self.percpu_pagelist_high_fraction)

    def _on_cpu(self, cpu):
        """Run what follows on `cpu` (the calling task's CPU from now on)."""
        if isinstance(cpu, bool) or not isinstance(cpu, (int, np.integer)) \
                or not 0 <= cpu < self.cpus:
            raise ValueError(f"cpu {cpu!r} is not a CPU of this machine; allowed: "
                             f"0..{self.cpus - 1}")
        self.pgdat.pcp[pcp.H_THIS_CPU] = cpu

    @property
    def cpu(self):
        """The CPU allocations and frees run on when their call names none; assigning it
        moves the calling task to another CPU."""
        return int(self.pgdat.pcp[pcp.H_THIS_CPU])

    @cpu.setter
    def cpu(self, cpu):
        self._on_cpu(cpu)

    def _bind(self):
        """Cache the compiled entry points for the hot single-folio calls. Going through
        numba's dispatcher costs a type resolution per call; the entry point skips it."""
        view = self.pgdat.view                  # these four take PgData.view, not PgData
        self._alloc_folio = _entry(page_alloc.entry_alloc_folio, view, 0, 0, 0, 0, 0)
        self._free_folio = _entry(page_alloc.entry_free_folio, view, 0)
        self._alloc_movable_anon = _entry(page_alloc.entry_alloc_movable_anon, view, 0)
        pfns = np.empty(0, dtype=np.int64)
        self._alloc_folios = _entry(page_alloc.entry_alloc_folios, view, pfns, 0, 0, 0, 0, 0)
        self._free_folios = _entry(page_alloc.entry_free_folios, view, pfns)
        if self.strategy.compaction_alloc is None:      # a user's own is compiled on first use
            compaction_state = (self._cc, self._pool, self._migratepages, self.knobs, self.costs,
                                self.migrate_stats)
            self._slowpath = _entry(self._slowpath, self.pgdat, 0, 0, 0, 0, *compaction_state)
            self._slowpath_many = _entry(self._slowpath_many, self.pgdat, pfns, 0, 0, 0, 0,
                                         *compaction_state)

    def _reserve_handles(self, count):
        node = self.pgdat.node
        if node[N_HANDLES_AVAIL] < count:
            table = grown_handle_table(self.pgdat.folio_pfn, node, count)
            self.pgdat = self.pgdat.replace(folio_pfn=table)

    def _reserve_for_compaction(self, count):
        """Handles for `count` new folios plus every folio a compaction could split off."""
        node = self.pgdat.node
        splittable = self.allocated_pages() - int(node[N_NR_FOLIOS])
        self._reserve_handles(count + splittable)

    # -- allocation API --------------------------------------------------------------------

    def alloc(self, order, migratetype=_MOVABLE, kind=_ANON, flags=0, compact=True, cpu=None,
              gfp=None):
        """Allocate one folio of 2**order pages; its head PFN, or None where the kernel fails.
        cpu: the CPU the caller runs on (its per-CPU lists serve orders 0..3 and 9).

        migratetype: unmovable, movable or reclaimable. kind: anon, file, shmem, hugetlb, slab,
        pagetable, kernel. flags: page flags (a name, names, or a bitmask) such as "pinned".
        compact: when the free lists cannot serve an order above 0, run direct compaction
        (async, then sync_light) as __alloc_pages_slowpath() does, and try again.
        gfp: with reclaim on, what the slow path may do (simcore.gfp.GFP_NAMES); default "user"
        (direct reclaim, no OOM killer), or "kswapd_only" (wake kswapd, never stall, no reserves)
        when compact is False. A "kernel"
        allocation that cannot be served raises simcore.OutOfMemory."""
        if type(order) is not int or not 0 <= order <= MAX_PAGE_ORDER:
            _order(order)
        # the defaults on a machine without reclaim or page trace: one compiled call (the
        # identity checks see the default arguments themselves)
        if migratetype is _MOVABLE and kind is _ANON and flags is _NO_FLAGS and cpu is None \
                and gfp is None and not self.reclaim and self.page_event_log is None:
            pfn = self._alloc_movable_anon(self.pgdat.view, order)
            if pfn >= 0:
                return pfn
            return self._alloc_retry(pfn, order, MIGRATE_MOVABLE, KIND_ANON, 0, compact, gfp)
        mt = REQUEST_MIGRATETYPES.get(migratetype)
        if mt is None:
            _choice(migratetype, REQUEST_MIGRATETYPES, "migratetype")
        k = KINDS.get(kind)
        if k is None:
            _choice(kind, KINDS, "kind")
        flags = page_flags(flags) if flags else 0
        if cpu is not None:
            self._on_cpu(cpu)
        if gfp is not None:
            _gfp.get_gfp(gfp)
        if self.reclaim:                                          # reclaim hook (vmscan)
            got = self._alloc_reclaim(order, mt, k, flags, compact, gfp)
        else:
            pfn = self._alloc_folio(self.pgdat.view, order, mt, k, flags,
                                    self._fast_flags(gfp, order))
            if pfn >= 0 and self.page_event_log is None:
                return pfn
            got = self._alloc_retry(pfn, order, mt, k, flags, compact, gfp)
        if self.page_event_log is not None:                       # mm_page_alloc
            self.page_event_log.alloc(self.cpu, -1 if got is None else got, order, mt, k, flags,
                                      compact)
        return got

    def _alloc_retry(self, pfn, order, mt, k, flags, compact, gfp):
        """alloc() without reclaim after its first try gave `pfn`: a full handle table grown
        and the try repeated, GFP_ATOMIC's reserves, or direct compaction. The PFN or None."""
        if pfn == -2:
            self._reserve_handles(1)
            pfn = self._alloc_folio(self.pgdat.view, order, mt, k, flags,
                                    self._fast_flags(gfp, order))
        reserves = self._reserves(_gfp.get_gfp(gfp), order) if gfp is not None else 0
        if pfn == -1 and reserves:                # GFP_ATOMIC (and NOWAIT): no compaction
            pfn = self._alloc_folio(self.pgdat.view, order, mt, k, flags,
                                    page_alloc.ALLOC_WMARK_MIN | reserves)
        elif pfn == -1 and order > 0 and compact:
            self._reserve_for_compaction(1)
            pfn = self._slowpath(self.pgdat, order, mt, k, flags, self._cc, self._pool,
                                 self._migratepages, self.knobs, self.costs,
                                 self.migrate_stats)
        return pfn if pfn >= 0 else None

    def alloc_many(self, count, order, migratetype="movable", kind="anon", flags=0, compact=True,
                   cpu=None, gfp=None):
        """Allocate up to `count` folios of one order; a numpy array of head PFNs, shorter than
        `count` when memory runs out (allocation stops at the first failure). `compact`, `cpu`
        and `gfp` as for alloc()."""
        # the checks cost a function call each only for arguments of an unusual type
        if (type(count) is not int and (isinstance(count, bool)
                                        or not isinstance(count, (int, np.integer)))) \
                or count < 0:
            raise ValueError(f"count {count!r} must be a non-negative integer")
        if type(order) is not int or not 0 <= order <= MAX_PAGE_ORDER:
            order = _order(order)
        mt = REQUEST_MIGRATETYPES.get(migratetype) if type(migratetype) is str else None
        if mt is None:
            mt = _choice(migratetype, REQUEST_MIGRATETYPES, "migratetype")
        k = KINDS.get(kind) if type(kind) is str else None
        if k is None:
            k = _choice(kind, KINDS, "kind")
        flags = 0 if flags is _NO_FLAGS else page_flags(flags)
        if cpu is not None:
            self._on_cpu(cpu)
        if gfp is not None:
            _gfp.get_gfp(gfp)
        count = min(int(count), self.nr_pages >> order)
        out = np.empty(count, dtype=np.int64)
        if self.reclaim:                                          # reclaim hook (vmscan)
            g = self._gfp(gfp, compact)
            types_before = _boost.before_alloc(self)
            n = self._alloc_many_slow(out, order, mt, k, flags, compact, g)
            _boost.observe(self, out[:n], order, mt, types_before, g.kswapd_reclaim)
            if KIND_IS_LRU[k]:
                self.lru.add_new(self, out[:n])
            if self.lru.kswapd_order >= 0:                        # kswapd woken
                kept = self._kswapd_keeping(out[:n])
                n = len(kept)
                out[:n] = kept
        elif order > 0 and compact and not (gfp and self._reserves(_gfp.get_gfp(gfp), order)):
            self._reserve_for_compaction(count)
            n = self._slowpath_many(self.pgdat, out, order, mt, k, flags, self._cc, self._pool,
                                    self._migratepages, self.knobs, self.costs,
                                    self.migrate_stats)
        else:
            self._reserve_handles(count)
            n = self._alloc_folios(self.pgdat.view, out, order, mt, k, flags,
                                   self._fast_flags(gfp, order))
            reserves = self._reserves(_gfp.get_gfp(gfp), order) if gfp else 0
            if n < count and reserves:                            # GFP_ATOMIC's slow path
                n += self._alloc_folios(self.pgdat.view, out[n:], order, mt, k, flags,
                                        page_alloc.ALLOC_WMARK_MIN | reserves)
        if self.page_event_log is not None:                       # mm_page_alloc
            # the call stops at its first failure, which the kernel traces with pfn -1
            got = out[:n] if n == count else np.append(out[:n], -1)
            self.page_event_log.alloc(self.cpu, got, order, mt, k, flags, compact)
        return out[:n]

    def free(self, pfn, cpu=None):
        """Free the folio whose head is `pfn` (all of it), on `cpu` (as for alloc())."""
        if type(pfn) is int and cpu is None and not self.reclaim \
                and self.page_event_log is None:         # nothing to note: one compiled call
            err = self._free_folio(self.pgdat.view, pfn)
            if err:
                raise ValueError(f"pfn {pfn} {_ERRORS[err]}; free() takes a folio head PFN")
            return
        if type(pfn) is not int:
            if isinstance(pfn, bool) or not isinstance(pfn, (int, np.integer)):
                raise ValueError(f"pfn {pfn!r} is not an integer")
            pfn = int(pfn)
        if cpu is not None:
            self._on_cpu(cpu)
        # the folio's size and handle only where reclaim or the page trace needs them: two
        # views of mem_map per call are most of a plain free's cost
        if self.reclaim or self.page_event_log is not None:
            inside = 0 <= pfn < self.nr_pages
            handle = int(self.pgdat.mem_map["next"][pfn]) if inside else -1
            pages = 1 << int(self.pgdat.mem_map["order"][pfn]) if inside else 0
        err = self._free_folio(self.pgdat.view, pfn)
        if not err and self.page_event_log is not None:           # mm_page_free
            self.page_event_log.free(self.cpu, pfn, pages.bit_length() - 1)
        if err:
            raise ValueError(f"pfn {pfn} {_ERRORS[err]}; free() takes a folio head PFN")
        if self.reclaim:
            self.lru.forget(np.array([handle], dtype=np.int64), np.array([pages]))

    def free_many(self, pfns, cpu=None):
        """Free many folios by head PFN, on `cpu` (as for alloc()). Nothing is freed if any
        entry is not a folio head."""
        if cpu is not None:
            self._on_cpu(cpu)
        arr = np.ascontiguousarray(pfns)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise ValueError(f"pfns must be a 1-D array of integers, got {arr.dtype} {arr.shape}")
        arr = arr.astype(np.int64, copy=not arr.flags.writeable)
        if self.reclaim:                                          # reclaim hook (vmscan)
            inside = arr[(arr >= 0) & (arr < self.nr_pages)]
            handles = self.pgdat.mem_map["next"][inside].astype(np.int64)
            pages = np.int64(1) << self.pgdat.mem_map["order"][inside].astype(np.int64)
        if self.page_event_log is not None:
            orders = self.pgdat.mem_map["order"][np.clip(arr, 0, self.nr_pages - 1)].copy()
        err, bad = self._free_folios(self.pgdat.view, arr)
        if not err and self.reclaim:
            self.lru.forget(handles, pages)
        if not err and self.page_event_log is not None:           # mm_page_free
            self.page_event_log.free(self.cpu, arr, orders)
        if err:
            raise ValueError(f"pfn {int(arr[bad])} (entry {bad}) {_ERRORS[err]}; "
                             f"free_many() takes folio head PFNs; nothing was freed")

    def split(self, pfn, new_order=0):
        """split_folio_to_order(): split the folio at `pfn` into folios of `new_order`.

        Returns True, or False where the kernel's split fails (a pinned folio: -EAGAIN; under
        writeback or a dirty page-cache folio: -EBUSY; see page_alloc.folio_split())."""
        new_order = _order(new_order, "new_order")
        if isinstance(pfn, bool) or not isinstance(pfn, (int, np.integer)):
            raise ValueError(f"pfn {pfn!r} is not an integer")
        p = self.pgdat
        pfn = int(pfn)
        if 0 <= pfn < self.nr_pages and p.mem_map[pfn]["type"] == PAGE_HEAD:
            self._reserve_handles(1 << max(0, int(p.mem_map[pfn]["order"]) - new_order))
        err = page_alloc.entry_split_folio(self.pgdat, pfn, new_order)
        if err == page_alloc.E_PINNED or err == page_alloc.E_BUSY:
            return False
        if err == page_alloc.E_ORDER:
            order = int(p.mem_map[pfn]["order"])
            raise ValueError(f"new_order {new_order} must be below the folio's order {order}")
        if err == page_alloc.E_ANON_ORDER1:
            raise ValueError("new_order 1 is not allowed for anonymous folios (the kernel has no "
                             "order-1 anon folios)")
        if err:
            raise ValueError(f"pfn {pfn} {_ERRORS[err]}")
        return True

    # -- reclaim (simcore.vmscan) ---------------------------------------------------------

    def _gfp(self, gfp, compact):
        return _gfp.get_gfp(("user" if compact else "kswapd_only") if gfp is None else gfp)

    def _reserves(self, g, order):
        """gfp_to_alloc_flags()'s reserve bits for Gfp `g` under this profile's
        highatomic_gfp policy (simcore.gfp)."""
        return _gfp.gfp_to_alloc_flags(g, order, self.profile.highatomic_gfp)

    def _fast_flags(self, gfp, order):
        """alloc_flags for page_alloc.alloc_folio(): the fast path's low watermark, and the
        reserve bits the slow path's first try at the min watermark adds (gfp: a name, a Gfp
        or None for none)."""
        if gfp is None:
            return _ALLOC_WMARK_LOW
        reserves = self._reserves(_gfp.get_gfp(gfp), order)
        return _ALLOC_WMARK_LOW | (reserves << page_alloc.ALLOC_SLOWPATH_SHIFT)

    @staticmethod
    def _highest_zoneidx(mt):
        """gfp_zone(): movable requests may use ZONE_MOVABLE, the others stop at Normal."""
        return ZONE_MOVABLE if mt == MIGRATE_MOVABLE else ZONE_NORMAL

    def _alloc_reclaim(self, order, mt, k, flags, compact, gfp):
        """alloc() with reclaim: fast path, slow path, watermark boost, kswapd."""
        g = self._gfp(gfp, compact)
        types_before = _boost.before_alloc(self)
        self._reserve_handles(1)
        pfn = self._alloc_folio(self.pgdat.view, order, mt, k, flags, self._fast_flags(g, order))
        if pfn < 0:
            pfn = self._alloc_slow(order, mt, k, flags, compact, g)
        if pfn < 0:
            self._kswapd()
            return None
        _boost.observe(self, [pfn], order, mt, types_before, g.kswapd_reclaim)
        if KIND_IS_LRU[k]:
            self.lru.add_new(self, [pfn])
        kept = self._kswapd_keeping(np.array([pfn], dtype=np.int64))
        return int(kept[0]) if len(kept) else None

    def _alloc_slow(self, order, mt, k, flags, compact, g):
        """__alloc_pages_slowpath() for one folio: wake kswapd, the free lists at the min
        watermark, direct compaction, then direct reclaim and retries (vmscan)."""
        highest = self._highest_zoneidx(mt)
        if g.kswapd_reclaim:
            vmscan.wakeup_kswapd(self, order, highest)
        compact = compact and g.direct_reclaim and order > 0
        alloc_flags = page_alloc.ALLOC_WMARK_MIN | self._reserves(g, order)
        got = [-1]

        def attempt(with_compaction=compact):
            self._reserve_handles(1)
            pfn = self._alloc_folio(self.pgdat.view, order, mt, k, flags, alloc_flags)
            if pfn < 0 and with_compaction:
                self._reserve_for_compaction(1)
                pfn = self._slowpath(self.pgdat, order, mt, k, flags, self._cc, self._pool,
                                     self._migratepages, self.knobs, self.costs,
                                     self.migrate_stats)
            got[0] = max(got[0], pfn)
            return int(pfn >= 0)

        if attempt() or not g.direct_reclaim:
            return got[0]
        vmscan.slowpath_reclaim(self, order, g, highest, attempt,
                                lambda: 0 if got[0] >= 0 else 1 << order, migratetype=mt)
        return got[0]

    def _alloc_many_slow(self, out, order, mt, k, flags, compact, g):
        """alloc_many() with reclaim: the fast path for as many as it serves, then the slow
        path (_alloc_slow's steps) for the rest. Folios this call already got are kept off the
        LRU until it returns, so that its own reclaim never takes them back."""
        count = len(out)
        self._reserve_handles(count)
        n = [self._alloc_folios(self.pgdat.view, out, order, mt, k, flags,
                                self._fast_flags(g, order))]
        if n[0] == count:
            return count
        highest = self._highest_zoneidx(mt)
        if g.kswapd_reclaim:
            vmscan.wakeup_kswapd(self, order, highest)
        compact = compact and g.direct_reclaim and order > 0
        alloc_flags = page_alloc.ALLOC_WMARK_MIN | self._reserves(g, order)

        def attempt():
            rest = out[n[0]:]
            self._reserve_handles(len(rest))
            got = self._alloc_folios(self.pgdat.view, rest, order, mt, k, flags, alloc_flags)
            if got < len(rest) and compact:
                self._reserve_for_compaction(len(rest) - got)
                got += self._slowpath_many(self.pgdat, rest[got:], order, mt, k, flags,
                                           self._cc, self._pool, self._migratepages,
                                           self.knobs, self.costs, self.migrate_stats)
            n[0] += got
            return got

        attempt()
        if n[0] < count and g.direct_reclaim:
            exclude = (lambda: out[:n[0]]) if KIND_IS_LRU[k] else None
            # a bulk order-0 request reclaims for all it still wants at once; a high order
            # reclaims for one folio at a time, as each allocation's own slow path does
            vmscan.slowpath_reclaim(self, order, g, highest, attempt,
                                    lambda: (count - n[0]) << order if order == 0
                                    else (1 << order) * (n[0] < count), exclude,
                                    migratetype=mt)
        return n[0]

    def _kswapd_keeping(self, pfns):
        """_kswapd() after an allocation; returns where the folios at `pfns`, just allocated,
        are afterwards. The kcompactd that kswapd wakes may migrate them before the caller
        sees them (the kernel's caller holds virtual addresses, which migration keeps; ours
        holds PFNs, so they follow the folios' handles), and kswapd itself may reclaim one
        (a handle whose reclaim generation moved on): that one is not returned."""
        if self.lru.kswapd_order < 0 or not len(pfns):
            self._kswapd()
            return pfns
        handles = self.pgdat.mem_map["next"][pfns].astype(np.int64)
        generation = self.handle_generation(handles)
        self._kswapd()
        now = self.pgdat.folio_pfn[handles]
        return now[(now >= 0) & (self.handle_generation(handles) == generation)]

    def _kswapd(self):
        """kswapd runs once woken, before the caller's next step (it works while the
        allocating task goes on)."""
        if self.lru.kswapd_order >= 0:
            vmscan.run_kswapd(self)

    def _wakeup_kcompactd(self, order):
        """wakeup_kcompactd() after kswapd balanced for a high order: kcompactd_do_work(),
        modelled as compaction of the node down to the proactive low score (the simulator's
        compact_node() has no per-order stop)."""
        self.pgdat.events[ev.COMPACT_DAEMON_WAKE] += 1
        proactiveness = int(self.knobs[_compaction.K_PROACTIVENESS]) or 20
        results = self._run_compact_node(migrate.MIGRATE_SYNC_LIGHT,
                                         vmstat.fragmentation_score_wmark(proactiveness, low=True))
        for z, name in self.zones:
            # kcompactd_do_work(): a zone whose compaction ended without a free block of the
            # order (COMPACT_COMPLETE, COMPACT_PARTIAL_SKIPPED; here also a proactive run that
            # reached its score but not the order) has its per-CPU lists drained: free pages
            # stranded there could merge up to it (drain_all_pages(zone))
            if results[name] in KCOMPACTD_DRAIN_RESULTS or (
                    results[name] == "success" and not vmscan.zone_watermark_ok(
                        self, z, order, len(ZONE_NAMES) - 1, Z_WMARK_MIN)):
                pcp.entry_drain_all_pages(self.pgdat, z)

    def _free_reclaimed(self, pfns):
        self.free_many(pfns)

    def _need_reclaim(self):
        if not self.reclaim:
            raise ValueError("this machine does not model reclaim; build it with "
                             "Machine(reclaim=True)")

    def touch(self, pfns):
        """folio_mark_accessed() of the folios at `pfns`: a re-read of page cache or a
        re-touch of anonymous memory. Needs reclaim=True."""
        self._need_reclaim()
        vmscan.mark_accessed(self, self._heads(pfns))

    def reclaim_pages(self, nr_pages):
        """Proactive reclaim of about nr_pages pages (as memory.reclaim does): shrink_node()
        until that many are freed or nothing more can go. Returns pages reclaimed. Needs
        reclaim=True."""
        self._need_reclaim()
        if isinstance(nr_pages, bool) or not isinstance(nr_pages, (int, np.integer)) \
                or not 0 < nr_pages <= self.nr_pages:
            raise ValueError(f"nr_pages {nr_pages!r} must be an integer from 1 to "
                             f"{self.nr_pages}")
        return vmscan.shrink_node(self, int(nr_pages), False)

    def handle_generation(self, handles):
        """Per handle, how many times reclaim freed the folio it named: a handle whose
        generation moved on since its owner got it names a folio that is gone (and may name
        a new one)."""
        handles = np.asarray(handles, dtype=np.int64)
        table = self.pgdat.folio_pfn
        gen = self.lru.gen               # a query: handles beyond it were never reclaimed
        if handles.ndim == 1:
            out = np.empty(len(handles), dtype=np.int64)
            if not _handles.generations(np.ascontiguousarray(handles), len(table), gen, out):
                raise ValueError("a handle is outside the handle table")
            return out
        if handles.size and (handles.min() < 0 or handles.max() >= len(table)):
            raise ValueError("a handle is outside the handle table")
        out = np.zeros(handles.shape, dtype=np.int64)
        known = handles < len(gen)
        out[known] = gen[handles[known]]
        return out

    def lru_sizes(self):
        """Pages per LRU list (nr_inactive_anon, ...), counting folios created since the last
        reclaim on their inactive list as reclaim would."""
        from .mmzone import KIND_ANON as _A
        from .mmzone import KIND_SHMEM as _S
        table = self.pgdat.folio_pfn
        lru = self.lru
        handles = np.flatnonzero(table >= 0)
        recs = self.pgdat.mem_map[table[handles]]
        on = KIND_IS_LRU[recs["kind"].astype(np.int64)] == 1
        handles, recs = handles[on], recs[on]
        lists = np.full(len(handles), vmscan.NOT_ON_LRU, dtype=np.int64)
        known = handles < len(lru.list_of)
        lists[known] = lru.list_of[handles[known]]
        swap_backed = (recs["kind"] == _A) | (recs["kind"] == _S)
        pending = lists == vmscan.NOT_ON_LRU
        lists[pending] = np.where(swap_backed[pending], vmscan.LRU_INACTIVE_ANON,
                                  vmscan.LRU_INACTIVE_FILE)
        pages = np.bincount(lists, weights=np.int64(1) << recs["order"].astype(np.int64),
                            minlength=len(vmscan.LRU_NAMES))
        return {f"nr_{name}": int(v) for name, v in zip(vmscan.LRU_NAMES, pages)}

    # -- compaction and migration ---------------------------------------------------------

    def compact(self):
        """Write 1 to /proc/sys/vm/compact_memory: every zone compacted whole, synchronously.
        Returns {zone: compact_result name}."""
        return self._run_compact_node(migrate.MIGRATE_SYNC, -1)

    def _run_compact_node(self, mode, proactive_low):
        self._reserve_for_compaction(0)
        results = np.zeros(len(ZONE_NAMES), dtype=np.int64)
        self._compact_node(self.pgdat, mode, proactive_low, self._cc, self._pool,
                           self._migratepages, self.knobs, self.costs, self.migrate_stats,
                           results)
        return {name: _compaction.RESULT_NAMES[results[i]] for i, name in self.zones}

    def tick(self, ms):
        """Advance simulated time by `ms` milliseconds, running kcompactd's proactive
        compaction every 500 ms as kcompactd_do_work()/proactive_compact_node() would: when the
        node's fragmentation score is above the high watermark, compact each zone until its
        score is at the low one; when that made no progress, wait 64 times longer. Every
        simulated second the vmstat worker runs decay_pcp_high() on every CPU (auto_high
        profiles): pcp high decays towards high_min and what is above it is drained."""
        if isinstance(ms, bool) or not isinstance(ms, (int, float, np.integer, np.floating)) \
                or not 0 <= ms < 1e12:
            raise ValueError(f"ms {ms!r} must be a non-negative number of milliseconds")
        self.clock_ns += int(ms * 1_000_000)
        if self.reclaim:                                          # reclaim hook (vmscan)
            self._kswapd()
        if self._vmstat_next_ns <= self.clock_ns:                 # the vmstat worker
            rounds = (self.clock_ns - self._vmstat_next_ns) // VMSTAT_INTERVAL_NS + 1
            for _ in range(min(rounds, MAX_DECAY_ROUNDS)):
                pcp.entry_decay_pcp_high(self.pgdat)
            self._vmstat_next_ns += rounds * VMSTAT_INTERVAL_NS
        proactiveness = int(self.knobs[_compaction.K_PROACTIVENESS])
        while self._kcompactd_next_ns <= self.clock_ns:
            interval = KCOMPACTD_INTERVAL_NS
            if proactiveness:
                low = vmstat.fragmentation_score_wmark(proactiveness, low=True)
                high = vmstat.fragmentation_score_wmark(proactiveness, low=False)
                score = _compaction.entry_fragmentation_score_node(self.pgdat)
                if score > high:
                    self.pgdat.events[ev.COMPACT_DAEMON_WAKE] += 1
                    self._run_compact_node(migrate.MIGRATE_SYNC_LIGHT, low)
                    if _compaction.entry_fragmentation_score_node(self.pgdat) >= score:
                        interval <<= _compaction.COMPACT_MAX_DEFER_SHIFT
            self._kcompactd_next_ns += interval

    def migrate(self, pfns, mode="sync", reason="syscall"):
        """migrate_pages() of the given folio heads to targets from the buddy allocator, as
        move_pages(2) does. Returns how many folios were not migrated."""
        arr = np.ascontiguousarray(np.atleast_1d(pfns)).astype(np.int64, copy=False)
        mode_idx = _choice(mode, {n: i for i, n in enumerate(migrate.MODE_NAMES)}, "mode")
        reason_idx = _choice(reason, {n: i for i, n in enumerate(migrate.REASON_NAMES)}, "reason")
        for pfn in arr:
            if not 0 <= pfn < self.nr_pages or self.pgdat.mem_map[pfn]["type"] != PAGE_HEAD:
                raise ValueError(f"pfn {int(pfn)} is not the head of an allocated folio")
        self._reserve_for_compaction(0)
        return int(migrate.entry_migrate_folios(self.pgdat, arr, mode_idx, reason_idx,
                                                self.costs, self.migrate_stats))

    def trace_events(self, enable=True, capacity=65536):
        """Switch the simulator's tracepoints on or off (off when a machine is made):
        compaction:mm_compaction_begin/end per compact_zone(), migrate:mm_migrate_pages per
        migrate_pages(), kmem:mm_page_alloc_extfrag per fallback to another migratetype's
        free page, and compaction:mm_compaction_isolate_migratepages/isolate_freepages per
        block either scanner isolated from, read back with trace_records(). Up to `capacity`
        records are kept; later ones are counted as lost. Switching on or off clears the
        log."""
        counters = self.migrate_stats[:migrate.NR_MS]
        if not enable:
            self.migrate_stats = counters.copy()
            self.pgdat = self.pgdat.replace(trace_log=self.migrate_stats)
            return
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) \
                or not 0 < capacity <= 1 << 24:
            raise ValueError(f"capacity {capacity!r} must be a record count from 1 to {1 << 24}")
        log = np.zeros(tracelog.TR_BASE + int(capacity) * tracelog.TR_WORDS, dtype=np.int64)
        log[:migrate.NR_MS] = counters
        self.migrate_stats = log
        self.pgdat = self.pgdat.replace(trace_log=log)

    def trace_page_events(self, enable=True):
        """Log kmem:mm_page_alloc and mm_page_free for the allocations and frees callers make
        (off when a machine is made; free when off: one attribute check per call). The log is
        `page_event_log`; simcore.page_trace.save() writes it as a trace that `foliobench
        replay` reproduces on the snapshot this machine was made from. Switching on or off
        clears it."""
        from . import page_trace
        self.page_event_log = page_trace.PageEventLog() if enable else None

    def trace_records(self):
        """The tracepoint records since trace_events() switched them on, oldest first: a list
        of dicts with the event ("compaction:mm_compaction_begin", ...) and the kernel's fields
        (simcore.tracepoints). Empty when tracing is off."""
        return _tracepoints.records(self.migrate_stats)

    def trace_lost(self):
        """Tracepoint records dropped because the log was full."""
        return _tracepoints.lost(self.migrate_stats)

    def migration_stats(self):
        """Cumulative migrate_pages() statistics: base pages moved and failed, large folios
        moved whole and split, modelled time (ns)."""
        names = ("succeeded", "failed_pages", "thp_succeeded", "thp_failed", "thp_split",
                 "nr_split", "large_succeeded", "large_succeeded_pages", "nr_failed", "time_ns",
                 "writeback_waits", "attempts")
        return dict(zip(names, (int(v) for v in self.migrate_stats)))

    # -- CMA and memory hot(un)plug --------------------------------------------------------

    def cma_alloc(self, nr_pages):
        """cma_alloc(): `nr_pages` contiguous pages (rounded up to whole pageblocks) from the CMA
        area, migrating what lives there out of the way (alloc_contig_range()). Tries each
        pageblock-aligned position in turn, as cma_alloc() walks its bitmap. Returns the first
        PFN, or None (cma_alloc_fail)."""
        if isinstance(nr_pages, bool) or not isinstance(nr_pages, (int, np.integer)) \
                or nr_pages < 1:
            raise ValueError(f"nr_pages {nr_pages!r} must be a positive integer")
        lo, hi = self.cma_range
        if lo == hi:
            raise ValueError("this machine has no CMA area; build it with Machine(cma=...)")
        size = -(-int(nr_pages) // PAGEBLOCK_NR_PAGES) * PAGEBLOCK_NR_PAGES
        if size > hi - lo:
            raise ValueError(f"nr_pages {nr_pages} exceeds the CMA area ({hi - lo} pages)")
        z = self._zone_of(lo)
        self._reserve_for_compaction(size)
        saved = np.zeros(size // PAGEBLOCK_NR_PAGES, dtype=np.int64)
        events = self.pgdat.events
        for start in range(lo, hi - size + 1, PAGEBLOCK_NR_PAGES):
            if any(s < start + size and start < s + n for s, n in self._cma_allocations.items()):
                continue
            err = page_isolation.entry_cma_alloc(self.pgdat, z, start, start + size, self.costs,
                                                 self.migrate_stats, saved)
            if err == 0:
                self._cma_allocations[start] = size
                events[ev.CMA_ALLOC_SUCCESS] += 1
                return start
        events[ev.CMA_ALLOC_FAIL] += 1
        return None

    def cma_release(self, pfn):
        """cma_release(): give back a range cma_alloc() returned. Nothing changes when the
        range cannot be freed whole (the allocation stays recorded)."""
        if isinstance(pfn, bool) or not isinstance(pfn, (int, np.integer)) \
                or int(pfn) not in self._cma_allocations:
            raise ValueError(f"pfn {pfn!r} is not the start of a CMA allocation")
        pfn = int(pfn)
        size = self._cma_allocations[pfn]
        heads = np.flatnonzero(self.pgdat.mem_map["type"][pfn:pfn + size] == PAGE_HEAD) + pfn
        self.free_many(heads)               # checks every head first; raises before freeing
        del self._cma_allocations[pfn]

    def _zone_of(self, pfn):
        z = self.pgdat.zones
        for i in range(len(ZONE_NAMES)):
            if z[i, Z_START] <= pfn < z[i, Z_END]:
                return i
        raise ValueError(f"pfn {pfn} is in no zone")

    def memory_blocks(self):
        """/sys/devices/system/memory: one dict per block (index, start_pfn, nr_pages present,
        zone, state "online"/"offline", removable: within one zone and without holes).

        As the kernel creates a memory block for every block-sized range with memory present
        (add_boot_memory_block()), memory that ends inside a block (mem="1000M" with 128M
        blocks, or mem smaller than one block) gives a last block with a hole; nr_pages is
        then what is present, and offline_pages() refuses it (EINVAL, memory holes)."""
        out = []
        zones = self.pgdat.zones
        nr_blocks = -(-self.nr_pages // self.memory_block_pages)
        for idx in range(nr_blocks):
            start = idx * self.memory_block_pages
            end = min(start + self.memory_block_pages, self.nr_pages)
            z = self._zone_of(start)
            out.append({"index": idx, "start_pfn": start, "nr_pages": end - start,
                        "zone": ZONE_NAMES[z],
                        "state": "offline" if idx in self._offline_blocks else "online",
                        "removable": bool(end <= zones[z, Z_END]
                                          and end - start == self.memory_block_pages)})
        return out

    def offline_memory_block(self, index):
        """echo offline > memoryN/state: offline_pages() of the block. Returns (True, "") or
        (False, reason) where the kernel fails with EBUSY (unmovable or unmigratable pages)."""
        block = self._block(index)
        if block["state"] == "offline":
            return False, "already offline"
        if block["nr_pages"] != self.memory_block_pages:
            return False, "EINVAL: memory holes (memory ends inside this block)"
        if not block["removable"]:
            return False, "EINVAL: block spans zones"
        start = block["start_pfn"]
        end = start + block["nr_pages"]
        z = self._zone_of(start)
        left = self._kernel_pages_without(z, end - start)
        if left < MIN_KERNEL_MEM // PAGE_SIZE:
            return False, (f"EBUSY: the kernel's own memory: offlining would leave "
                           f"{format_size(max(left, 0) * PAGE_SIZE)} outside ZONE_MOVABLE and "
                           f"CMA, below the {format_size(MIN_KERNEL_MEM)} the kernel keeps")
        saved = np.zeros(block["nr_pages"] // PAGEBLOCK_NR_PAGES, dtype=np.int64)
        self._reserve_for_compaction(0)
        bad = page_isolation.entry_has_unmovable(self.pgdat, start, end)
        if bad >= 0:
            return False, f"EBUSY: unmovable page at pfn {bad}"
        err = page_isolation.entry_offline_range(self.pgdat, z, start, end, self.costs,
                                                 self.migrate_stats, saved)
        if err:
            return False, "EBUSY: pages could not be migrated"
        self.pgdat.zones[z, Z_MANAGED] -= end - start
        # offlined highatomic blocks stay in nr_reserved_highatomic: neither offline_pages()
        # nor the isolation paths adjust it, so the count overstates the reserve from now on
        # (fewer blocks may be reserved later; before 6.12 watermarks also count it as
        # unusable); simcore.highatomic.check() knows these pages as stale
        self.pgdat.zones[z, Z_STALE_HIGHATOMIC] += \
            int((saved == MIGRATE_HIGHATOMIC).sum()) * PAGEBLOCK_NR_PAGES
        self._offline_blocks.add(block["index"])
        self._setup_watermarks(self.pgdat.zones, self.min_free_kbytes, False)
        self._setup_pagesets()
        _boost.reset(self)                                        # watermark boost hook
        return True, ""

    def _kernel_pages_without(self, z, nr_pages):
        """Managed pages outside ZONE_MOVABLE and CMA once nr_pages leave zone z."""
        zones = self.pgdat.zones
        managed = zones[:ZONE_MOVABLE, Z_MANAGED].sum() - zones[:ZONE_MOVABLE, Z_CMA_PAGES].sum()
        return int(managed) - (nr_pages if z < ZONE_MOVABLE else 0)

    def online_memory_block(self, index):
        """echo online > memoryN/state: the block's pages back to the buddy allocator."""
        block = self._block(index)
        if block["state"] == "online":
            return False, "already online"
        start = block["start_pfn"]
        end = start + block["nr_pages"]
        z = self._zone_of(start)
        page_isolation.entry_online_range(self.pgdat, z, start, end, MIGRATE_MOVABLE)
        self.pgdat.zones[z, Z_MANAGED] += end - start
        self._offline_blocks.discard(block["index"])
        self._setup_watermarks(self.pgdat.zones, self.min_free_kbytes, False)
        self._setup_pagesets()
        _boost.reset(self)                                        # watermark boost hook
        return True, ""

    def _block(self, index):
        blocks = self.memory_blocks()
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                or not 0 <= index < len(blocks):
            raise ValueError(f"memory block {index!r} does not exist; "
                             f"allowed: 0..{len(blocks) - 1}")
        return blocks[index]

    # -- swap, zswap, KSM, memory-failure, khugepaged, NUMA balancing ----------------------

    def swapon(self, size, synchronous=True, solid_state=True, blkdev=True):
        """swapon(8) of a swap area of `size` ("512M" or bytes), replacing none: one area per
        machine. synchronous: SWP_SYNCHRONOUS_IO (zram-like); solid_state: non-rotational;
        blkdev: a block device rather than a swap file. See simcore.swap."""
        if self.swap_device is not None:
            raise ValueError("this machine already has a swap area")
        self.swap_device = swap.SwapDevice(parse_size(size, "swap size") // PAGE_SIZE,
                                           synchronous, solid_state, blkdev)
        return self.swap_device.info()

    def swap_out(self, pfns):
        """Reclaim the folios at `pfns` to swap (shrink_folio_list() -> add_to_swap() ->
        pageout()), whole or split as the profile's swap_alloc policy allows. Returns one
        simcore.swap.SwapRecord per folio, or None where it stayed resident."""
        if self.swap_device is None:
            raise ValueError("no swap area; call swapon() first")
        pfns = self._heads(pfns, reserve=True)
        return [swap.swap_out_folio(self, int(p), self.profile.swap_alloc) for p in pfns]

    def swap_in(self, records):
        """Fault every swapped-out folio of `records` back in (do_swap_page()), large or order
        0 as the profile's swapin policy allows. Returns, per record, the head PFNs of the
        folios brought back."""
        if self.swap_device is None:
            raise ValueError("no swap area; call swapon() first")
        return [swap.swap_in(self, r, self.profile.swapin) for r in records]

    def zswap_enable(self, on=True):
        """echo Y|N > /sys/module/zswap/parameters/enabled."""
        self.zswap.enable(on)

    def ksm_merge(self, pfns_a, pfns_b):
        """One KSM full scan over pairs of folios of identical content (simcore.ksm.merge)."""
        return ksm.merge(self, self._heads(pfns_a), self._heads(pfns_b), self.profile.ksm)

    def memory_failure(self, pfn):
        """memory_failure(pfn) of an in-use page: (recovered, action). The poisoned page stays
        allocated (kind "kernel", flag hwpoison) for good; see simcore.memory_failure."""
        if isinstance(pfn, bool) or not isinstance(pfn, (int, np.integer)):
            raise ValueError(f"pfn {pfn!r} is not an integer")
        got = memory_failure.memory_failure(self, int(pfn), self.profile.memory_failure)
        if self.reclaim:                                          # reclaim hook (vmscan)
            vmscan.leave_lru_if_not_lru_kind(self, int(pfn))
        return got

    def collapse(self, pfns, order=HPAGE_PMD_ORDER):
        """khugepaged/MADV_COLLAPSE of the folios at `pfns` into one folio of `order`:
        (head PFN, "") or (None, reason)."""
        return khugepaged.collapse(self, self._heads(pfns), _order(order),
                                   self.profile.khugepaged)

    def numa_migrate(self, node, pfns):
        """NUMA hinting faults on the folios at `pfns`, migrating them to `node` (another
        Machine). Per folio its head PFN on `node`, or None."""
        if not isinstance(node, Machine) or node is self:
            raise ValueError("node must be another Machine (the second NUMA node)")
        return numa.migrate_misplaced(self, node, self._heads(pfns), self.profile.numa_balancing)

    def subsystem_stats(self):
        """Counters outside /proc/vmstat, named by their sysfs/debugfs paths: KSM, memory
        failure, zswap, the swap area, and modelled time per subsystem."""
        out = {f"ksm/{k}": v for k, v in self.ksm.stats().items()}
        out.update({f"memory_failure/{k}": v
                    for k, v in self.memory_failure_counts.stats().items()})
        out.update({f"zswap/{k}": v for k, v in self.zswap.stats().items()})
        if self.swap_device is not None:
            out.update({f"swap/{k}": int(v) for k, v in self.swap_device.info().items()})
        out.update({f"time_ns/{k}": v for k, v in self.model_ns.items()})
        return out

    def _heads(self, pfns, reserve=False):
        """The folio heads `pfns` as an array, checked; with reserve, handles for splitting
        them all (callers that refuse input after this check reserve later, so that a refused
        call leaves the handle table as it was)."""
        arr = np.atleast_1d(np.asarray(pfns, dtype=np.int64))
        if arr.size and (arr.min() < 0 or arr.max() >= self.nr_pages
                         or (self.pgdat.mem_map["type"][arr] != PAGE_HEAD).any()):
            raise ValueError("a pfn is not the head of an allocated folio")
        if len(np.unique(arr)) != len(arr):
            raise ValueError("a pfn appears twice")
        if reserve:
            self._reserve_handles(int((np.int64(1) << self.pgdat.mem_map["order"][arr]
                                       .astype(np.int64)).sum()) + 1)
        return arr

    # -- folio queries ---------------------------------------------------------------------

    def folio(self, pfn):
        """The folio headed at pfn as a dict (order, kind, flags, handle); ValueError otherwise."""
        if isinstance(pfn, bool) or not isinstance(pfn, (int, np.integer)) \
                or not 0 <= pfn < self.nr_pages or self.pgdat.mem_map[pfn]["type"] != PAGE_HEAD:
            raise ValueError(f"pfn {pfn!r} is not the head of an allocated folio")
        page = self.pgdat.mem_map[pfn]
        bits = int(page["flags"])
        return {
            "pfn": int(pfn), "order": int(page["order"]), "kind": KIND_NAMES[page["kind"]],
            "flags": tuple(name for name, bit in PAGE_FLAG_NAMES.items() if bits & bit),
            "handle": int(page["next"]),
            "migratetype": MIGRATETYPE_NAMES[self.pgdat.pageblock_flags[pfn >> PAGEBLOCK_ORDER]
                                             & PB_MIGRATETYPE_MASK].lower(),
        }

    def handles_of(self, pfns):
        """The handles of the folios headed at `pfns` (stable across migration)."""
        pfns = np.asarray(pfns, dtype=np.int64)
        if pfns.ndim == 1:
            out = np.empty(len(pfns), dtype=np.int64)
            if not _handles.heads_to_handles(self.pgdat.view, np.ascontiguousarray(pfns),
                                             self.nr_pages, out):
                raise ValueError("a pfn is not the head of an allocated folio")
            return out
        mem_map = self.pgdat.mem_map
        if pfns.size and (pfns.min() < 0 or pfns.max() >= self.nr_pages
                          or (mem_map["type"][pfns] != PAGE_HEAD).any()):
            raise ValueError("a pfn is not the head of an allocated folio")
        return mem_map["next"][pfns].astype(np.int64)

    def set_flags(self, pfns, flags, on=True):
        """Set (or with on=False clear) page flags on the folios headed at `pfns`, e.g. a
        writeback that starts and later completes."""
        mask = page_flags(flags)
        pfns = np.asarray(pfns, dtype=np.int64)
        self.handles_of(pfns)               # validates
        field = self.pgdat.mem_map["flags"]
        if on:
            field[pfns] |= mask
        else:
            field[pfns] &= ~np.uint8(mask)

    def fault_anon(self, count, orders, kind="anon", cpu=None, gfp=None):
        """Anonymous page faults with mTHP: each fault tries `orders` from the largest down and
        falls back to the next (alloc_anon_folio()), ending at order 0. Counts per-size
        anon_fault_alloc/anon_fault_fallback and thp_fault_alloc/thp_fault_fallback for PMD
        size. Simplified in bulk: once an order fails, the remaining faults fall back at once.
        gfp: for the large orders (simcore.gfp.vma_thp_gfp_mask(defrag) gives the THP
        fault's); order 0 is always "user". cpu as for alloc().
        Returns {order: head PFNs granted at that order}."""
        if cpu is not None:
            self._on_cpu(cpu)
        orders = sorted({_order(o) for o in orders} | {0}, reverse=True)
        stats = self.pgdat.mthp_stats
        events = self.pgdat.events
        got = {}
        left = int(count)
        for o in orders:
            if left <= 0:
                break
            pfns = self.alloc_many(left, o, "movable", kind, gfp=gfp if o else None)
            got[o] = pfns
            if o > 0:
                stats[o, ev.MTHP_STAT_ANON_FAULT_ALLOC] += len(pfns)
                stats[o, ev.MTHP_STAT_ANON_FAULT_FALLBACK] += left - len(pfns)
                if o == HPAGE_PMD_ORDER:
                    events[ev.THP_FAULT_ALLOC] += len(pfns)
                    events[ev.THP_FAULT_FALLBACK] += left - len(pfns)
            left -= len(pfns)
        return got

    def folios(self):
        """Every allocated folio as arrays: pfn, order, kind, flags, handle (ascending PFN)."""
        mem_map = self.pgdat.mem_map
        heads = np.flatnonzero(mem_map["type"] == PAGE_HEAD)
        recs = mem_map[heads]
        return {"pfn": heads, "order": recs["order"].astype(np.int64),
                "kind": recs["kind"].astype(np.int64), "flags": recs["flags"].astype(np.int64),
                "handle": recs["next"].astype(np.int64)}

    def handle_pfn(self, handles):
        """Where folios live now, by handle (handles survive migration; PFNs do not)."""
        handles = np.asarray(handles, dtype=np.int64)
        table = self.pgdat.folio_pfn
        if handles.ndim == 1:
            out = np.empty(len(handles), dtype=np.int64)
            if not _handles.handles_to_pfns(table, np.ascontiguousarray(handles), out):
                raise ValueError("a handle does not name a live folio")
            return out
        if handles.size and (handles.min() < 0 or handles.max() >= len(table)
                             or (table[handles] < 0).any()):
            raise ValueError("a handle does not name a live folio")
        return table[handles]

    # -- state, counters and renderers -----------------------------------------------------

    @property
    def zones(self):
        """Populated zones as (index, name) pairs, lowest first."""
        z = self.pgdat.zones
        return [(i, ZONE_NAMES[i]) for i in range(len(ZONE_NAMES)) if z[i, Z_END] > z[i, Z_START]]

    def zoneinfo(self):
        """Per-zone figures as /proc/zoneinfo names them: span, managed, free, watermarks."""
        z = self.pgdat.zones
        return {name: {
            "start_pfn": int(z[i, Z_START]), "spanned": int(z[i, Z_END] - z[i, Z_START]),
            "managed": int(z[i, Z_MANAGED]), "nr_free_pages": int(z[i, Z_FREE]),
            "nr_free_cma": int(z[i, Z_FREE_CMA]), "cma": int(z[i, Z_CMA_PAGES]),
            "min": int(z[i, Z_WMARK_MIN]), "low": int(z[i, Z_WMARK_LOW]),
            "high": int(z[i, Z_WMARK_HIGH]), "promo": int(z[i, Z_WMARK_PROMO]),
            "boost": int(self.boost.boost[i]),
            "nr_reserved_highatomic": int(z[i, Z_NR_RESERVED_HIGHATOMIC]),
            "nr_free_highatomic": int(z[i, Z_FREE_HIGHATOMIC]),
            "protection": tuple(int(v) for v in z[i, Z_LOWMEM_RESERVE:Z_LOWMEM_RESERVE + 3]),
            "pagesets": pcp.pagesets(self.pgdat.pcp, i),
        } for i, name in self.zones}

    def nr_free(self):
        """Free blocks per (populated zone, order, migratetype): the buddy lists' lengths."""
        idx = [i for i, _ in self.zones]
        return self.pgdat.free_area[idx, :, :, FA_COUNT].copy()

    def pageblock_map(self):
        """Per pageblock: migratetype and the share of its pages that are free, for pictures."""
        mts = (self.pgdat.pageblock_flags & PB_MIGRATETYPE_MASK).astype(np.int64)
        free = np.zeros(self.nr_pages, dtype=np.int64)
        mem_map = self.pgdat.mem_map
        heads = np.flatnonzero(mem_map["type"] == PAGE_BUDDY)
        sizes = np.int64(1) << mem_map["order"][heads].astype(np.int64)
        np.add.at(free, heads, sizes)
        # a buddy larger than a pageblock counts in every block it covers
        per_block = np.zeros(len(mts), dtype=np.int64)
        big = sizes > PAGEBLOCK_NR_PAGES
        np.add.at(per_block, heads[~big] // PAGEBLOCK_NR_PAGES, sizes[~big])
        for h, n in zip(heads[big], sizes[big]):
            per_block[h // PAGEBLOCK_NR_PAGES:(h + n) // PAGEBLOCK_NR_PAGES] += PAGEBLOCK_NR_PAGES
        return mts, per_block / PAGEBLOCK_NR_PAGES

    def nr_pageblocks(self):
        """Pageblocks per (populated zone, migratetype)."""
        z = self.pgdat.zones
        mts = self.pgdat.pageblock_flags & PB_MIGRATETYPE_MASK
        return np.array([np.bincount(mts[z[i, Z_START] // PAGEBLOCK_NR_PAGES:
                                         z[i, Z_END] // PAGEBLOCK_NR_PAGES],
                                     minlength=MIGRATE_TYPES)[:MIGRATE_TYPES]
                         for i, _ in self.zones], dtype=np.int64)

    def pcp_pages(self):
        """Pages on the per-CPU lists of every CPU and zone (free, but neither on the buddy
        lists nor in nr_free_pages)."""
        return pcp.nr_pcp_pages(self.pgdat.pcp)

    def drain_all_pages(self):
        """drain_all_pages(NULL): every CPU's per-CPU lists back to the buddy allocator."""
        pcp.entry_drain_all_pages(self.pgdat, -1)

    def free_pages(self):
        """Pages on the buddy lists, isolated ones included (not those on per-CPU lists:
        pcp_pages())."""
        counts = self.pgdat.free_area[..., FA_COUNT]
        return int((counts.sum(axis=2) << np.arange(NR_PAGE_ORDERS)).sum())

    def allocated_pages(self):
        """Pages held by folios."""
        return int(self.pgdat.node[N_KIND_PAGES:N_KIND_PAGES + NR_KINDS].sum())

    @property
    def managed_pages(self):
        return int(self.pgdat.zones[:, Z_MANAGED].sum())

    def vmstat(self):
        """/proc/vmstat as a dict: the state counters we keep, then the event counters."""
        p = self.pgdat
        kind_pages = p.node[N_KIND_PAGES:N_KIND_PAGES + NR_KINDS]
        counters = {
            "nr_free_pages": int(p.zones[:, Z_FREE].sum()),
            "nr_free_cma": int(p.zones[:, Z_FREE_CMA].sum()),
            "nr_anon_pages": int(kind_pages[KIND_ANON]),
            "nr_file_pages": int(kind_pages[KIND_FILE] + kind_pages[KIND_SHMEM]),
            "nr_shmem": int(kind_pages[KIND_SHMEM]),
            "nr_slab_unreclaimable": int(kind_pages[KIND_SLAB]),
            "nr_page_table_pages": int(kind_pages[KIND_PAGETABLE]),
        }
        counters.update(zip(ev.VM_EVENT_NAMES, (int(v) for v in p.events)))
        counters.update(zip(vmscan.RECLAIM_EVENT_NAMES, (int(v) for v in self.lru.events)))
        return counters

    def mthp_stats(self):
        """Per-size mTHP stats: {"hugepages-64kB": {"split": n, ...}, ...} for orders 2..9."""
        stats = self.pgdat.mthp_stats
        return {f"hugepages-{(PAGE_SIZE << o) >> 10}kB": dict(zip(ev.MTHP_STAT_NAMES,
                                                                  (int(v) for v in stats[o])))
                for o in range(2, PAGEBLOCK_ORDER + 1)}

    def _zone_names(self):
        return [name for _, name in self.zones]

    def buddyinfo(self):
        """/proc/buddyinfo text."""
        return vmstat.render_buddyinfo(0, self._zone_names(), self.nr_free())

    def pagetypeinfo(self):
        """/proc/pagetypeinfo text (with the CMA column of a CONFIG_CMA kernel)."""
        return vmstat.render_pagetypeinfo(0, self._zone_names(), self.nr_free(),
                                          self.nr_pageblocks())

    def extfrag_index(self):
        """debugfs extfrag/extfrag_index text."""
        return vmstat.render_extfrag_index(0, self._zone_names(), self.nr_free())

    def unusable_index(self):
        """debugfs extfrag/unusable_index text."""
        return vmstat.render_unusable_index(0, self._zone_names(), self.nr_free())

    def fragmentation_index(self, order=PAGEBLOCK_ORDER):
        """{zone name: fragmentation index x1000} at `order` (__fragmentation_index())."""
        order = _order(order)
        return {name: vmstat.fragmentation_index(nr.sum(axis=1), order)
                for name, nr in zip(self._zone_names(), self.nr_free())}

    def unusable_free_index(self, order=PAGEBLOCK_ORDER):
        """{zone name: unusable free space index x1000} at `order`."""
        order = _order(order)
        return {name: vmstat.unusable_free_index(nr.sum(axis=1), order)
                for name, nr in zip(self._zone_names(), self.nr_free())}

    def fragmentation_score(self):
        """The node's proactive-compaction score (fragmentation_score_node(), 0..100)."""
        z = self.pgdat.zones
        return vmstat.fragmentation_score_node(
            [(nr.sum(axis=1), int(z[i, Z_END] - z[i, Z_START]))
             for (i, _), nr in zip(self.zones, self.nr_free())])

    def check(self):
        """Verify every invariant of simulated memory; InvariantError names the PFN and rule."""
        code, pfn, detail = debug_vm.entry_check_pgdat(self.pgdat)
        if code:
            where = f"pfn {pfn}" if pfn >= 0 else "node 0"
            raise InvariantError(f"{where}: {debug_vm.RULES[code]} (detail {detail})")
        if self.swap_device is not None:
            problem = self.swap_device.check()
            if problem:
                raise InvariantError(problem)
        problem = vmscan.check_lru(self) or highatomic.check(self.pgdat) \
            or _deferred_split.check(self.pgdat)
        if problem:
            raise InvariantError(problem)
        mem_map = self.pgdat.mem_map
        for pfn in self.hwpoisoned:
            if mem_map[pfn]["type"] != PAGE_HEAD or not mem_map[pfn]["flags"] & PG_HWPOISON:
                raise InvariantError(f"pfn {pfn}: a poisoned page went back into use")

    def digest(self):
        """SHA-256 over the whole mutable state: equal digests mean machines that behave
        identically from here on under the same operations.

        Covered: every pgdat array (mem_map, pageblock flags with the skip bits, free lists,
        zones with watermarks and the compaction scanners' cached positions, node counters,
        handle table, vmstat events, mTHP stats, the per-CPU lists with their settings and
        the current CPU), the compaction control and its free-page
        pool, knobs (deferral and sysctls), the cost model, migration statistics, the simulated
        clock and kcompactd's next wake-up, the rng's full state, CMA allocations, offline
        memory blocks, the swap device (slot map, clusters, per-order current cluster), zswap,
        KSM and memory-failure state, poisoned pages, modelled subsystem time, and the
        configuration (profile, strategy, sizes, min_free_kbytes)."""
        h = hashlib.sha256()
        p = self.pgdat
        arrays = [getattr(p, name) for name, _, _ in PGDAT_ARRAYS if name != "trace_log"]
        arrays += [self.knobs, self.costs, self._cc, self._pool, self._migratepages,
                   self.migrate_stats[:migrate.NR_MS]] + self.lru.digest_arrays()
        dev = self.swap_device
        if dev is not None:
            arrays += [dev.swap_map, dev.cluster_count, dev.cluster_order]
        for arr in arrays:
            arr = np.ascontiguousarray(arr)
            h.update(repr((arr.dtype.str, arr.shape)).encode())
            h.update(arr.view(np.uint8))
        scalars = (
            self.profile.name, sorted(self.profile.policies().items()),
            self.strategy.name, type(self.strategy).__qualname__,
            self.mem, self.seed, self.nr_pages, self.memory_block_pages, self.min_free_kbytes,
            self.cma_range, self.clock_ns, self._kcompactd_next_ns, self._vmstat_next_ns,
            sorted(self._cma_allocations.items()), sorted(self._offline_blocks),
            sorted(self.hwpoisoned), sorted(self.model_ns.items()),
            self.rng.bit_generator.state,
            None if dev is None else (dev.nr_slots, sorted(dev.next.items()), dev.synchronous,
                                      dev.solid_state, dev.blkdev),
            sorted(vars(self.zswap).items()), sorted(vars(self.ksm).items()),
            sorted(vars(self.memory_failure_counts).items()),
            self.reclaim, self.lru.digest_scalars(), self.boost.state(),
        )
        h.update(repr(scalars).encode())
        return h.hexdigest()

    def __repr__(self):
        return (f"Machine(mem={format_size(self.mem)!r}, seed={self.seed}, "
                f"free={self.free_pages()} of {self.managed_pages} pages)")


def _pcp_settings(cpus, fraction):
    """Machine(cpus=, percpu_pagelist_high_fraction=) checked: (cpus, fraction)."""
    if isinstance(cpus, bool) or not isinstance(cpus, (int, np.integer)) \
            or not 1 <= cpus <= pcp.MAX_CPUS:
        raise ValueError(f"cpus {cpus!r} must be an integer from 1 to {pcp.MAX_CPUS}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, np.integer)) \
            or not (fraction == 0 or
                    pcp.MIN_PERCPU_PAGELIST_HIGH_FRACTION <= fraction <= (1 << 31) - 1):
        raise ValueError(f"percpu_pagelist_high_fraction {fraction!r} must be 0 or an "
                         f"integer of at least {pcp.MIN_PERCPU_PAGELIST_HIGH_FRACTION}")
    return int(cpus), int(fraction)


def _entry(dispatcher, *example_args):
    """The compiled entry point of a numba function for these argument types."""
    argtypes = tuple(numba.typeof(a) for a in example_args)
    dispatcher.compile(argtypes)
    return dispatcher.overloads[argtypes].entry_point
