"""Snapshot the running kernel's physical memory (read-only; root).

take() reads /proc/kpageflags and /proc/kpagecount to the end of memory in 8 MiB preads, the
text of /proc/zoneinfo, pagetypeinfo, buddyinfo, vmstat and meminfo, the THP/mTHP settings under
/sys/kernel/mm/transparent_hugepage, the vm sysctls and the kernel release, and returns a
simcore.snapshot_file.Snapshot; write() saves it atomically. Nothing is written to the kernel.

The kernel keeps changing while we read: buddyinfo is read once before the per-PFN files and
once after ("buddyinfo_after"), so a reader can see how much moved during the capture.
"""
import os
import pathlib
import platform
import time

import numpy as np

from simcore import snapshot_file

CHUNK = 8 << 20
PROC_FILES = ("zoneinfo", "pagetypeinfo", "buddyinfo", "vmstat", "meminfo")
THP_DIR = pathlib.Path("/sys/kernel/mm/transparent_hugepage")
VM_SYSCTL_DIR = pathlib.Path("/proc/sys/vm")


class SnapshotError(Exception):
    """The snapshot cannot be taken (no root, a file the kernel does not offer)."""


def read_words(path, dtype=np.uint64):
    """Every 8-byte word of a /proc per-PFN file, read in CHUNK-sized preads to its end."""
    parts = []
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while True:
            chunk = os.pread(fd, CHUNK, offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(parts)
    return np.frombuffer(data[:len(data) // 8 * 8], dtype=dtype)


def _read_text(path):
    try:
        return pathlib.Path(path).read_text()
    except OSError:
        return None


def _settings():
    """THP/mTHP settings (path under transparent_hugepage -> text) and the vm sysctls."""
    out = {}
    if THP_DIR.is_dir():
        for path in sorted(THP_DIR.rglob("*")):
            if path.is_file() and "stats" not in path.parts:
                text = _read_text(path)
                if text is not None:
                    out[f"thp/{path.relative_to(THP_DIR)}"] = text.strip()
    if VM_SYSCTL_DIR.is_dir():
        for path in sorted(VM_SYSCTL_DIR.iterdir()):
            if path.is_file() and os.access(path, os.R_OK) and path.name != "compact_memory":
                text = _read_text(path)
                if text is not None:
                    out[f"vm/{path.name}"] = text.strip()
    return out


def require_root():
    if os.geteuid() != 0:
        raise SnapshotError(f"a snapshot reads /proc/kpageflags and needs root (running as uid "
                            f"{os.geteuid()})")


def take(proc="/proc"):
    """A Snapshot of the running kernel (see the module docstring)."""
    require_root()
    started = time.monotonic()
    files = {}
    for name in PROC_FILES:
        text = _read_text(f"{proc}/{name}")
        if text is None:
            raise SnapshotError(f"cannot read {proc}/{name}")
        files[name] = text
    try:
        flags = read_words(f"{proc}/kpageflags")
        counts = read_words(f"{proc}/kpagecount")
    except OSError as exc:
        raise SnapshotError(f"cannot read the per-PFN files: {exc}") from None
    files["buddyinfo_after"] = _read_text(f"{proc}/buddyinfo") or ""
    read_s = time.monotonic() - started
    nr = min(len(flags), len(counts))
    meta = {"captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "read_seconds": round(read_s, 3), "host": platform.node(),
            "page_size": os.sysconf("SC_PAGE_SIZE")}
    return snapshot_file.Snapshot(flags[:nr].copy(), np.minimum(counts[:nr], snapshot_file.KPC_MAX)
                                  .astype(np.uint16), files, _settings(), platform.release(), meta)


def write(path):
    """Take a snapshot and save it atomically at `path`; (snapshot, seconds, bytes written)."""
    started = time.monotonic()
    snap = take()
    snapshot_file.save(path, snap)
    return snap, time.monotonic() - started, os.path.getsize(path)
