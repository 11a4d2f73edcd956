"""The live kernel: what this machine's kernel lets foliobench exercise (the capability probe).

probe() only reads: /proc/sys/vm, /proc/meminfo, /proc/zoneinfo, /proc/swaps, /sys/kernel/mm
and /sys/devices/system/memory (and checks that /proc/kpageflags exists). Every capability is
available (with what was seen) or unavailable with the reason seen (a missing file, a
permission refused, an error from the kernel), never guessed. `root` points the probe at
another tree (tests use a fake one).
"""
import dataclasses
import errno
import os
import pathlib
import platform
import re


@dataclasses.dataclass
class Capability:
    available: bool
    detail: str             # what was seen, or why it is unavailable
    values: dict = dataclasses.field(default_factory=dict)


class _Reader:
    def __init__(self, root):
        self.root = pathlib.Path(root)

    def path(self, path):
        return self.root / path.lstrip("/")

    def read(self, path):
        """(text, None) or (None, reason)."""
        try:
            return self.path(path).read_text().strip(), None
        except FileNotFoundError:
            return None, f"missing file {path}"
        except PermissionError:
            return None, f"permission denied reading {path}"
        except OSError as exc:
            name = errno.errorcode.get(exc.errno, str(exc.errno))
            return None, f"{name} from the kernel reading {path}"


def _selected(text):
    """The bracketed choice of a sysfs setting such as "always [madvise] never"."""
    match = re.search(r"\[(\w+)\]", text or "")
    return match.group(1) if match else (text or "")


