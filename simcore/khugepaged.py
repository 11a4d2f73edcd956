"""khugepaged / MADV_COLLAPSE: collapsing the small folios that map a range into one large
folio, after mm/khugepaged.c hpage_collapse_scan_pmd() and collapse_huge_page().

collapse() takes the folios that back a naturally aligned range of 2^order pages and, when the
profile's policy collapses to that order, allocates the new folio as khugepaged does
(alloc_charge_folio() with khugepaged's defrag: direct compaction allowed), copies every page
(__collapse_huge_page_copy()), and frees the old folios. Released kernels collapse to PMD size
only; mTHP collapse (Nico Pache's "khugepaged: mTHP support") is pending upstream and no
profile selects it.

Counters: thp_collapse_alloc, thp_collapse_alloc_failed (PMD size, as /proc/vmstat prints them).

Only LRU folios (anon, file, shmem) can be collapsed: hpage_collapse_scan_pmd() gives up with
SCAN_PAGE_LRU on a page that is not on the LRU, which covers slab, page-table and kernel
folios, hugetlb and hardware-poisoned pages; a range mixing anonymous and file memory is
SCAN_PAGE_ANON. Both are reported before anything changes.

Simplified: the caller names the range's folios; no PTE scan (max_ptes_none/swap/shared), no
mmap lock, no cgroup charge.
"""
import numpy as np

from . import vm_event as ev
from .costs import migration_ns
from .mmzone import (
    HPAGE_PMD_ORDER,
    KIND_ANON,
    KIND_IS_LRU,
    KIND_NAMES,
    PG_HWPOISON,
    PG_KSM,
    PG_PINNED,
)

COLLAPSE_POLICIES = {
    "pmd_only": "collapse to PMD size only (every released kernel)",
    "mthp": "collapse to any enabled mTHP order (pending upstream; no profile selects it)",
}


def collapse(m, pfns, order, policy="pmd_only"):
    """Collapse the folios at `pfns` (together 2^order pages of one kind) into one folio of
    `order`. Returns (head PFN, "") or (None, reason: SCAN_* as the kernel's tracepoint names
    it)."""
    if policy not in COLLAPSE_POLICIES:
        raise ValueError(f"khugepaged policy {policy!r} is unknown; allowed: "
                         f"{', '.join(COLLAPSE_POLICIES)}")
    pfns = np.asarray(pfns, dtype=np.int64)
    mem_map = m.pgdat.mem_map
    orders = mem_map["order"][pfns].astype(np.int64)
    if int((np.int64(1) << orders).sum()) != 1 << order:
        raise ValueError(f"the folios hold {int((np.int64(1) << orders).sum())} pages, not the "
                         f"{1 << order} of an order-{order} collapse")
    if policy == "pmd_only" and order != HPAGE_PMD_ORDER:
        return None, "SCAN_ORDER_NOT_SUPPORTED"
    kinds = mem_map["kind"][pfns].astype(np.int64)
    if not KIND_IS_LRU[kinds].all() or (mem_map["flags"][pfns] & PG_HWPOISON).any():
        return None, "SCAN_PAGE_LRU"
    if len(set((kinds == KIND_ANON).tolist())) > 1:
        return None, "SCAN_PAGE_ANON"
    if (mem_map["flags"][pfns] & PG_PINNED).any():
        return None, "SCAN_PAGE_COUNT"
    if (mem_map["flags"][pfns] & PG_KSM).any():       # shared with another mapping
        return None, "SCAN_EXCEED_SHARED_PTE"
    kind = KIND_NAMES[int(mem_map["kind"][pfns[0]])]
    events = m.pgdat.events
    new = m.alloc(order, "movable", kind, compact=True)
    if order == HPAGE_PMD_ORDER:
        events[ev.THP_COLLAPSE_ALLOC_FAILED if new is None else ev.THP_COLLAPSE_ALLOC] += 1
    if new is None:
        return None, "SCAN_ALLOC_HUGE_PAGE_FAIL"
    m.model_ns["collapse"] += migration_ns(m.costs, order)
    m.free_many(pfns)
    return new, ""
