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
- "nowait": GFP_NOWAIT (kmalloc() and slab refills that may not sleep, e.g. under a spinlock):
  __GFP_KSWAPD_RECLAIM only. Wakes kswapd, no direct reclaim or compaction; whether it may
  use and create highatomic reserves depends on the kernel (policy below).
- "atomic": GFP_ATOMIC (interrupt context: network receive buffers, page_frag refills):
  __GFP_HIGH without __GFP_DIRECT_RECLAIM. Wakes kswapd, never stalls, dips below the min
  watermark (ALLOC_MIN_RESERVE | ALLOC_NON_BLOCK) and, above order 0, uses and creates
  highatomic reserves (ALLOC_HIGHATOMIC, simcore.highatomic).

"kswapd_only" and "light" carry __GFP_NOMEMALLOC (GFP_TRANSHUGE_LIGHT), so no kernel gives
them reserves; Machine.alloc(compact=False) without a gfp uses "kswapd_only".

Which requests that cannot sleep get ALLOC_NON_BLOCK and ALLOC_HIGHATOMIC (gfp_to_alloc_flags())
is the profile's policy `highatomic_gfp` (HIGHATOMIC_GFP_POLICIES):
- gfp_atomic (6.1, 6.2): only __GFP_ATOMIC (GFP_ATOMIC) gets ALLOC_HARDER, which reserves and
  uses highatomic blocks for order > 0; GFP_NOWAIT gets nothing.
- nonblocking (6.3 .. 6.17): Mel Gorman's series that dropped __GFP_ATOMIC, "mm/page_alloc:
  explicitly record high-order atomic allocations in alloc_flags" (eb2e2b425c69) and
  "mm/page_alloc: explicitly define how __GFP_HIGH non-blocking allocations accesses
  reserves" (1ebbb21811b7), merged for 6.3 (~): every request without __GFP_DIRECT_RECLAIM
  and without __GFP_NOMEMALLOC gets ALLOC_NON_BLOCK, and above order 0 ALLOC_HIGHATOMIC, so
  high-order GFP_NOWAIT requests create and use highatomic blocks as GFP_ATOMIC ones do.
- gfp_high (6.18 ~): Thadeu Lima de Souza Cascardo, "mm/page_alloc: only set ALLOC_HIGHATOMIC
  for __GPF_HIGH allocations" (6a204d4b14c9, Fixes: 1ebbb21811b7): ALLOC_HIGHATOMIC again
  only with __GFP_HIGH (ALLOC_MIN_RESERVE); GFP_NOWAIT keeps ALLOC_NON_BLOCK (the watermark
  check counts the reserve as free, and order 0 may fall back to it). Posted August 2025; it
  is in the linux-6.17.y stable queue (October 2025), so not in 6.17.0: first in 6.18 (~).
  Backported to 6.12.54 and to 6.1.y (whose stable tree had carried the 6.3 series): the
  linux-6.12 and linux-6.1 profiles model 6.12.0 and 6.1.0, as every profile models the
  release's first version, so a guest's 6.12.117 or 6.1.158 has the fixed rule where the
  profiles do not.
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
    nomemalloc: bool = False  # __GFP_NOMEMALLOC: never given reserves (THP requests)


GFP_NAMES = {
    "kernel": Gfp(True, True, oom=True),
    "user": Gfp(True, True),
    "retry_mayfail": Gfp(True, True, retry_mayfail=True),
    "noretry": Gfp(True, True, noretry=True),
    "transhuge": Gfp(True, True, nomemalloc=True),
    "transhuge_noretry": Gfp(True, True, noretry=True, nomemalloc=True),
    "kswapd_only": Gfp(False, True, nomemalloc=True),
    "light": Gfp(False, False, nomemalloc=True),
    "nowait": Gfp(False, True),
    "atomic": Gfp(False, True, high=True),
}

# the profile field highatomic_gfp: which non-blocking requests get reserves
HIGHATOMIC_GFP_POLICIES = ("gfp_atomic", "nonblocking", "gfp_high")


def gfp_to_alloc_flags(gfp, order, policy="gfp_high"):
    """The reserve-related alloc_flags gfp_to_alloc_flags() adds in the slow path, as
    simcore.page_alloc bits, under the profile's highatomic_gfp `policy`: ALLOC_MIN_RESERVE
    for __GFP_HIGH; for a request that cannot sleep and lacks __GFP_NOMEMALLOC,
    ALLOC_NON_BLOCK (before 6.3 only GFP_ATOMIC's ALLOC_HARDER, which we model as the same
    bit) and, above order 0, ALLOC_HIGHATOMIC where the policy gives it."""
    from .page_alloc import ALLOC_HIGHATOMIC, ALLOC_MIN_RESERVE, ALLOC_NON_BLOCK
    if policy not in HIGHATOMIC_GFP_POLICIES:
        raise ValueError(f"highatomic_gfp policy {policy!r} is unknown; allowed: "
                         f"{', '.join(HIGHATOMIC_GFP_POLICIES)}")
    flags = ALLOC_MIN_RESERVE if gfp.high else 0
    if gfp.direct_reclaim or gfp.nomemalloc:
        return flags
    if policy == "gfp_atomic" and not gfp.high:     # no __GFP_ATOMIC: no ALLOC_HARDER
        return flags
    flags |= ALLOC_NON_BLOCK
    if order > 0 and (policy != "gfp_high" or gfp.high):
        flags |= ALLOC_HIGHATOMIC
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
