"""The live kernel's side of `foliobench fidelity`: reading and preparing the state a paired
experiment needs (root; every write through the settings journal).

What a snapshot cannot see, and what is done about it before each experiment:
- Pages on per-CPU lists (pcp) carry no flag in kpageflags. settle_pcp() writes a large
  vm.percpu_pagelist_high_fraction, which makes zone_set_pageset_high_and_batch() set each
  list's high to its floor (4 x batch); the vmstat worker's decay_pcp_high() (every
  vm.stat_interval) then frees what is above it. The lists are not emptied (the floor stays),
  so the pcp pages left are measured from zoneinfo's per-CPU "count" before and after and
  reported. The lowered high stays for the whole run and the journal writes the old value back.
- Compaction deferral (zone->compact_considered, compact_defer_shift, compact_order_failed) is
  not exported and no write resets it from user space (compact_memory ignores deferral but does
  not reset it). DeferralTrace counts what it did instead: a private tracefs instance with the
  compaction:mm_compaction_deferred, mm_compaction_defer_compaction and
  mm_compaction_defer_reset events enabled around the action, so a live run records how many
  compaction attempts deferral skipped.
- kcompactd's own timers and what kswapd did before are not reset; the live spread over repeats
  is what the twin is judged against.
"""
import os
import pathlib
import re
import time

import numpy as np
import psutil

from simcore.procfs import parse_buddyinfo, parse_vmstat

PCP_FRACTION = "/proc/sys/vm/percpu_pagelist_high_fraction"
PCP_FRACTION_LOW_HIGH = 1 << 20        # any large fraction: high drops to 4 x batch
PROACTIVENESS = "/proc/sys/vm/compaction_proactiveness"
HUGETLB_POOL = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
COMPACT_MEMORY = "/proc/sys/vm/compact_memory"
TRACEFS = pathlib.Path("/sys/kernel/tracing")
DEFERRAL_EVENTS = ("mm_compaction_deferred", "mm_compaction_defer_compaction",
                   "mm_compaction_defer_reset")
# free memory a hugetlb experiment always leaves to the rest of the host
HUGETLB_RESERVE_BYTES = 4 << 30


def read(path):
    with open(path) as fh:
        return fh.read()


def vmstat():
    return parse_vmstat(read("/proc/vmstat"))


def buddyinfo_text():
    return read("/proc/buddyinfo")


def buddyinfo():
    """{zone: free blocks per order} (DMA folded into DMA32, as the twin has no DMA zone)."""
    return fold_dma(parse_buddyinfo(buddyinfo_text()))


def fold_dma(table):
    """{zone: [free blocks per order]} of parse_buddyinfo()'s {(node, zone): array} (one node),
    with DMA's blocks added to DMA32's."""
    by_zone = {k[1] if isinstance(k, tuple) else k: v for k, v in table.items()}
    out = {k: [int(x) for x in v] for k, v in by_zone.items() if k != "DMA"}
    if "DMA" in by_zone and "DMA32" in out:
        out["DMA32"] = [a + int(b) for a, b in zip(out["DMA32"], by_zone["DMA"])]
    return out


def pcp_pages(zoneinfo_text=None):
    """{zone: pages on per-CPU lists} from zoneinfo's per-CPU "count:" lines."""
    text = read("/proc/zoneinfo") if zoneinfo_text is None else zoneinfo_text
    out, zone = {}, None
    for line in text.splitlines():
        m = re.match(r"Node\s+\d+,\s+zone\s+(\S+)", line)
        if m:
            zone = m.group(1)
            out.setdefault(zone, 0)
            continue
        m = re.match(r"\s+count:\s+(\d+)", line)
        if m and zone is not None:
            out[zone] += int(m.group(1))
    return out


def settle_pcp(journal, wait_s=2.0):
    """Lower every per-CPU list's high to its floor and wait for the vmstat worker to free the
    rest (see the module docstring); {"pcp_before": {...}, "pcp_after": {...}} in pages."""
    before = pcp_pages()
    if int(journal.read(PCP_FRACTION)) != PCP_FRACTION_LOW_HIGH:
        journal.write(PCP_FRACTION, PCP_FRACTION_LOW_HIGH)
    time.sleep(wait_s)
    return {"pcp_before": before, "pcp_after": pcp_pages()}


