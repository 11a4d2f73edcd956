"""Page reclaim: the node's LRU lists, shrink_folio_list(), direct reclaim and kswapd, after
mm/vmscan.c (shrink_node(), shrink_lruvec(), shrink_active_list(), shrink_inactive_list(),
shrink_folio_list(), folio_check_references(), try_to_free_pages(), balance_pgdat(),
pgdat_balanced(), kswapd_try_to_sleep(), wakeup_kswapd()), mm/swap.c folio_mark_accessed() and
the slow path's reclaim loop in mm/page_alloc.c (__alloc_pages_slowpath(),
should_reclaim_retry(), should_compact_retry()).

The LRU (one lruvec per node, no memcg): every folio of an LRU kind (anon, shmem, file) is on one
of four lists, inactive/active x anon/file (shmem on the anon lists, as it is swap-backed).
A new folio starts inactive (lru_add). folio_mark_accessed() (Machine.touch(): a re-read or a
re-touch) sets PG_referenced, and a second access while referenced activates the folio.
Reclaim takes the oldest inactive folios: a referenced one gets a second chance (anon mapped
and referenced is activated, file is rotated with the bit cleared), a pinned, mlocked,
unevictable, KSM or writeback one stays, a clean file folio is dropped, a dirty one is written
back first (pageout(), counted in nr_vmscan_write) and dropped, an anonymous or shmem one goes
to swap through simcore.swap (split or whole as the profile's swap_alloc policy says; a folio
on the deferred split queue flagged partially mapped is split first, 6.12+) where a swap area
exists; without one the anon lists are not scanned (get_scan_count() SCAN_FILE).
shrink_active_list() deactivates the oldest active folios while inactive_is_low().

Shrinkers (shrink_slab(), do_shrink_slab()): after the LRU lists at each priority, as
shrink_node_memcgs() does, the one shrinker modelled runs: the THP deferred split queue's
(simcore.deferred_split.deferred_split_scan()), which splits queued partially mapped folios.

Where the simulator simplifies: the lists are per-handle state (list, PG_referenced, an age stamp)
with FIFO queues for the order; new folios join when their allocation call returns
(Lru.add_new()), and folios that compiled code creates (split pieces) at the next reclaim
(lru_sync()) rather than next to their head; writeback of a dirty file folio completes at
once; no refault/workingset detection, no MGLRU, no memcg, no slab shrinkers (the deferred
split queue's is the only shrinker); anon vs file balance is the kernel's cache_trim_mode (file
only while the inactive file list is large enough at this priority), not the full
get_scan_count() ratio.

A folio reclaim frees is gone from its owner: its handle's generation (Machine.handle_generation)
moves on, so a backend can tell a stale handle from a reused one.
"""
import numba as nb
import numpy as np

from . import deferred_split, highatomic, vmstat
from .costs import COST_INDEX
from .gfp import PAGE_ALLOC_COSTLY_ORDER
from .mmzone import (
    KIND_ANON,
    KIND_IS_LRU,
    KIND_SHMEM,
    MIGRATE_CMA,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    NR_PAGE_ORDERS,
    PAGE_HEAD,
    PAGEBLOCK_ORDER,
    PG_DIRTY,
    PG_HWPOISON,
    PG_KSM,
    PG_MLOCKED,
    PG_PINNED,
    PG_UNEVICTABLE,
    PG_WRITEBACK,
    ZONE_NAMES,
)
from .pgdat import (
    FA_COUNT,
    N_KIND_PAGES,
    Z_END,
    Z_FREE,
    Z_LOWMEM_RESERVE,
    Z_START,
    Z_WMARK_HIGH,
    Z_WMARK_LOW,
    Z_WMARK_MIN,
    view_at,
)
from .vm_event import MTHP_STAT_SPLIT

jit = nb.njit(cache=True, nogil=True)

LRU_INACTIVE_ANON, LRU_ACTIVE_ANON, LRU_INACTIVE_FILE, LRU_ACTIVE_FILE = range(4)
LRU_NAMES = ("inactive_anon", "active_anon", "inactive_file", "active_file")
NOT_ON_LRU = -1
SWAP_CLUSTER_MAX = 32
DEF_PRIORITY = 12
MAX_RECLAIM_RETRIES = 16
MAX_COMPACT_RETRIES = 16
KSWAPD_NAP_NS = 100_000_000            # kswapd_try_to_sleep()'s HZ/10 short sleep
SHRINK_BATCH = 128                      # do_shrink_slab()'s batch for a shrinker without one
DEFAULT_SEEKS = 2                       # the deferred split shrinker's seeks (shrinker_alloc())
KEEP_FLAGS = PG_PINNED | PG_WRITEBACK | PG_MLOCKED | PG_UNEVICTABLE | PG_KSM | PG_HWPOISON

RECLAIM_EVENT_NAMES = (
    "pgactivate", "pgdeactivate", "pgrotated",
    "allocstall_dma32", "allocstall_normal", "allocstall_movable",
    "pgsteal_kswapd", "pgsteal_direct", "pgscan_kswapd", "pgscan_direct",
    "pgscan_anon", "pgscan_file", "pgsteal_anon", "pgsteal_file",
    "pgrefill", "pageoutrun", "kswapd_low_wmark_hit_quickly", "kswapd_high_wmark_hit_quickly",
    "oom_kill", "nr_vmscan_write",
)
NR_RECLAIM_EVENTS = len(RECLAIM_EVENT_NAMES)
_E = {name: i for i, name in enumerate(RECLAIM_EVENT_NAMES)}
ALLOCSTALL_FIRST = _E["allocstall_dma32"]


