"""The kernel's knobs and files the live backend reads and writes (every write goes through
livekernel.journal): sysfs and procfs paths, the sysctls a workload may set, the madvise()
advice numbers, the mTHP sizes this kernel offers."""
import pathlib

THP = "/sys/kernel/mm/transparent_hugepage"
HUGETLB_POOL = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
MEMORY = "/sys/devices/system/memory"
COMPACT_MEMORY = "/proc/sys/vm/compact_memory"
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


def read_text(path):
    """A sysfs/procfs file's text, stripped; "" when it cannot be read."""
    try:
        return pathlib.Path(path).read_text().strip()
    except OSError:
        return ""
