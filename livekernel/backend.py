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
- numa_migrate(): Unsupported (one node here; not driven from the live backend on two).
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
"""
import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import pathlib
import shutil
import signal
import tempfile
import time

import numpy as np

from simcore import vmstat as simvmstat
from simcore.procfs import parse_buddyinfo, parse_vmstat
from workloads.backend import Backend, Unsupported

from . import ksm, pageflags, swap

PAGE = 4096
PMD_PAGES = 512
THP = "/sys/kernel/mm/transparent_hugepage"
HUGETLB_POOL = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
MEMORY = "/sys/devices/system/memory"
COMPACT_MEMORY = "/proc/sys/vm/compact_memory"
PIPE_PAGES = 256                # F_SETPIPE_SZ of 1 MiB
OFFLINE_TIMEOUT_S = 20.0
ANON, FILE, PIPE, HUGETLB = 0, 1, 2, 3
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4
# machine arguments of the simulator that are sysctls here: set through the journal for the
# backend's lifetime (a matrix probe's extfrag_threshold=0 or compaction_proactiveness=90)
SYSCTLS = ("extfrag_threshold", "compaction_proactiveness")
ZSWAP = "/sys/module/zswap/parameters/enabled"
NODES = "/sys/devices/system/node"
MEMORY_FAILURE = "/proc/sys/vm/memory_failure_recovery"
MADV_HUGEPAGE, MADV_COLLAPSE, MADV_SOFT_OFFLINE = 14, 25, 101


def mthp_sizes():
    """{order: hugepages-<N>kB directory} for the anonymous mTHP sizes this kernel offers."""
    out = {}
    for d in pathlib.Path(THP).glob("hugepages-*kB"):
        if (d / "enabled").exists():
            order = (int(d.name[10:-2]) // 4).bit_length() - 1
            out[order] = d
    return dict(sorted(out.items()))


def _libc_sync_file_range():
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.sync_file_range
    fn.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    return fn


def _libc_vmsplice():
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.vmsplice
    fn.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint)
    fn.restype = ctypes.c_ssize_t
    return fn


def _iovec():
    import ctypes

    class Iovec(ctypes.Structure):
        _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]
    return Iovec


_Iovec = _iovec()


class Mapping:
    """A mapping made with libc mmap() and removed with munmap() whatever Python still holds
    (an interrupted frame's numpy view must not keep memory mapped past cleanup). Pages are
    touched through numpy arrays over the raw address, with no buffer export to outlive."""

    def __init__(self, length, fd=-1, offset=0, prot=mmap.PROT_READ | mmap.PROT_WRITE):
        self.length = int(length)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS if fd < 0 else mmap.MAP_SHARED
        addr = _LIBC.mmap(None, self.length, prot, flags, fd, offset)
        if addr in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), f"mmap of {self.length} bytes failed")
        self.addr = int(addr)

    def bytes(self, start, length):
        """A numpy uint8 array over [start, start + length) of the mapping."""
        buf = (ctypes.c_uint8 * length).from_address(self.addr + start)
        return np.ctypeslib.as_array(buf)

    def madvise(self, advice, start, length):
        if _LIBC.madvise(ctypes.c_void_p(self.addr + start), length, advice):
            raise OSError(ctypes.get_errno(), f"madvise({advice}) failed")

    def close(self):
        if self.addr:
            _LIBC.munmap(ctypes.c_void_p(self.addr), self.length)
            self.addr = 0


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_LIBC.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_MAP_FAILED = ctypes.c_void_p(-1).value


class _OfflineTimeout(Exception):
    pass


def _read_text(path):
    try:
        return pathlib.Path(path).read_text().strip()
    except OSError:
        return ""


def _online_movable(state):
    """Undo of offlining a ZONE_MOVABLE block: online it into ZONE_MOVABLE again."""
    if _read_text(state) == "offline":
        with open(state, "w") as fh:
            fh.write("online_movable")


class LiveBackend(Backend):
    """The running kernel behind the Backend interface (see the module docstring)."""

    name = "live"
    host_memory = True          # the arena is part of a running host, not a whole machine

    def __init__(self, mem=None, seed=0, strategy="kernel", *, journal, arena_bytes,
                 allow_offline=False, allow_poison=False, allow_zswap=False, workdir="/var/tmp",
                 swap_kind="file", **machine_kw):
        self.journal = journal
        self.dry_run = journal.dry_run
        self.rng = np.random.default_rng(seed)
        self.arena_pages = int(arena_bytes) // PAGE
        self.used_pages = 0
        self.allow_offline = allow_offline
        self.allow_poison = allow_poison
        self.allow_zswap = allow_zswap
        self.session_dir = str(workdir)
        self.swap_kind = swap_kind
        self.time_ns = {}           # measured wall time per subsystem ("swap_out", "ksm", ...)
        self._restore_on_close = {}     # path -> value found, written back by close()
        self._ksm = None
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
        self._sync_file_range = None
        self._vmsplice = None
        self._pins = {}             # id -> (rfd, wfd) of pipes holding folio references
        self._movable_blocks = set()    # memory blocks offlined from ZONE_MOVABLE
        self.workdir = None
        if not self.dry_run:
            self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="foliobench-live-", dir=workdir))
        self._undo = journal.add_undo("live backend memory (mappings, files, pipes)", self.close,
                                      remove=[self.workdir] if self.workdir else ())

    # -- the arena -------------------------------------------------------------------------

    @property
    def total_pages(self):
        return self.arena_pages

    def _budget(self, count, order):
        """How many of `count` folios of `order` still fit in the arena."""
        room = max(self.arena_pages - self.used_pages, 0)
        return int(min(count, room >> order))

    # -- handles ---------------------------------------------------------------------------

    def _new_handles(self, kind, obj, offsets, orders):
        offsets = np.asarray(offsets, dtype=np.int64)
        n = len(offsets)
        first = self._nh
        if first + n > len(self._kind):                 # grow by doubling: amortised O(1)
            cap = max(2 * len(self._kind), first + n, 1024)
            for name in ("_kind", "_obj", "_off", "_order", "_alive"):
                old = getattr(self, name)
                grown = np.zeros(cap, dtype=old.dtype)
                grown[:first] = old[:first]
                setattr(self, name, grown)
        sl = slice(first, first + n)
        self._kind[sl] = kind
        self._obj[sl] = obj
        self._off[sl] = offsets
        self._order[sl] = orders
        self._alive[sl] = True
        self._nh = first + n
        return np.arange(first, first + n, dtype=np.int64)

    def _check(self, handles):
        handles = np.asarray(handles, dtype=np.int64)
        if handles.size and (handles.min() < 0 or handles.max() >= self._nh
                             or not self._alive[handles].all()):
            raise ValueError("a handle does not name a live folio")
        return handles

    def _new_obj(self):
        self._next_obj += 1
        return self._next_obj

    @staticmethod
    def _ranges(obj, off, pages):
        """Merge (obj, page offset, pages) triples into maximal contiguous ranges."""
        order = np.lexsort((off, obj))
        obj, off, pages = obj[order], off[order], pages[order]
        new = np.ones(len(obj), dtype=bool)
        new[1:] = (obj[1:] != obj[:-1]) | (off[1:] != off[:-1] + pages[:-1])
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(obj))
        lengths = np.add.reduceat(pages, starts) if len(starts) else pages[:0]
        return list(zip(obj[starts].tolist(), off[starts].tolist(), lengths.tolist())), ends

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
        if self._vmsplice is None:
            self._vmsplice = _libc_vmsplice()
        import ctypes
        addrs = np.array([self._regions[o]["addr"] for o in self._obj[anon].tolist()],
                         dtype=np.int64) + self._off[anon] * PAGE
        for chunk in np.array_split(addrs, -(-len(addrs) // PIPE_PAGES)):
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_PAGES * PAGE)
            self._pins[self._new_obj()] = (r, w)
            iov = (_Iovec * len(chunk))(*[_Iovec(int(a), 1) for a in chunk])
            done = self._vmsplice(w, iov, len(chunk), 0)
            if done < 0:
                raise OSError(ctypes.get_errno(), "vmsplice failed")

    @staticmethod
    def _close_fds(fds):
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def _writeback(self, fd, off, n, wait):
        if self._sync_file_range is None:
            self._sync_file_range = _libc_sync_file_range()
        mode = SYNC_FILE_RANGE_WRITE | (SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WAIT_AFTER
                                        if wait else 0)
        if self._sync_file_range(fd, off * PAGE, n * PAGE, mode):
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

    # -- CMA and memory blocks -------------------------------------------------------------

    def cma_alloc(self, nr_pages):
        with open("/proc/meminfo") as fh:
            cma = [line for line in fh if line.startswith("CmaTotal:")]
        if not cma or int(cma[0].split()[1]) == 0:
            raise Unsupported("cma_alloc: no CMA area (CmaTotal 0 kB; reserve one with cma= on "
                              "the kernel command line)")
        raise Unsupported("cma_alloc: the kernel offers no user-space cma_alloc without "
                          "debugfs cma/<area>/alloc (CONFIG_CMA_DEBUGFS); not implemented")

    def cma_release(self, token):
        raise Unsupported("cma_release: no cma_alloc on the live kernel")

    def memory_blocks(self):
        base = pathlib.Path(MEMORY)
        try:
            block_pages = int((base / "block_size_bytes").read_text(), 16) // PAGE
        except OSError as exc:
            raise Unsupported(f"memory blocks: {exc}") from None
        out = []
        for d in sorted(base.glob("memory[0-9]*"), key=lambda p: int(p.name[6:])):
            idx = int(d.name[6:])

            def read(n, d=d):
                return (d / n).read_text().strip() if (d / n).exists() else ""

            zones = read("valid_zones").split()
            out.append({"index": idx, "start_pfn": idx * block_pages, "nr_pages": block_pages,
                        "zone": zones[0] if len(zones) == 1 else (zones[0] if zones else "none"),
                        "state": read("state"), "removable": read("removable") == "1"})
        return out

    def offline_block(self, index):
        if not self.allow_offline:
            raise Unsupported("memory offline needs --allow-offline (allow_offline=True)")
        path = pathlib.Path(MEMORY) / f"memory{int(index)}"
        if not path.is_dir():
            raise ValueError(f"memory block {index!r} does not exist")
        if (path / "removable").read_text().strip() != "1":
            return False, "not listed removable by the kernel"
        if self.journal.read(path / "state") != "online":
            return False, "already offline"
        state = path / "state"
        movable = _read_text(path / "valid_zones") == "Movable"
        if movable and int(index) not in self._movable_blocks:
            # "state" reads "online" whatever the zone, and writing "online" back lets the
            # kernel pick one (default_zone_for_pfn(): ZONE_NORMAL once the movable span no
            # longer covers the block): a ZONE_MOVABLE block comes back as online_movable
            self._movable_blocks.add(int(index))
            self.journal.add_undo(
                f"online memory{int(index)} into ZONE_MOVABLE",
                lambda: _online_movable(state),
                command=["sh", "-c", f"if [ \"$(cat {state})\" = offline ]; then "
                                     f"echo online_movable > {state}; fi"])
        t0 = time.perf_counter_ns()
        old = signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, OFFLINE_TIMEOUT_S)
        try:
            if int(index) in self._movable_blocks:
                self.journal.write_only(state, "offline")
            else:
                self.journal.write(state, "offline")
        except _OfflineTimeout:
            return False, f"ETIMEDOUT: offline still migrating after {OFFLINE_TIMEOUT_S:.0f} s"
        except Exception as exc:            # JournalError with the kernel's reason (EBUSY...)
            return False, str(exc).split(": ", 1)[-1]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            self.migrate_time_ns += time.perf_counter_ns() - t0
        return True, ""

    @staticmethod
    def _alarm(signum, frame):
        raise _OfflineTimeout

    def online_block(self, index):
        path = pathlib.Path(MEMORY) / f"memory{int(index)}" / "state"
        if self.journal.read(path) == "online":
            return False, "already online"
        if int(index) in self._movable_blocks:
            self.journal.write_only(path, "online_movable")
        else:
            self.journal.write(path, "online")
        return True, ""

    # -- counters --------------------------------------------------------------------------

    def counters(self):
        with open("/proc/vmstat") as fh:
            out = parse_vmstat(fh.read())
        for order, d in self._sizes.items():
            stats = d / "stats"
            for f in stats.iterdir() if stats.is_dir() else ():
                try:
                    out[f"mthp_{4 << order}K_{f.name}"] = int(f.read_text())
                except (OSError, ValueError):
                    pass
        out["migrate_time_ns"] = self.migrate_time_ns
        out["migrate_large_succeeded"] = out.get("thp_migration_success", 0)
        out["migrate_nr_split"] = out.get("thp_migration_split", 0)
        return out

    def _nr_free(self):
        with open("/proc/buddyinfo") as fh:
            return parse_buddyinfo(fh.read())

    def fragmentation(self):
        zones = self._nr_free().values()
        return {"fragindex": max(simvmstat.fragmentation_index(nr, 9) for nr in zones),
                "unusable": max(simvmstat.unusable_free_index(nr, 9) for nr in zones)}

    def buddyinfo(self):
        with open("/proc/buddyinfo") as fh:
            return fh.read()

    def pageblock_map(self):
        """None: pageblock migratetypes are not exported to user space (pagetypeinfo has only
        per-zone counts), so the live kernel has no fragmentation map."""
        return None

    # -- settings held for the backend's lifetime -----------------------------------------

    def _set(self, path, value):
        """Write a setting through the journal; close() writes back the value found."""
        path = str(path)
        if path not in self._restore_on_close:
            self._restore_on_close[path] = self.journal.read(path)
        self.journal.write(path, value)

    def _timed(self, name, t0):
        self.time_ns[name] = self.time_ns.get(name, 0) + time.perf_counter_ns() - t0

    def _anon_only(self, handles, what):
        handles = self._check(handles)
        if len(handles) and not (self._kind[handles] == ANON).all():
            raise Unsupported(f"{what}: only anonymous folios on the live backend")
        return handles

    def _anon_ranges(self, handles):
        """[(region, first page in the mapping, pages)]: the handles' folios as maximal
        virtual ranges."""
        pages = np.int64(1) << np.maximum(self._order[handles], 0)
        ranges, _ = self._ranges(self._obj[handles], self._off[handles], pages)
        return [(self._regions[obj], self._regions[obj]["start"] + off, n)
                for obj, off, n in ranges]

    def _observe(self, handle):
        """Replace one anonymous handle by the folios that map its range now (observed)."""
        region = self._regions[int(self._obj[handle])]
        off, n = int(self._off[handle]), 1 << max(int(self._order[handle]), 0)
        pfns, present = pageflags.pagemap(region["addr"] + off * PAGE, n)
        first, _, got = pageflags.folio_runs(pfns, present)
        self._alive[handle] = False
        got = np.where(got < 0, 0, got)
        return self._new_handles(ANON, int(self._obj[handle]), off + first, got)

    # -- where the folios are ------------------------------------------------------------

    def folio_pfns(self, handles):
        """The PFN of each folio's first page now (/proc/self/pagemap); -1 if not present or
        not anonymous."""
        handles = self._check(handles)
        out = np.full(len(handles), -1, dtype=np.int64)
        if self.dry_run or not len(handles):
            return out
        anon = self._kind[handles] == ANON
        for rid in np.unique(self._obj[handles[anon]]).tolist():
            region = self._regions[rid]
            sel = anon & (self._obj[handles] == rid)
            pfns, present = pageflags.pagemap(region["addr"], region["pages"])
            offs = self._off[handles[sel]]
            out[sel] = np.where(present[offs], pfns[offs], -1)
        return out

    # -- swap, zswap ----------------------------------------------------------------------

    def swap_out(self, handles):
        """Reclaim the folios to the run's temporary swap area (a file, or a zram device) with
        MADV_PAGEOUT (livekernel.swap);
        a folio's token is its handle when every page of it is a swap entry afterwards."""
        handles = self._anon_only(handles, "swap-out")
        if not len(handles):
            return []
        swap.swap_area(self.journal, self.session_dir, self.swap_kind)
        if self.dry_run:
            return [None] * len(handles)
        t0 = time.perf_counter_ns()
        for region, first, n in self._anon_ranges(handles):
            swap.pageout(region["mm"], first * PAGE, n * PAGE, region["mm"].madvise)
        self._timed("swap_out", t0)
        tokens = [None] * len(handles)
        for rid in np.unique(self._obj[handles]).tolist():
            region = self._regions[rid]
            out = pageflags.swapped(pageflags.pagemap_entries(region["addr"], region["pages"]))
            for i in np.flatnonzero(self._obj[handles] == rid).tolist():
                h = int(handles[i])
                off, n = int(self._off[h]), 1 << int(self._order[h])
                if out[off:off + n].all():
                    tokens[i] = h
        return tokens

    def swap_in(self, tokens):
        """Fault the swapped-out folios back (read faults: do_swap_page()); per token the
        handles of the folios the kernel mapped back, observed."""
        live = [t for t in tokens if t is not None]
        handles = self._anon_only(np.array(live, dtype=np.int64), "swap-in")
        if self.dry_run or not len(handles):
            return [np.empty(0, dtype=np.int64) if t is None else np.array([t]) for t in tokens]
        t0 = time.perf_counter_ns()
        for region, first, n in self._anon_ranges(handles):
            int(region["mm"].bytes(first * PAGE, n * PAGE)[::PAGE].sum())
        self._timed("swap_in", t0)
        return [np.empty(0, dtype=np.int64) if t is None else self._observe(t) for t in tokens]

    def set_zswap(self, on):
        """zswap on or off (/sys/module/zswap/parameters/enabled), back as found at close().

        Switching it on where it is off needs allow_zswap: once zswap has been enabled,
        zswap_never_enabled() stays false until reboot and the kernel swaps in only order-0
        folios, even from a synchronous device (alloc_swap_folio() in mm/memory.c)."""
        if not os.path.exists(ZSWAP):
            raise Unsupported(f"zswap: kernel without CONFIG_ZSWAP (no {ZSWAP})")
        if on and not self.allow_zswap and not self.dry_run:
            with open(ZSWAP) as fh:
                if fh.read().strip() != "Y":
                    raise Unsupported("needs --allow-zswap (once zswap has been enabled, the "
                                      "kernel swaps in only order-0 folios until reboot)")
        self._set(ZSWAP, "Y" if on else "N")

    # -- KSM -------------------------------------------------------------------------------

    def ksm_merge(self, handles_a, handles_b):
        """Give each pair of folios identical content (distinct from every other pair and from
        the rest of the machine), madvise(MADV_MERGEABLE), run ksmd (livekernel.ksm) until
        the pairs merged or it stopped merging. merged_pages from the pages_sharing delta;
        split_folios from the orders observed afterwards."""
        a = self._anon_only(handles_a, "KSM")
        b = self._anon_only(handles_b, "KSM")
        if not ksm.available():
            raise Unsupported(f"KSM: kernel without CONFIG_KSM (no {ksm.KSM}/run)")
        if len(a) != len(b) or (self._order[a] != self._order[b]).any():
            raise ValueError("ksm_merge pairs folios of the same order: the two handle lists "
                             "differ")
        pages = int((np.int64(1) << self._order[a]).sum())
        if self.dry_run:
            self._ksm = ksm.start(self.journal)
            return {"merged_pages": 0, "failed_pages": pages, "split_folios": 0}
        salt = int(self.rng.integers(1, 1 << 40)) << 20
        for handles in (a, b):
            pair_page = 0
            for h in handles.tolist():
                region = self._regions[int(self._obj[h])]
                n = 1 << int(self._order[h])
                words = region["mm"].bytes(region["start"] * PAGE, region["pages"] * PAGE) \
                    .view(np.uint64)
                idx = (int(self._off[h]) + np.arange(n)) * (PAGE // 8)
                words[idx] = salt + pair_page + np.arange(n, dtype=np.uint64)
                pair_page += n
        for region, first, n in self._anon_ranges(np.concatenate([a, b])):
            region["mm"].madvise(ksm.MADV_MERGEABLE, first * PAGE, n * PAGE)
        before = ksm.counters()
        if self._ksm is None:
            self._ksm = ksm.start(self.journal)
        t0 = time.perf_counter_ns()
        after = ksm.wait_for_merge(pages, before)
        self._timed("ksm", t0)
        merged = min(max(after.get("ksm/pages_sharing", 0)
                         - before.get("ksm/pages_sharing", 0), 0), pages)
        split = int((self.folio_orders(a) < self._order[a]).sum()
                    + (self.folio_orders(b) < self._order[b]).sum())
        return {"merged_pages": merged, "failed_pages": pages - merged, "split_folios": split}

    # -- memory-failure, khugepaged, NUMA --------------------------------------------------

    def memory_failure(self, handle, page_index):
        """madvise(MADV_SOFT_OFFLINE) of one page of the folio (soft_offline_page(): the page's
        content migrated, the page taken out of service until reboot), only with
        allow_poison."""
        if not os.path.exists(MEMORY_FAILURE):
            raise Unsupported("memory-failure injection: kernel without CONFIG_MEMORY_FAILURE "
                              f"(no {MEMORY_FAILURE}; MADV_SOFT_OFFLINE is refused)")
        if not self.allow_poison:
            raise Unsupported("needs --allow-poison (MADV_SOFT_OFFLINE takes pages out of "
                              "service until reboot)")
        h = int(self._anon_only([handle], "memory-failure")[0])
        n = 1 << int(self._order[h])
        if not 0 <= page_index < n:
            raise ValueError(f"page_index {page_index!r} is outside the folio's {n} pages")
        if self.dry_run:
            return False, "dry run"
        region = self._regions[int(self._obj[h])]
        t0 = time.perf_counter_ns()
        try:
            region["mm"].madvise(MADV_SOFT_OFFLINE,
                                 (region["start"] + int(self._off[h]) + page_index) * PAGE, PAGE)
        except OSError as exc:
            return False, f"MADV_SOFT_OFFLINE: {errno.errorcode.get(exc.errno, exc.errno)}"
        finally:
            self._timed("memory_failure", t0)
        return True, "soft-offlined (content migrated, page out of service)"

    def collapse(self, handles, order):
        """madvise(MADV_COLLAPSE) of the range the base pages map (madvise_collapse(), the
        synchronous khugepaged); the result is the folio observed there afterwards. The
        range gets MADV_HUGEPAGE first: MADV_COLLAPSE refuses VM_NOHUGEPAGE ranges, which is
        how the base pages were faulted."""
        handles = self._anon_only(handles, "khugepaged collapse")
        order = int(order)
        if len(handles) != 1 << order or (self._order[handles] != 0).any():
            raise ValueError(f"collapse to order {order} takes {1 << order} base pages")
        ranges = self._anon_ranges(handles)
        if len(ranges) != 1:
            raise ValueError("collapse takes virtually contiguous pages of one mapping")
        region, first, n = ranges[0]
        if self.dry_run:
            return None, "dry run"
        mm = region["mm"]
        mm.madvise(MADV_HUGEPAGE, first * PAGE, n * PAGE)
        t0 = time.perf_counter_ns()
        try:
            mm.madvise(MADV_COLLAPSE, first * PAGE, n * PAGE)
            answer = "MADV_COLLAPSE returned 0"
        except OSError as exc:
            answer = f"MADV_COLLAPSE failed with {errno.errorcode.get(exc.errno, exc.errno)}"
        finally:
            self._timed("collapse", t0)
        pfns, present = pageflags.pagemap(mm.addr + first * PAGE, n)
        _, _, got = pageflags.folio_runs(pfns, present)
        if len(got) == 1 and got[0] == order:
            start = int(self._off[handles].min())
            self._alive[handles] = False
            return int(self._new_handles(ANON, int(self._obj[handles[0]]), [start], order)[0]), ""
        seen = ", ".join(f"order {o}" for o in sorted({int(x) for x in got}, reverse=True))
        return None, f"{answer}; the range is still {seen}"

    def numa_migrate(self, handles):
        nodes = sorted(p.name for p in pathlib.Path(NODES).glob("node[0-9]*"))
        if len(nodes) < 2:
            raise Unsupported(f"NUMA balancing: one NUMA node ({', '.join(nodes) or 'none'}), "
                              f"nothing to balance between")
        raise Unsupported(f"NUMA balancing on {len(nodes)} nodes: hinting-fault migration is "
                          f"not driven from the live backend yet")

    def extra_counters(self):
        """Per-size mTHP stats as "hugepages-64kB/swpout", KSM's counters as "ksm/...", and
        the wall time measured per subsystem as "time_ns/...". """
        out = {}
        for _order, d in self._sizes.items():
            stats = d / "stats"
            for f in stats.iterdir() if stats.is_dir() else ():
                try:
                    out[f"{d.name}/{f.name}"] = int(f.read_text())
                except (OSError, ValueError):
                    pass
        if ksm.available():
            out.update(ksm.counters())
        out.update({f"time_ns/{k}": v for k, v in self.time_ns.items()})
        return out

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