class OutOfMemory(Exception):
    """An allocation that must succeed could not (out_of_memory()): the workload ends here."""


def compact_gap(order):
    """compact_gap(): free pages compaction wants on top of the watermark (2 << order)."""
    return 2 << order


class _Queue:
    """One LRU list's order: (handle, stamp) pairs oldest first; an entry whose stamp no longer
    matches the handle's is stale and skipped (the folio moved, or left the LRU)."""

    def __init__(self):
        self.h = np.empty(1024, dtype=np.int64)
        self.s = np.empty(1024, dtype=np.int64)
        self.head = self.tail = 0

    def reserve(self, n):
        """Room for n more entries after the tail (moving the live ones to the front of a
        new buffer when needed; positions in the buffer are not part of the list's state)."""
        if self.tail + n > len(self.h):
            live = self.tail - self.head
            cap = max(len(self.h), 2 * (live + n))
            h, s = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
            h[:live], s[:live] = self.h[self.head:self.tail], self.s[self.head:self.tail]
            self.h, self.s, self.head, self.tail = h, s, 0, live

    def push(self, handles, stamps):
        n = len(handles)
        self.reserve(n)
        self.h[self.tail:self.tail + n] = handles
        self.s[self.tail:self.tail + n] = stamps
        self.tail += n

    def pop(self, k):
        """The next k entries (copies) and the buffer position of the first."""
        start = self.head
        end = min(start + k, self.tail)
        self.head = end
        return self.h[start:end].copy(), self.s[start:end].copy(), start

    def __len__(self):
        return self.tail - self.head

    def state(self):
        return self.h[self.head:self.tail], self.s[self.head:self.tail]


class Lru:
    """The node's lruvec plus kswapd's state; indexed by folio handle."""

    def __init__(self):
        self.list_of = np.full(0, NOT_ON_LRU, dtype=np.int8)
        self.referenced = np.zeros(0, dtype=bool)
        self.stamp = np.zeros(0, dtype=np.int64)
        self.gen = np.zeros(0, dtype=np.int64)
        # the buffers behind them (see grow())
        self._list_of_buf, self._referenced_buf = self.list_of, self.referenced
        self._stamp_buf, self._gen_buf = self.stamp, self.gen
        self.queues = [_Queue() for _ in LRU_NAMES]
        self.nr_pages = np.zeros(len(LRU_NAMES), dtype=np.int64)
        self.clock = 0
        self.split_seen = -1            # split counter at the last full sync (-1: never)
        self.events = np.zeros(NR_RECLAIM_EVENTS, dtype=np.int64)
        self.kswapd_order = -1          # -1: kswapd asleep and not woken
        self.kswapd_slept_ns = -1       # when kswapd last went to sleep (-1: never ran)
        self.swapped = []               # SwapRecords of folios reclaim swapped out
        # the deferred split shrinker (shrink_slab()): the work do_shrink_slab() deferred
        # (nr_deferred) and where the next deferred_split_scan() starts
        self.split_nr_deferred = 0
        self.split_cursor = 0

    # -- bookkeeping ----------------------------------------------------------------------

    def grow(self, n):
        """Room for handles up to n: the per-handle arrays become views of length n into
        buffers that grow by doubling (growing them to exactly n each time cost a copy of
        every array per call where frees name handles just beyond them)."""
        old = len(self.list_of)
        if n <= old:
            return
        if n > len(self._list_of_buf):
            cap = max(n, 2 * len(self._list_of_buf), 1024)
            bufs = (np.full(cap, NOT_ON_LRU, dtype=np.int8), np.zeros(cap, dtype=bool),
                    np.zeros(cap, dtype=np.int64), np.zeros(cap, dtype=np.int64))
            for buf, arr in zip(bufs, (self.list_of, self.referenced, self.stamp, self.gen)):
                buf[:old] = arr
            self._list_of_buf, self._referenced_buf, self._stamp_buf, self._gen_buf = bufs
        # the buffers beyond `old` still hold their initial values: nothing writes past a view
        self.list_of = self._list_of_buf[:n]
        self.referenced = self._referenced_buf[:n]
        self.stamp = self._stamp_buf[:n]
        self.gen = self._gen_buf[:n]

    def _put(self, handles, lru):
        """Add handles to the tail of list `lru` (they must be off the LRU or already counted
        out of their old list)."""
        if not len(handles):
            return
        stamps = self.clock + 1 + np.arange(len(handles), dtype=np.int64)
        self.clock += len(handles)
        self.list_of[handles] = lru
        self.stamp[handles] = stamps
        self.queues[lru].push(handles, stamps)

    def forget(self, handles, pages):
        """Folios (of `pages` pages each) leaving the LRU because their owner frees them
        (folio_put() of the last reference deletes them from their list first)."""
        if len(handles):
            handles = np.ascontiguousarray(handles, dtype=np.int64)
            self.grow(int(handles.max()) + 1)
            _lru_forget(handles, np.ascontiguousarray(pages, dtype=np.int64), self.list_of,
                        self.referenced, self.nr_pages)

    def add_new(self, m, pfns):
        """lru_add: new folios of an LRU kind join the inactive list of their type (called at
        the end of the allocation call that made them): the swap-backed ones (anon, shmem)
        first, then the file ones, each in call order."""
        if not len(pfns):
            return
        pfns = np.ascontiguousarray(pfns, dtype=np.int64)
        if len(self.list_of) < len(m.pgdat.folio_pfn):
            self.grow(len(m.pgdat.folio_pfn))
        n = len(pfns)
        qa, qf = self.queues[LRU_INACTIVE_ANON], self.queues[LRU_INACTIVE_FILE]
        if qa.tail + n > len(qa.h):
            qa.reserve(n)
        if qf.tail + n > len(qf.h):
            qf.reserve(n)
        na, nf = _lru_add_new(m.pgdat.view, pfns, self.list_of, self.stamp, self.clock,
                              qa.h, qa.s, qa.tail, qf.h, qf.s, qf.tail, self.nr_pages)
        qa.tail += na
        qf.tail += nf
        self.clock += na + nf

    def digest_arrays(self):
        arrays = [self.list_of, self.referenced, self.stamp, self.gen, self.nr_pages, self.events]
        for q in self.queues:
            arrays += list(q.state())
        return arrays

    def digest_scalars(self):
        scalars = (self.clock, self.split_seen, self.kswapd_order, self.kswapd_slept_ns,
                   [(r.kind, r.order, r.pieces, r.resident) for r in self.swapped])
        # the shrinker's state once it has any (a machine whose queue was never scanned
        # digests as before the shrinker was modelled)
        if self.split_nr_deferred or self.split_cursor:
            scalars += (self.split_nr_deferred, self.split_cursor)
        return scalars


