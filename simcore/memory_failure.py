"""Memory failure (a hardware-poisoned page), after mm/memory-failure.c memory_failure() and
try_to_split_thp_page().

A poisoned page inside a large folio cannot be taken out alone: memory_failure() splits the
folio (to order 0 for anonymous memory; Zi Yan's large-block-size work splits file folios only
to min_order_for_split(), which is 0 for anon too), then unmaps and isolates the poisoned page,
which leaves the LRU for good and is never given back to the allocator. A split that fails
(pinned folio) leaves the page unisolated: MF_MSG_UNSPLIT_THP, counted as ignored. The rest of
the folio stays in use as order-0 folios.

Counters as /sys/devices/system/node/node0/memory_failure/ prints them (6.8+): total, ignored,
failed, delayed, recovered.

A page the kernel owns (slab, page tables, other kernel memory, or a page already poisoned)
cannot be handled: get_hwpoison_page() finds it neither on the LRU nor movable nor free, and
memory_failure() reports MF_MSG_GET_HWPOISON as ignored (total and ignored counted) without
touching the folio; we return (False, "ignored: kernel page") and leave the folio as it was.
The kernel also sets PG_hwpoison on such a page, which only matters once it is freed; we do
not flag it.

Simplified: poisoned pages are in-use anonymous, file or shmem memory; free pages and hugetlb
folios (try_memory_failure_hugetlb(), which poisons and later dissolves the whole hugetlb
folio) are refused with ValueError before anything changes; no processes are killed: an
isolated page counts as recovered.
"""
from .costs import COST_INDEX, split_ns
from .mmzone import (
    KIND_HUGETLB,
    KIND_IS_LRU,
    KIND_KERNEL,
    KINDS,
    PAGE_BUDDY,
    PAGE_HEAD,
    PAGE_PCP,
    PAGE_TAIL,
    PG_HWPOISON,
)
from .pgdat import N_KIND_PAGES

MEMORY_FAILURE_POLICIES = {
    "split_order0": "split the folio to order 0, isolate the poisoned page",
}


class MemoryFailureStats:
    def __init__(self):
        self.total = self.ignored = self.failed = self.delayed = self.recovered = 0

    def stats(self):
        return {"total": self.total, "ignored": self.ignored, "failed": self.failed,
                "delayed": self.delayed, "recovered": self.recovered}


def folio_head(m, pfn):
    """The head PFN of the folio holding pfn; ValueError when pfn is free or out of range."""
    mem_map = m.pgdat.mem_map
    if not 0 <= pfn < m.nr_pages:
        raise ValueError(f"pfn {pfn!r} is outside the machine's memory")
    p = int(pfn)
    while p >= 0 and mem_map[p]["type"] == PAGE_TAIL:
        p -= 1
    if p >= 0 and mem_map[p]["type"] == PAGE_PCP and p + (1 << int(mem_map[p]["order"])) > pfn:
        # The kernel would drain it to the buddy lists and take it off them; free pages are
        # not modelled here, and a refused call changes nothing.
        raise ValueError(f"pfn {pfn} is a free page on a per-CPU list; memory_failure() is "
                         f"modelled for in-use pages")
    if p < 0 or mem_map[p]["type"] != PAGE_HEAD or p + (1 << int(mem_map[p]["order"])) <= pfn:
        what = "a free page" if p >= 0 and mem_map[p]["type"] == PAGE_BUDDY else "not in a folio"
        raise ValueError(f"pfn {pfn} is {what}; memory_failure() is modelled for in-use pages")
    return p


def memory_failure(m, pfn, policy="split_order0"):
    """memory_failure(pfn): returns (recovered, action), action the kernel's action_result()
    message in short ("recovered", "already poisoned", "unsplit thp", "ignored: kernel page").
    A hugetlb folio is refused (ValueError) before any counter moves."""
    if policy not in MEMORY_FAILURE_POLICIES:
        raise ValueError(f"memory_failure policy {policy!r} is unknown; allowed: "
                         f"{', '.join(MEMORY_FAILURE_POLICIES)}")
    mem_map = m.pgdat.mem_map
    head = folio_head(m, pfn)
    if mem_map[pfn]["type"] == PAGE_HEAD and mem_map[pfn]["flags"] & PG_HWPOISON:
        return False, "already poisoned"
    kind = int(mem_map[head]["kind"])
    if kind == KIND_HUGETLB:
        raise ValueError(f"pfn {pfn} is in a hugetlb folio; memory_failure() is modelled for "
                         f"anon, file and shmem pages (the hugetlb path is not)")
    stats = m.memory_failure_counts
    stats.total += 1
    if not KIND_IS_LRU[kind]:
        # get_hwpoison_page() fails: not LRU, not movable, not free -> MF_MSG_GET_HWPOISON
        stats.ignored += 1
        return False, "ignored: kernel page"
    order = int(mem_map[head]["order"])
    if order > 0:
        m.model_ns["memory_failure"] += split_ns(m.costs, order)
        if not m.split(head, 0):
            stats.ignored += 1
            return False, "unsplit thp"
    # hwpoison_user_mappings(): unmapped and off the LRU for good; kept off the buddy lists.
    m.model_ns["memory_failure"] += m.costs[COST_INDEX["split_fixed_ns"]]
    kind = int(mem_map[pfn]["kind"])
    node = m.pgdat.node
    node[N_KIND_PAGES + kind] -= 1
    node[N_KIND_PAGES + KIND_KERNEL] += 1
    mem_map[pfn]["kind"] = KIND_KERNEL
    mem_map[pfn]["flags"] |= PG_HWPOISON
    stats.recovered += 1
    m.hwpoisoned.add(int(pfn))
    return True, "recovered"


assert KINDS["kernel"] == KIND_KERNEL
