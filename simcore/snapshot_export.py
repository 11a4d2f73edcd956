"""Export a simulated machine in the formats the kernel exports: a Snapshot as if
`foliobench live snapshot` had captured it (kpageflags, kpagecount, zoneinfo, pagetypeinfo,
buddyinfo). Used to test the reconstruction (simcore.snapshot) by a round trip.

kpageflags follows stable_page_flags() in fs/proc/page.c: every page of a free block carries
KPF_BUDDY (is_free_buddy_page()); a large folio's head KPF_COMPOUND_HEAD and the other pages
KPF_COMPOUND_TAIL, with the folio's own flags on every page; absent pages PG_reserved. The
zoneinfo text carries only the lines the reconstruction reads.
"""
import numpy as np

from . import snapshot_file
from .mmzone import (
    KIND_ANON,
    KIND_FILE,
    KIND_HUGETLB,
    KIND_PAGETABLE,
    KIND_SHMEM,
    KIND_SLAB,
    NR_KINDS,
    PAGE_BUDDY,
    PAGE_HEAD,
    PAGE_OFFLINE,
    ZONE_NAMES,
)
from .pgdat import (
    Z_END,
    Z_LOWMEM_RESERVE,
    Z_MANAGED,
    Z_START,
    Z_WMARK_HIGH,
    Z_WMARK_LOW,
    Z_WMARK_MIN,
)
from .snapshot import FLAG_MAP, KPF


def _word(*names):
    return np.uint64(sum(1 << KPF[n] for n in names))


# The kpageflags a folio of each kind shows (besides head/tail and its page flags).
KIND_WORDS = np.zeros(NR_KINDS, dtype=np.uint64)
KIND_WORDS[KIND_ANON] = _word("anon", "swapbacked", "lru", "mmap", "uptodate")
KIND_WORDS[KIND_FILE] = _word("lru", "uptodate", "mappedtodisk")
KIND_WORDS[KIND_SHMEM] = _word("swapbacked", "lru", "uptodate")
KIND_WORDS[KIND_HUGETLB] = _word("huge")
KIND_WORDS[KIND_SLAB] = _word("slab")
KIND_WORDS[KIND_PAGETABLE] = _word("pgtable")


def page_words(machine):
    """(kpageflags, kpagecount) arrays of every PFN of `machine`."""
    mem_map = machine.pgdat.mem_map
    n = len(mem_map)
    flags = np.zeros(n, dtype=np.uint64)
    counts = np.zeros(n, dtype=np.uint16)
    types = mem_map["type"]
    sizes = np.int64(1) << mem_map["order"].astype(np.int64)
    for kind_type, word in ((PAGE_BUDDY, _word("buddy")), (PAGE_OFFLINE, _word("reserved"))):
        heads = np.flatnonzero(types == kind_type)
        span = _expand(heads, sizes[heads])
        flags[span] = word
        counts[span] = 1 if kind_type == PAGE_OFFLINE else 0
    heads = np.flatnonzero(types == PAGE_HEAD)
    rec = mem_map[heads]
    words = KIND_WORDS[rec["kind"]].copy()
    for name, bit in FLAG_MAP:
        words[(rec["flags"] & bit) != 0] |= _word(name)
    size = sizes[heads]
    span = _expand(heads, size)
    owner = np.repeat(np.arange(len(heads)), size)
    flags[span] = words[owner]
    large = np.repeat(size > 1, size)
    is_head = np.zeros(len(span), dtype=bool)
    is_head[np.cumsum(size) - size] = True
    flags[span[large & is_head]] |= _word("compound_head")
    flags[span[large & ~is_head]] |= _word("compound_tail")
    counts[span] = 1
    # outside every zone there is nothing
    zones = machine.pgdat.zones
    inside = np.zeros(n, dtype=bool)
    for i, _ in machine.zones:
        inside[zones[i, Z_START]:zones[i, Z_END]] = True
    flags[~inside] = 0
    counts[~inside] = 0
    return flags, counts


def _expand(heads, sizes):
    """Every PFN of the blocks starting at `heads` with `sizes` pages."""
    if not len(heads):
        return np.zeros(0, dtype=np.int64)
    offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.repeat(heads, sizes) + offsets


def render_zoneinfo(machine):
    """/proc/zoneinfo text with the lines simcore.procfs.parse_zoneinfo and the reconstruction
    read: watermarks, spanned/present/managed, protection, every CPU's pageset, start_pfn."""
    z = machine.pgdat.zones
    free = machine.zoneinfo()
    lines = []
    for i, name in enumerate(ZONE_NAMES):
        spanned = int(z[i, Z_END] - z[i, Z_START])
        lines.append(f"Node 0, zone {name:>8}")
        if not spanned:
            lines += ["  pages free     0", "        spanned  0", "        present  0",
                      "        managed  0"]
            continue
        absent = int((machine.pgdat.mem_map["type"][z[i, Z_START]:z[i, Z_END]]
                      == PAGE_OFFLINE).sum())
        protection = ", ".join(str(int(v)) for v in (0,) + tuple(z[i, Z_LOWMEM_RESERVE:
                                                                  Z_LOWMEM_RESERVE + 3]))
        lines += [f"  pages free     {free[name]['nr_free_pages']}",
                  f"        min      {z[i, Z_WMARK_MIN]}", f"        low      {z[i, Z_WMARK_LOW]}",
                  f"        high     {z[i, Z_WMARK_HIGH]}", f"        spanned  {spanned}",
                  f"        present  {spanned - absent}", f"        managed  {z[i, Z_MANAGED]}",
                  f"        protection: ({protection})",
                  f"      nr_free_pages {free[name]['nr_free_pages']}",
                  "  pagesets"]
        for ps in free[name]["pagesets"]:
            lines += [f"    cpu: {ps['cpu']}", f"              count:    {ps['count']}",
                      f"              high:     {ps['high']}",
                      f"              batch:    {ps['batch']}",
                      f"              high_min: {ps['high_min']}",
                      f"              high_max: {ps['high_max']}"]
        lines += [f"  start_pfn:           {z[i, Z_START]}"]
    return "\n".join(lines) + "\n"


def export(machine, kernel="simcore"):
    """A simcore.snapshot_file.Snapshot of `machine`."""
    flags, counts = page_words(machine)
    files = {"zoneinfo": render_zoneinfo(machine), "pagetypeinfo": machine.pagetypeinfo(),
             "buddyinfo": machine.buddyinfo()}
    settings = {"vm/min_free_kbytes": str(machine.min_free_kbytes)}
    return snapshot_file.Snapshot(flags, counts, files, settings, kernel,
                                  {"exported_from": repr(machine)})