@jit
def _lru_forget(handles, pages, list_of, referenced, nr_pages):
    """Lru.forget() in one pass: each listed folio's pages off its list's count, then every
    handle off the LRU and unreferenced."""
    for i in range(len(handles)):
        lst = list_of[handles[i]]
        if lst != NOT_ON_LRU:
            nr_pages[lst] -= pages[i]
    for i in range(len(handles)):
        list_of[handles[i]] = NOT_ON_LRU
        referenced[handles[i]] = False


@jit
def _lru_add_new(view, pfns, list_of, stamp, clock, qa_h, qa_s, qa_tail, qf_h, qf_s, qf_tail,
                 nr_pages):
    """Lru.add_new() in compiled code: the folios at `pfns` not on a list yet go to the tail
    of the inactive anon (swap-backed) or file list, stamped from clock + 1 on, anon ones
    first; the queues have room (reserved by the caller). Returns (anon added, file added)."""
    mem_map = view_at(view).mem_map
    fresh = np.empty(len(pfns), dtype=np.bool_)
    for i in range(len(pfns)):       # which are new, before any is added (as the batch did)
        fresh[i] = list_of[mem_map[pfns[i]].next] == NOT_ON_LRU
    na = nf = 0
    for swap_backed in (True, False):
        for i in range(len(pfns)):
            if not fresh[i]:
                continue
            rec = mem_map[pfns[i]]
            if (rec.kind == KIND_ANON or rec.kind == KIND_SHMEM) != swap_backed:
                continue
            h = rec.next
            clock += 1
            list_of[h] = LRU_INACTIVE_ANON if swap_backed else LRU_INACTIVE_FILE
            stamp[h] = clock
            if swap_backed:
                qa_h[qa_tail + na] = h
                qa_s[qa_tail + na] = clock
                na += 1
                nr_pages[LRU_INACTIVE_ANON] += np.int64(1) << rec.order
            else:
                qf_h[qf_tail + nf] = h
                qf_s[qf_tail + nf] = clock
                nf += 1
                nr_pages[LRU_INACTIVE_FILE] += np.int64(1) << rec.order
    return na, nf


def _lru_kind_pages(m):
    node = m.pgdat.node
    return int(node[N_KIND_PAGES:N_KIND_PAGES + len(KIND_IS_LRU)][KIND_IS_LRU == 1].sum())


def _split_count(m):
    return int(m.pgdat.mthp_stats[:, MTHP_STAT_SPLIT].sum())


def lru_sync(m, exclude=None):
    """Bring the lists up to date with memory where they may not be: folios created outside
    reclaim's sight (split pieces, allocations compiled code made) join the inactive list of
    their type, in handle order; entries of folios that are gone are dropped; the per-list
    page counts are recounted. Nothing to do while the lists hold every LRU page but those of
    `exclude` (head PFNs the allocation call in progress holds, left off for now) and nothing
    was split since the last sync."""
    lru = m.lru
    pending = 0
    if exclude is not None and len(exclude):
        pending = int((np.int64(1) << m.pgdat.mem_map["order"][exclude].astype(np.int64)).sum())
    splits = _split_count(m)
    if lru.split_seen == splits and _lru_kind_pages(m) == int(lru.nr_pages.sum()) + pending:
        return
    lru.split_seen = splits
    table = m.pgdat.folio_pfn
    n = len(table)
    lru.grow(n)
    excluded = np.zeros(n if exclude is not None and len(exclude) else 0, dtype=bool)
    if len(excluded):
        excluded[m.pgdat.mem_map["next"][exclude].astype(np.int64)] = True
    new_anon, new_file = _lru_sync_scan(m.pgdat.view, table, lru.list_of, lru.referenced,
                                        excluded)
    lru._put(new_anon, LRU_INACTIVE_ANON)
    lru._put(new_file, LRU_INACTIVE_FILE)
    _lru_recount(m.pgdat.view, table, lru.list_of, lru.nr_pages)


@jit
def _lru_sync_scan(view, table, list_of, referenced, excluded):
    """lru_sync()'s pass over the handle table: handles on a list whose folio is gone or not
    of an LRU kind leave it (unreferenced); live LRU folios on no list, but those `excluded`
    (empty: none), are returned to be added, swap-backed (anon, shmem) and file ones apart,
    each ascending."""
    mem_map = view_at(view).mem_map
    n = len(table)
    new_anon = np.empty(n, dtype=np.int64)
    new_file = np.empty(n, dtype=np.int64)
    na = nf = 0
    for h in range(n):
        pfn = table[h]
        kind = -1
        if pfn >= 0 and KIND_IS_LRU[mem_map[pfn].kind] == 1:
            kind = mem_map[pfn].kind
        listed = list_of[h] != NOT_ON_LRU
        if listed and kind < 0:
            list_of[h] = NOT_ON_LRU
            referenced[h] = False
        elif kind >= 0 and not listed and not (len(excluded) and excluded[h]):
            if kind == KIND_ANON or kind == KIND_SHMEM:
                new_anon[na] = h
                na += 1
            else:
                new_file[nf] = h
                nf += 1
    return new_anon[:na], new_file[:nf]


