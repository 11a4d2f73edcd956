"""The feature-matrix steps on the live kernel, as a base of LiveBackend: where folios are
(pagemap), swap-out/in and zswap, KSM merging, memory-failure (MADV_SOFT_OFFLINE), khugepaged
collapse (MADV_COLLAPSE) and NUMA. Each writes only through the journal; each figure is a
counter delta or an order/PFN read back with pagemap + kpageflags."""
import errno
import mmap
import os
import pathlib
import time

import numpy as np

from workloads.backend import Unsupported

from . import fidelity, ksm, numa, pageflags, swap
from .arena import ANON, PAGE
from .knobs import MADV_COLLAPSE, MADV_HUGEPAGE, MADV_SOFT_OFFLINE, MEMORY_FAILURE, NODES, ZSWAP

# the hinting-fault loop's bound; the loop ends as soon as every folio is back (9.3 s in the
# 6.1 CI guest at 4K, 2026-12-02 12:17 UTC, at load 1; a guest on a loaded host runs slower)
NUMA_TIMEOUT_S = 60
MIGRATE_EVENT = "migrate/mm_migrate_pages"


class FeatureSteps:
    """Swap, zswap, KSM, memory-failure, collapse, NUMA and folio_pfns (LiveBackend holds the
    handle table, the regions, the journal and the allow_* switches)."""

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

    def _observe_all(self, tokens):
        """_observe() of every token (None: an empty array). A base page needs no read: it
        is one folio of order 0 whether mapped or not, so those are made in one step; under
        TCG a pagemap and kpageflags read per 4K token took a minute for 4096 of them."""
        out = [np.empty(0, dtype=np.int64)] * len(tokens)
        small = [i for i, t in enumerate(tokens) if t is not None and self._order[t] <= 0]
        if small:
            h = np.array([tokens[i] for i in small], dtype=np.int64)
            self._alive[h] = False
            new = self._new_handles(ANON, self._obj[h], self._off[h],
                                    np.zeros(len(h), dtype=np.int64))
            for i, one in zip(small, np.split(new, len(new))):
                out[i] = one
        for i, t in enumerate(tokens):
            if t is not None and self._order[t] > 0:
                out[i] = self._observe(t)
        return out

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
        return self._observe_all(tokens)

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

    def numa_migrate(self, handles, timeout_s=NUMA_TIMEOUT_S):
        """NUMA balancing as the kernel does it: task_numa_work() (kernel/sched/fair.c) marks
        the task's PTEs PROT_NONE, the task's next access takes a hinting fault, do_numa_page()
        (mm/memory.c) asks mpol_misplaced() / should_numa_migrate_memory() (mm/mempolicy.c)
        and migrates the folio, whole, to the task's node.

        The folios are first made again on another node: their ranges are dropped
        (MADV_DONTNEED), given mbind(MPOL_PREFERRED, that node) and faulted again with the
        same mTHP settings, then the ranges' policy is reset (MPOL_DEFAULT, whose
        MPOL_F_MOF|MPOL_F_MORON lets balancing move them back). Not moved there with
        MPOL_MF_MOVE: measured on 6.12 (docs/guests.md), a 64K folio that one migration has
        moved is split by the next one (migrate_pages_batch() splits a folio it finds on
        the deferred-split list), so balancing would be judged on what the placing move
        left. A folio counts only when it was placed there with its order;
        kernel.numa_balancing=1 and short scan delay/period (debugfs sched/numa_balancing/,
        or the numa_balancing_scan_* sysctls) are set through the journal, and the task,
        pinned to the CPU it runs on, reads one byte per page of the sample in a loop until
        every folio sits on the task's node or timeout_s passes. The task's node must have
        room above its high watermark for the sample (_numa_make_room()). Per folio: True if it is
        on the task's node at the end (its node from pagemap + the memory blocks' nodes).
        numa_observed keeps what was seen: nodes, rounds, and whether each moved folio kept
        its order. Simplified: one task, one node move; only in a disposable guest (or where
        numa_balancing is on already), as the host's scheduler setting is not ours."""
        nodes = sorted(p.name for p in pathlib.Path(NODES).glob("node[0-9]*"))
        if len(nodes) < 2:
            raise Unsupported(f"NUMA balancing: one NUMA node ({', '.join(nodes) or 'none'}), "
                              f"nothing to balance between")
        if not os.path.exists(numa.NUMA_BALANCING):
            raise Unsupported(f"NUMA balancing: kernel without CONFIG_NUMA_BALANCING (no "
                              f"{numa.NUMA_BALANCING})")
        if not self.may_fill_memory and self.journal.read(numa.NUMA_BALANCING) != "1":
            raise Unsupported("NUMA balancing: kernel.numa_balancing is off and this is not a "
                              "disposable guest (the host's scheduler setting is not ours)")
        handles = self._anon_only(handles, "NUMA balancing")
        if self.dry_run or not len(handles):
            return [False] * len(handles)
        try:
            block_pages, blocks = numa.pfn_to_node_map()
        except LookupError as exc:
            raise Unsupported(f"NUMA balancing: {exc}") from None
        return self._numa_round(handles, block_pages, blocks, timeout_s)

    def _numa_make_room(self, node, pages):
        """NUMA balancing moves nothing to a node that is nearly full (numa.room_for()): after
        earlier steps filled memory, the task's node holds page cache down to its high
        watermark, and kswapd, which the 6.x kernels wake there, reclaims only to that mark.
        In a disposable guest the clean caches are dropped (drop_caches=3) when the node has
        no room for the sample; what the node's zones held is kept either way."""
        text = numa.read_text(numa.ZONEINFO) or ""
        seen = {"room_zones": numa.zone_room(node, text)}
        if not numa.room_for(node, pages, text) and self.may_fill_memory:
            self.journal.write_only("/proc/sys/vm/drop_caches", 3)
            text = numa.read_text(numa.ZONEINFO) or ""
            seen["room_zones_after_drop_caches"] = numa.zone_room(node, text)
        seen["room_for_sample"] = numa.room_for(node, pages, text)
        return seen

    def _numa_nodes(self, handles, block_pages, blocks):
        return numa.pfn_nodes(self.folio_pfns(handles), block_pages, blocks)

    def _numa_round(self, handles, block_pages, blocks, timeout_s):
        affinity = os.sched_getaffinity(0)
        cpu = numa.current_cpu()
        here = numa.cpu_node(cpu)
        others = [n for n in numa.nodes_with_memory() if n != here]
        if not others:
            raise Unsupported(f"NUMA balancing: no node with memory besides node {here}")
        there = others[0]
        ranges = self._anon_ranges(handles)
        for region, first, n in ranges:
            addr = region["mm"].addr + first * PAGE
            region["mm"].madvise(mmap.MADV_DONTNEED, first * PAGE, n * PAGE)
            # preferred, not bound: where that node is full the fault falls back rather
            # than reclaiming there or calling the OOM killer; such folios are not placed
            numa.mbind(addr, n * PAGE, numa.MPOL_PREFERRED, there)
            region["mm"].bytes(first * PAGE, n * PAGE)[::PAGE] = 1
            numa.mbind(addr, n * PAGE, numa.MPOL_DEFAULT)
        before = self._numa_nodes(handles, block_pages, blocks)
        placed_whole = self.folio_orders(handles) == self._order[handles]
        room = self._numa_make_room(here, int((1 << self._order[handles].astype(np.int64)).sum()))
        self._set(numa.NUMA_BALANCING, 1)
        if self.may_fill_memory and not numa.debugfs_mounted() and os.path.isdir(numa.DEBUGFS):
            try:        # a guest's init may not mount it; the knobs are restored before umount
                self.journal.run(["mount", "-t", "debugfs", "debugfs", numa.DEBUGFS],
                                 ["umount", numa.DEBUGFS], "debugfs for the NUMA scan knobs")
            except Exception:       # noqa: BLE001 - without it the scan keeps its defaults
                pass
        knobs = numa.scan_knobs()
        for path, value in knobs.items():
            self._set(path, value)
        os.sched_setaffinity(0, {cpu})
        t0 = time.perf_counter_ns()
        rounds, now = 0, before
        # balancing's own migrate_pages() calls, to tell a split inside them (nr_split) from
        # one after them
        trace = fidelity.DeferralTrace(self.journal, events=(MIGRATE_EVENT,))
        try:
            with trace:
                while True:
                    for region, first, n in ranges:
                        int(region["mm"].bytes(first * PAGE, n * PAGE)[::PAGE].sum())
                    rounds += 1
                    late = time.perf_counter_ns() - t0 > timeout_s * 1e9
                    if rounds % 16 == 0 or late:
                        now = self._numa_nodes(handles, block_pages, blocks)
                        if (now == here).all() or late:
                            break
        finally:
            self._timed("numa", t0)
            os.sched_setaffinity(0, affinity)
        moved = (now == here) & (before == there) & placed_whole
        orders = self.folio_orders(handles)
        whole = orders[moved] == self._order[handles][moved]
        self.numa_observed = {
            "task_node": here, "placed_on": there, "placed": int((before == there).sum()),
            "placed_whole": int(((before == there) & placed_whole).sum()),
            "scan_knobs": sorted(os.path.basename(k) for k in knobs),
            "numa_balancing": self.journal.read(numa.NUMA_BALANCING), "rounds": rounds,
            "seconds": round((time.perf_counter_ns() - t0) / 1e9, 2),
            **room, "migrate_pages_calls": fidelity.migrate_totals(trace.text),
            "kept_order": float(whole.mean()) if moved.any() else None,
            "split_to": {int(o): int(c) for o, c in zip(*np.unique(orders[moved],
                                                                   return_counts=True))}}
        return [bool(m) for m in moved]

