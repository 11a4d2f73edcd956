"""The Backend interface workloads run against, and the simulator backend.

A workload never knows which backend runs it: it allocates folios of a size, frees them,
marks them dirty or under writeback, asks for high-order allocations, reserves CMA, offlines and
onlines memory blocks, advances time, triggers compaction and reads counters, all through these
methods. Folios are named by handles (stable when migration moves them), never by PFN.
"""
import abc

import numpy as np

import simcore
from simcore.metrics import fragmentation_at_order9


class Unsupported(Exception):
    """This backend cannot do that step here (the live kernel may lack CMA, say)."""


class Backend(abc.ABC):
    name = "abstract"

    @property
    @abc.abstractmethod
    def total_pages(self): ...

    @abc.abstractmethod
    def fault_anon(self, count, orders):
        """Anonymous faults with mTHP sizes `orders` (largest first, falling back).
        Returns {order: handles}."""

    @abc.abstractmethod
    def alloc(self, count, order, kind="anon", migratetype="movable", flags=0, compact=True):
        """Up to `count` folios of `order`; their handles (fewer when memory runs out)."""

    @abc.abstractmethod
    def free(self, handles): ...

    @abc.abstractmethod
    def set_flags(self, handles, flags, on=True): ...

    @abc.abstractmethod
    def split(self, handles, new_order):
        """Split each folio to new_order; the handles of every piece."""

    @abc.abstractmethod
    def folio_orders(self, handles):
        """Current order of each folio."""

    @abc.abstractmethod
    def compact(self): ...

    @abc.abstractmethod
    def tick(self, ms): ...

    @abc.abstractmethod
    def cma_alloc(self, nr_pages):
        """A contiguous range from the CMA area: a token for cma_release(), or None."""

    @abc.abstractmethod
    def cma_release(self, token): ...

    @abc.abstractmethod
    def memory_blocks(self): ...

    @abc.abstractmethod
    def offline_block(self, index):
        """(True, "") or (False, reason)."""

    @abc.abstractmethod
    def online_block(self, index): ...

    @abc.abstractmethod
    def counters(self):
        """Cumulative counters: /proc/vmstat names, plus migrate_* from migration statistics
        and time_ns, the backend's clock for migration (modelled or measured)."""

    @abc.abstractmethod
    def fragmentation(self):
        """{"fragindex": ..., "unusable": ...} at order 9 (x1000)."""

    @abc.abstractmethod
    def buddyinfo(self): ...

    def pageblock_map(self):
        """(migratetype per pageblock, free share per pageblock), for the fragmentation map."""
        raise Unsupported("pageblock map")


class SimBackend(Backend):
    """simcore.Machine behind the Backend interface."""

    name = "sim"

    def __init__(self, mem="16G", seed=0, strategy="folio", **machine_kw):
        self.machine = simcore.Machine(mem=mem, seed=seed, compaction=strategy, **machine_kw)
        self.rng = self.machine.rng

    @property
    def total_pages(self):
        return self.machine.managed_pages

    def _handles(self, pfns):
        return self.machine.handles_of(pfns)

    def _pfns(self, handles):
        return self.machine.handle_pfn(handles)

    def fault_anon(self, count, orders):
        got = self.machine.fault_anon(count, orders)
        return {o: self._handles(p) for o, p in got.items()}

    def alloc(self, count, order, kind="anon", migratetype="movable", flags=0, compact=True):
        return self._handles(self.machine.alloc_many(count, order, migratetype, kind, flags,
                                                     compact=compact))

    def free(self, handles):
        if len(handles):
            self.machine.free_many(self._pfns(handles))

    def set_flags(self, handles, flags, on=True):
        if len(handles):
            self.machine.set_flags(self._pfns(handles), flags, on)

    def split(self, handles, new_order):
        pieces = []
        m = self.machine
        for pfn in self._pfns(handles):
            order = int(m.pgdat.mem_map["order"][pfn])
            if order > new_order and m.split(int(pfn), new_order):
                pieces.append(np.arange(pfn, pfn + (1 << order), 1 << new_order))
            else:
                pieces.append(np.array([pfn]))
        return self._handles(np.concatenate(pieces)) if pieces else np.empty(0, dtype=np.int64)

    def compact(self):
        return self.machine.compact()

    def tick(self, ms):
        self.machine.tick(ms)

    def cma_alloc(self, nr_pages):
        if self.machine.cma_range[0] == self.machine.cma_range[1]:
            raise Unsupported("no CMA area")
        return self.machine.cma_alloc(nr_pages)

    def cma_release(self, token):
        self.machine.cma_release(token)

    def memory_blocks(self):
        return self.machine.memory_blocks()

    def offline_block(self, index):
        return self.machine.offline_memory_block(index)

    def online_block(self, index):
        return self.machine.online_memory_block(index)

    def counters(self):
        out = dict(self.machine.vmstat())
        out.update({f"migrate_{k}": v for k, v in self.machine.migration_stats().items()})
        return out

    def fragmentation(self):
        return fragmentation_at_order9(self.machine)

    def buddyinfo(self):
        return self.machine.buddyinfo()

    def pageblock_map(self):
        return self.machine.pageblock_map()

    def folio_orders(self, handles):
        """Current order of each folio (to see which were split)."""
        pfns = self._pfns(handles)
        return self.machine.pgdat.mem_map["order"][pfns].astype(np.int64)