@jit
def _lru_recount(view, table, list_of, nr_pages):
    """Pages per list, recounted from the live LRU folios on them."""
    mem_map = view_at(view).mem_map
    nr_pages[:] = 0
    for h in range(len(table)):
        pfn = table[h]
        if pfn >= 0 and list_of[h] != NOT_ON_LRU and KIND_IS_LRU[mem_map[pfn].kind] == 1:
            nr_pages[list_of[h]] += np.int64(1) << mem_map[pfn].order


def check_lru(m):
    """The LRU invariant for Machine.check(): every folio on a list is live and of an LRU kind
    (no page both on the LRU and on the buddy lists or in swap). Returns a problem or ""."""
    lru = m.lru
    table = m.pgdat.folio_pfn
    listed = np.flatnonzero(lru.list_of[:len(table)] != NOT_ON_LRU)
    if len(lru.list_of) > len(table) and (lru.list_of[len(table):] != NOT_ON_LRU).any():
        return "a handle beyond the handle table is on an LRU list"
    if not len(listed):
        return ""
    pfns = table[listed]
    if (pfns < 0).any():
        h = int(listed[np.flatnonzero(pfns < 0)[0]])
        return f"handle {h} is on the {LRU_NAMES[lru.list_of[h]]} list but its folio was freed"
    recs = m.pgdat.mem_map[pfns]
    bad = (recs["type"] != PAGE_HEAD) | (KIND_IS_LRU[recs["kind"].astype(np.int64)] != 1)
    if bad.any():
        h = int(listed[np.flatnonzero(bad)[0]])
        return f"handle {h} is on an LRU list but is not an LRU folio"
    swap_backed = np.isin(recs["kind"], (KIND_ANON, KIND_SHMEM))
    lists = lru.list_of[listed]
    if (swap_backed != (lists <= LRU_ACTIVE_ANON)).any():
        return "a folio is on the LRU list of the other type (anon vs file)"
    return ""


def leave_lru_if_not_lru_kind(m, pfn):
    """A folio that became kernel memory (memory_failure() keeps a poisoned page as its own)
    leaves the LRU, as the kernel isolates it first."""
    mem_map = m.pgdat.mem_map
    if not 0 <= pfn < len(mem_map) or mem_map["type"][pfn] != PAGE_HEAD \
            or KIND_IS_LRU[int(mem_map["kind"][pfn])]:
        return
    handle = np.array([int(mem_map["next"][pfn])], dtype=np.int64)
    m.lru.forget(handle, np.array([1 << int(mem_map["order"][pfn])], dtype=np.int64))


# -- folio_mark_accessed --------------------------------------------------------------------

def mark_accessed(m, pfns):
    """folio_mark_accessed() of each folio at `pfns` (a re-read or re-touch): an inactive folio
    already referenced is activated, otherwise PG_referenced is set."""
    lru_sync(m)
    lru = m.lru
    lru.grow(len(m.pgdat.folio_pfn))     # a non-LRU folio's handle may lie past the LRU's
    handles = m.pgdat.mem_map["next"][pfns].astype(np.int64)
    lists = lru.list_of[handles]
    on = lists != NOT_ON_LRU
    handles, lists = handles[on], lists[on]
    inactive = (lists == LRU_INACTIVE_ANON) | (lists == LRU_INACTIVE_FILE)
    promote = inactive & lru.referenced[handles]
    lru.referenced[handles[~promote]] = True
    if promote.any():
        _activate(m, handles[promote])


def _pages_of(m, handles):
    pfns = m.pgdat.folio_pfn[handles]
    return np.int64(1) << m.pgdat.mem_map["order"][pfns].astype(np.int64)


def _activate(m, handles):
    """folio_activate(): to the head of the active list of the folio's type."""
    lru = m.lru
    pages = _pages_of(m, handles)
    lists = lru.list_of[handles].astype(np.int64)
    np.subtract.at(lru.nr_pages, lists, pages)
    lru.referenced[handles] = False
    m.lru.events[_E["pgactivate"]] += int(pages.sum())
    anon = lists <= LRU_ACTIVE_ANON
    lru._put(handles[anon], LRU_ACTIVE_ANON)
    lru._put(handles[~anon], LRU_ACTIVE_FILE)
    np.add.at(lru.nr_pages, np.where(anon, LRU_ACTIVE_ANON, LRU_ACTIVE_FILE), pages)


def activate_captured(m, handles):
    """Put the folios of `handles` that sit on an inactive list on their active list, with no
    event counted: a digital twin's captured lists (simcore.snapshot), not folio_activate()."""
    lru = m.lru
    handles = np.asarray(handles, dtype=np.int64)
    lists = lru.list_of[handles]
    handles = handles[(lists == LRU_INACTIVE_ANON) | (lists == LRU_INACTIVE_FILE)]
    if len(handles):
        _activate(m, handles)
        lru.events[_E["pgactivate"]] -= int(_pages_of(m, handles).sum())


def _rotate(m, handles, lists):
    """Back to the tail of the same list (the folio stays, newest again)."""
    for lst in (LRU_INACTIVE_ANON, LRU_INACTIVE_FILE):
        m.lru._put(handles[lists == lst], lst)


