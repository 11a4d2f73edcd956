"""LiveBackend: the Backend interface on the running kernel.

What each step does on the live kernel (and where it cannot be faithful):
- fault_anon(count, orders): an anonymous mapping aligned to 2 MiB, with only the mTHP sizes of
  `orders` enabled (hugepages-<N>kB/enabled = madvise, every other size never, through the
  journal) and MADV_HUGEPAGE (MADV_NOHUGEPAGE for order 0), touched by one strided numpy write
  (one byte per 4 KiB page). The kernel picks the largest enabled size that fits and falls back
  by itself (alloc_anon_folio()); what each fault got is read back from /proc/self/pagemap and
  /proc/kpageflags, so handles are the folios the kernel really made.
- alloc(kind="anon"): faults with that one size enabled; order 9 with compact=True is a hugetlb
  pool request instead (nr_hugepages asked vs got: the kernel's own order-9 allocation with
  compaction, as mmtests measures high-order success), compact=False a THP fault.
- alloc(kind="file"): page cache of sparse files in a private temporary directory on a disk
  filesystem, read with one pread per call (order 0 with POSIX_FADV_RANDOM, so readahead makes
  base pages; larger orders with normal readahead, which picks the folio sizes itself: observed,
  not imposed). free() evicts with POSIX_FADV_DONTNEED; "dirty" rewrites the folios; "writeback"
  starts it with sync_file_range(WRITE) and clearing it waits for it.
- alloc(kind="slab" or an unmovable/reclaimable migratetype): user space cannot allocate slab
  where it likes, so these are pipe buffer pages (1 MiB pipes, one 4 KiB page per handle):
  order-0 unmovable kernel pages that neither compaction nor offlining can move, which is what
  the simulator's slab stands for. Freed by reading them out of the pipe.
- split(): relabels handles; the kernel splits a large folio itself when part of it is unmapped
  (deferred split), which is what the workloads model.
- compact(): echo 1 > /proc/sys/vm/compact_memory. tick(ms): sleep (kcompactd runs meanwhile).
- offline_block()/online_block(): /sys/devices/system/memory/memoryN/state, only with
  allow_offline and only blocks listed removable; each offline is undone through the journal
  (a block found in ZONE_MOVABLE is onlined as online_movable, into the zone it came from).
- cma_alloc(): Unsupported (no user-space cma_alloc without debugfs or a CMA dma-heap).
- set_flags("pinned"): vmsplice() of one byte of each anonymous folio into a pipe, which
  holds a folio reference as get_user_pages() does: migration fails on it until released.
- pageblock_map(): None; pageblock migratetypes are not exported to user space.

The feature-matrix steps (each writing only through the journal, each figure a counter delta
or an order/PFN read back with pagemap + kpageflags):
- folio_pfns(): where each folio starts now (to see which ones compaction moved).
- swap_out()/swap_in(): MADV_PAGEOUT of the folios to the run's temporary swap area (a file, or
  a zram device of its own; livekernel/swap.py), then read faults; tokens are handles.
- set_zswap(): /sys/module/zswap/parameters/enabled; ksm_merge(): identical content per pair,
  MADV_MERGEABLE, ksmd run through livekernel/ksm.py; collapse(): MADV_COLLAPSE;
  memory_failure(): MADV_SOFT_OFFLINE, only with allow_poison and CONFIG_MEMORY_FAILURE.
- numa_migrate(): in a guest of two nodes, the folios faulted again on the other node, then
  kernel.numa_balancing=1 and hinting faults from the task's own CPU bring them back
  (livekernel/numa.py); Unsupported on one node.
- The simulator's sysctl arguments (extfrag_threshold=, compaction_proactiveness=) are written
  through the journal for the backend's lifetime and written back at close().

Memory: total_pages is the arena this backend may use (the cap), never the host. Every
allocation is charged against it and trimmed when the arena is full, as memory running out.

Kernel paths exercised: alloc_anon_folio() and thp_vma_allowable_orders() (mm/memory.c,
mm/huge_memory.c) for faults; page_cache_ra_order() (mm/readahead.c) for the page cache;
anon_pipe_write() (fs/pipe.c, GFP_HIGHUSER without __GFP_MOVABLE) for unmovable pages;
set_max_huge_pages() (mm/hugetlb.c) for the pool; sysctl_compaction_handler() ->
compact_nodes() (mm/compaction.c); offline_pages() (mm/memory_hotplug.c).
Machine arguments a workload gives the simulator (cma=, movable=, memory_block=) cannot be
applied to a running kernel; they are listed in `notes` and in the row's backend_notes.

This module holds the allocators (anonymous faults, page cache, pipe pages, the hugetlb pool),
free/flags/split and teardown; the rest of LiveBackend comes from one module per job:
arena.py (mappings and the handle table), knobs.py (sysfs/procfs paths, mTHP sizes), libc.py
(the C library, loaded once), counters.py (vmstat, buddyinfo, mTHP stats), hotplug.py (memory
blocks, CMA) and features.py (the feature-matrix steps: swap, zswap, KSM, memory-failure,
collapse, NUMA, folio PFNs).
"""
import errno
import fcntl
import mmap
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np

