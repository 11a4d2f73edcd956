"""Per-CPU page lists (struct per_cpu_pages), after the pcp code of mm/page_alloc.c.

Every zone keeps, per CPU, a small cache of free pages in front of the buddy allocator: one
list per pcp migratetype (UNMOVABLE, MOVABLE, RECLAIMABLE) for each order 0..3
(PAGE_ALLOC_COSTLY_ORDER), plus lists for the PMD order (HPAGE_PMD_ORDER). Allocations of those
orders take the first page of their list, refilled `batch` pages at a time from the buddy
lists (rmqueue_bulk()); frees put the page at the head of its list and, once the CPU holds
`high` pages or more, give the oldest ones back (free_pcppages_bulk()). Pages on a pcp list
are not PageBuddy and not in NR_FREE_PAGES: neither /proc/buddyinfo nor nr_free_pages shows
them, and they do not merge with their buddies until drained.

State: one int64 array, pgdat.pcp (1-D): a header (the current CPU, the number of CPUs, the
policy, percpu_pagelist_high_fraction), per zone its flags and pageset values, then one block
per (cpu, zone) with count, high, batch, high_min, high_max, free_count, alloc_factor, flags
and the lists' (head, tail, length), linked through mem_map's next/prev like the buddy lists.
A page on a pcp list is a PAGE_PCP head of its order.

Policies (simcore.profiles "pcp" field, PCP_POLICIES):
- fixed_high: 5.14 .. 6.6. high fixed from the zone's low watermark split over the CPUs
  (zone_highsize()), free_factor doubling the drain batch on consecutive frees, one list for
  the PMD order shared by every migratetype.
- auto_high: 6.7+ ("mm: PCP high auto-tuning", Huang Ying, 6.7), with the PMD order split into
  a MOVABLE list and one for UNMOVABLE+RECLAIMABLE ("mm: page_alloc: separate THP PCP into
  movable and non-movable categories", 6.8 ~). high moves between high_min (low watermark /
  CPUs) and high_max (managed / 8 / CPUs): it grows on refills and when frees overflow it,
  shrinks while the zone is below its high watermark (ZONE_BELOW_HIGH) or reclaim is active
  (ZONE_RECLAIM_ACTIVE); alloc_factor scales refills, free_count scales drains.

Simplified against the kernel:
- The caller names the CPU (header H_THIS_CPU); there is no preemption, no pcp lock contention
  (pcp_spin_trylock() always succeeds) and no remote-node pagesets.
- PCPF_FREE_HIGH_BATCH (set from the CPU's cache size) is never set; decay_pcp_high() from the
  vmstat worker and drain_zone_pages() of remote pagesets are not modelled.
- The auto_high policy models the 6.10+ code (free_count rather than 6.7's free_factor).
"""
import numba as nb
import numpy as np

from . import page_alloc
from . import vm_event as ev
from .mmzone import (
    HPAGE_PMD_ORDER,
    MIGRATE_ISOLATE,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    PAGE_ALLOC_COSTLY_ORDER,
    PAGE_PCP,
    PAGE_SIZE,
    PAGE_TAIL,
    ZONE_MOVABLE,
    ZONE_NAMES,
)
from .pgdat import Z_END, Z_START

# jit_inline: the hot small functions of the allocation and free paths, inlined into their
# callers; the rest explicitly not (see simcore.page_alloc's jit)
jit = nb.njit(cache=True, nogil=True, forceinline=False)
jit_inline = nb.njit(cache=True, nogil=True, forceinline=True)

NR_ZONES = len(ZONE_NAMES)
NR_LOWORDER_PCP_LISTS = MIGRATE_PCPTYPES * (PAGE_ALLOC_COSTLY_ORDER + 1)
NR_PCP_THP = 2                      # lists for the PMD order (one of them unused by fixed_high)
NR_PCP_LISTS = NR_LOWORDER_PCP_LISTS + NR_PCP_THP
PCP_BATCH_SCALE_MAX = 5             # CONFIG_PCP_BATCH_SCALE_MAX default
MIN_PERCPU_PAGELIST_HIGH_FRACTION = 8
MAX_CPUS = 256

