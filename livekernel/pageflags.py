"""Where our pages live and what folios they belong to: /proc/self/pagemap and /proc/kpageflags
(and mincore(2) for swap-cache residency).

pagemap gives, per virtual page, the PFN (bits 0-54, root only) and "present" (bit 63);
kpageflags gives, per PFN, the KPF_* bits of fs/proc/page.c (stable_page_flags()): a large
folio's first page has KPF_COMPOUND_HEAD, the others KPF_COMPOUND_TAIL (Documentation/
admin-guide/mm/pagemap.rst). Both are read in bulk with numpy: one pread per virtual range,
one per run of nearby PFNs, never a Python loop per page.
"""
import ctypes
import os

import numpy as np

KPF_BUDDY = 10
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_THP = 22
KPF_RESERVED = 32             # PG_reserved: early-boot (memblock) memory, holes
PM_PFN_MASK = (1 << 55) - 1
PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PAGE = 4096
GAP = 16                        # PFNs this close are read in one pread
MAX_ORDER_SEEN = 10


def pagemap_entries(address, nr_pages):
    """The raw /proc/self/pagemap words of nr_pages virtual pages from `address`."""
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, nr_pages * 8, (address >> 12) * 8)
    finally:
        os.close(fd)
    return np.frombuffer(raw, dtype=np.uint64)


def pagemap(address, nr_pages):
    """(pfn, present) arrays for nr_pages virtual pages from `address` in this process."""
    entries = pagemap_entries(address, nr_pages)
    present = (entries & np.uint64(PM_PRESENT)) != 0
    return (entries & np.uint64(PM_PFN_MASK)).astype(np.int64), present


def swapped(entries):
    """Per page: is its pagemap word a swap entry (PM_SWAP)?"""
    return (np.asarray(entries, dtype=np.uint64) & np.uint64(PM_SWAP)) != 0


def resident(address, nr_pages):
    """Per page of this process: resident in memory by mincore(2): mapped, or (a swap entry)
    still in the swap cache (mincore_swap() in mm/mincore.c)."""
    vec = ctypes.create_string_buffer(nr_pages)
    if _mincore()(ctypes.c_void_p(address), nr_pages * PAGE, vec):
        err = ctypes.get_errno()
        raise OSError(err, f"mincore({address:#x}, {nr_pages} pages): {os.strerror(err)}")
    return (np.frombuffer(vec.raw, dtype=np.uint8) & 1).astype(bool)


def _mincore():
    from .libc import LIBC
    return LIBC.mincore


def kpageflags(pfns):
    """The KPF_* word of each PFN (uint64): one pread per run of nearby PFNs (gaps up to
    GAP are read through), so a folio costs one read and a scattered page one small read."""
    pfns = np.asarray(pfns, dtype=np.int64)
    out = np.zeros(len(pfns), dtype=np.uint64)
    if not len(pfns):
        return out
    uniq = np.unique(pfns)
    breaks = np.flatnonzero(np.diff(uniq) > GAP) + 1
    firsts = uniq[np.append(0, breaks)]
    lasts = uniq[np.append(breaks - 1, len(uniq) - 1)]
    words = np.zeros(len(uniq), dtype=np.uint64)
    fd = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        pos = 0
        for first, last in zip(firsts.tolist(), lasts.tolist()):
            raw = os.pread(fd, (last - first + 1) * 8, first * 8)
            run = np.frombuffer(raw, dtype=np.uint64)
            end = np.searchsorted(uniq, last, side="right")
            idx = uniq[pos:end] - first
            ok = idx < len(run)
            words[pos:end][ok] = run[idx[ok]]
            pos = end
    finally:
        os.close(fd)
    return words[np.searchsorted(uniq, pfns)]


def reserved_pages(start_pfn, nr_pages):
    """How many of the PFNs [start_pfn, start_pfn + nr_pages) are PG_reserved (KPF_RESERVED):
    memory the early-boot allocator (memblock) kept, which offline_pages() can never move."""
    words = kpageflags(np.arange(start_pfn, start_pfn + nr_pages, dtype=np.int64))
    return int(_bit(words, KPF_RESERVED).sum())


def _bit(words, bit):
    return ((words >> np.uint64(bit)) & np.uint64(1)).astype(bool)


def folio_runs(pfns, present):
    """Split a virtual range into the folios that map it, in virtual order.

    Returns (start, length, order) arrays: `start` indexes the range's pages; a folio is a
    compound head followed by physically consecutive tails, or a single non-compound page.
    Pages not present form runs of order -1. `order` is log2 of the folio's size as mapped
    here (a partly unmapped folio shows the part still mapped, rounded down)."""
    n = len(pfns)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    words = kpageflags(pfns[present])
    flags = np.zeros(n, dtype=np.uint64)
    flags[present] = words
    tail = _bit(flags, KPF_COMPOUND_TAIL) & present
    contiguous = np.zeros(n, dtype=bool)
    contiguous[1:] = (pfns[1:] == pfns[:-1] + 1) & present[:-1]
    # a new folio starts at every page that does not continue the previous one's tail run
    starts_mask = ~(tail & contiguous)
    both_absent = np.zeros(n, dtype=bool)
    both_absent[1:] = ~present[1:] & ~present[:-1]
    starts_mask &= ~both_absent
    starts_mask[0] = True
    start = np.flatnonzero(starts_mask)
    length = np.diff(np.append(start, n))
    order = np.floor(np.log2(length)).astype(np.int64)
    order[~present[start]] = -1
    return start, length, order


def folio_order_at(pfns):
    """Order of the folio each PFN heads (0 for a non-compound page, -1 for a PFN that is a
    tail or not in use as we see it), from the tails that follow it physically."""
    pfns = np.asarray(pfns, dtype=np.int64)
    out = np.zeros(len(pfns), dtype=np.int64)
    if not len(pfns):
        return out
    head_words = kpageflags(pfns)
    is_head = _bit(head_words, KPF_COMPOUND_HEAD)
    out[_bit(head_words, KPF_COMPOUND_TAIL)] = -1
    heads = pfns[is_head]
    if len(heads):
        span = np.int64(1) << MAX_ORDER_SEEN
        offsets = np.arange(1, span, dtype=np.int64)
        orders = np.zeros(len(heads), dtype=np.int64)
        # look at the next 2^k - 1 pages, k growing, only for heads still all-tail so far
        alive = np.ones(len(heads), dtype=bool)
        for k in range(1, MAX_ORDER_SEEN + 1):
            lo, hi = (1 << (k - 1)), (1 << k)
            idx = np.flatnonzero(alive)
            if not len(idx):
                break
            probe = (heads[idx, None] + offsets[lo - 1:hi - 1][None, :]).ravel()
            words = kpageflags(probe).reshape(len(idx), hi - lo)
            full = _bit(words, KPF_COMPOUND_TAIL).all(axis=1)
            orders[idx[full]] = k
            alive[idx[~full]] = False
        out[is_head] = orders
    return out