# -- scanning -----------------------------------------------------------------------------

def _take(m, lst, nr_pages):
    """isolate_lru_folios(): the oldest valid entries of list `lst` until nr_pages pages;
    returns their handles (still accounted on the list)."""
    lru = m.lru
    q = lru.queues[lst]
    got = []
    pages = 0
    while pages < nr_pages and len(q):
        h, s, start = q.pop(max(SWAP_CLUSTER_MAX, (nr_pages - pages)))
        ok = np.flatnonzero((lru.list_of[h] == lst) & (lru.stamp[h] == s))
        h = h[ok]
        if not len(h):
            continue
        sizes = _pages_of(m, h)
        cum = np.cumsum(sizes)
        stop = int(np.searchsorted(cum, nr_pages - pages, side="left")) + 1
        if stop < len(h):        # the rest stays at the head, oldest first
            q.head = start + int(ok[stop])
            h, sizes = h[:stop], sizes[:stop]
        got.append(h)
        pages += int(sizes.sum())
    return np.concatenate(got) if got else np.empty(0, dtype=np.int64)


def inactive_is_low(m, inactive_lru):
    """inactive_is_low(): inactive * inactive_ratio < active, the ratio int_sqrt(10 * GiB)."""
    inactive = int(m.lru.nr_pages[inactive_lru])
    active = int(m.lru.nr_pages[inactive_lru + 1])
    gb = (inactive + active) >> 18
    ratio = int(np.sqrt(10 * gb)) if gb else 1
    return inactive * ratio < active


def shrink_active_list(m, active_lru, nr_to_scan):
    """shrink_active_list(): the oldest active folios move to the inactive list with their
    referenced bit cleared (pgrefill counts the scan, pgdeactivate the moves)."""
    lru = m.lru
    handles = _take(m, active_lru, nr_to_scan)
    if not len(handles):
        return
    pages = _pages_of(m, handles)
    n = int(pages.sum())
    lru.nr_pages[active_lru] -= n
    lru.nr_pages[active_lru - 1] += n
    lru.referenced[handles] = False
    lru._put(handles, active_lru - 1)
    lru.events[_E["pgrefill"]] += n
    lru.events[_E["pgdeactivate"]] += n


def shrink_folio_list(m, handles, lst, kswapd, may_writepage=True):
    """shrink_folio_list() of isolated inactive folios: what stays goes back (activated or
    rotated), what goes is freed, written back first or swapped out. Returns pages reclaimed."""
    lru = m.lru
    mem_map = m.pgdat.mem_map
    table = m.pgdat.folio_pfn
    pfns = table[handles]
    recs = mem_map[pfns]
    pages = np.int64(1) << recs["order"].astype(np.int64)
    lru.nr_pages[lst] -= int(pages.sum())
    flags = recs["flags"].astype(np.int64)
    keep = ((flags & KEEP_FLAGS) != 0) | (recs["prev"] < -1)
    if not may_writepage and lst == LRU_INACTIVE_FILE:
        keep |= (flags & PG_DIRTY) != 0
    ref = lru.referenced[handles] & ~keep
    anon = lst == LRU_INACTIVE_ANON
    # folio_check_references(): a mapped anon folio referenced again is activated; referenced
    # page cache gets one more trip round the inactive list
    if ref.any():
        if anon:
            lru.list_of[handles[ref]] = lst
            lru.nr_pages[lst] += int(pages[ref].sum())
            _activate(m, handles[ref])
        else:
            lru.referenced[handles[ref]] = False
            lru.nr_pages[lst] += int(pages[ref].sum())
            _rotate(m, handles[ref], np.full(int(ref.sum()), lst))
    stay = keep
    lru.nr_pages[lst] += int(pages[stay].sum())
    _rotate(m, handles[stay], np.full(int(stay.sum()), lst))
    go = ~keep & ~ref
    victims = handles[go]
    # nr_reclaimed: the pages of the folios freed (pages held by folios, before and after:
    # swap-out and freeing allocate none). Not the free-page count, which leaves out what the
    # frees put on per-CPU lists and adds what a list drain gave back.
    before = m.allocated_pages()
    if anon:
        _swap_out(m, victims)
    else:
        dirty = (flags[go] & PG_DIRTY) != 0
        if dirty.any():     # pageout(): written back, then clean and dropped
            mem_map["flags"][pfns[go][dirty]] &= ~np.uint8(PG_DIRTY)
            lru.events[_E["nr_vmscan_write"]] += int(pages[go][dirty].sum())
            m.model_ns["reclaim"] += float(m.costs[COST_INDEX["writeback_wait_ns"]]
                                           * int(dirty.sum()))
        lru.list_of[victims] = NOT_ON_LRU
        m._free_reclaimed(pfns[go])
        gone = victims[m.pgdat.folio_pfn[victims] < 0]
        lru.gen[gone] += 1
    reclaimed = before - m.allocated_pages()
    scanned = int(pages.sum())
    who = "kswapd" if kswapd else "direct"
    typ = "anon" if anon else "file"
    lru.events[_E[f"pgscan_{who}"]] += scanned
    lru.events[_E[f"pgscan_{typ}"]] += scanned
    lru.events[_E[f"pgsteal_{who}"]] += reclaimed
    lru.events[_E[f"pgsteal_{typ}"]] += reclaimed
    return reclaimed


