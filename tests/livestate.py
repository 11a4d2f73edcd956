"""What the live tests compare before and after a live run: every setting and device a live
run may touch, and the files it may leave in its work directory."""
import glob
import os
import pathlib

SETTINGS = ["/sys/kernel/mm/transparent_hugepage/enabled",
            "/sys/kernel/mm/transparent_hugepage/defrag",
            "/sys/kernel/mm/ksm/run", "/sys/kernel/mm/ksm/pages_to_scan",
            "/sys/kernel/mm/ksm/sleep_millisecs", "/sys/module/zswap/parameters/enabled",
            "/proc/swaps", "/proc/sys/vm/nr_hugepages", "/proc/sys/vm/compaction_proactiveness",
            "/proc/sys/vm/extfrag_threshold"]
SETTING_GLOBS = ["/sys/kernel/mm/transparent_hugepage/hugepages-*kB/enabled",
                 "/sys/kernel/mm/hugepages/hugepages-*/nr_hugepages",
                 "/sys/devices/system/memory/memory*/state"]


def settings():
    """{path: value} of every setting, and the zram devices, as the kernel shows them now."""
    paths = SETTINGS + [p for pattern in SETTING_GLOBS for p in glob.glob(pattern)]
    out = {}
    for p in paths:
        try:
            out[p] = open(p).read().strip()
        except OSError:
            pass
    out["zram devices"] = sorted(os.path.basename(p) for p in glob.glob("/sys/block/zram*"))
    return out


def leftovers(workdir):
    """The live run's files still in workdir."""
    return sorted(str(p) for p in pathlib.Path(workdir).glob("foliobench-live-*"))