POLICY_FIXED_HIGH = 1
POLICY_AUTO_HIGH = 2
PCP_POLICIES = {
    "fixed_high": "high from the low watermark split over the CPUs, fixed; free_factor; one "
                  "PMD-order list (5.14 .. 6.6)",
    "auto_high": "high auto-tuned between high_min and high_max; alloc_factor and free_count; "
                 "PMD-order lists MOVABLE and UNMOVABLE+RECLAIMABLE (6.7/6.8+)",
}
POLICY_CODES = {"fixed_high": POLICY_FIXED_HIGH, "auto_high": POLICY_AUTO_HIGH}

# header
H_THIS_CPU = 0
H_NR_CPUS = 1
H_POLICY = 2
H_HIGH_FRACTION = 3                 # vm.percpu_pagelist_high_fraction (0: auto)
H_ZONE = 4                          # + z * ZH_SIZE: per-zone fields
ZH_FLAGS = 0                        # ZONE_BELOW_HIGH, ZONE_RECLAIM_ACTIVE
ZH_SIZE = 1
H_SIZE = H_ZONE + NR_ZONES * ZH_SIZE
ZONE_BELOW_HIGH = 1
ZONE_RECLAIM_ACTIVE = 2             # set by kswapd while it reclaims (the reclaim model's hook)

# per (cpu, zone) block
P_COUNT = 0
P_HIGH = 1
P_BATCH = 2
P_HIGH_MIN = 3
P_HIGH_MAX = 4
P_FREE_COUNT = 5                    # free_count (auto_high) or free_factor (fixed_high)
P_ALLOC_FACTOR = 6
P_FLAGS = 7                         # PCPF_PREV_FREE_HIGH_ORDER
P_LISTS = 8                         # + pindex * 3: head, tail, length
P_SIZE = P_LISTS + 3 * NR_PCP_LISTS
PCPF_PREV_FREE_HIGH_ORDER = 1
L_HEAD = 0
L_TAIL = 1
L_LEN = 2


def array_size(nr_cpus):
    return H_SIZE + nr_cpus * NR_ZONES * P_SIZE


# ---- sizing (plain Python: once per machine and after memory hot(un)plug) -----------------