class DeferralTrace:
    """Counts compaction-deferral trace events during a `with` block, in a tracefs instance of
    our own (created with mkdir, removed at exit and by the journal if we die), so nobody
    else's tracing is touched. counts is None where tracefs is not available.

    events: other "subsystem/name" or compaction event names to record instead; text then
    holds the instance's whole trace at exit (tools/trace_compact_memory.py)."""

    def __init__(self, journal, state_dir="/run/foliobench", events=DEFERRAL_EVENTS):
        self.journal = journal
        self.events = tuple(e if "/" in e else f"compaction/{e}" for e in events)
        self.counts = None
        self.text = None
        self.state_dir = pathlib.Path(state_dir)
        self.dir = None

    def _tracefs(self):
        """TRACEFS when mounted there, else a private mount of tracefs of our own (journaled:
        unmounted and removed at the end)."""
        if (TRACEFS / "events").is_dir():
            return TRACEFS
        mnt = self.state_dir / f"tracefs-{os.getpid()}"
        if not (mnt / "events").is_dir():
            mnt.mkdir(parents=True, exist_ok=True)
            self.journal.add_undo(f"remove {mnt}", lambda: mnt.rmdir(), remove=[mnt])
            self.journal.run(["mount", "-t", "tracefs", "nodev", mnt], ["umount", mnt],
                             undo_first=True)
        return mnt

    def __enter__(self):
        if self.journal.dry_run:
            return self
        try:
            root = self._tracefs()
        except OSError:
            return self
        if not all((root / "events" / e).is_dir() for e in self.events):
            return self
        self.dir = root / "instances" / f"foliobench-fidelity-{os.getpid()}"
        try:
            os.mkdir(self.dir)
        except FileExistsError:
            pass
        except OSError:
            return self
        self._undo = self.journal.add_undo(f"remove tracefs instance {self.dir.name}",
                                           self._remove, command=["rmdir", str(self.dir)])
        for e in self.events:
            (self.dir / "events" / e / "enable").write_text("1")
        (self.dir / "trace").write_text("")
        self.counts = {}
        return self

    def __exit__(self, *exc):
        if self.counts is None:
            return False
        try:
            self.text = (self.dir / "trace").read_text()
            names = [e.split("/")[-1] for e in self.events]
            self.counts = {e: len(re.findall(rf"\b{e}:", self.text)) for e in names}
        finally:
            self._remove()
            self.journal.discard_undo(self._undo)
        return False

    def _remove(self):
        if self.dir is not None and self.dir.is_dir():
            for e in self.events:
                try:
                    (self.dir / "events" / e / "enable").write_text("0")
                except OSError:
                    pass
            os.rmdir(self.dir)


def free_bytes():
    return psutil.virtual_memory().free


def hugetlb_pool():
    return int(read(HUGETLB_POOL))


def hugetlb_target(cap_bytes):
    """How many 2 MiB pages a pool growth "to all free memory" may ask for on this shared host:
    MemFree less HUGETLB_RESERVE_BYTES, and never above the live memory cap."""
    room = min(free_bytes() - HUGETLB_RESERVE_BYTES, cap_bytes)
    return max(int(room) >> 21, 0)


def grow_hugetlb(journal, count):
    """Ask the pool for `count` more pages (set_max_huge_pages()); how many it got."""
    before = hugetlb_pool()
    journal.write(HUGETLB_POOL, before + count)
    return hugetlb_pool() - before, before


def shrink_hugetlb(journal, to):
    journal.write(HUGETLB_POOL, to)


def compact_memory(journal):
    journal.write_only(COMPACT_MEMORY, 1)


def set_proactiveness(journal, value):
    journal.write(PROACTIVENESS, int(value))


def kpageflags():
    """The whole of /proc/kpageflags (uint64 per PFN)."""
    from .snapshot import read_words
    return read_words("/proc/kpageflags", np.uint64)


