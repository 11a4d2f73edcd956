"""Reconstruct a machine's physical memory from a snapshot (simcore.snapshot_file.Snapshot).

reconstruct() turns the per-PFN kpageflags/kpagecount words and the captured zoneinfo and
pagetypeinfo into what simcore holds: zone spans, managed pages and watermarks, which pages are
free, which are absent (holes, reserved, uninitialised), every folio (head, order, kind, page
flags) and each pageblock's migratetype. build() writes that into a Machine's arrays and
verifies it with Machine.check(). Nothing here reads /proc: the snapshot is a file.

Simplifications, said once:
- Zone DMA (the first 16 MiB) is folded into DMA32, as simcore has no DMA zone. No buddy block
  crosses PFN 4096 (an order-12 boundary), so folding changes no free block; DMA's watermarks,
  managed pages and pageblock counts are added to DMA32's.
- Free pages are the KPF_BUDDY pages (every page of a free block carries it, see
  is_free_buddy_page()) plus pages with no flag at all and a zero refcount inside the managed
  range: those sit on per-CPU lists, which the twin drains into the buddy lists
  (drain_all_pages()). The twin's free blocks are what the kernel's own merging
  (__free_one_page()) makes of those pages, so pcp pages merge with their buddies and the twin's
  buddyinfo differs from the captured one by them; the difference is reported, not hidden.
- Long runs (>= 2048 pages) of flagless, unreferenced pages are absent: holes up to the zone's
  spanned - present, the rest struct pages the kernel has not initialised yet (deferred/lazy
  memmap init). deferred="absent" (default) keeps them out of the zone as at capture time;
  deferred="free" hands them to the buddy allocator as the kernel does when it grows the zone.
- A zone whose tail is uninitialised (CONFIG_DEFERRED_STRUCT_PAGE_INIT; this project's VM
  boots with deferred_init=lazy and leaves 5.4 M pages to deferred_grow_zone()) ends, under
  deferred="absent", at that tail's first PFN (pgdat->first_deferred_pfn, see
  first_deferred_pfn()). That is the zone compaction sees: the kernel's mm_compaction_begin
  reports zone_end=0x5b8000 for a Normal zone that zoneinfo says spans to 0x640000, and neither
  scanner touches the uninitialised struct pages. Simplification: the twin shortens the zone
  span itself, so everything that reads the span (the fragmentation score's zone weights,
  reports) sees the initialised part only; zoneinfo's spanned and present still count it.
- PG_reserved pages are not managed: absent in the twin, like holes.
- Pageblock migratetypes are not exported by the kernel; infer_migratetypes() picks them from
  the contents so that per-zone counts equal pagetypeinfo's "Number of blocks type".
- Compound pages of an order above MAX_PAGE_ORDER (1 GiB hugetlb) become several hugetlb folios
  of MAX_PAGE_ORDER.
"""
import dataclasses
import hashlib
import os

import numpy as np

from . import procfs, snapshot_build, snapshot_file
from .mmzone import (
    KIND_ANON,
    KIND_FILE,
    KIND_HUGETLB,
    KIND_KERNEL,
    KIND_NAMES,
    KIND_PAGETABLE,
    KIND_SHMEM,
    KIND_SLAB,
    MAX_PAGE_ORDER,
    MIGRATE_HIGHATOMIC,
    MIGRATE_MOVABLE,
    MIGRATE_RECLAIMABLE,
    MIGRATE_TYPES,
    MIGRATE_UNMOVABLE,
    MIGRATETYPE_NAMES,
    NR_PAGE_ORDERS,
    PAGE_BUDDY,
    PAGE_DTYPE,
    PAGE_HEAD,
    PAGE_SIZE,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    PB_MIGRATETYPE_MASK,
    PG_DIRTY,
    PG_HWPOISON,
    PG_KSM,
    PG_MLOCKED,
    PG_UNEVICTABLE,
    PG_WRITEBACK,
    ZONE_NAMES,
)
from .pgdat import (
    N_HANDLE_FREE,
    N_HANDLES_AVAIL,
    N_KIND_PAGES,
    N_NR_FOLIOS,
    POLICY_FIELDS,
    Z_END,
    Z_LOWMEM_RESERVE,
    Z_MANAGED,
    Z_NR_RESERVED_HIGHATOMIC,
    Z_START,
    Z_WMARK_HIGH,
    Z_WMARK_LOW,
    Z_WMARK_MIN,
    Z_WMARK_PROMO,
)
from .units import format_size

# KPF_* bit numbers (include/uapi/linux/kernel-page-flags.h)
KPF = {"locked": 0, "error": 1, "referenced": 2, "uptodate": 3, "dirty": 4, "lru": 5,
       "active": 6, "slab": 7, "writeback": 8, "reclaim": 9, "buddy": 10, "mmap": 11,
       "anon": 12, "swapcache": 13, "swapbacked": 14, "compound_head": 15,
       "compound_tail": 16, "huge": 17, "unevictable": 18, "hwpoison": 19, "nopage": 20,
       "ksm": 21, "thp": 22, "offline": 23, "zero_page": 24, "idle": 25, "pgtable": 26,
       "reserved": 32, "mlocked": 33, "mappedtodisk": 34}