def _swap_out(m, handles):
    """add_to_swap() + pageout() of anonymous folios through simcore.swap; one that finds no
    slot stays (rotated)."""
    from . import swap
    lru = m.lru
    for h in handles:
        order = int(m.pgdat.mem_map["order"][m.pgdat.folio_pfn[h]])
        m._reserve_handles(1 << order)          # may grow (replace) the handle table
        lru.grow(len(m.pgdat.folio_pfn))
        table = m.pgdat.folio_pfn
        lru.list_of[h] = NOT_ON_LRU
        record = swap.swap_out_folio(m, int(table[h]), m.profile.swap_alloc)
        if record is not None:
            lru.swapped.append(record)
        if table[h] < 0:        # freed: the owner's handle is stale from now on
            lru.gen[h] += 1
        else:                   # stayed resident (whole, or its head piece)
            lru.nr_pages[LRU_INACTIVE_ANON] += 1 << int(m.pgdat.mem_map["order"][table[h]])
            lru._put(np.array([h]), LRU_INACTIVE_ANON)


def shrink_slab(m, priority, exclude=None):
    """shrink_slab() of the node at `priority`, with the one shrinker modelled: the THP
    deferred split queue's ("thp-deferred_split", deferred_split_count() and
    deferred_split_scan() in simcore.deferred_split), through do_shrink_slab(): of the
    `freeable` queued folios it scans (freeable >> priority) * 4 / seeks plus the deferred
    work >> priority, at most 2 * freeable, in batches of SHRINK_BATCH (or all of them when
    that covers the queue); the work not done is deferred to the next call (nr_deferred,
    capped at 2 * freeable). So at DEF_PRIORITY a queue under 2048 folios is scanned only
    through work deferred from deeper passes. Returns the folios split.

    The split pieces join the LRU at once (lru_sync(), the kernel puts them next to their
    head), so the rest of this reclaim pass sees them. Simplified: no memcg (one queue per
    node), no other shrinker, no slabs_scanned count (the kernel's covers every shrinker)."""
    freeable = deferred_split.deferred_split_count(m.pgdat)
    if freeable <= 0:
        return 0
    lru = m.lru
    nr, lru.split_nr_deferred = lru.split_nr_deferred, 0
    delta = (freeable >> priority) * 4 // DEFAULT_SEEKS
    total_scan = min((nr >> priority) + delta, 2 * freeable)
    scanned = freed = 0
    while total_scan >= SHRINK_BATCH or total_scan >= freeable:
        nr_to_scan = min(SHRINK_BATCH, total_scan)
        ret, lru.split_cursor = deferred_split.deferred_split_scan(m, nr_to_scan,
                                                                  lru.split_cursor)
        if ret == deferred_split.SHRINK_STOP:
            break
        freed += ret
        total_scan -= nr_to_scan
        scanned += nr_to_scan
    lru.split_nr_deferred = min(max(nr + delta - scanned, 0), 2 * freeable)
    if freed:
        lru_sync(m, exclude)
    return freed


def _can_swap(m):
    dev = m.swap_device
    return dev is not None and dev.inuse_pages() < dev.nr_slots


def shrink_node(m, nr_to_reclaim, kswapd, exclude=None, may_swap=True, may_writepage=True):
    """shrink_node() at falling priority until nr_to_reclaim pages are freed or every list was
    scanned whole (boosted reclaim neither swaps nor writes back). Returns pages
    reclaimed."""
    lru_sync(m, exclude)
    lru = m.lru
    reclaimed = 0
    for priority in range(DEF_PRIORITY, -1, -1):
        scan_file = int(lru.nr_pages[LRU_INACTIVE_FILE] + lru.nr_pages[LRU_ACTIVE_FILE])
        # cache_trim_mode: page cache alone while its inactive list is big at this priority
        trim = (int(lru.nr_pages[LRU_INACTIVE_FILE]) >> priority) > 0
        types = [LRU_INACTIVE_FILE]
        if may_swap and _can_swap(m) and (not trim or scan_file == 0):
            types.append(LRU_INACTIVE_ANON)
        for inactive in types:
            if inactive_is_low(m, inactive):
                shrink_active_list(m, inactive + 1,
                                   max(SWAP_CLUSTER_MAX,
                                       int(lru.nr_pages[inactive + 1]) >> priority))
            target = max(SWAP_CLUSTER_MAX, int(lru.nr_pages[inactive]) >> priority)
            while target > 0 and reclaimed < nr_to_reclaim:
                batch = _take(m, inactive, min(target, max(SWAP_CLUSTER_MAX,
                                                           nr_to_reclaim - reclaimed)))
                if not len(batch):
                    break
                target -= int(_pages_of(m, batch).sum())
                reclaimed += shrink_folio_list(m, batch, inactive, kswapd, may_writepage)
        # shrink_node_memcgs(): the shrinkers after the lists, at the same priority (their
        # splits free nothing here, see simcore.deferred_split)
        shrink_slab(m, priority, exclude)
        if reclaimed >= nr_to_reclaim:
            break
        # nothing left on the lists scanned: the lower priorities would only shrink the
        # deferred split queue harder, so go on while it holds folios
        if not any(lru.nr_pages[t] + lru.nr_pages[t + 1] for t in types) \
                and not deferred_split.deferred_split_count(m.pgdat):
            break
    return reclaimed


# -- direct reclaim -----------------------------------------------------------------------

