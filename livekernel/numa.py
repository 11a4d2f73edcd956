"""NUMA for the live backend: which node a PFN and this task sit on (sysfs memory blocks),
mbind(2) to place folios on a node, and the NUMA-balancing knobs (kernel.numa_balancing and the
scan delay/period, under debugfs sched/numa_balancing/ since 5.13, as sysctls before)."""
import ctypes
import os
import pathlib
import re

import numpy as np

from .knobs import MEMORY, NODES, read_text

NUMA_BALANCING = "/proc/sys/kernel/numa_balancing"
SCAN_DIRS = (("/sys/kernel/debug/sched/numa_balancing", ""),
             ("/proc/sys/kernel", "numa_balancing_"))     # (directory, name prefix)
# task_numa_work() (kernel/sched/fair.c): the first scan of a new mm waits scan_delay; the mm
# is rescanned every scan period, which starts near scan_period_min and grows while the task's
# faults do not call for migration, up to scan_period_max; each pass marks scan_size_mb of
# populated address space from where the last one stopped. Short periods, capped, so the
# passes reach the sample within seconds even in a loaded TCG guest (defaults 1 s, 1 s, 60 s;
# scan_size_mb keeps its 256: 1024 doubled numa_pte_updates in the 6.1 guest for no gain)
SCAN_KNOBS = {"scan_delay_ms": 0, "scan_period_min_ms": 100, "scan_period_max_ms": 1000}
DEBUGFS = "/sys/kernel/debug"
ZONEINFO = "/proc/zoneinfo"
SYS_MBIND = 237                 # x86_64
MPOL_DEFAULT, MPOL_PREFERRED, MPOL_BIND = 0, 1, 2
MPOL_MF_STRICT, MPOL_MF_MOVE = 1, 2


def nodes_with_memory(root=NODES):
    """The node ids that have memory (has_memory; every nodeN when that file is missing)."""
    text = read_text(pathlib.Path(root) / "has_memory")
    if text:
        return parse_list(text)
    return sorted(int(p.name[4:]) for p in pathlib.Path(root).glob("node[0-9]*"))


def parse_list(text):
    """A sysfs cpu/node list ("0-2,5") as a sorted list of ints."""
    out = []
    for part in text.split(","):
        if part.strip():
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def pfn_to_node_map(nodes_root=NODES, memory_root=MEMORY):
    """(pages per memory block, {block: node}) from the nodeN/memoryM links, as
    register_memory_blocks_under_node() (drivers/base/node.c) makes them."""
    size = int(read_text(pathlib.Path(memory_root) / "block_size_bytes") or "0", 16)
    blocks = {}
    for node in pathlib.Path(nodes_root).glob("node[0-9]*"):
        for link in node.glob("memory[0-9]*"):
            blocks[int(link.name[6:])] = int(node.name[4:])
    if not size or not blocks:
        raise LookupError(f"no memory blocks under {nodes_root} (kernel without "
                          f"CONFIG_MEMORY_HOTPLUG?): cannot tell a PFN's node")
    return size // 4096, blocks


def pfn_nodes(pfns, block_pages, blocks):
    """The node of each PFN (-1: not present, or a block no node lists)."""
    pfns = np.asarray(pfns, dtype=np.int64)
    return np.array([blocks.get(int(p) // block_pages, -1) if p >= 0 else -1 for p in pfns],
                    dtype=np.int64)


def cpu_node(cpu, nodes_root=NODES):
    """The node whose cpulist holds `cpu`."""
    for node in sorted(pathlib.Path(nodes_root).glob("node[0-9]*")):
        if cpu in parse_list(read_text(node / "cpulist")):
            return int(node.name[4:])
    raise LookupError(f"CPU {cpu} is in no node's cpulist under {nodes_root}")


def scan_knobs():
    """{path: value} of the scan knobs this kernel has (debugfs when mounted, else sysctls)."""
    for d, prefix in SCAN_DIRS:
        found = {f"{d}/{prefix}{k}": v for k, v in SCAN_KNOBS.items()
                 if os.path.exists(f"{d}/{prefix}{k}")}
        if found:
            return found
    return {}


def mbind(addr, length, mode, node=None, flags=0):
    """mbind(2) by syscall (glibc has no wrapper; libnuma's is not needed for one call).
    node None: no nodemask (MPOL_DEFAULT)."""
    from .libc import LIBC
    mask = ctypes.c_ulong(1 << node) if node is not None else None
    ret = LIBC.syscall(SYS_MBIND, ctypes.c_ulong(addr), ctypes.c_ulong(length),
                       ctypes.c_int(mode), ctypes.byref(mask) if mask is not None else None,
                       ctypes.c_ulong(65 if mask is not None else 0), ctypes.c_uint(flags))
    if ret:
        err = ctypes.get_errno()
        raise OSError(err, f"mbind({addr:#x}, {length}, mode {mode}, node {node}, flags "
                           f"{flags}): {os.strerror(err)}")


def current_cpu():
    """sched_getcpu() of the calling thread."""
    from .libc import LIBC
    return int(LIBC.sched_getcpu())


def debugfs_mounted(mounts="/proc/mounts"):
    """Is a debugfs mounted (the scan knobs live there since 5.13)?"""
    try:
        with open(mounts) as fh:
            return any(line.split()[2:3] == ["debugfs"] for line in fh)
    except OSError:
        return False


def zone_room(node, zoneinfo_text):
    """{zone: (free, high, reserve)} of `node`'s managed zones from /proc/zoneinfo, where
    reserve is the zone's lowmem_reserve for a ZONE_MOVABLE request (its "protection:" entry
    at ZONE_MOVABLE's index), the margin zone_watermark_ok() adds for a request that may use
    any zone."""
    zones = [m for m in re.finditer(r"^Node\s+(\d+), zone\s+(\S+)\n(.*?)(?=^Node|\Z)",
                                    zoneinfo_text, re.M | re.S) if int(m.group(1)) == node]
    names = [m.group(2) for m in zones]     # every zone type, populated or not, in index order
    movable = names.index("Movable") if "Movable" in names else -1
    out = {}
    for m in zones:
        body = m.group(3)
        num = {k: int(v) for k, v in re.findall(r"^\s+(?:pages )?(free|high|managed)\s+(\d+)",
                                                 body, re.M)}
        prot = re.search(r"protection:\s*\(([^)]*)\)", body)
        if not num.get("managed"):
            continue
        reserve = int(prot.group(1).split(",")[movable]) if prot else 0
        out[m.group(2)] = (num.get("free", 0), num.get("high", 0), reserve)
    return out


def room_for(node, nr_pages, zoneinfo_text):
    """migrate_balanced_pgdat() (mm/migrate.c): NUMA balancing migrates a folio to `node`
    only while one of its zones has more than its high watermark plus the folio free
    (numamigrate_isolate_folio(), "avoid migrating to a node that is nearly full"); here
    asked for nr_pages at once, the whole sample. Simplified: the highatomic and CMA free
    pages that zone_watermark_ok() also leaves out are not subtracted."""
    return any(free > high + reserve + nr_pages
               for free, high, reserve in zone_room(node, zoneinfo_text).values())