_LITTLE = np.little_endian
# What each PFN is to the twin.
C_USED = 0          # part of a folio (head or tail)
C_FREE = 1          # free: on a buddy list at capture
C_PCP = 2           # free on a per-CPU list (no flag, no reference, managed range)
C_HOLE = 3          # no memory (outside every zone, or a hole inside one)
C_RESERVED = 4      # PG_reserved: present but never managed
C_DEFERRED = 5      # struct page not initialised yet (deferred/lazy memmap init)
CLASS_NAMES = ("used", "free", "pcp", "hole", "reserved", "deferred")
LONG_RUN = 2048     # a flagless run this long is absent memory, not per-CPU pages
DEFERRED_MODES = ("absent", "free")
# The kernel's page flags that simcore keeps on a folio.
FLAG_MAP = (("dirty", PG_DIRTY), ("writeback", PG_WRITEBACK), ("mlocked", PG_MLOCKED),
            ("unevictable", PG_UNEVICTABLE), ("ksm", PG_KSM), ("hwpoison", PG_HWPOISON))
# How well each folio kind sits in a pageblock of each migratetype (cost per page), used to
# infer migratetypes: movable memory belongs in Movable blocks, kernel memory in Unmovable ones,
# slab in Unmovable or Reclaimable (kpageflags cannot tell reclaimable slab from the rest).
_MOVABLE_KINDS = (KIND_ANON, KIND_FILE, KIND_SHMEM, KIND_HUGETLB)
# Bytes a twin needs at its build peak per simulated page beyond mem_map (the page classes and
# temporaries), and per folio (head PFN in the handle table, order, kind, flags): see
# estimate_bytes() and docs/twin.md, "Memory".
RECONSTRUCT_BYTES_PER_PAGE = 4
BYTES_PER_FOLIO = 11
# Free handles the twin's handle table has beyond its folios (grown_handle_table()'s minimum).
HANDLE_SLACK = 1024
# A packed folio word (pack_folios()): PFN below bit 40, order, kind and flags above it.
FOLIO_ORDER_SHIFT, FOLIO_KIND_SHIFT, FOLIO_FLAGS_SHIFT = 40, 48, 56


