"""What an allocation may do when the free lists cannot serve it: the GFP flags of each caller,
after include/linux/gfp_types.h and mm/page_alloc.c __alloc_pages_slowpath().

A Gfp is the handful of bits the slow path looks at; GFP_NAMES gives the callers we model a name
(Machine.alloc(gfp=...)):

- "kernel": GFP_KERNEL (slab, page tables): direct reclaim and compaction, retried while reclaim
  makes progress; an order up to PAGE_ALLOC_COSTLY_ORDER that still cannot be served invokes the
  OOM killer, which the simulator models as simcore.OutOfMemory (the workload ends with an OOM row).
- "user": GFP_HIGHUSER_MOVABLE without the OOM killer (what Machine.alloc() does by default):
  as "kernel", but a failure returns None.
- "retry_mayfail": __GFP_RETRY_MAYFAIL (hugetlb pool growth, alloc_buddy_hugetlb_folio()):
  costly orders retried while reclaim progresses (MAX_RECLAIM_RETRIES) and compaction may still
  succeed (should_compact_retry(), MAX_COMPACT_RETRIES), then fail quietly.
- "noretry": __GFP_NORETRY (readahead, khugepaged): one round of reclaim and compaction.
- "transhuge": GFP_TRANSHUGE (a THP fault in a MADV_HUGEPAGE region with defrag=madvise, or any
  with defrag=always): direct reclaim and compaction, one round for the costly order.
- "transhuge_noretry": GFP_TRANSHUGE | __GFP_NORETRY (defrag=always outside MADV_HUGEPAGE).
- "kswapd_only": GFP_TRANSHUGE_LIGHT | __GFP_KSWAPD_RECLAIM (defrag=defer): wake kswapd and
  kcompactd, never stall.
- "light": GFP_TRANSHUGE_LIGHT (defrag=never, or madvise outside MADV_HUGEPAGE): no reclaim at all.
- "nowait": GFP_NOWAIT: wake kswapd, no direct reclaim or compaction.
- "atomic": GFP_ATOMIC (interrupt context: network receive buffers, page_frag refills):
  __GFP_HIGH without __GFP_DIRECT_RECLAIM. Wakes kswapd, never stalls, dips below the min
  watermark (ALLOC_MIN_RESERVE | ALLOC_NON_BLOCK) and, above order 0, uses and creates
  highatomic reserves (ALLOC_HIGHATOMIC, simcore.highatomic).

Since 6.3 the kernel gives ALLOC_NON_BLOCK and, above order 0, ALLOC_HIGHATOMIC to every request
that cannot sleep and lacks __GFP_NOMEMALLOC (GFP_NOWAIT too); here only "atomic" has them:
the simulator's "nowait", "kswapd_only" and "light" stand for THP-style requests, which carry
__GFP_NOMEMALLOC.
"""
import dataclasses

PAGE_ALLOC_COSTLY_ORDER = 3


@dataclasses.dataclass(frozen=True)
class Gfp:
    direct_reclaim: bool      # __GFP_DIRECT_RECLAIM: may stall in compaction and reclaim
    kswapd_reclaim: bool      # __GFP_KSWAPD_RECLAIM: wakes kswapd when the fast path fails
    noretry: bool = False     # __GFP_NORETRY
    retry_mayfail: bool = False   # __GFP_RETRY_MAYFAIL
    oom: bool = False         # the OOM killer may run (GFP_KERNEL and friends)
    high: bool = False        # __GFP_HIGH (GFP_ATOMIC): may use part of the min reserve


GFP_NAMES = {
    "kernel": Gfp(True, True, oom=True),
    "user": Gfp(True, True),
    "retry_mayfail": Gfp(True, True, retry_mayfail=True),
    "noretry": Gfp(True, True, noretry=True),
    "transhuge": Gfp(True, True),
    "transhuge_noretry": Gfp(True, True, noretry=True),
    "kswapd_only": Gfp(False, True),
    "light": Gfp(False, False),
    "nowait": Gfp(False, True),
    "atomic": Gfp(False, True, high=True),
}

def gfp_to_alloc_flags(gfp, order):
    """The reserve-related alloc_flags gfp_to_alloc_flags() adds in the slow path, as
    simcore.page_alloc bits: ALLOC_MIN_RESERVE for __GFP_HIGH and, for a request that cannot
    sleep, ALLOC_NON_BLOCK and (order > 0) ALLOC_HIGHATOMIC."""
    from .page_alloc import ALLOC_HIGHATOMIC, ALLOC_MIN_RESERVE, ALLOC_NON_BLOCK
    if not gfp.high:
        return 0
    flags = ALLOC_MIN_RESERVE
    if not gfp.direct_reclaim:
        flags |= ALLOC_NON_BLOCK | (ALLOC_HIGHATOMIC if order > 0 else 0)
    return flags


# /sys/kernel/mm/transparent_hugepage/defrag
DEFRAG_MODES = ("always", "defer", "defer+madvise", "madvise", "never")


def get_gfp(name):
    """The Gfp called `name`; ValueError listing the known names otherwise."""
    if isinstance(name, Gfp):
        return name
    try:
        return GFP_NAMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"gfp {name!r} is unknown; allowed: {', '.join(GFP_NAMES)}") from None


def vma_thp_gfp_mask(defrag, madvised=False):
    """The gfp name a THP/mTHP fault uses under the `defrag` setting, after mm/huge_memory.c
    vma_thp_gfp_mask(). madvised: the region has MADV_HUGEPAGE."""
    if defrag not in DEFRAG_MODES:
        raise ValueError(f"defrag {defrag!r} is unknown; allowed: {', '.join(DEFRAG_MODES)}")
    if defrag == "always":
        return "transhuge" if madvised else "transhuge_noretry"
    if defrag == "defer":
        return "kswapd_only"
    if defrag == "defer+madvise":
        return "transhuge" if madvised else "kswapd_only"
    if defrag == "madvise":
        return "transhuge" if madvised else "light"
    return "light"
