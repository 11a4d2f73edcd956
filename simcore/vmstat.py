"""Fragmentation measures and the text of the kernel's memory statistics files.

Models mm/vmstat.c (fill_contig_page_info, __fragmentation_index, unusable_free_index,
extfrag_for_order and the seq_file printers behind /proc/buddyinfo, /proc/pagetypeinfo,
/proc/vmstat and debugfs extfrag/*) and the proactive-compaction score of mm/compaction.c.

All maths is on Python ints, with the kernel's unsigned, truncating division, so results are
the integers the kernel would compute; compaction.py compiles the same formula functions.
Renderers print one node; for several nodes, call once per node and join the texts (the kernel
walks nodes the same way).
"""
import numpy as np

from .mmzone import (
    MAX_PAGE_ORDER,
    MIGRATE_TYPES,
    MIGRATETYPE_NAMES,
    NR_PAGE_ORDERS,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
)

# pagetypeinfo_showfree_print stops walking a free list at this many entries and prints ">".
PAGETYPEINFO_FREE_CAP = 100000
# Default of vm.compaction_proactiveness (mm/compaction.c).
COMPACTION_PROACTIVENESS_DEFAULT = 20


# --- formulas -------------------------------------------------------------------------------

def _zone_counts(nr_free):
    """nr_free of one zone as a list of NR_PAGE_ORDERS non-negative Python ints."""
    a = np.asarray(nr_free)
    if a.shape != (NR_PAGE_ORDERS,):
        raise ValueError(f"nr_free must have shape ({NR_PAGE_ORDERS},), got {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"nr_free must be integers, got dtype {a.dtype}")
    counts = [int(x) for x in a]
    if any(c < 0 for c in counts):
        raise ValueError("nr_free must be non-negative")
    return counts


def _check_order(order):
    if not 0 <= int(order) <= MAX_PAGE_ORDER:
        raise ValueError(f"order must be in 0..{MAX_PAGE_ORDER}, got {order}")
    return int(order)


# The formulas below are written once, in the subset of Python numba compiles: vmstat.py runs
# them on Python ints (exact, like the kernel's unsigned maths), compaction.py compiles the same
# functions for its hot paths.

def contig_page_info(counts, order):
    """fill_contig_page_info() on one zone's free-block counts per order: (free_pages,
    free_blocks_total, free_blocks_suitable). No checks; fill_contig_page_info() checks."""
    free_pages = 0
    free_blocks_total = 0
    free_blocks_suitable = 0
    for o in range(len(counts)):
        blocks = counts[o]
        free_blocks_total += blocks
        free_pages += blocks << o
        if o >= order:
            free_blocks_suitable += blocks << (o - order)
    return free_pages, free_blocks_total, free_blocks_suitable


def fragindex_of(free_pages, free_blocks_total, free_blocks_suitable, order):
    """__fragmentation_index() from fill_contig_page_info()'s three figures, x1000."""
    if free_blocks_total == 0:
        return 0
    if free_blocks_suitable:
        return -1000
    return 1000 - (1000 + (free_pages * 1000) // (1 << order)) // free_blocks_total


def unusable_share(free_pages, free_blocks_suitable, order, scale):
    """Share of free pages in blocks smaller than `order`, times `scale` (1000 for
    unusable_free_index(), 100 for extfrag_for_order()); free_pages must not be 0."""
    return ((free_pages - (free_blocks_suitable << order)) * scale) // free_pages


def fill_contig_page_info(nr_free, order):
    """fill_contig_page_info(): (free_pages, free_blocks_total, free_blocks_suitable).

    free_blocks_suitable counts how many order-`order` blocks the free blocks of that order
    and above would make. Simplified: takes nr_free rather than a zone; an order outside
    0..MAX_PAGE_ORDER raises ValueError.
    """
    return contig_page_info(_zone_counts(nr_free), _check_order(order))


def fragmentation_index(nr_free, order):
    """__fragmentation_index() (via fragmentation_index()), x1000.

    0 with nothing free; -1000 when a block of `order` is free; else towards 0 means an
    allocation would fail for lack of memory, towards 1000 for fragmentation. Not clamped:
    like the kernel, small cases go below 0 (one free page, order 1 gives -500).
    Simplified: an order above MAX_PAGE_ORDER raises ValueError (the kernel WARNs, returns 0).
    """
    order = _check_order(order)
    return fragindex_of(*fill_contig_page_info(nr_free, order), order)


def unusable_free_index(nr_free, order):
    """unusable_free_index(), x1000: share of free memory in blocks smaller than `order`.

    1000 when nothing is free (all of nothing counts as unusable).
    """
    free_pages, _, suitable = fill_contig_page_info(nr_free, order)
    if free_pages == 0:
        return 1000
    return unusable_share(free_pages, suitable, int(order), 1000)


def extfrag_for_order(nr_free, order):
    """extfrag_for_order(): percent of free pages in blocks smaller than `order`; 0 if none."""
    free_pages, _, suitable = fill_contig_page_info(nr_free, order)
    if free_pages == 0:
        return 0
    return unusable_share(free_pages, suitable, int(order), 100)


def fragmentation_score_zone(nr_free, order=PAGEBLOCK_ORDER):
    """fragmentation_score_zone(): extfrag_for_order at COMPACTION_HPAGE_ORDER, 0..100.

    COMPACTION_HPAGE_ORDER is HPAGE_PMD_ORDER with THP, else pageblock_order; both are 9 here.
    """
    return extfrag_for_order(nr_free, order)


def fragmentation_score_zone_weighted(nr_free, zone_present_pages, node_present_pages):
    """fragmentation_score_zone_weighted(): zone score scaled by present / (node present + 1)."""
    zone_present_pages, node_present_pages = int(zone_present_pages), int(node_present_pages)
    if zone_present_pages < 0 or node_present_pages < 0:
        raise ValueError("present page counts must be non-negative")
    score = zone_present_pages * fragmentation_score_zone(nr_free)
    return score // (node_present_pages + 1)


def fragmentation_score_node(zones):
    """fragmentation_score_node(): sum of the weighted scores of the node's populated zones.

    `zones` is a sequence of (nr_free, zone_present_pages), one per zone of the node.
    node_present_pages is their sum (pgdat->node_present_pages); zones with no present pages
    are skipped, as populated_zone() does.
    """
    zones = [(nr_free, int(present)) for nr_free, present in zones]
    node_present_pages = sum(present for _, present in zones)
    return sum(
        fragmentation_score_zone_weighted(nr_free, present, node_present_pages)
        for nr_free, present in zones if present > 0
    )


def fragmentation_score_wmark(compaction_proactiveness=COMPACTION_PROACTIVENESS_DEFAULT,
                              low=False):
    """fragmentation_score_wmark(): kcompactd's proactive thresholds.

    low = max(100 - proactiveness, 5); high = min(low + 10, 100). The node starts proactive
    compaction above high; a zone stops at or below low. proactiveness must be 0..100 (the
    sysctl's range).
    """
    p = int(compaction_proactiveness)
    if not 0 <= p <= 100:
        raise ValueError(f"compaction_proactiveness must be in 0..100, got {p}")
    wmark_low = max(100 - p, 5)
    return wmark_low if low else min(wmark_low + 10, 100)


# --- renderers ------------------------------------------------------------------------------

def _zones_orders(zone_names, nr_free):
    """nr_free as an int array (nzones, NR_PAGE_ORDERS[, MIGRATE_TYPES]) checked against names."""
    zone_names = [str(z) for z in zone_names]
    a = np.asarray(nr_free)
    if a.ndim not in (2, 3) or a.shape[0] != len(zone_names) or a.shape[1] != NR_PAGE_ORDERS \
            or (a.ndim == 3 and a.shape[2] != MIGRATE_TYPES):
        raise ValueError(
            f"nr_free must have shape ({len(zone_names)}, {NR_PAGE_ORDERS}, {MIGRATE_TYPES})"
            f" (or without the migratetype axis), got {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"nr_free must be integers, got dtype {a.dtype}")
    if (a < 0).any():
        raise ValueError("nr_free must be non-negative")
    for z in zone_names:
        if not z or any(c.isspace() for c in z):
            raise ValueError(f"bad zone name {z!r}")
    return zone_names, a


def _per_zone_totals(zone_names, nr_free):
    zone_names, a = _zones_orders(zone_names, nr_free)
    if a.ndim == 3:
        a = a.sum(axis=2)
    return zone_names, a


def render_buddyinfo(node_id, zone_names, nr_free):
    """/proc/buddyinfo for one node: frag_show_print() per populated zone.

    nr_free: (nzones, NR_PAGE_ORDERS, MIGRATE_TYPES); each order prints the sum over
    migratetypes, which is free_area[order].nr_free.
    """
    zone_names, totals = _per_zone_totals(zone_names, nr_free)
    out = []
    for name, row in zip(zone_names, totals):
        out.append("Node %d, zone %8s " % (node_id, name))
        out.extend("%6d " % int(n) for n in row)
        out.append("\n")
    return "".join(out)


def _free_cell(n):
    """One free-list count as pagetypeinfo_showfree_print prints it (capped walk)."""
    if n >= PAGETYPEINFO_FREE_CAP:
        return ">%6d " % PAGETYPEINFO_FREE_CAP
    return "%6d " % n


def render_pagetypeinfo(node_id, zone_names, nr_free, nr_pageblocks,
                        migratetype_names=MIGRATETYPE_NAMES):
    """/proc/pagetypeinfo for one node: pagetypeinfo_show().

    Header, then pagetypeinfo_showfree (counts of PAGETYPEINFO_FREE_CAP or more print as
    ">100000", as the kernel's capped list walk does) and pagetypeinfo_showblockcount.
    nr_free: (nzones, NR_PAGE_ORDERS, MIGRATE_TYPES); nr_pageblocks: (nzones, MIGRATE_TYPES),
    both indexed as MIGRATETYPE_NAMES. migratetype_names picks and orders the columns printed
    (default all six, as a CONFIG_CMA kernel; drop "CMA" to match a kernel without it).
    Simplified: no "Number of mixed blocks" table (CONFIG_PAGE_OWNER); a node with no zones
    prints nothing, as a memoryless node.
    """
    zone_names, free = _zones_orders(zone_names, nr_free)
    if free.ndim != 3:
        raise ValueError("nr_free must have a migratetype axis for pagetypeinfo")
    blocks = np.asarray(nr_pageblocks)
    if blocks.shape != (len(zone_names), MIGRATE_TYPES):
        raise ValueError(
            f"nr_pageblocks must have shape ({len(zone_names)}, {MIGRATE_TYPES}), "
            f"got {blocks.shape}")
    if (blocks < 0).any():
        raise ValueError("nr_pageblocks must be non-negative")
    try:
        mts = [MIGRATETYPE_NAMES.index(name) for name in migratetype_names]
    except ValueError:
        raise ValueError(f"unknown migratetype in {tuple(migratetype_names)!r}") from None
    if not zone_names:
        return ""
    out = ["Page block order: %d\n" % PAGEBLOCK_ORDER,
           "Pages per block:  %d\n" % PAGEBLOCK_NR_PAGES,
           "\n",
           "%-43s " % "Free pages count per migrate type at order"]
    out.extend("%6d " % order for order in range(NR_PAGE_ORDERS))
    out.append("\n")
    for z, name in enumerate(zone_names):
        for mt in mts:
            out.append("Node %4d, zone %8s, type %12s " % (node_id, name, MIGRATETYPE_NAMES[mt]))
            out.extend(_free_cell(int(n)) for n in free[z, :, mt])
            out.append("\n")
    out.append("\n%-23s" % "Number of blocks type ")
    out.extend("%12s " % MIGRATETYPE_NAMES[mt] for mt in mts)
    out.append("\n")
    for z, name in enumerate(zone_names):
        out.append("Node %d, zone %8s " % (node_id, name))
        out.extend("%12d " % int(blocks[z, mt]) for mt in mts)
        out.append("\n")
    return "".join(out)


def _c_div_mod_1000(index):
    """index / 1000 and index % 1000 with C's truncating division (signs follow index)."""
    q = abs(index) // 1000
    r = abs(index) % 1000
    return (-q, -r) if index < 0 else (q, r)


def render_unusable_index(node_id, zone_names, nr_free):
    """debugfs extfrag/unusable_index for one node: unusable_show_print() per zone.

    nr_free: (nzones, NR_PAGE_ORDERS[, MIGRATE_TYPES]); a migratetype axis is summed.
    """
    zone_names, totals = _per_zone_totals(zone_names, nr_free)
    out = []
    for name, row in zip(zone_names, totals):
        out.append("Node %d, zone %8s " % (node_id, name))
        for order in range(NR_PAGE_ORDERS):
            out.append("%d.%03d " % _c_div_mod_1000(unusable_free_index(row, order)))
        out.append("\n")
    return "".join(out)


def render_extfrag_index(node_id, zone_names, nr_free):
    """debugfs extfrag/extfrag_index for one node: extfrag_show_print() per zone.

    Printed as "%2d.%03d" of index/1000 and index%1000 in C, so -1000 is "-1.000" and a
    small negative index like -500 comes out as " 0.-500", exactly as the kernel does.
    """
    zone_names, totals = _per_zone_totals(zone_names, nr_free)
    out = []
    for name, row in zip(zone_names, totals):
        out.append("Node %d, zone %8s " % (node_id, name))
        for order in range(NR_PAGE_ORDERS):
            out.append("%2d.%03d " % _c_div_mod_1000(fragmentation_index(row, order)))
        out.append("\n")
    return "".join(out)


def render_vmstat(counters):
    """/proc/vmstat: vmstat_show(), one "name value" line per counter in the dict's order.

    Values print unsigned (seq_put_decimal_ull), so negatives raise ValueError. Simplified:
    the kernel's item list and its trailing deprecated "nr_unstable 0" are the caller's.
    """
    out = []
    for name, value in counters.items():
        name = str(name)
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"bad counter name {name!r}")
        value = int(value)
        if value < 0:
            raise ValueError(f"counter {name} is negative: {value}")
        out.append(f"{name} {value}\n")
    return "".join(out)
