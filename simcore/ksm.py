"""KSM merging of identical pages, after mm/ksm.c cmp_and_merge_page(),
try_to_merge_two_pages() and try_to_merge_one_page().

KSM merges base pages only: try_to_merge_one_page() splits a large folio (split_folio()) before
it write-protects and replaces a page, so both folios of a pair end up order 0, one page of each
identical pair becomes the KSM page (PG_ksm, in the stable tree) and the other is freed after
replace_page() points its mapping at the KSM page. A folio that cannot be split (pinned) is not
merged. The only KSM_POLICIES entry is that behaviour; no released kernel merges large folios.

Counters as /sys/kernel/mm/ksm prints them: pages_shared (KSM pages), pages_sharing (further
mappings of them, i.e. memory saved), full_scans.

Simplified: the caller names which folios hold identical content (pairs of equal-order folios,
page i of one equal to page i of the other) instead of KSM hashing and walking the unstable
tree; one full scan merges everything it can; no unmerging on write (cow_ksm).

Pairs KSM could never see are refused with ValueError before anything changes: a folio paired
with itself, pairs of different orders, and folios that are not anonymous (KSM scans only
private anonymous memory of MADV_MERGEABLE areas; vma_ksm_compatible() excludes hugetlb,
shared and kernel mappings).
"""
import numpy as np

from .costs import COST_INDEX, split_ns
from .mmzone import KIND_ANON, KIND_NAMES, PG_KSM, PG_PINNED

KSM_POLICIES = {
    "split": "split large folios to order 0 before merging; merged pages are order 0",
}


class KsmState:
    def __init__(self):
        self.pages_shared = 0
        self.pages_sharing = 0
        self.full_scans = 0

    def stats(self):
        return {"pages_shared": self.pages_shared, "pages_sharing": self.pages_sharing,
                "full_scans": self.full_scans}


def _split_for_merge(m, pfn):
    """try_to_merge_one_page()'s split of a large folio; False when it fails."""
    order = int(m.pgdat.mem_map[pfn]["order"])
    if order == 0:
        return True
    m.model_ns["ksm"] += split_ns(m.costs, order)
    return m.split(int(pfn), 0)


def _check_pairs(mem_map, pfns_a, pfns_b):
    """Every pair is two different anonymous folios of one order; ValueError otherwise."""
    if len(pfns_a) != len(pfns_b):
        raise ValueError(f"pfns_a has {len(pfns_a)} folios and pfns_b {len(pfns_b)}; KSM pairs "
                         f"need one folio of each")
    both = np.intersect1d(pfns_a, pfns_b)
    if both.size:
        raise ValueError(f"pfn {int(both[0])} is in both pfns_a and pfns_b; a folio cannot be "
                         f"merged with itself")
    for a, b in zip(pfns_a, pfns_b):
        for pfn in (a, b):
            kind = int(mem_map[pfn]["kind"])
            if kind != KIND_ANON:
                raise ValueError(f"pfn {int(pfn)} is a {KIND_NAMES[kind]} folio; KSM merges "
                                 f"anonymous folios only")
        if mem_map[a]["order"] != mem_map[b]["order"]:
            raise ValueError(f"folios at pfn {int(a)} and {int(b)} differ in order; KSM pairs "
                             f"need equal content, page for page")


def merge(m, pfns_a, pfns_b, policy="split"):
    """One full KSM scan over folios pfns_a[i] and pfns_b[i] of identical content. Returns
    {"merged_pages", "failed_pages", "split_folios", "ksm_pfns", "freed_pfns"}: ksm_pfns are the
    KSM pages (kept), freed_pfns the duplicates given back."""
    if policy not in KSM_POLICIES:
        raise ValueError(f"ksm policy {policy!r} is unknown; allowed: {', '.join(KSM_POLICIES)}")
    mem_map = m.pgdat.mem_map
    pfns_a = np.asarray(pfns_a, dtype=np.int64)
    pfns_b = np.asarray(pfns_b, dtype=np.int64)
    _check_pairs(mem_map, pfns_a, pfns_b)
    m._reserve_handles(int((np.int64(1) << mem_map["order"][pfns_a].astype(np.int64)).sum()
                           * 2) + 1)
    cost = m.costs[COST_INDEX["ksm_merge_ns_per_page"]]
    merged = failed = split_folios = 0
    ksm_pfns, freed = [], []
    for a, b in zip(pfns_a, pfns_b):
        order = int(mem_map[a]["order"])
        n = 1 << order
        if (mem_map[a]["flags"] | mem_map[b]["flags"]) & PG_PINNED:
            failed += n           # write_protect_page() sees the extra references
            continue
        ok_a = _split_for_merge(m, a)
        ok_b = ok_a and _split_for_merge(m, b)
        split_folios += int(order > 0) * (int(ok_a) + int(ok_b))
        if not (ok_a and ok_b):
            failed += n
            continue
        for i in range(n):
            mem_map[a + i]["flags"] |= PG_KSM
            ksm_pfns.append(int(a + i))
            freed.append(int(b + i))
        merged += n
        m.model_ns["ksm"] += cost * n
    if freed:
        m.free_many(np.array(freed, dtype=np.int64))
    m.ksm.pages_shared += merged
    m.ksm.pages_sharing += merged
    m.ksm.full_scans += 1
    return {"merged_pages": merged, "failed_pages": failed, "split_folios": split_folios,
            "ksm_pfns": ksm_pfns, "freed_pfns": freed}