def zone_batchsize(managed):
    """zone_batchsize(): about 0.1% of the zone or 1 MiB, whichever is smaller, a quarter of it,
    rounded down to 2^n - 1 (against cache aliasing between tasks)."""
    batch = min(managed >> 10, (1 << 20) // PAGE_SIZE) // 4
    batch = max(batch, 1)
    return (1 << ((batch + batch // 2).bit_length() - 1)) - 1


def zone_highsize(managed, low_wmark, batch, nr_cpus, high_fraction):
    """zone_highsize(): the zone's low watermark (or managed / high_fraction) split over the
    node's CPUs, at least 4 batches."""
    total = managed // high_fraction if high_fraction else low_wmark
    return max(total // nr_cpus, batch << 2)


def setup_pagesets(pcp, zones_managed, zones_low, nr_cpus, policy, high_fraction):
    """zone_set_pageset_high_and_batch() for every zone and CPU: batch, high_min, high_max
    (equal unless auto-tuning), and high clamped into them. Lists are left as they are."""
    pcp[H_NR_CPUS] = nr_cpus
    pcp[H_POLICY] = POLICY_CODES[policy]
    pcp[H_HIGH_FRACTION] = high_fraction
    for z in range(NR_ZONES):
        managed = int(zones_managed[z])
        batch = max(1, zone_batchsize(managed))
        high_min = zone_highsize(managed, int(zones_low[z]), batch, nr_cpus, high_fraction)
        high_max = high_min
        if policy == "auto_high" and not high_fraction:
            high_max = zone_highsize(managed, 0, batch, nr_cpus,
                                     MIN_PERCPU_PAGELIST_HIGH_FRACTION)
        for cpu in range(nr_cpus):
            b = H_SIZE + (cpu * NR_ZONES + z) * P_SIZE
            pcp[b + P_BATCH] = batch
            pcp[b + P_HIGH_MIN] = high_min
            pcp[b + P_HIGH_MAX] = high_max
            pcp[b + P_HIGH] = min(max(pcp[b + P_HIGH], high_min), high_max)


def new_pcp_array(nr_cpus):
    pcp = np.zeros(array_size(nr_cpus), dtype=np.int64)
    for cpu in range(nr_cpus):
        for z in range(NR_ZONES):
            b = H_SIZE + (cpu * NR_ZONES + z) * P_SIZE
            for i in range(NR_PCP_LISTS):
                pcp[b + P_LISTS + 3 * i + L_HEAD] = -1
                pcp[b + P_LISTS + 3 * i + L_TAIL] = -1
    return pcp


def pagesets(pcp, z):
    """Per CPU of zone z: count, high, batch, high_min, high_max (/proc/zoneinfo "pagesets")."""
    out = []
    for cpu in range(int(pcp[H_NR_CPUS])):
        b = H_SIZE + (cpu * NR_ZONES + z) * P_SIZE
        out.append({"cpu": cpu, "count": int(pcp[b + P_COUNT]), "high": int(pcp[b + P_HIGH]),
                    "batch": int(pcp[b + P_BATCH]), "high_min": int(pcp[b + P_HIGH_MIN]),
                    "high_max": int(pcp[b + P_HIGH_MAX])})
    return out


def nr_pcp_pages(pcp):
    """Pages on every pcp list of every CPU and zone."""
    nr_cpus = int(pcp[H_NR_CPUS])
    counts = pcp[H_SIZE:H_SIZE + nr_cpus * NR_ZONES * P_SIZE].reshape(-1, P_SIZE)[:, P_COUNT]
    return int(counts.sum())


# ---- list layout ---------------------------------------------------------------------------

@jit_inline
def pcp_base(cpu, z):
    return H_SIZE + (cpu * NR_ZONES + z) * P_SIZE


@jit_inline
def pcp_allowed_order(order):
    """pcp_allowed_order(): orders up to PAGE_ALLOC_COSTLY_ORDER and the PMD order."""
    return order <= PAGE_ALLOC_COSTLY_ORDER or order == HPAGE_PMD_ORDER


@jit_inline
def order_to_pindex(policy, mt, order):
    """order_to_pindex(): MIGRATE_PCPTYPES lists per low order; the PMD order has one list
    (fixed_high) or MOVABLE apart from the rest (auto_high)."""
    if order > PAGE_ALLOC_COSTLY_ORDER:
        if policy == POLICY_AUTO_HIGH and mt == MIGRATE_MOVABLE:
            return NR_LOWORDER_PCP_LISTS + 1
        return NR_LOWORDER_PCP_LISTS
    return MIGRATE_PCPTYPES * order + mt


@jit_inline
def pindex_to_order(pindex):
    if pindex >= NR_LOWORDER_PCP_LISTS:
        return HPAGE_PMD_ORDER
    return pindex // MIGRATE_PCPTYPES


@jit_inline
def list_add(pgdat, b, pindex, pfn, order, tail):
    """list_add() (head) or list_add_tail() of a page onto a pcp list; it becomes PAGE_PCP."""
    pcp = pgdat.pcp
    mem_map = pgdat.mem_map
    lst = b + P_LISTS + 3 * pindex
    mem_map[pfn].type = PAGE_PCP
    mem_map[pfn].order = order
    mem_map[pfn].kind = 0
    mem_map[pfn].flags = 0
    if pcp[lst + L_HEAD] < 0:
        mem_map[pfn].next = -1
        mem_map[pfn].prev = -1
        pcp[lst + L_HEAD] = pfn
        pcp[lst + L_TAIL] = pfn
    elif tail:
        last = pcp[lst + L_TAIL]
        mem_map[pfn].prev = last
        mem_map[pfn].next = -1
        mem_map[last].next = pfn
        pcp[lst + L_TAIL] = pfn
    else:
        first = pcp[lst + L_HEAD]
        mem_map[pfn].next = first
        mem_map[pfn].prev = -1
        mem_map[first].prev = pfn
        pcp[lst + L_HEAD] = pfn
    pcp[lst + L_LEN] += 1


@jit_inline
def list_del(pgdat, b, pindex, pfn):
    """list_del(): the page leaves its pcp list and is no longer PAGE_PCP."""
    pcp = pgdat.pcp
    mem_map = pgdat.mem_map
    lst = b + P_LISTS + 3 * pindex
    nxt = mem_map[pfn].next
    prv = mem_map[pfn].prev
    if prv >= 0:
        mem_map[prv].next = nxt
    else:
        pcp[lst + L_HEAD] = nxt
    if nxt >= 0:
        mem_map[nxt].prev = prv
    else:
        pcp[lst + L_TAIL] = prv
    pcp[lst + L_LEN] -= 1
    mem_map[pfn].type = PAGE_TAIL
    mem_map[pfn].next = -1
    mem_map[pfn].prev = -1


# ---- draining ------------------------------------------------------------------------------

@jit
def free_pcppages_bulk(pgdat, z, b, count, pindex):
    """free_pcppages_bulk(): give `count` base pages back to the buddy allocator, starting with
    list `pindex` and going round-robin over the non-empty lists, each emptied from its tail
    (the coldest pages) before moving on. Each page goes to its pageblock's current
    migratetype, so pages of a block isolated meanwhile land on the isolate list."""
    pcp = pgdat.pcp
    count = min(pcp[b + P_COUNT], count)
    pindex -= 1
    while count > 0:
        while True:
            pindex += 1
            if pindex > NR_PCP_LISTS - 1:
                pindex = 0
            if pcp[b + P_LISTS + 3 * pindex + L_LEN] > 0:
                break
        order = pindex_to_order(pindex)
        nr_pages = np.int64(1) << order
        while True:
            pfn = pcp[b + P_LISTS + 3 * pindex + L_TAIL]
            list_del(pgdat, b, pindex, pfn)
            count -= nr_pages
            pcp[b + P_COUNT] -= nr_pages
            # prefetch_buddy() of the next page to go while this one merges (a hint only)
            nxt = pcp[b + P_LISTS + 3 * pindex + L_TAIL]
            if count > 0 and nxt >= 0:
                page_alloc.prefetch_buddy(pgdat, nxt, order)
            mt = page_alloc.get_pageblock_migratetype(pgdat, pfn)
            page_alloc.free_one_page(pgdat, z, pfn, order, mt, False)
            if count <= 0 or pcp[b + P_LISTS + 3 * pindex + L_LEN] == 0:
                break


@jit
def drain_pages_zone(pgdat, cpu, z):
    """drain_pages_zone(): everything on one CPU's lists of zone z back to the buddy lists."""
    b = pcp_base(cpu, z)
    if pgdat.pcp[b + P_COUNT] > 0:
        free_pcppages_bulk(pgdat, z, b, pgdat.pcp[b + P_COUNT], 0)


@jit
def drain_local_pages(pgdat, z):
    """drain_local_pages(): the current CPU's lists of zone z (all zones when z < 0)."""
    cpu = pgdat.pcp[H_THIS_CPU]
    for zz in range(NR_ZONES):
        if z < 0 or zz == z:
            drain_pages_zone(pgdat, cpu, zz)


@jit
def drain_all_pages(pgdat, z):
    """drain_all_pages(): every CPU's lists of zone z (all zones when z < 0)."""
    for cpu in range(pgdat.pcp[H_NR_CPUS]):
        for zz in range(NR_ZONES):
            if z < 0 or zz == z:
                drain_pages_zone(pgdat, cpu, zz)


@jit
def decay_pcp_high(pgdat, z, b):
    """decay_pcp_high() (auto_high, from the vmstat worker's refresh_cpu_vm_stats() once a
    second): high drops by an eighth towards high_min (not below count - (batch <<
    PCP_BATCH_SCALE_MAX)), and pages above the new high go back to the buddy allocator.
    Returns how many pages it freed."""
    pcp = pgdat.pcp
    high_min = pcp[b + P_HIGH_MIN]
    high = pcp[b + P_HIGH]
    if high > high_min:
        high = max(pcp[b + P_COUNT] - (pcp[b + P_BATCH] << PCP_BATCH_SCALE_MAX),
                   high - (high >> 3), high_min)
        pcp[b + P_HIGH] = high
    to_drain = pcp[b + P_COUNT] - high
    if to_drain > 0:
        free_pcppages_bulk(pgdat, z, b, to_drain, 0)
        return to_drain
    return np.int64(0)


@jit
def entry_decay_pcp_high(node):
    """One vmstat_update() round on every CPU: decay_pcp_high() of each zone's lists (auto_high
    profiles only; fixed_high kernels have no decay). Returns the pages freed."""
    pgdat = node.arrays
    pcp = pgdat.pcp
    if pcp[H_POLICY] != POLICY_AUTO_HIGH:
        return np.int64(0)
    freed = np.int64(0)
    for cpu in range(pcp[H_NR_CPUS]):
        for z in range(NR_ZONES):
            if pgdat.zones[z, Z_END] > pgdat.zones[z, Z_START]:
                freed += decay_pcp_high(pgdat, z, pcp_base(cpu, z))
    return freed


# ---- allocation ----------------------------------------------------------------------------

@jit_inline
def nr_pcp_alloc(pgdat, z, b, order, policy):
    """nr_pcp_alloc(): how many blocks a refill takes. auto_high: high grows by a batch per
    refill (not while the zone is below its high watermark), and order-0 refills double
    (alloc_factor) while allocations run without frees, bounded by the room under high.
    Either way a batch shrinks with the order (batch >> order, at least 2)."""
    pcp = pgdat.pcp
    base_batch = pcp[b + P_BATCH]
    if policy == POLICY_FIXED_HIGH:
        batch = base_batch
    else:
        high_min = pcp[b + P_HIGH_MIN]
        high_max = pcp[b + P_HIGH_MAX]
        high = min(max(pcp[b + P_HIGH], high_min), high_max)
        pcp[b + P_HIGH] = high
        if high < base_batch:
            return np.int64(1)
        batch = base_batch if order else base_batch << pcp[b + P_ALLOC_FACTOR]
        if high_min != high_max and not (pgdat.pcp[H_ZONE + z * ZH_SIZE + ZH_FLAGS]
                                         & ZONE_BELOW_HIGH):
            high = min(high + batch, high_max)
            pcp[b + P_HIGH] = high
        if order == 0:
            max_nr_alloc = max(high - pcp[b + P_COUNT] - base_batch, base_batch)
            if batch <= max_nr_alloc and pcp[b + P_ALLOC_FACTOR] < PCP_BATCH_SCALE_MAX:
                pcp[b + P_ALLOC_FACTOR] += 1
            batch = min(batch, max_nr_alloc)
    if batch > 1:
        batch = max(batch >> order, 2)
    return batch


@jit_inline
def rmqueue_bulk(pgdat, z, b, pindex, order, count, mt, alloc_flags):
    """rmqueue_bulk(): up to `count` blocks from the buddy allocator (__rmqueue(), fallbacks
    and all) to the tail of the list. They leave NR_FREE_PAGES now. Returns how many."""
    for i in range(count):
        pfn = page_alloc.rmqueue(pgdat, z, order, mt, alloc_flags)
        if pfn < 0:
            return i
        list_add(pgdat, b, pindex, pfn, order, True)
    return count


@jit_inline
def rmqueue_pcplist(pgdat, z, order, mt, alloc_flags, policy):
    """rmqueue_pcplist() + __rmqueue_pcplist(): the first page of this CPU's list for (mt,
    order), refilling an empty list first. An allocation halves free_count (free_factor).
    Returns the PFN (a PAGE_TAIL ready for prep_new_folio()) or -1."""
    pcp = pgdat.pcp
    b = pcp_base(pcp[H_THIS_CPU], z)
    pcp[b + P_FREE_COUNT] >>= 1
    pindex = order_to_pindex(policy, mt, order)
    lst = b + P_LISTS + 3 * pindex
    if pcp[lst + L_LEN] == 0:
        batch = nr_pcp_alloc(pgdat, z, b, order, policy)
        alloced = rmqueue_bulk(pgdat, z, b, pindex, order, batch, mt, alloc_flags)
        pcp[b + P_COUNT] += alloced << order
        if alloced == 0:
            return -1
    pfn = pcp[lst + L_HEAD]
    list_del(pgdat, b, pindex, pfn)
    page_alloc.prefetch_next_pop(pgdat.mem_map, pcp[lst + L_HEAD])
    pcp[b + P_COUNT] -= np.int64(1) << order
    return pfn


@jit_inline
def rmqueue(pgdat, z, order, mt, alloc_flags):
    """rmqueue(): the per-CPU lists for the orders they hold, else the buddy allocator
    (page_alloc.rmqueue_buddy())."""
    policy = pgdat.pcp[H_POLICY]
    if policy and pcp_allowed_order(order):
        pfn = rmqueue_pcplist(pgdat, z, order, mt, alloc_flags, policy)
        if pfn >= 0:
            return pfn
    return page_alloc.rmqueue_buddy(pgdat, z, order, mt, alloc_flags)


@jit_inline
def zone_above_high(pgdat, z, order, highest_zoneidx, alloc_flags):
    """The ZONE_BELOW_HIGH detection of get_page_from_freelist() (auto_high): while the flag is
    clear, a zone above its high watermark is used at once; one below it gets the flag, which
    makes frees shrink pcp high. Returns True when the usual watermark check can be skipped."""
    zf = H_ZONE + z * ZH_SIZE + ZH_FLAGS
    pcp = pgdat.pcp
    if pcp[H_POLICY] != POLICY_AUTO_HIGH or (pcp[zf] & ZONE_BELOW_HIGH):
        return False
    flags = (alloc_flags & ~page_alloc.ALLOC_WMARK_MASK) | page_alloc.ALLOC_WMARK_HIGH
    if page_alloc.zone_watermark_ok(pgdat, z, order, highest_zoneidx, flags):
        return True
    pcp[zf] |= ZONE_BELOW_HIGH
    return False


# ---- freeing -------------------------------------------------------------------------------

@jit_inline
def nr_pcp_free(pgdat, b, batch, high, free_high, policy):
    """nr_pcp_free(): how many pages a drain on free gives back: between batch and high -
    batch, scaled by consecutive frees (free_count; fixed_high: batch << free_factor, the
    factor growing while it fits); with free_high as much as possible."""
    pcp = pgdat.pcp
    count = pcp[b + P_COUNT]
    if free_high:
        if policy == POLICY_FIXED_HIGH:
            return count
        return min(count, batch << PCP_BATCH_SCALE_MAX)
    if high < batch:
        return np.int64(1)
    min_nr_free = batch
    max_nr_free = high - batch
    if policy == POLICY_FIXED_HIGH:
        n = batch << pcp[b + P_FREE_COUNT]
        if n < max_nr_free:
            pcp[b + P_FREE_COUNT] += 1
    else:
        n = pcp[b + P_FREE_COUNT]
    return max(min(n, max_nr_free), min_nr_free)


@jit_inline
def nr_pcp_high(pgdat, z, b, batch, free_high, policy):
    """nr_pcp_high(): the count at which a free drains. fixed_high: high, at most 4 batches
    while reclaim is active. auto_high: high clamped into [high_min, high_max]; it shrinks
    under reclaim or below the high watermark and grows when frees overflow it."""
    pcp = pgdat.pcp
    zflags = pcp[H_ZONE + z * ZH_SIZE + ZH_FLAGS]
    if policy == POLICY_FIXED_HIGH:
        high = pcp[b + P_HIGH]
        if high == 0 or free_high:
            return np.int64(0)
        if zflags & ZONE_RECLAIM_ACTIVE:
            return min(batch << 2, high)
        return high
    high_min = pcp[b + P_HIGH_MIN]
    high_max = pcp[b + P_HIGH_MAX]
    high = min(max(pcp[b + P_HIGH], high_min), high_max)
    pcp[b + P_HIGH] = high
    if high == 0:
        return np.int64(0)
    if free_high:
        pcp[b + P_HIGH] = max(high - (batch << PCP_BATCH_SCALE_MAX), high_min)
        return np.int64(0)
    if zflags & ZONE_RECLAIM_ACTIVE:
        free_count = max(pcp[b + P_FREE_COUNT], batch)
        pcp[b + P_HIGH] = max(high - free_count, high_min)
        return min(batch << 2, pcp[b + P_HIGH])
    if high_min == high_max:
        return high
    if zflags & ZONE_BELOW_HIGH:
        free_count = max(pcp[b + P_FREE_COUNT], batch)
        pcp[b + P_HIGH] = max(high - free_count, high_min)
        high = max(pcp[b + P_COUNT], high_min)
    elif pcp[b + P_COUNT] >= high:
        need_high = pcp[b + P_FREE_COUNT] + batch
        if pcp[b + P_HIGH] < need_high:
            pcp[b + P_HIGH] = min(max(need_high, high_min), high_max)
    return high


@jit_inline
def free_unref_page_commit(pgdat, z, pfn, order, mt, policy):
    """free_unref_page_commit(): the page to the head of this CPU's list; drain when the CPU
    holds high pages or more. Consecutive frees of orders 1..3 (free_high) drain harder, so
    that high-order pages do not pile up on the lists."""
    pcp = pgdat.pcp
    b = pcp_base(pcp[H_THIS_CPU], z)
    pindex = order_to_pindex(policy, mt, order)
    list_add(pgdat, b, pindex, pfn, order, False)
    nr = np.int64(1) << order
    pcp[b + P_COUNT] += nr
    batch = pcp[b + P_BATCH]
    if policy == POLICY_FIXED_HIGH:
        free_high = pcp[b + P_FREE_COUNT] != 0 and 0 < order <= PAGE_ALLOC_COSTLY_ORDER
    else:
        pcp[b + P_ALLOC_FACTOR] >>= 1
        free_high = False
        if 0 < order <= PAGE_ALLOC_COSTLY_ORDER:
            # PCPF_FREE_HIGH_BATCH (from the CPU's cache size) is never set here
            free_high = pcp[b + P_FREE_COUNT] >= batch and \
                (pcp[b + P_FLAGS] & PCPF_PREV_FREE_HIGH_ORDER) != 0
            pcp[b + P_FLAGS] |= PCPF_PREV_FREE_HIGH_ORDER
        else:
            pcp[b + P_FLAGS] &= ~PCPF_PREV_FREE_HIGH_ORDER
        if pcp[b + P_FREE_COUNT] < (batch << PCP_BATCH_SCALE_MAX):
            pcp[b + P_FREE_COUNT] += nr
    high = nr_pcp_high(pgdat, z, b, batch, free_high, policy)
    if pcp[b + P_COUNT] >= high:
        free_pcppages_bulk(pgdat, z, b, nr_pcp_free(pgdat, b, batch, high, free_high, policy),
                           pindex)
        zf = H_ZONE + z * ZH_SIZE + ZH_FLAGS
        if (pcp[zf] & ZONE_BELOW_HIGH) and page_alloc.zone_watermark_ok(
                pgdat, z, 0, ZONE_MOVABLE, page_alloc.ALLOC_WMARK_HIGH):
            pcp[zf] &= ~ZONE_BELOW_HIGH


@jit_inline
def free_unref_folio(pgdat, pfn, order):
    """free_unref_page()/free_unref_folios() for one block whose folio identity is gone (type
    PAGE_TAIL): orders the lists hold go to this CPU's list of the pageblock's migratetype
    (HIGHATOMIC and CMA on MOVABLE's); isolated blocks and other orders straight to the buddy
    allocator. Counts pgfree."""
    policy = pgdat.pcp[H_POLICY]
    if not policy or not pcp_allowed_order(order):
        page_alloc.free_pages_range(pgdat, pfn, order, False)
        return
    mt = page_alloc.get_pageblock_migratetype(pgdat, pfn)
    if mt >= MIGRATE_PCPTYPES:
        if mt == MIGRATE_ISOLATE:
            page_alloc.free_pages_range(pgdat, pfn, order, False)
            return
        mt = MIGRATE_MOVABLE
    z = page_alloc.page_zone(pgdat, pfn)
    pgdat.events[ev.PGFREE] += np.int64(1) << order
    free_unref_page_commit(pgdat, z, pfn, order, mt, policy)


# ---- invariants ----------------------------------------------------------------------------

# check_pcp() results (debug_vm adds its own rule numbers in front)
PCP_OK = 0
PCP_LIST_ENTRY = 1      # entry is not a PAGE_PCP block of the list's order in this zone
PCP_LINKS = 2           # prev/next or tail inconsistent
PCP_COUNT = 3           # list lengths or pcp->count differ from the entries
PCP_ISOLATED = 4        # a pcp page in an isolated pageblock (isolation drains first)


@jit
def check_pcp(pgdat, z, start, end):
    """Walk every CPU's lists of zone z. Returns (code, pfn, detail, pages on the lists,
    entries on the lists)."""
    pcp = pgdat.pcp
    mem_map = pgdat.mem_map
    pages = 0
    entries = 0
    for cpu in range(pcp[H_NR_CPUS]):
        b = pcp_base(cpu, z)
        cpu_pages = 0
        for pindex in range(NR_PCP_LISTS):
            lst = b + P_LISTS + 3 * pindex
            order = pindex_to_order(pindex)
            prev = -1
            n = 0
            p = pcp[lst + L_HEAD]
            while p >= 0:
                if p < start or p >= end or mem_map[p].type != PAGE_PCP \
                        or mem_map[p].order != order:
                    return PCP_LIST_ENTRY, p, cpu * NR_PCP_LISTS + pindex, 0, 0
                if page_alloc.get_pageblock_migratetype(pgdat, p) == MIGRATE_ISOLATE:
                    return PCP_ISOLATED, p, cpu, 0, 0
                if mem_map[p].prev != prev:
                    return PCP_LINKS, p, prev, 0, 0
                n += 1
                if n > end - start:
                    return PCP_LINKS, p, -1, 0, 0
                prev = p
                p = mem_map[p].next
            if pcp[lst + L_TAIL] != prev:
                return PCP_LINKS, prev, pcp[lst + L_TAIL], 0, 0
            if n != pcp[lst + L_LEN]:
                return PCP_COUNT, pcp[lst + L_HEAD], n, 0, 0
            cpu_pages += n << order
            entries += n
        if cpu_pages != pcp[b + P_COUNT]:
            return PCP_COUNT, -1, cpu_pages, 0, 0
        pages += cpu_pages
    return PCP_OK, -1, 0, pages, entries


# ---- entry points --------------------------------------------------------------------------

@jit
def entry_drain_all_pages(node, z):
    drain_all_pages(node.arrays, z)


@jit
def entry_drain_local_pages(node, z):
    drain_local_pages(node.arrays, z)