def _compaction_suitable(m, z, order, highest_zoneidx):
    """compaction_suitable() (simcore.compaction's compiled one, for a Python caller): free
    memory above the watermark plus compact_gap(), and for a costly order a fragmentation index
    above extfrag_threshold."""
    from . import compaction
    zone = m.pgdat.zones[z]
    mark = int(zone[Z_WMARK_LOW] if order > PAGE_ALLOC_COSTLY_ORDER else zone[Z_WMARK_MIN])
    if int(zone[Z_FREE]) <= mark + compact_gap(order) + int(zone[Z_LOWMEM_RESERVE
                                                                 + highest_zoneidx]):
        return False
    if order > PAGE_ALLOC_COSTLY_ORDER:
        nr_free = m.pgdat.free_area[z, :, :, FA_COUNT].sum(axis=1)
        index = vmstat.fragmentation_index(nr_free, order)
        if 0 <= index <= int(m.knobs[compaction.K_EXTFRAG_THRESHOLD]):
            return False
    return True


def compaction_ready(m, z, order, highest_zoneidx):
    """compaction_ready(): direct reclaim for a costly order leaves zone `z` alone when the
    allocation could already succeed there, or compaction is suitable and free memory stands
    above the high watermark plus compact_gap() (compaction then has room to work)."""
    if zone_watermark_ok(m, z, order, highest_zoneidx, Z_WMARK_MIN):
        return True
    if not _compaction_suitable(m, z, order, highest_zoneidx):
        return False
    zone = m.pgdat.zones[z]
    free = int(zone[Z_FREE]) - highatomic.zone_unusable_free(m.pgdat, z)
    return free > int(zone[Z_WMARK_HIGH]) + compact_gap(order) \
        + int(zone[Z_LOWMEM_RESERVE + highest_zoneidx])


def try_to_free_pages(m, order, highest_zoneidx, nr_to_reclaim, exclude=None):
    """try_to_free_pages(): direct reclaim by the allocating task (allocstall_<zone>).
    Returns its progress as do_try_to_free_pages() does: the pages reclaimed, or 1 when a
    costly order found every eligible zone compaction_ready() (shrink_zones() skips those,
    and the slow path goes back to compaction). Simplification: one node; a zone that is not
    ready has the whole node shrunk, at every priority."""
    m.lru.events[ALLOCSTALL_FIRST + highest_zoneidx] += 1
    if order > PAGE_ALLOC_COSTLY_ORDER:
        zones = m.pgdat.zones
        eligible = [z for z in range(highest_zoneidx + 1) if zones[z, Z_END] > zones[z, Z_START]]
        if eligible and all(compaction_ready(m, z, order, highest_zoneidx) for z in eligible):
            return 1
    return shrink_node(m, max(SWAP_CLUSTER_MAX, nr_to_reclaim), False, exclude)


def reclaim_target(m, order, want_pages, highest_zoneidx):
    """How much one reclaim frees (direct reclaim, and each of kswapd's balance_pgdat() passes):
    enough for the request above the high watermark, and for a costly order until compaction
    is suitable (should_continue_reclaim()'s compact_gap()).

    The free pages are counted as __zone_watermark_ok() counts them, without the highatomic
    reserve's unusable part (simcore.highatomic.unusable_free(): 6.1 .. 6.11 the whole
    nr_reserved_highatomic, from 6.12 nr_free_highatomic), as the retry's watermark check and
    kswapd's pgdat_balanced() do. The kernel has no such target (direct reclaim asks for
    SWAP_CLUSTER_MAX per round, kswapd reclaims until pgdat_balanced() holds), so a target
    short of the reserve would make kswapd stop before its own balance check passes and a
    direct reclaim's retry fail whenever the reserve exceeds high - min."""
    deficit = 0
    for z in range(highest_zoneidx + 1):
        zone = m.pgdat.zones[z]
        if zone[Z_END] > zone[Z_START]:
            usable = int(zone[Z_FREE]) - highatomic.zone_unusable_free(m.pgdat, z)
            deficit = max(deficit, int(zone[Z_WMARK_HIGH]) - usable)
    gap = compact_gap(order) if order > PAGE_ALLOC_COSTLY_ORDER else 0
    return max(SWAP_CLUSTER_MAX, deficit + want_pages + gap)


def slowpath_reclaim(m, order, gfp, highest_zoneidx, attempt, want_pages, exclude=None,
                     migratetype=MIGRATE_MOVABLE):
    """The reclaim part of __alloc_pages_slowpath(): direct reclaim, then the caller retries
    the free lists and compaction. `attempt(no_progress)` allocates and returns how many folios
    it got (0 for none). Returns the folios got in total, or raises OutOfMemory where the
    kernel's OOM killer would run (a GFP_KERNEL order up to PAGE_ALLOC_COSTLY_ORDER).

    Highatomic reserves: a retry that still fails after reclaim gives one reserved block
    (all but the zone's last) to `migratetype` before draining the per-CPU lists
    (__alloc_pages_direct_reclaim()); when should_reclaim_retry() would give up, a forced
    unreserve that moves a block buys another round ("exhaust highatomic_reserve")."""
    costly = order > PAGE_ALLOC_COSTLY_ORDER
    no_progress = compact_retries = failed_rounds = 0
    total = 0
    drained = False
    while True:
        reclaimed = try_to_free_pages(m, order, highest_zoneidx,
                                      reclaim_target(m, order, want_pages(), highest_zoneidx),
                                      exclude() if exclude else None)
        got = attempt()
        if not got and not drained:
            # __alloc_pages_direct_reclaim(): a failed retry drains every CPU's lists once
            # (drain_all_pages(NULL)) and tries again: reclaimed pages may sit on them; a
            # highatomic block beyond the zone's first is given to the requester first
            highatomic.entry_unreserve_highatomic_pageblock(m.pgdat, highest_zoneidx,
                                                            migratetype, False)
            m.drain_all_pages()
            drained = True
            got = attempt()
        total += got
        if got and want_pages() <= 0:
            return total
        if got:
            no_progress = 0
            continue
        if gfp.noretry or (costly and not gfp.retry_mayfail):
            return total
        # should_reclaim_retry(): give up after MAX_RECLAIM_RETRIES rounds without progress
        # (and, as its watermark check on reclaimable memory would, after as many rounds
        # whose progress the request could not use)
        no_progress = 0 if reclaimed else no_progress + 1
        failed_rounds += 1
        if no_progress > MAX_RECLAIM_RETRIES or failed_rounds > MAX_RECLAIM_RETRIES:
            # should_reclaim_retry(): before the OOM killer, exhaust the highatomic reserve
            if highatomic.entry_unreserve_highatomic_pageblock(m.pgdat, highest_zoneidx,
                                                               migratetype, True):
                continue
            break
        if costly:
            # should_compact_retry(): compaction failed with enough free memory
            compact_retries += 1
            if compact_retries > MAX_COMPACT_RETRIES or not reclaimed:
                return total
    if gfp.oom and not costly:
        m.lru.events[_E["oom_kill"]] += 1
        raise OutOfMemory(f"out of memory: order-{order} allocation in zone "
                          f"{ZONE_NAMES[highest_zoneidx]} failed after reclaim and compaction")
    return total


