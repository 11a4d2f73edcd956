"""Geometry and enumerations of physical memory, after include/linux/mmzone.h.

Everything the allocator, the renderers and the tests agree on lives here: page and pageblock
sizes, migratetypes, zones, folio kinds and page flags, and the struct-page record of mem_map.
"""
import numpy as np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PAGE_ORDER = 10
NR_PAGE_ORDERS = MAX_PAGE_ORDER + 1
PAGEBLOCK_ORDER = 9
PAGEBLOCK_NR_PAGES = 1 << PAGEBLOCK_ORDER
PAGE_ALLOC_COSTLY_ORDER = 3
HPAGE_PMD_ORDER = 9

# enum migratetype, in the kernel's order (MIGRATE_PCPTYPES == 3 == MIGRATE_HIGHATOMIC).
MIGRATE_UNMOVABLE = 0
MIGRATE_MOVABLE = 1
MIGRATE_RECLAIMABLE = 2
MIGRATE_PCPTYPES = 3
MIGRATE_HIGHATOMIC = 3
MIGRATE_CMA = 4
MIGRATE_ISOLATE = 5
MIGRATE_TYPES = 6
# Column titles of /proc/pagetypeinfo (migratetype_names[] in mm/page_alloc.c).
MIGRATETYPE_NAMES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate")
# API spellings: lower case, as users type them.
MIGRATETYPES = {name.lower(): mt for mt, name in enumerate(MIGRATETYPE_NAMES)}

# fallbacks[] in mm/page_alloc.c: where a request of each type may take pages from when its own
# lists are empty. CMA, HIGHATOMIC and ISOLATE have none.
FALLBACKS = {
    MIGRATE_UNMOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE),
    MIGRATE_MOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE),
    MIGRATE_RECLAIMABLE: (MIGRATE_UNMOVABLE, MIGRATE_MOVABLE),
}
# The same table as an array for compiled code: row = request type, -1 = no more fallbacks.
FALLBACK_TABLE = np.full((MIGRATE_TYPES, 2), -1, dtype=np.int64)
for _mt, _fbs in FALLBACKS.items():
    FALLBACK_TABLE[_mt, : len(_fbs)] = _fbs

# Zones of our one node, lowest first. DMA (the first 16 MiB) is folded into DMA32.
ZONE_DMA32 = 0
ZONE_NORMAL = 1
ZONE_MOVABLE = 2
ZONE_NAMES = ("DMA32", "Normal", "Movable")
DMA32_LIMIT_BYTES = 4 << 30
# sysctl vm.lowmem_reserve_ratio defaults for DMA32, Normal, Movable (mm/page_alloc.c).
LOWMEM_RESERVE_RATIO = (256, 32, 0)
WATERMARK_SCALE_FACTOR = 10

# Folio kinds: what the memory holds. The first four sit on the LRU (or are hugetlb) and can be
# migrated; slab, page tables and other kernel memory cannot.
KIND_ANON = 0
KIND_FILE = 1
KIND_SHMEM = 2
KIND_HUGETLB = 3
KIND_SLAB = 4
KIND_PAGETABLE = 5
KIND_KERNEL = 6
KIND_NAMES = ("anon", "file", "shmem", "hugetlb", "slab", "pagetable", "kernel")
KINDS = {name: k for k, name in enumerate(KIND_NAMES)}
NR_KINDS = len(KIND_NAMES)
KIND_IS_LRU = np.array([1, 1, 1, 0, 0, 0, 0], dtype=np.uint8)
KIND_IS_MIGRATABLE = np.array([1, 1, 1, 1, 0, 0, 0], dtype=np.uint8)

# Folio state bits (page flags the migration code looks at).
PG_PINNED = 1 << 0  # extra references from pin_user_pages (refcount beyond mapcount)
PG_DIRTY = 1 << 1
PG_WRITEBACK = 1 << 2
PG_MLOCKED = 1 << 3
PG_UNEVICTABLE = 1 << 4
PG_KSM = 1 << 5
PG_HWPOISON = 1 << 6
# Not a page flag but a property of the folio's mapping: its address_space_operations have no
# migrate_folio, so migration falls back to writing dirty folios out (fallback_migrate_folio()).
AS_NO_MIGRATE_FOLIO = 1 << 7
# Folio state kept in a large folio's second page (folio->_flags_1 in the kernel), never in
# the head's flags and never set by users: mem_map[head + 1].flags (simcore.deferred_split).
# It reuses PG_HWPOISON's bit, as the kernel's PG_partially_mapped reuses PG_reclaim's: a
# freed head's flags can linger on the page once it merges into a larger free block, but a
# poisoned page is never freed, so this bit never lingers on a tail page.
PG_PARTIALLY_MAPPED = 1 << 6    # on the deferred split queue, partially mapped (6.12)
PAGE_FLAG_NAMES = {
    "pinned": PG_PINNED, "dirty": PG_DIRTY, "writeback": PG_WRITEBACK, "mlocked": PG_MLOCKED,
    "unevictable": PG_UNEVICTABLE, "ksm": PG_KSM, "hwpoison": PG_HWPOISON,
    "no_migrate_callback": AS_NO_MIGRATE_FOLIO,
}

# What a struct page is to us. A free block's head is PageBuddy; a folio's head is PageHead (also
# for order 0); every other page of either is a tail.
PAGE_TAIL = 0
PAGE_BUDDY = 1
PAGE_HEAD = 2
PAGE_OFFLINE = 3     # head of an offlined block: not managed, on no list
PAGE_PCP = 4         # head of a free block on a per-CPU list (simcore.pcp): not PageBuddy

# mem_map: one 12-byte record per page. `next`/`prev` link free blocks on their buddy list
# (-1 ends a list). On a folio head, `next` holds the folio's handle (page->mapping's role: how
# the owner finds the folio again after migration moves it) and `prev` whether the folio sits on
# the LRU or was isolated by a migration scanner (folio_test_lru() cleared).
FOLIO_ON_LRU = -1
FOLIO_ISOLATED = -2
PAGE_DTYPE = np.dtype([
    ("next", np.int32), ("prev", np.int32), ("order", np.int8), ("type", np.uint8),
    ("kind", np.uint8), ("flags", np.uint8),
])

# Pageblock flags: migratetype in the low bits, the compaction skip hint above.
PB_MIGRATETYPE_MASK = 0x7
PB_MIGRATE_SKIP = 0x8