def thpcompact_fragment(backend, pages, order=4, refill=0.5):
    """mmtests thpcompact's shape on the live kernel, in `pages` of the backend's arena:
    order-`order` anonymous faults, the folios in the first half of each 2 MiB physical block
    unmapped (the PFN rule of workloads.fragment.thpcompact_pattern), and `refill` of the holes
    filled again with page cache. Returns (handles kept, pages faulted, pages unmapped)."""
    got = backend.fault_anon(pages >> order, [order])
    anon = np.concatenate(list(got.values())) if got else np.empty(0, np.int64)
    pfns = backend.folio_pfns(anon)
    first_half = (pfns >= 0) & ((pfns & 511) < 256)
    backend.free(anon[first_half])
    holes = int(first_half.sum()) << order
    cache = backend.alloc(int(holes * refill), 0, "file", compact=False)
    return np.concatenate([anon[~first_half], cache]), len(anon) << order, holes


_ZONE_EVENT = re.compile(r"mm_compaction_(begin|end): zone_start=(0x[0-9a-f]+) "
                         r"migrate_pfn=(0x[0-9a-f]+) free_pfn=(0x[0-9a-f]+) "
                         r"zone_end=(0x[0-9a-f]+), mode=(\w+)(?: status=(\w+))?")
_ISOLATE_EVENT = re.compile(r"mm_compaction_isolate_(migrate|free)pages: "
                            r"range=\((0x[0-9a-f]+) ~ (0x[0-9a-f]+)\) "
                            r"nr_scanned=(\d+) nr_taken=(\d+)")
_MIGRATE_EVENT = re.compile(r"mm_migrate_pages: (.*)$")
# mm_migrate_pages' printed names -> its TP_STRUCT__entry field names
_MIGRATE_FIELDS = {"nr_succeeded": "succeeded", "nr_failed": "failed",
                   "nr_thp_succeeded": "thp_succeeded", "nr_thp_failed": "thp_failed",
                   "nr_thp_split": "thp_split", "nr_split": "large_folio_split",
                   "mode": "mode", "reason": "reason"}


def _migrate_batch(text):
    batch = {}
    for item in text.split():
        key, _, value = item.partition("=")
        if key in _MIGRATE_FIELDS:
            batch[_MIGRATE_FIELDS[key]] = int(value) if value.isdigit() else value
    return batch


def migrate_totals(trace_text):
    """{reason: {field: total, "calls": n}} of the mm_migrate_pages events in a trace (succeeded,
    failed, thp_split, large_folio_split, ... summed per migrate reason); None without a
    trace (no tracefs, or the event missing)."""
    if trace_text is None:
        return None
    out = {}
    for line in trace_text.splitlines():
        m = _MIGRATE_EVENT.search(line)
        if not m:
            continue
        batch = _migrate_batch(m.group(1))
        total = out.setdefault(str(batch.pop("reason", "?")), {"calls": 0})
        total["calls"] += 1
        for key, value in batch.items():
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return out


def compaction_zones(trace_text):
    """Per compact_zone() run in a trace of the compaction events (mm_compaction_begin/end and
    mm_compaction_isolate_migratepages/freepages): a list of dicts with zone_start, zone_end,
    the scanners' start and end PFNs, the status compact_zone() ended with, the pages each
    scanner scanned and took, and "batches": the run's mm_migrate_pages events with their
    fields (succeeded, failed, ..., mode, reason). Lines outside a begin/end pair are
    ignored."""
    runs, cur = [], None
    for line in trace_text.splitlines():
        m = _ZONE_EVENT.search(line)
        if m:
            kind, start, migrate, free, end, mode, status = m.groups()
            if kind == "begin":
                cur = {"zone_start": int(start, 16), "zone_end": int(end, 16), "mode": mode,
                       "migrate_begin": int(migrate, 16), "free_begin": int(free, 16),
                       "migrate_scanned": 0, "migrate_taken": 0,
                       "free_scanned": 0, "free_taken": 0, "batches": []}
            elif cur is not None:
                cur.update(migrate_end=int(migrate, 16), free_end=int(free, 16), status=status)
                runs.append(cur)
                cur = None
            continue
        m = _MIGRATE_EVENT.search(line)
        if m and cur is not None:
            cur["batches"].append(_migrate_batch(m.group(1)))
            continue
        m = _ISOLATE_EVENT.search(line)
        if m and cur is not None:
            scanner = m.group(1)
            cur[f"{scanner}_scanned"] += int(m.group(4))
            cur[f"{scanner}_taken"] += int(m.group(5))
    return runs