# -- kswapd -------------------------------------------------------------------------------

def zone_watermark_ok(m, z, order, highest_zoneidx, mark):
    """__zone_watermark_ok() with the CMA pages usable (a movable request), for the mark
    column `mark` (Z_WMARK_LOW, Z_WMARK_HIGH)."""
    zone = m.pgdat.zones[z]
    free = int(zone[Z_FREE]) - ((1 << order) - 1) - highatomic.zone_unusable_free(m.pgdat, z)
    if free <= int(zone[mark]) + int(zone[Z_LOWMEM_RESERVE + highest_zoneidx]):
        return False
    if order == 0:
        return True
    counts = m.pgdat.free_area[z, order:NR_PAGE_ORDERS, :, FA_COUNT]
    return bool(counts[:, :MIGRATE_PCPTYPES].any() or counts[:, MIGRATE_CMA].any())


def pgdat_balanced(m, order, highest_zoneidx):
    """pgdat_balanced(): some eligible zone meets its high watermark at `order`."""
    for z in range(highest_zoneidx + 1):
        zone = m.pgdat.zones[z]
        if zone[Z_END] > zone[Z_START] and zone_watermark_ok(m, z, order, highest_zoneidx,
                                                             Z_WMARK_HIGH):
            return True
    return False


def wakeup_kswapd(m, order, highest_zoneidx, boosted=False):
    """wakeup_kswapd(): raise kswapd_order; a node already balanced at the high watermark
    and not boosted does not wake it (the kernel then wakes kcompactd alone for a request that
    cannot reclaim directly; we let kswapd's next run decide)."""
    lru = m.lru
    if lru.kswapd_order < 0 and not boosted and not m.boost.boost.any() \
            and pgdat_balanced(m, order, highest_zoneidx):
        return
    if lru.kswapd_order < 0 and lru.kswapd_slept_ns >= 0 \
            and m.clock_ns - lru.kswapd_slept_ns < KSWAPD_NAP_NS:
        # woken before its short nap ended: the low watermark was hit quickly
        lru.events[_E["kswapd_low_wmark_hit_quickly"]] += 1
    lru.kswapd_order = max(lru.kswapd_order, order)


def low_watermark_breached(m):
    for z in range(len(ZONE_NAMES)):
        zone = m.pgdat.zones[z]
        if zone[Z_END] > zone[Z_START] and zone[Z_FREE] < zone[Z_WMARK_LOW]:
            return True
    return False


def balance_pgdat(m, order, highest_zoneidx):
    """balance_pgdat(): reclaim until pgdat_balanced() at the high watermark; for a high order
    kswapd reclaims compact_gap(order) and then balances for order 0 (kswapd_shrink_node()),
    leaving the high order to kcompactd. Returns pages reclaimed."""
    lru = m.lru
    lru.events[_E["pageoutrun"]] += 1
    reclaimed = 0
    sc_order = order
    boosted = bool(m.boost.boost.any())
    for _ in range(DEF_PRIORITY + 1):
        if pgdat_balanced(m, sc_order, highest_zoneidx):
            break
        target = reclaim_target(m, 0, 0, highest_zoneidx) - SWAP_CLUSTER_MAX
        if sc_order:
            target = max(target, compact_gap(sc_order))
        got = shrink_node(m, max(SWAP_CLUSTER_MAX, target), True,
                          may_swap=not boosted, may_writepage=not boosted)
        reclaimed += got
        if sc_order and reclaimed >= compact_gap(sc_order):
            sc_order = 0
        if not got:
            break
    return reclaimed


def run_kswapd(m):
    """One kswapd wake-up: balance_pgdat(), then kcompactd for a high order (wakeup_kcompactd()
    from kswapd_try_to_sleep()), then sleep. Returns pages reclaimed."""
    lru = m.lru
    order = lru.kswapd_order
    if order < 0:
        return 0
    lru.kswapd_order = -1
    highest = len(ZONE_NAMES) - 1
    reclaimed = balance_pgdat(m, order, highest)
    from . import boost
    if boost.unboost(m):        # boosted reclaim done: kcompactd for pageblock_order
        order = max(order, PAGEBLOCK_ORDER)
    if not pgdat_balanced(m, 0, highest):
        # could not balance: the short nap ends with the high watermark still missed
        lru.events[_E["kswapd_high_wmark_hit_quickly"]] += 1
    if order > 0:
        m._wakeup_kcompactd(order)
    lru.kswapd_slept_ns = m.clock_ns
    return reclaimed
