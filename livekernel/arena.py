"""The live backend's arena: libc mappings that are unmapped whatever Python still holds, and
the handle table (one row per folio the backend handed out: kind, object, page offset, order,
alive), charged against the arena's page budget."""
import mmap
from ctypes import c_uint8 as _c_uint8
from ctypes import c_void_p as _void_p

import numpy as np

from .libc import LIBC, MAP_FAILED, get_errno

PAGE = 4096
PMD_PAGES = 512
ANON, FILE, PIPE, HUGETLB = 0, 1, 2, 3      # handle kinds


class Mapping:
    """A mapping made with libc mmap() and removed with munmap() whatever Python still holds
    (an interrupted frame's numpy view must not keep memory mapped past cleanup). Pages are
    touched through numpy arrays over the raw address, with no buffer export to outlive."""

    def __init__(self, length, fd=-1, offset=0, prot=mmap.PROT_READ | mmap.PROT_WRITE):
        self.length = int(length)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS if fd < 0 else mmap.MAP_SHARED
        addr = LIBC.mmap(None, self.length, prot, flags, fd, offset)
        if addr in (None, MAP_FAILED):
            raise OSError(get_errno(), f"mmap of {self.length} bytes failed")
        self.addr = int(addr)

    def bytes(self, start, length):
        """A numpy uint8 array over [start, start + length) of the mapping."""
        buf = (_c_uint8 * length).from_address(self.addr + start)
        return np.ctypeslib.as_array(buf)

    def madvise(self, advice, start, length):
        if LIBC.madvise(_void_p(self.addr + start), length, advice):
            raise OSError(get_errno(), f"madvise({advice}) failed")

    def close(self):
        if self.addr:
            LIBC.munmap(_void_p(self.addr), self.length)
            self.addr = 0



class HandleTable:
    """The arena's page budget and the handle table, as a base of LiveBackend (which sets
    arena_pages, used_pages and the table's arrays in __init__)."""

    @property
    def total_pages(self):
        return self.arena_pages

    def _budget(self, count, order):
        """How many of `count` folios of `order` still fit in the arena."""
        room = max(self.arena_pages - self.used_pages, 0)
        fit = int(min(count, room >> order))
        self.arena_declined_pages += (int(count) - fit) << order
        return fit

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