def _bit(words, name):
    """KPF bit `name` of each uint64 word, through a byte view (no 8-byte temporaries)."""
    bit = KPF[name]
    words = np.ascontiguousarray(words, dtype=np.uint64)
    byte = words.view(np.uint8).reshape(-1, 8)[:, bit // 8 if _LITTLE else 7 - bit // 8]
    return (byte & np.uint8(1 << (bit % 8))) != 0


@dataclasses.dataclass
class Reconstruction:
    """What reconstruct() found. Per-PFN data is one uint8 class per page; folios are arrays."""
    nr_pages: int
    zones: list                 # [(twin zone index, start pfn, end pfn)]
    zone_fields: dict           # twin zone index -> {"managed", "min", "low", "high", "promo",
                                #                     "protection", "pcp_count"}
    page_class: np.ndarray      # uint8 per PFN (C_*)
    folio_pfn: np.ndarray       # int64 heads, ascending
    folio_order: np.ndarray     # int8
    folio_kind: np.ndarray      # uint8
    folio_flags: np.ndarray     # uint8
    block_mt: np.ndarray        # uint8 per pageblock
    captured_blocks: dict       # twin zone index -> int64[MIGRATE_TYPES] from pagetypeinfo
    captured_buddyinfo: dict    # twin zone index -> int64[NR_PAGE_ORDERS]
    report: dict                # agreement and uncertainty figures (see reconstruct())
    settings: dict = dataclasses.field(default_factory=dict)
    kernel: str = "unknown"
    folio_packed: bool = False  # pack_folios(): order, kind, flags in folio_pfn's top bits


# ---- zones -----------------------------------------------------------------------------------

def _twin_zone(name):
    """Twin zone index of a kernel zone name; DMA folds into DMA32."""
    if name in ("DMA", "DMA32"):
        return ZONE_NAMES.index("DMA32")
    if name in ZONE_NAMES:
        return ZONE_NAMES.index(name)
    return None


def twin_zones(zoneinfo):
    """(spans, fields) of the twin's zones from parsed zoneinfo of node 0. ValueError for a layout
    simcore cannot hold (another node, a populated Movable or Device zone)."""
    nodes = {node for node, _ in zoneinfo}
    if nodes != {0}:
        raise ValueError(f"snapshot has NUMA nodes {sorted(nodes)}; the twin models node 0 only")
    spans, fields = {}, {}
    for (_, name), z in zoneinfo.items():
        if not z.get("spanned"):
            continue
        t = _twin_zone(name)
        if t is None or name == "Movable":
            raise ValueError(f"zone {name} is populated; the twin models DMA, DMA32 and Normal")
        start, end = z["start_pfn"], z["start_pfn"] + z["spanned"]
        lo, hi = spans.get(t, (start, end))
        spans[t] = (min(lo, start), max(hi, end))
        f = fields.setdefault(t, {"managed": 0, "present": 0, "spanned": 0, "min": 0, "low": 0,
                                  "high": 0, "pcp_count": 0, "nr_free_pages": 0,
                                  "protection": z["protection"]})
        for key in ("managed", "present", "spanned", "min", "low", "high", "nr_free_pages"):
            f[key] += z.get(key, 0)
        f["pcp_count"] += sum(z["pcp_count"])
        f["protection"] = z["protection"]       # the higher zone's row (DMA32's over DMA's)
    if ZONE_NAMES.index("DMA32") in spans:       # the folded DMA32 starts at PFN 0
        spans[0] = (0, spans[0][1])
    return spans, fields


# ---- per-PFN classification ------------------------------------------------------------------

def first_deferred_pfn(pfn, zone_start):
    """pgdat->first_deferred_pfn for a zone whose tail from `pfn` on is uninitialised (None: no
    such tail), rounded up to a pageblock: deferred init hands memory over in whole sections
    (deferred_grow_zone()), so a run starting inside a block only begins with free pages of
    the initialised part that the classification could not tell apart."""
    if pfn is None:
        return None
    return max(int(-(-pfn // PAGEBLOCK_NR_PAGES) * PAGEBLOCK_NR_PAGES), int(zone_start))


def initialised_end(rec, t, end):
    """Where zone `t` (ending at `end`) ends for the twin with deferred="absent": at its
    first deferred PFN when its tail is uninitialised, else at `end`."""
    first = rec.report.get("zones", {}).get(ZONE_NAMES[t], {}).get("first_deferred_pfn")
    return end if first is None else min(int(first), end)


def _runs(mask):
    """(starts, ends) of the runs of True in a bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).view(np.int8)))
    return edges[0::2], edges[1::2]


def classify(flags, counts, spans, fields):
    """Per-PFN class (uint8, C_*) and the per-zone absent-page report."""
    n = len(flags)
    page_class = np.full(n, C_HOLE, dtype=np.uint8)
    blank = flags == 0
    blank &= counts == 0                # one bool temporary at a time
    report = {}
    for t, (start, end) in sorted(spans.items()):
        zone = slice(start, end)
        cls = page_class[zone]
        cls[:] = C_USED
        cls[_bit(flags[zone], "buddy")] = C_FREE
        cls[_bit(flags[zone], "reserved")] = C_RESERVED
        cls[_bit(flags[zone], "nopage")] = C_HOLE
        starts, ends = _runs(blank[zone])
        lengths = ends - starts
        budget = fields[t]["spanned"] - fields[t]["present"]
        holes = deferred = pcp = 0
        first_deferred = None
        for s, e, length in zip(starts, ends, lengths, strict=True):
            if length < LONG_RUN:
                cls[s:e] = C_PCP
                pcp += length
            elif length <= budget - holes:
                cls[s:e] = C_HOLE
                holes += length
            else:
                cls[s:e] = C_DEFERRED
                deferred += length
                if e == end - start:        # runs to the zone's end: the deferred tail
                    first_deferred = start + s
        report[ZONE_NAMES[t]] = {"holes": int(np.count_nonzero(cls == C_HOLE)),
                                 "deferred": int(deferred), "pcp": int(pcp),
                                 "first_deferred_pfn": first_deferred_pfn(first_deferred, start),
                                 "pcp_zoneinfo": int(fields[t]["pcp_count"]),
                                 "reserved": int(np.count_nonzero(cls == C_RESERVED))}
    return page_class, report


# ---- folios ----------------------------------------------------------------------------------

def _kinds(words):
    """Folio kind of each head's kpageflags word."""
    kind = np.full(len(words), KIND_KERNEL, dtype=np.uint8)
    lru = _bit(words, "lru")
    anon = _bit(words, "anon")
    swapbacked = _bit(words, "swapbacked")
    filelike = lru | (_bit(words, "uptodate") & _bit(words, "mappedtodisk"))
    kind[filelike & ~anon & ~swapbacked] = KIND_FILE
    kind[swapbacked & ~anon] = KIND_SHMEM
    kind[anon] = KIND_ANON
    kind[_bit(words, "huge")] = KIND_HUGETLB
    kind[_bit(words, "pgtable")] = KIND_PAGETABLE
    kind[_bit(words, "slab")] = KIND_SLAB
    kind[_bit(words, "zero_page") | _bit(words, "offline")] = KIND_KERNEL
    return kind


def _folio_flags(words):
    out = np.zeros(len(words), dtype=np.uint8)
    for name, bit in FLAG_MAP:
        out[_bit(words, name)] |= np.uint8(bit)
    return out


FOLIO_CHUNK = 1 << 16     # PFNs per pass of find_folios() (more where a folio crosses the end)


def find_folios(flags, page_class):
    """Folios from the used pages: compound head/tail runs give large folios, other used pages
    order-0 folios. Returns (pfn, order, kind, flags) arrays and the count of pages whose
    compound run was broken (a head or tail changed while we read; those become order 0).
    Works in chunks of about FOLIO_CHUNK PFNs to bound the temporaries' memory; a chunk ends
    on a MAX_PAGE_ORDER-aligned PFN that is no folio's tail (_chunk_end()). The pfn
    array is the start of a buffer with HANDLE_SLACK more slots, which build() can take as
    the twin's handle table instead of copying it."""
    parts = []
    broken = 0
    lo = 0
    while lo < len(flags):
        hi = _chunk_end(flags, page_class, lo + FOLIO_CHUNK)
        *arrays, bad = _find_folios_chunk(flags[lo:hi], page_class[lo:hi])
        arrays[0] += lo
        parts.append(arrays)
        broken += bad
        lo = hi
    nr_folios = sum(len(part[0]) for part in parts)
    pfns = np.empty(nr_folios + HANDLE_SLACK, dtype=np.int64)[:nr_folios]
    columns = [pfns]
    for column, dtype in ((1, np.int8), (2, np.uint8), (3, np.uint8)):
        columns.append(np.concatenate([part[column] for part in parts]) if parts
                       else np.zeros(0, dtype=dtype))
    at = 0
    for part in parts:              # each chunk's PFNs freed as soon as they are copied
        pfns[at:at + len(part[0])] = part[0]
        at += len(part[0])
        part.clear()
    return tuple(columns) + (broken,)


def _chunk_end(flags, page_class, pfn):
    """The first PFN from `pfn` on (a multiple of 2^MAX_PAGE_ORDER) that is not a used
    compound tail, or the end: no compound run crosses it, and within a chunk a PFN's
    alignment up to MAX_PAGE_ORDER is its own (what _find_folios_chunk() relies on)."""
    step = 1 << MAX_PAGE_ORDER
    pfn = -(-pfn // step) * step
    while pfn < len(flags) and page_class[pfn] == C_USED and _bit(flags[pfn:pfn + 1],
                                                                 "compound_tail")[0]:
        pfn += step
    return min(pfn, len(flags))


def _find_folios_chunk(flags, page_class):
    used = page_class == C_USED
    tail = _bit(flags, "compound_tail") & used
    head = _bit(flags, "compound_head") & used
    starts = np.flatnonzero(used & ~tail)             # heads and order-0 pages
    # a large folio runs from its head to the next used non-tail page or non-used page
    stops = np.append(np.flatnonzero(~tail), len(flags))
    nxt = stops[np.searchsorted(stops, starts, side="right")]
    length = np.where(head[starts], nxt - starts, 1)
    pfns, orders, broken = [], [], int(tail.sum() - (length - 1).sum())
    order = np.floor(np.log2(np.maximum(length, 1))).astype(np.int64)
    exact = (np.int64(1) << order) == length
    aligned = (starts & ((np.int64(1) << order) - 1)) == 0
    good = exact & aligned & (order <= MAX_PAGE_ORDER)
    pfns.append(starts[good])
    orders.append(order[good])
    for s, length_ in zip(starts[~good], length[~good], strict=True):
        # a gigantic hugetlb page, or a run broken by a race: aligned pieces, largest first
        p, end = int(s), int(s + length_)
        while p < end:
            o = min(MAX_PAGE_ORDER, (p & -p).bit_length() - 1 if p else MAX_PAGE_ORDER)
            while p + (1 << o) > end:
                o -= 1
            pfns.append(np.array([p]))
            orders.append(np.array([o]))
            p += 1 << o
        if length_ & (length_ - 1):
            broken += int(length_)
    # tails with no head before them (the head changed while we read): order-0 folios
    orphans = np.flatnonzero(tail)
    covered = np.zeros(len(flags), dtype=bool)
    pfn_all = np.concatenate(pfns)
    order_all = np.concatenate(orders)
    snapshot_build.mark_covered(covered, pfn_all, order_all)
    orphans = orphans[~covered[orphans]]
    pfn_all = np.concatenate((pfn_all, orphans))
    order_all = np.concatenate((order_all, np.zeros(len(orphans), dtype=np.int64)))
    idx = np.argsort(pfn_all, kind="stable")
    pfn_all, order_all = pfn_all[idx].astype(np.int64), order_all[idx].astype(np.int8)
    words = flags[pfn_all]
    return pfn_all, order_all, _kinds(words), _folio_flags(words), broken + len(orphans)


# ---- pageblock migratetypes ------------------------------------------------------------------

COST_CHUNK = 1 << 16      # folios per pass of block_costs()


def _add_folio_pages(movable, kernel, slab, folio_pfn, folio_order, folio_kind):
    """Add the folios' pages to their pageblocks' movable, kernel and slab page counts."""
    size = np.int64(1) << folio_order.astype(np.int64)
    block = folio_pfn >> PAGEBLOCK_ORDER
    # a folio larger than a pageblock counts a full block in each block it covers
    reps = np.maximum(size // PAGEBLOCK_NR_PAGES, 1)
    blocks = np.repeat(block, reps) + (np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps,
                                                                           reps))
    pages = np.repeat(np.minimum(size, PAGEBLOCK_NR_PAGES), reps).astype(float)
    kinds = np.repeat(folio_kind, reps)
    is_movable = np.isin(kinds, _MOVABLE_KINDS)
    np.add.at(movable, blocks[is_movable], pages[is_movable])
    np.add.at(slab, blocks[kinds == KIND_SLAB], pages[kinds == KIND_SLAB])
    rest = ~is_movable & (kinds != KIND_SLAB)
    np.add.at(kernel, blocks[rest], pages[rest])


def block_costs(page_class, folio_pfn, folio_order, folio_kind, nr_blocks):
    """Per pageblock and migratetype, how badly its contents fit that type (pages)."""
    movable = np.zeros(nr_blocks)
    kernel = np.zeros(nr_blocks)
    slab = np.zeros(nr_blocks)
    for lo in range(0, len(folio_pfn), COST_CHUNK):     # bounded temporaries per folio
        hi = lo + COST_CHUNK
        _add_folio_pages(movable, kernel, slab, folio_pfn[lo:hi], folio_order[lo:hi],
                         folio_kind[lo:hi])
    per_block = page_class[:nr_blocks * PAGEBLOCK_NR_PAGES].reshape(nr_blocks, -1)
    free = ((per_block == C_FREE) | (per_block == C_PCP)).sum(axis=1)
    kernel += (per_block == C_RESERVED).sum(axis=1)
    cost = np.full((nr_blocks, MIGRATE_TYPES), 4.0 * PAGEBLOCK_NR_PAGES)
    cost[:, MIGRATE_UNMOVABLE] = movable + 0.5 * slab + 0.01 * free
    cost[:, MIGRATE_MOVABLE] = kernel + slab
    cost[:, MIGRATE_RECLAIMABLE] = movable + kernel + 0.5 * slab + 0.01 * free
    return cost


def _fix_counts(cost, unit, target):
    """Assign one migratetype per unit (blocks sharing a unit id take one type) with per-type
    block counts equal to `target` where possible, starting from each unit's cheapest type and
    moving the cheapest units from over-full to under-full types. Returns (types, moved)."""
    ids, inverse, sizes = np.unique(unit, return_inverse=True, return_counts=True)
    ucost = np.zeros((len(ids), cost.shape[1]))
    np.add.at(ucost, inverse, cost)
    utype = ucost.argmin(axis=1)
    first = utype.copy()
    for _ in range(2 * len(ids) + 8):
        counts = np.bincount(utype, weights=sizes, minlength=cost.shape[1]).astype(np.int64)
        excess = counts - target
        over = np.flatnonzero(excess > 0)
        under = np.flatnonzero(excess < 0)
        if not len(over) or not len(under):
            break
        best = None
        for o in over:
            members = np.flatnonzero((utype == o) & (sizes <= excess[o]))
            if not len(members):
                members = np.flatnonzero(utype == o)
            for u in under:
                fit = members[sizes[members] <= -excess[u]]
                pick = fit if len(fit) else members
                delta = ucost[pick, u] - ucost[pick, o]
                i = int(delta.argmin())
                if best is None or delta[i] < best[0]:
                    best = (delta[i], pick[i], u)
        utype[best[1]] = best[2]
    return utype[inverse].astype(np.uint8), int((utype != first)[inverse].sum())


def infer_migratetypes(cost, page_class, spans, targets):
    """Pageblock migratetypes: per zone, counts equal to `targets` (pagetypeinfo), blocks with no
    present page Movable. Two pageblocks under one free MAX_PAGE_ORDER block take one type (the
    kernel's merge retypes the buddy, __free_one_page()). Returns (block_mt, report)."""
    nr_blocks = len(cost)
    per_block = page_class[:nr_blocks * PAGEBLOCK_NR_PAGES].reshape(nr_blocks, -1)
    present = ((per_block != C_HOLE) & (per_block != C_DEFERRED)).any(axis=1)
    all_free = ((per_block == C_FREE) | (per_block == C_PCP)).all(axis=1)
    unit = np.arange(nr_blocks)
    if MAX_PAGE_ORDER > PAGEBLOCK_ORDER:
        span = 1 << (MAX_PAGE_ORDER - PAGEBLOCK_ORDER)
        groups = all_free[:nr_blocks // span * span].reshape(-1, span).all(axis=1)
        grouped = np.repeat(groups, span)
        unit[:len(grouped)][grouped] = (np.arange(len(grouped)) // span * span)[grouped]
    block_mt = np.full(nr_blocks, MIGRATE_MOVABLE, dtype=np.uint8)
    margin = np.sort(cost, axis=1)
    ambiguous = (margin[:, 1] - margin[:, 0]) < 16
    report = {}
    for t, (start, end) in sorted(spans.items()):
        lo, hi = start >> PAGEBLOCK_ORDER, -(-end >> PAGEBLOCK_ORDER)
        idx = np.arange(lo, hi)[present[lo:hi]]
        target = np.asarray(targets.get(t, np.zeros(MIGRATE_TYPES, dtype=np.int64)))
        types, moved = _fix_counts(cost[idx], unit[idx], target)
        block_mt[idx] = types
        got = np.bincount(types, minlength=MIGRATE_TYPES)[:MIGRATE_TYPES]
        report[ZONE_NAMES[t]] = {
            "blocks": int(len(idx)), "captured": target.tolist(), "reconstructed": got.tolist(),
            "equal": bool((got == target).all()), "moved_by_count_fix": moved,
            "ambiguous": int(ambiguous[idx].sum()),
        }
    return block_mt, report


# ---- the whole reconstruction ----------------------------------------------------------------

def _captured_tables(files, spans):
    buddy = {}
    for (node, name), counts in procfs.parse_buddyinfo(files["buddyinfo"]).items():
        t = _twin_zone(name)
        if node == 0 and t in spans:
            buddy[t] = buddy.get(t, np.zeros(NR_PAGE_ORDERS, dtype=np.int64)) + counts
    pti = procfs.parse_pagetypeinfo(files["pagetypeinfo"])
    if pti.pageblock_order not in (None, PAGEBLOCK_ORDER):
        raise ValueError(f"snapshot has pageblock order {pti.pageblock_order}; simcore models "
                         f"{PAGEBLOCK_ORDER}")
    blocks = {}
    names = {name: mt for mt, name in enumerate(MIGRATETYPE_NAMES)}
    for (node, name), per_type in pti.blocks.items():
        t = _twin_zone(name)
        if node != 0 or t not in spans:
            continue
        row = blocks.setdefault(t, np.zeros(MIGRATE_TYPES, dtype=np.int64))
        for mt_name, count in per_type.items():
            if mt_name not in names:
                raise ValueError(f"pagetypeinfo migratetype {mt_name!r} is unknown to simcore")
            row[names[mt_name]] += count
    return buddy, blocks, pti


def reconstruct(snap, release=False):
    """A Reconstruction of `snap` (a simcore.snapshot_file.Snapshot).

    release: take the snapshot's per-PFN arrays out of it (kpageflags and kpagecount become
    None), so that they are freed as soon as they are read rather than kept next to the twin
    being built; for a snapshot loaded only to build this twin."""
    zoneinfo = procfs.parse_zoneinfo(snap.files["zoneinfo"])
    spans, fields = twin_zones(zoneinfo)
    end = max(e for _, e in spans.values())
    if snap.nr_pfns < end:
        raise ValueError(f"snapshot has {snap.nr_pfns} PFNs but its zones end at PFN {end}: "
                         f"truncated per-PFN data")
    nr_pages = -(-end // PAGEBLOCK_NR_PAGES) * PAGEBLOCK_NR_PAGES
    flags, counts = snap.kpageflags, snap.kpagecount
    if release:
        snap.kpageflags = snap.kpagecount = None
    if len(flags) > nr_pages:           # cut to whole pageblocks: a view
        flags, counts = flags[:nr_pages], counts[:nr_pages]
    elif len(flags) < nr_pages:         # pad to whole pageblocks (a copy only then)
        captured_flags, captured_counts = flags, counts
        flags = np.zeros(nr_pages, dtype=np.uint64)
        counts = np.zeros(nr_pages, dtype=np.uint16)
        flags[:end] = captured_flags[:end]
        counts[:end] = captured_counts[:end]
        del captured_flags, captured_counts
    page_class, absent = classify(flags, counts, spans, fields)
    del counts
    folio_pfn, folio_order, folio_kind, folio_flags, broken = find_folios(flags, page_class)
    del flags
    buddy, blocks, pti = _captured_tables(snap.files, spans)
    nr_blocks = nr_pages // PAGEBLOCK_NR_PAGES
    cost = block_costs(page_class, folio_pfn, folio_order, folio_kind, nr_blocks)
    block_mt, mt_report = infer_migratetypes(cost, page_class, spans, blocks)
    report = {"zones": absent, "pageblocks": mt_report, "broken_compound_pages": broken,
              "folios": int(len(folio_pfn)),
              "free_pages": int((page_class == C_FREE).sum()),
              "pcp_pages": int((page_class == C_PCP).sum())}
    return Reconstruction(nr_pages, [(t, s, e) for t, (s, e) in sorted(spans.items())], fields,
                          page_class, folio_pfn, folio_order, folio_kind, folio_flags, block_mt,
                          blocks, buddy, report, snap.settings, snap.kernel)


# ---- writing it into a machine ---------------------------------------------------------------

PACK_CHUNK = 1 << 16      # folios per pass of _pack_words()


def _pack_words(words, order, kind, flags):
    """OR each folio's order, kind and flags into its PFN word, a chunk at a time."""
    for lo in range(0, len(words), PACK_CHUNK):
        hi = lo + PACK_CHUNK
        words[lo:hi] |= order[lo:hi].astype(np.int64) << FOLIO_ORDER_SHIFT
        words[lo:hi] |= kind[lo:hi].astype(np.int64) << FOLIO_KIND_SHIFT
        words[lo:hi] |= flags[lo:hi].astype(np.int64) << FOLIO_FLAGS_SHIFT


def pack_folios(rec):
    """Fold each folio's order, kind and flags into the top bits of its folio_pfn word, in
    place, and drop those three arrays: 3 bytes per folio less while the twin's mem_map is
    allocated. For a reconstruction about to be used up by build(consume=True), which unpacks
    the words as it places the folios."""
    if rec.folio_packed:
        return
    _pack_words(rec.folio_pfn, rec.folio_order, rec.folio_kind, rec.folio_flags)
    rec.folio_order = rec.folio_kind = rec.folio_flags = None
    rec.folio_packed = True


def build(machine, rec, deferred="absent", consume=False):
    """Write `rec` into `machine` (built with the snapshot's size): zones, pageblocks, folios and
    free lists; then machine.check(). Returns the machine.

    consume=True: `rec` is used up. The twin's handle table is made in place of its folio
    PFNs (find_folios() leaves room for it) and its per-page and per-folio arrays are dropped
    (set to None) before check(), so that they never sit next to a finished twin.

    deferred="absent": a zone with an uninitialised tail ends at its first deferred PFN (the
    span compaction_zone() scans in the kernel: memmap_init_zone() stopped at
    pgdat->first_deferred_pfn); the tail stays offline memory outside every zone.
    deferred="free": the whole span, the tail handed to the buddy allocator."""
    if deferred not in DEFERRED_MODES:
        raise ValueError(f"deferred {deferred!r} is unknown; allowed: {', '.join(DEFERRED_MODES)}")
    from .pgdat import chain_free_handles
    p = machine.pgdat
    if len(p.mem_map) != rec.nr_pages:
        raise ValueError(f"machine has {len(p.mem_map)} pages, the snapshot {rec.nr_pages}")
    zones = p.zones
    for t in range(len(ZONE_NAMES)):
        zones[t, Z_START] = zones[t, Z_END] = 0
        zones[t, Z_MANAGED] = 0
    free_classes = np.zeros(len(CLASS_NAMES), dtype=np.bool_)
    free_classes[[C_FREE, C_PCP]] = True
    absent_classes = np.zeros(len(CLASS_NAMES), dtype=np.bool_)
    absent_classes[[C_HOLE, C_RESERVED]] = True
    if deferred == "free":
        free_classes[C_DEFERRED] = True
    else:
        absent_classes[C_DEFERRED] = True
    for t, start, end in rec.zones:
        f = rec.zone_fields[t]
        if deferred == "absent":
            end = initialised_end(rec, t, end)
        zones[t, Z_START], zones[t, Z_END] = start, end
        zones[t, Z_MANAGED] = (end - start) - snapshot_build.count_classes(
            rec.page_class, start, end, absent_classes)
        zones[t, Z_WMARK_MIN], zones[t, Z_WMARK_LOW], zones[t, Z_WMARK_HIGH] = \
            f["min"], f["low"], f["high"]
        zones[t, Z_WMARK_PROMO] = f["high"] + (f["low"] - f["min"])
        prot = list(f["protection"][1:1 + len(ZONE_NAMES)])
        zones[t, Z_LOWMEM_RESERVE:Z_LOWMEM_RESERVE + len(prot)] = prot
    p.pageblock_flags[:] = rec.block_mt
    for t, start, end in rec.zones:
        # the captured HighAtomic blocks are the zone's reserve (nr_reserved_highatomic)
        blocks = rec.block_mt[start >> PAGEBLOCK_ORDER:end >> PAGEBLOCK_ORDER]
        zones[t, Z_NR_RESERVED_HIGHATOMIC] = \
            int((blocks == MIGRATE_HIGHATOMIC).sum()) * PAGEBLOCK_NR_PAGES
    node = p.node
    policies = node[list(POLICY_FIELDS)].copy()     # the profile's, set when it was built
    node[:] = 0
    node[N_HANDLE_FREE] = -1
    node[list(POLICY_FIELDS)] = policies
    nr_folios = len(rec.folio_pfn)
    table = _handle_room(rec.folio_pfn) if consume else None
    if table is None:
        table = np.empty(nr_folios + HANDLE_SLACK, dtype=np.int64)
        table[:nr_folios] = rec.folio_pfn
    if not rec.folio_packed:
        _pack_words(table[:nr_folios], rec.folio_order, rec.folio_kind, rec.folio_flags)
    chain_free_handles(table, nr_folios, -1)
    node[N_HANDLE_FREE] = 0
    node[N_HANDLES_AVAIL] = len(table)
    machine.pgdat = p.replace(folio_pfn=table)
    snapshot_build.place(machine.pgdat, rec.page_class, free_classes, absent_classes, nr_folios)
    assert node[N_NR_FOLIOS] == nr_folios and node[N_HANDLES_AVAIL] >= 0
    if consume:
        rec.page_class = rec.folio_pfn = rec.folio_order = rec.folio_kind = None
        rec.folio_flags = None
    machine.check()
    return machine


def _handle_room(folio_pfn):
    """The buffer under `folio_pfn` if it starts there and has HANDLE_SLACK more int64 slots
    (find_folios() makes it so), else None."""
    base = folio_pfn.base
    if base is None or base.dtype != np.int64 or base.ndim != 1 \
            or not base.flags.c_contiguous or len(base) < len(folio_pfn) + HANDLE_SLACK \
            or base.__array_interface__["data"][0] != folio_pfn.__array_interface__["data"][0]:
        return None
    return base


def compare_buddyinfo(machine, rec):
    """Per twin zone: the twin's free blocks per order, the captured buddyinfo and the
    difference (twin - captured), with the pages on each side."""
    out = {}
    nr_free = machine.nr_free()
    for (t, name), counts in zip(machine.zones, nr_free, strict=True):
        twin = counts.sum(axis=1)
        captured = rec.captured_buddyinfo.get(t, np.zeros(NR_PAGE_ORDERS, dtype=np.int64))
        weights = np.int64(1) << np.arange(NR_PAGE_ORDERS)
        out[name] = {"twin": twin.tolist(), "captured": captured.tolist(),
                     "difference": (twin - captured).tolist(),
                     "twin_pages": int((twin * weights).sum()),
                     "captured_pages": int((captured * weights).sum())}
    return out


def nr_kind_pages(machine):
    """Pages held per folio kind."""
    pages = machine.pgdat.node[N_KIND_PAGES:N_KIND_PAGES + len(KIND_NAMES)]
    return {name: int(v) for name, v in zip(KIND_NAMES, pages, strict=True)}



def estimate_bytes(nr_pages, nr_folios=None):
    """Memory a twin of `nr_pages` needs at its peak, while build() places the folios: mem_map,
    the page classes and temporaries, and per folio its handle-table slot, order, kind and
    flags (a folio per page at worst)."""
    folios = nr_pages if nr_folios is None else nr_folios
    return nr_pages * (PAGE_DTYPE.itemsize + RECONSTRUCT_BYTES_PER_PAGE) \
        + BYTES_PER_FOLIO * folios


def _available_bytes():
    """Free physical memory of this host (sysconf(_SC_AVPHYS_PAGES), no /proc parsing here)."""
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def twin(source, *, profile=None, compaction=None, seed=0, deferred="absent",
         available=None, reclaim=False):
    """A Machine whose memory is the snapshot's (see Machine.from_snapshot)."""
    from .machine import MAX_MEM, Machine
    loaded = not isinstance(source, snapshot_file.Snapshot)
    snap = snapshot_file.load(source) if loaded else source
    if deferred not in DEFERRED_MODES:
        raise ValueError(f"deferred {deferred!r} is unknown; allowed: {', '.join(DEFERRED_MODES)}")
    need = estimate_bytes(snap.nr_pfns)
    available = _available_bytes() if available is None else available
    if snap.nr_pfns * PAGE_SIZE > MAX_MEM or need > available:
        raise ValueError(f"snapshot of {format_size(snap.nr_pfns * PAGE_SIZE)} needs about "
                         f"{format_size(need)} to simulate; this host has "
                         f"{format_size(available)} free")
    # one bit per PFN (an eighth of a byte) of the heads on an active LRU list, read before
    # reconstruct() may release the per-PFN words
    active = np.packbits(_bit(snap.kpageflags, "active") & _bit(snap.kpageflags, "lru")) \
        if reclaim else None
    rec = reconstruct(snap, release=loaded)     # the per-PFN arrays go before mem_map comes
    pack_folios(rec)                            # and the per-folio ones shrink to the table
    min_free = snap.settings.get("vm/min_free_kbytes")
    machine = Machine(mem=rec.nr_pages * PAGE_SIZE, seed=seed, profile=profile,
                      compaction=compaction, reclaim=reclaim,
                      min_free_kbytes=int(min_free) if min_free and min_free.isdigit() else None)
    build(machine, rec, deferred, consume=True)
    if active is not None:
        _place_on_lru(machine, active)
    machine.snapshot_report = dict(rec.report, kernel=rec.kernel, deferred=deferred,
                                   buddyinfo=compare_buddyinfo(machine, rec),
                                   buddyinfo_after=_after(snap, machine, rec))
    return machine


def _place_on_lru(machine, active_bits):
    """The twin's LRU lists as captured, as far as kpageflags tells: every LRU folio on its
    type's list, active where its head had KPF_ACTIVE. Simplification: the kernel's order within
    each list (its age) is not exported; the twin's lists are in PFN order, and no folio is
    marked referenced."""
    from . import vmscan
    vmscan.lru_sync(machine)
    table = machine.pgdat.folio_pfn
    handles = np.flatnonzero(table >= 0)
    heads = table[handles]
    bits = np.unpackbits(active_bits)
    on = heads < len(bits)
    handles, heads = handles[on], heads[on]
    handles = handles[bits[heads].astype(bool)]
    vmscan.activate_captured(machine, handles)


def _after(snap, machine, rec):
    """compare_buddyinfo() against the buddyinfo read after the per-PFN files, when captured."""
    text = snap.files.get("buddyinfo_after")
    if not text:
        return None
    spans = {t: (s, e) for t, s, e in rec.zones}
    after = {}
    for (node, name), counts in procfs.parse_buddyinfo(text).items():
        t = _twin_zone(name)
        if node == 0 and t in spans:
            after[t] = after.get(t, np.zeros(NR_PAGE_ORDERS, dtype=np.int64)) + counts
    return compare_buddyinfo(machine, dataclasses.replace(rec, captured_buddyinfo=after))


LAYOUT_PARTS = ("free", "folios", "blocks")


def layout_digest(machine, parts=LAYOUT_PARTS):
    """SHA-256 of a machine's layout: free blocks (pfn, order, migratetype), folios (pfn, order,
    kind, flags) and pageblock migratetypes, or only the `parts` named; handles and the order
    of the free lists are left out."""
    mem_map = machine.pgdat.mem_map
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        if part in ("free", "folios"):
            heads = np.flatnonzero(mem_map["type"] == (PAGE_BUDDY if part == "free" else PAGE_HEAD))
            h.update(heads.astype(np.int64).tobytes())
            h.update(mem_map["order"][heads].tobytes())
            if part == "folios":
                h.update(mem_map["kind"][heads].tobytes())
                h.update(mem_map["flags"][heads].tobytes())
        elif part == "blocks":
            h.update((machine.pgdat.pageblock_flags & PB_MIGRATETYPE_MASK).tobytes())
        else:
            raise ValueError(f"layout part {part!r} is unknown; allowed: {', '.join(LAYOUT_PARTS)}")
    return h.hexdigest()