from workloads.backend import Backend, Unsupported

from . import ksm, pageflags
from .arena import ANON, FILE, HUGETLB, PAGE, PIPE, PMD_PAGES, HandleTable, Mapping  # noqa: F401
from .counters import Counters
from .features import FeatureSteps
from .hotplug import OFFLINE_TIMEOUT_S, MemoryBlocks  # noqa: F401
from .knobs import (  # noqa: F401 - the public names of this module before it was split
    COMPACT_MEMORY,
    HUGETLB_POOL,
    MADV_COLLAPSE,
    MADV_HUGEPAGE,
    MADV_SOFT_OFFLINE,
    MEMORY,
    MEMORY_FAILURE,
    NODES,
    SYSCTLS,
    THP,
    ZSWAP,
    mthp_sizes,
)
from .libc import LIBC, Iovec, get_errno

PIPE_PAGES = 256                # F_SETPIPE_SZ of 1 MiB
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4


class LiveBackend(Counters, MemoryBlocks, FeatureSteps, HandleTable, Backend):
    """The running kernel behind the Backend interface (see the module docstring)."""

    name = "live"
    host_memory = True          # the arena is part of a running host, not a whole machine
    may_fill_memory = False     # True in a disposable guest (LiveSession sets disposable)

    def __init__(self, mem=None, seed=0, strategy="kernel", *, journal, arena_bytes,
                 allow_offline=False, allow_poison=False, allow_zswap=False, workdir="/var/tmp",
                 swap_kind="file", disposable=False, **machine_kw):
        self.journal = journal
        self.may_fill_memory = bool(disposable)
        self.dry_run = journal.dry_run
        self.rng = np.random.default_rng(seed)
        self.arena_pages = int(arena_bytes) // PAGE
        self.used_pages = 0
        self.arena_declined_pages = 0   # pages the workload asked for past the arena
        self.allow_offline = allow_offline
        self.allow_poison = allow_poison
        self.allow_zswap = allow_zswap
        self.session_dir = str(workdir)
        self.swap_kind = swap_kind
        self.time_ns = {}           # measured wall time per subsystem ("swap_out", "ksm", ...)
        self._restore_on_close = {}     # path -> value found, written back by close()
        self._ksm = None
        self.numa_observed = None   # what numa_migrate() saw (features.py)
        for name in [k for k in machine_kw if k in SYSCTLS]:
            self._set(f"/proc/sys/vm/{name}", machine_kw.pop(name))
        self.ignored_machine_args = dict(machine_kw)     # cma=, movable=: the host decides
        self.notes = "; ".join(f"{k}={v} not applied (the running kernel's own layout)"
                               for k, v in machine_kw.items())
        self.migrate_time_ns = 0
        self._sizes = mthp_sizes()
        self._mthp_now = {}
        # the handle table
        self._kind = np.empty(0, dtype=np.int8)
        self._obj = np.empty(0, dtype=np.int64)
        self._off = np.empty(0, dtype=np.int64)
        self._order = np.empty(0, dtype=np.int64)
        self._alive = np.empty(0, dtype=bool)
        self._nh = 0                # handles issued
        self._regions = {}          # id -> dict(mm, addr, start, pages, alive)
        self._files = {}            # stream key -> dict(fd, path, next)
        self._file_by_id = {}
        self._pipes = {}            # id -> [rfd, wfd, pages]
        self._open_pipe = None
        self._next_obj = 0
        self._hugetlb_grown = 0
        self._closed = False
        self._pins = {}             # id -> (rfd, wfd) of pipes holding folio references
        self._movable_blocks = set()    # memory blocks offlined from ZONE_MOVABLE
        self.workdir = None
        if not self.dry_run:
            self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="foliobench-live-", dir=workdir))
        self._undo = journal.add_undo("live backend memory (mappings, files, pipes)", self.close,
                                      remove=[self.workdir] if self.workdir else ())

    # -- settings --------------------------------------------------------------------------

    def _enable_orders(self, orders):
        """mTHP enabled = madvise for `orders`, never for every other size."""
        for order, d in self._sizes.items():
            want = "madvise" if order in orders else "never"
            if order not in self._mthp_now:
                self._mthp_now[order] = self.journal.read(d / "enabled")
            if self._mthp_now[order] != want:
                self.journal.write(d / "enabled", want)
                self._mthp_now[order] = want

    # -- anonymous memory ------------------------------------------------------------------

    def fault_anon(self, count, orders, gfp=None):
        orders = sorted({int(o) for o in orders}, reverse=True)
        top = orders[0]
        count = self._budget(int(count), top)
        if count <= 0:
            return {}
        pages = count << top
        self._enable_orders({o for o in orders if o in self._sizes})
        rid = self._new_obj()
        if self.dry_run:
            handles = self._new_handles(ANON, rid, np.arange(count, dtype=np.int64) << top, top)
            self._regions[rid] = {"pages": pages, "alive": pages, "mm": None}
            self.used_pages += pages
            return {top: handles}
        mm = Mapping(pages * PAGE + PMD_PAGES * PAGE)
        start = (-(mm.addr // PAGE)) % PMD_PAGES         # first 2 MiB-aligned page
        region = {"mm": mm, "addr": mm.addr + start * PAGE, "start": start,
                  "pages": pages, "alive": pages}
        self._regions[rid] = region
        self.used_pages += pages
        advice = mmap.MADV_HUGEPAGE if top > 0 else mmap.MADV_NOHUGEPAGE
        mm.madvise(advice, start * PAGE, pages * PAGE)
        t0 = time.perf_counter_ns()
        mm.bytes(start * PAGE, pages * PAGE)[::PAGE] = 1
        self.migrate_time_ns += time.perf_counter_ns() - t0
        pfns, present = pageflags.pagemap(region["addr"], pages)
        first, _, got = pageflags.folio_runs(pfns, present)
        keep = got >= 0
        handles = self._new_handles(ANON, rid, first[keep], got[keep])
        return {int(o): handles[got[keep] == o] for o in np.unique(got[keep])}

    def _hugetlb(self, count):
        # in a disposable guest the pool may take what the kernel can give: a pool request
        # that finds no memory fails (__GFP_RETRY_MAYFAIL), it never calls the OOM killer
        if not self.may_fill_memory:
            count = self._budget(count, 9)
        if count <= 0:
            return np.empty(0, dtype=np.int64)
        before = int(self.journal.read(HUGETLB_POOL))
        t0 = time.perf_counter_ns()
        self.journal.write(HUGETLB_POOL, before + count)
        self.migrate_time_ns += time.perf_counter_ns() - t0
        got = count if self.dry_run else int(self.journal.read(HUGETLB_POOL)) - before
        got = max(got, 0)
        self._hugetlb_grown += got
        self.used_pages += got << 9
        return self._new_handles(HUGETLB, 0, np.zeros(got, dtype=np.int64), 9)

    def _free_pmd_blocks(self, count, batch=8):
        """Order-9 anonymous folios without compaction (alloc(order=9, compact=False) in a
        disposable guest): THP faults with transparent_hugepage/defrag = never (no direct
        reclaim or compaction, GFP_TRANSHUGE_LIGHT), `batch` at a time, until one falls back
        to base pages: what the buddy allocator had free at order 9, taken as the
        simulator's alloc(compact=False) takes it. A THP fault that fails still faults base
        pages; those are freed at once."""
        defrag = f"{THP}/defrag"
        was = self.journal.read(defrag)
        self.journal.write(defrag, "never")
        out = []
        try:
            while count > 0:
                got = self.fault_anon(min(batch, count), [9])
                pmd = got.pop(9, np.empty(0, dtype=np.int64))
                out.append(pmd)
                count -= len(pmd)
                fallback = [h for h in got.values() if len(h)]
                if fallback:
                    self.free(np.concatenate(fallback))
                if fallback or not len(pmd):
                    break
        finally:
            self.journal.write(defrag, was)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    # -- page cache ------------------------------------------------------------------------

    def _stream(self, order):
        key = min(order, 9)
        if key not in self._files:
            fid = self._new_obj()
            path = self.workdir / f"cache-{key}" if self.workdir else None
            fd = -1
            if not self.dry_run:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM if order == 0
                                 else os.POSIX_FADV_NORMAL)
            self._files[key] = {"fd": fd, "path": path, "next": 0, "id": fid, "size": 0}
            self._file_by_id[fid] = self._files[key]
        return self._files[key]

    def _file(self, count, order):
        count = self._budget(count, order)
        if count <= 0:
            return np.empty(0, dtype=np.int64)
        f = self._stream(order)
        pages = count << order
        off = f["next"]
        # each call starts on a fresh 2 MiB boundary so calls never share a folio
        f["next"] = off + -(-pages // PMD_PAGES) * PMD_PAGES
        self.used_pages += pages
        if self.dry_run:
            return self._new_handles(FILE, f["id"], off + (np.arange(count) << order), order)
        if f["next"] * PAGE > f["size"]:
            # sparse growth: holes read as zeroes into the page cache, no disk blocks written
            f["size"] = max(2 * f["size"], f["next"] * PAGE)
            os.ftruncate(f["fd"], f["size"])
        os.pread(f["fd"], pages * PAGE, off * PAGE)
        mm = Mapping(pages * PAGE, fd=f["fd"], offset=off * PAGE, prot=mmap.PROT_READ)
        try:
            int(mm.bytes(0, pages * PAGE)[::PAGE].sum())   # map every page to observe it
            pfns, present = pageflags.pagemap(mm.addr, pages)
        finally:
            mm.close()
        first, _, got = pageflags.folio_runs(pfns, present)
        keep = got >= 0
        return self._new_handles(FILE, f["id"], off + first[keep], got[keep])

    # -- unmovable kernel pages (pipe buffers) ---------------------------------------------

    def _pipe_pages(self, count):
        count = self._budget(count, 0)
        out = []
        left = count
        while left > 0:
            if self._open_pipe is None or self._pipes[self._open_pipe][2] >= PIPE_PAGES:
                pid = self._new_obj()
                if self.dry_run:
                    self._pipes[pid] = [-1, -1, 0]
                else:
                    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_PAGES * PAGE)
                    self._pipes[pid] = [r, w, 0]
                self._open_pipe = pid
            pid = self._open_pipe
            entry = self._pipes[pid]
            n = min(left, PIPE_PAGES - entry[2])
            if not self.dry_run:
                written = os.write(entry[1], b"\1" * (n * PAGE)) // PAGE
                if written < n:
                    entry[2] = PIPE_PAGES           # full: start a new pipe next time
                    n = written
            out.append(self._new_handles(PIPE, pid, np.full(n, entry[2], dtype=np.int64)
                                         + np.arange(n), 0))
            entry[2] += n
            self.used_pages += n
            left -= n
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    # -- Backend: allocation ---------------------------------------------------------------

    def alloc(self, count, order, kind="anon", migratetype="movable", flags=0, compact=True,
              gfp=None):
        count, order = int(count), int(order)
        if count <= 0:
            return np.empty(0, dtype=np.int64)
        if kind in ("slab", "pagetable", "kernel") or migratetype in ("unmovable",
                                                                        "reclaimable"):
            handles = self._pipe_pages(count << order)
        elif kind in ("file", "shmem"):
            handles = self._file(count, order)
        elif kind == "hugetlb" or (order == 9 and compact):
            handles = self._hugetlb(count)
        elif order == 9 and self.may_fill_memory:
            handles = self._free_pmd_blocks(count)
        else:
            got = self.fault_anon(count, [order])
            handles = np.concatenate(list(got.values())) if got else np.empty(0, np.int64)
        if flags and len(handles):
            self.set_flags(handles, flags)
        return handles

    def free(self, handles):
        handles = self._check(handles)
        if not len(handles):
            return
        kind = self._kind[handles]
        self._alive[handles] = False
        pages = np.int64(1) << np.maximum(self._order[handles], 0)
        self.used_pages -= int(pages.sum())
        for k in (ANON, FILE):
            sel = kind == k
            if not sel.any():
                continue
            ranges, _ = self._ranges(self._obj[handles[sel]], self._off[handles[sel]], pages[sel])
            for obj, off, n in ranges:
                if k == ANON:
                    self._free_anon(obj, off, n)
                elif not self.dry_run:
                    fd = self._file_by_id[obj]["fd"]
                    os.posix_fadvise(fd, off * PAGE, n * PAGE, os.POSIX_FADV_DONTNEED)
        sel = kind == PIPE
        if sel.any():
            pids, counts = np.unique(self._obj[handles[sel]], return_counts=True)
            for pid, n in zip(pids.tolist(), counts.tolist()):
                self._free_pipe(pid, n)
        n = int((kind == HUGETLB).sum())
        if n:
            now = int(self.journal.read(HUGETLB_POOL))
            self.journal.write(HUGETLB_POOL, max(now - n, 0))
            self._hugetlb_grown -= n

    def _free_anon(self, rid, off, n):
        region = self._regions[rid]
        region["alive"] -= n
        if region["mm"] is None:
            return
        if region["alive"] <= 0:
            self._unmap(rid)
        else:
            region["mm"].madvise(mmap.MADV_DONTNEED, (region["start"] + off) * PAGE, n * PAGE)

    def _unmap(self, rid):
        region = self._regions.pop(rid)
        if region.get("mm") is not None:
            region["mm"].close()

    def _free_pipe(self, pid, n):
        entry = self._pipes[pid]
        if not self.dry_run:
            os.read(entry[0], n * PAGE)
        entry[2] -= n
        if entry[2] <= 0:
            self._close_pipe(pid)

    def _close_pipe(self, pid):
        r, w, _ = self._pipes.pop(pid)
        if self._open_pipe == pid:
            self._open_pipe = None
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)

    def set_flags(self, handles, flags, on=True):
        handles = self._check(handles)
        names = (flags,) if isinstance(flags, str) else tuple(flags)
        if not len(handles):
            return
        for name in names:
            if name == "pinned":
                self._pin(handles, on)
                continue
            if name not in ("dirty", "writeback"):
                raise Unsupported(f"page flag {name!r} cannot be set from user space")
            sel = self._kind[handles] == FILE
            if not sel.any() or self.dry_run:
                continue                       # anon folios we wrote are dirty already
            h = handles[sel]
            ranges, _ = self._ranges(self._obj[h], self._off[h],
                                     np.int64(1) << np.maximum(self._order[h], 0))
            for obj, off, n in ranges:
                fd = self._file_by_id[obj]["fd"]
                if name == "dirty" and on:
                    os.pwrite(fd, b"\0" * (n * PAGE), off * PAGE)
                elif name == "writeback":
                    self._writeback(fd, off, n, wait=not on)

    def _pin(self, handles, on):
        """Pin folios as a driver's get_user_pages() does: vmsplice() one byte of each into a
        pipe, which holds a reference to the folio until the pipe is drained. Migration sees
        the refcount beyond the mapcount and fails (-EAGAIN), as it does for a pinned folio.
        Anonymous folios only; unpinning drains the pipes."""
        if not on:
            for pid in [p for p, e in self._pins.items()]:
                self._close_fds(self._pins.pop(pid))
            return
        anon = handles[self._kind[handles] == ANON]
        if self.dry_run or not len(anon):
            return
        addrs = np.array([self._regions[o]["addr"] for o in self._obj[anon].tolist()],
                         dtype=np.int64) + self._off[anon] * PAGE
        for chunk in np.array_split(addrs, -(-len(addrs) // PIPE_PAGES)):
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_PAGES * PAGE)
            self._pins[self._new_obj()] = (r, w)
            iov = (Iovec * len(chunk))(*[Iovec(int(a), 1) for a in chunk])
            done = LIBC.vmsplice(w, iov, len(chunk), 0)
            if done < 0:
                raise OSError(get_errno(), "vmsplice failed")

    @staticmethod
    def _close_fds(fds):
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def _writeback(self, fd, off, n, wait):
        mode = SYNC_FILE_RANGE_WRITE | (SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WAIT_AFTER
                                        if wait else 0)
        if LIBC.sync_file_range(fd, off * PAGE, n * PAGE, mode):
            raise OSError(errno.EIO, "sync_file_range failed")

    def split(self, handles, new_order):
        """The kernel splits a folio itself once part of it is unmapped; here each handle of a
        larger order becomes the handles of its pieces (same memory, relabelled)."""
        handles = self._check(handles)
        pieces = []
        for h in handles.tolist():
            order = int(self._order[h])
            if order <= new_order or self._kind[h] not in (ANON, FILE):
                pieces.append(np.array([h]))
                continue
            self._alive[h] = False
            step = 1 << new_order
            offs = self._off[h] + np.arange(0, 1 << order, step)
            pieces.append(self._new_handles(self._kind[h], self._obj[h], offs, new_order))
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)

    def folio_orders(self, handles):
        """Each folio's order as the kernel has it now (anon: from pagemap and kpageflags, so a
        folio the kernel split shows its smaller order), capped at the handle's own order."""
        handles = self._check(handles)
        out = self._order[handles].copy()
        if self.dry_run or not len(handles):
            return out
        anon = np.flatnonzero(self._kind[handles] == ANON)
        if len(anon):
            h = handles[anon]
            pfn = np.full(len(h), -1, dtype=np.int64)
            for rid in np.unique(self._obj[h]).tolist():
                region = self._regions[rid]
                sel = self._obj[h] == rid
                pfns, present = pageflags.pagemap(region["addr"], region["pages"])
                offs = self._off[h[sel]]
                pfn[sel] = np.where(present[offs], pfns[offs], -1)
            ok = pfn >= 0
            orders = np.full(len(h), 0, dtype=np.int64)
            orders[ok] = pageflags.folio_order_at(pfn[ok])
            # a tail page heads no folio: the piece still belongs to a larger folio
            seen = np.where(orders < 0, self._order[h], orders)
            out[anon] = np.minimum(seen, self._order[h])
        return out

    # -- compaction, time ------------------------------------------------------------------

    def compact(self):
        t0 = time.perf_counter_ns()
        self.journal.write_only(COMPACT_MEMORY, 1)
        self.migrate_time_ns += time.perf_counter_ns() - t0

    def tick(self, ms):
        if not self.dry_run:
            time.sleep(ms / 1000)

    # -- settings held for the backend's lifetime -----------------------------------------

    def _set(self, path, value):
        """Write a setting through the journal; close() writes back the value found."""
        path = str(path)
        if path not in self._restore_on_close:
            self._restore_on_close[path] = self.journal.read(path)
        self.journal.write(path, value)

    # -- teardown --------------------------------------------------------------------------

    def close(self):
        """Unmap every region, close every pipe, remove the files, give back hugetlb pages,
        write back the settings held for the backend's lifetime. Every step is tried even when
        one fails (the first failure is raised at the end); the journal's undo of the memory
        and the work directory is dropped only once they are gone."""
        if self._closed:
            return
        self._closed = True
        failed = []

        def attempt(step, *args):
            try:
                step(*args)
            except Exception as exc:
                failed.append(exc)

        for rid in list(self._regions):
            attempt(self._unmap, rid)
        for pid in list(self._pins):
            attempt(self._close_fds, self._pins.pop(pid))
        for pid in list(self._pipes):
            attempt(self._close_pipe, pid)
        for f in self._files.values():
            if f["fd"] >= 0:
                attempt(os.close, f["fd"])
                f["fd"] = -1
        if self._hugetlb_grown > 0 and not self.journal.restored:
            attempt(self._shrink_pool, self._hugetlb_grown)
        self._hugetlb_grown = 0
        if not self.journal.restored:
            if self._ksm is not None:
                attempt(ksm.stop, self.journal, *self._ksm)
            for path, value in reversed(list(self._restore_on_close.items())):
                attempt(self.journal.write, path, value)
        self._ksm = None
        self._restore_on_close.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.used_pages = 0
        self.journal.discard_undo(self._undo)
        if failed:
            raise failed[0]

    def _shrink_pool(self, grown):
        now = int(self.journal.read(HUGETLB_POOL))
        self.journal.write(HUGETLB_POOL, max(now - grown, 0))