def probe(root="/"):
    """{capability: Capability} for this kernel (see the module docstring)."""
    r = _Reader(root)
    caps = {}
    release = platform.release() if str(root) == "/" else (r.read("/proc/sys/kernel/osrelease")[0]
                                                             or "unknown")
    caps["kernel"] = Capability(True, release)
    is_root = os.geteuid() == 0
    caps["root"] = Capability(is_root, "running as root" if is_root else
                              f"running as uid {os.geteuid()}: live runs need root")

    thp = "/sys/kernel/mm/transparent_hugepage"
    enabled, why = r.read(f"{thp}/enabled")
    if enabled is None:
        caps["thp"] = Capability(False, why)
    else:
        defrag, _ = r.read(f"{thp}/defrag")
        caps["thp"] = Capability(True, f"enabled={_selected(enabled)} defrag={_selected(defrag)}",
                                 {"enabled": _selected(enabled), "defrag": _selected(defrag)})
    sizes = {}
    base = r.path(thp)
    if base.is_dir():
        for d in sorted(base.glob("hugepages-*kB"), key=lambda p: int(p.name[10:-2])):
            text, why = r.read(f"{thp}/{d.name}/enabled")
            sizes[d.name[10:]] = _selected(text) if text is not None else f"unavailable: {why}"
    caps["mthp"] = Capability(bool(sizes), ", ".join(f"{k}={v}" for k, v in sizes.items())
                              if sizes else f"no {thp}/hugepages-*kB directories (kernel "
                                            f"without mTHP)", sizes)

    vm = "/proc/sys/vm"
    values = {}
    missing = []
    for name in ("compaction_proactiveness", "extfrag_threshold", "compact_unevictable_allowed"):
        text, why = r.read(f"{vm}/{name}")
        if text is None:
            missing.append(why)
        else:
            values[name] = int(text)
    writable = r.path(f"{vm}/compact_memory").exists()
    if not writable:
        caps["compaction"] = Capability(False, f"missing file {vm}/compact_memory "
                                               f"(kernel without CONFIG_COMPACTION)")
    elif not is_root:
        caps["compaction"] = Capability(False, f"{vm}/compact_memory needs root", values)
    else:
        caps["compaction"] = Capability(True, " ".join(f"{k}={v}" for k, v in values.items())
                                        + (f" ({'; '.join(missing)})" if missing else ""), values)

    pools = {}
    hp = r.path("/sys/kernel/mm/hugepages")
    if hp.is_dir():
        for d in sorted(hp.glob("hugepages-*kB")):
            text, _ = r.read(f"/sys/kernel/mm/hugepages/{d.name}/nr_hugepages")
            pools[d.name[10:]] = int(text) if text is not None else None
    caps["hugetlb"] = Capability(bool(pools), ", ".join(f"{k} pool={v}" for k, v in pools.items())
                                 if pools else "missing /sys/kernel/mm/hugepages (no hugetlbfs)",
                                 pools)

    text, why = r.read("/sys/kernel/debug/extfrag/extfrag_index")
    if text is not None:
        caps["debugfs_extfrag"] = Capability(True, "extfrag_index and unusable_index readable")
    elif r.path("/sys/kernel/debug").is_dir() and not any(r.path("/sys/kernel/debug").iterdir()):
        caps["debugfs_extfrag"] = Capability(False, "debugfs not mounted (mount -t debugfs none "
                                                    "/sys/kernel/debug)")
    else:
        caps["debugfs_extfrag"] = Capability(False, why)

    mem = "/sys/devices/system/memory"
    size, why = r.read(f"{mem}/block_size_bytes")
    if size is None:
        caps["memory_blocks"] = Capability(False, why)
    else:
        blocks = sorted(r.path(mem).glob("memory[0-9]*"), key=lambda p: int(p.name[6:]))
        removable = 0
        online = 0
        for b in blocks:
            rem, _ = r.read(f"{mem}/{b.name}/removable")
            state, _ = r.read(f"{mem}/{b.name}/state")
            removable += rem == "1"
            online += state == "online"
        nbytes = int(size, 16)
        caps["memory_blocks"] = Capability(
            bool(blocks), f"{len(blocks)} blocks of {nbytes >> 20} MiB, {online} online, "
                          f"{removable} listed removable; offlining untested until a run with "
                          f"--allow-offline tries it",
            {"block_size": nbytes, "blocks": len(blocks), "removable": removable})

    meminfo, why = r.read("/proc/meminfo")
    cma = re.search(r"^CmaTotal:\s+(\d+) kB", meminfo or "", re.M)
    if meminfo is None:
        caps["cma"] = Capability(False, why)
    elif not cma:
        caps["cma"] = Capability(False, "no CmaTotal in /proc/meminfo (kernel without CONFIG_CMA)")
    elif int(cma.group(1)) == 0:
        caps["cma"] = Capability(False, "CmaTotal is 0 kB: no CMA area reserved (cma= on the "
                                        "kernel command line)")
    else:
        caps["cma"] = Capability(True, f"CmaTotal {cma.group(1)} kB",
                                 {"cma_kb": int(cma.group(1))})

    zoneinfo, why = r.read("/proc/zoneinfo")
    zones = {}
    for m in re.finditer(r"^Node\s+(\d+), zone\s+(\S+)\n(.*?)(?=^Node|\Z)", zoneinfo or "",
                         re.M | re.S):
        present = re.search(r"^\s+present\s+(\d+)", m.group(3), re.M)
        managed = re.search(r"^\s+managed\s+(\d+)", m.group(3), re.M)
        if present and managed and int(present.group(1)):
            zones[f"{m.group(1)}/{m.group(2)}"] = (int(present.group(1)), int(managed.group(1)))
    if not zones:
        caps["zones"] = Capability(False, why or "no populated zone in /proc/zoneinfo")
    else:
        present = sum(p for p, _ in zones.values())
        managed = sum(m for _, m in zones.values())
        detail = ", ".join(f"{k} {m * 4 >> 10} of {p * 4 >> 10} MiB managed"
                           for k, (p, m) in zones.items())
        if managed < present * 0.9:
            detail += (f"; the buddy allocator manages {managed * 100 // present}% of present "
                       f"memory (deferred or lazy struct page init?): the rest joins later")
        caps["zones"] = Capability(True, detail, {"present_pages": present,
                                                  "managed_pages": managed})

    kpf = r.path("/proc/kpageflags")
    if not kpf.exists():
        caps["pagemap"] = Capability(False, "missing file /proc/kpageflags (kernel without "
                                            "CONFIG_PROC_PAGE_MONITOR): fault sizes not observable")
    elif not is_root:
        caps["pagemap"] = Capability(False, "/proc/kpageflags and the PFNs of /proc/self/pagemap "
                                            "need root")
    else:
        caps["pagemap"] = Capability(True, "/proc/self/pagemap PFNs and /proc/kpageflags "
                                           "readable: fault sizes are observed")

    swaps, why = r.read("/proc/swaps")
    devices = [line.split()[0] for line in (swaps or "").splitlines()[1:] if line.strip()]
    caps["swap"] = Capability(swaps is not None, (", ".join(devices) if devices else
                              "no swap device active (a run adds a temporary swap file)")
                              if swaps is not None else why, {"devices": devices})

    z, why = r.read("/sys/module/zswap/parameters/enabled")
    caps["zswap"] = Capability(z is not None, f"enabled={z}" if z is not None else
                               why + " (kernel without zswap)")
    k, why = r.read("/sys/kernel/mm/ksm/run")
    caps["ksm"] = Capability(k is not None, f"run={k}" if k is not None else
                             why + " (kernel without CONFIG_KSM)")
    return caps


def format_probe(caps):
    width = max(len(n) for n in caps)
    return "\n".join(f"{name:{width}}  {'yes' if c.available else 'no ':3}  {c.detail}"
                     for name, c in caps.items())
