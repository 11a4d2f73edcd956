"""Swap on the live kernel: a temporary swap area, and reclaim of chosen folios to it.

The swap area is a file by default, or (kind="zram") a zram device of the run's own: a block
device with SWP_SYNCHRONOUS_IO, the kind of device whose large-folio swap-out and swap-in the
kernel supports (and the simulator's swap area models). The swap file (swap_area()) is made
once per settings journal, in the live run's work directory (a disk filesystem: swapon refuses
tmpfs): written with zeroes (not fallocate, whose unwritten
extents some filesystems refuse for swap), mkswap, swapon at a high priority so that it takes
every page reclaimed during the run. Its undo actions (swapoff, then the file removed) are in the
journal, so the file goes on normal exit, on errors, Ctrl-C, and after a SIGKILL through
`foliobench live restore`.

Reclaim is madvise(MADV_PAGEOUT) on the folios' range (madvise_cold_or_pageout_pte_range() ->
reclaim_pages() -> shrink_folio_list(), the same path as memory-cgroup reclaim, but of exactly
the folios asked for and without a memory limit on the process). shrink_folio_list() starts the
write and leaves a folio whose write has not finished in the swap cache; a later fault would
find it there, with no swap-in at all. pageout() therefore waits for the writeback to finish,
drains the per-CPU LRU batches (a folio in one cannot be freed), maps back with read faults
only the pages mincore() still finds resident (swap-cache hits: no device read, no
readahead) and reclaims them again: clean swap-cache folios are freed at once, so the next
touch really reads them from the device (swap_read_folio(), pswpin). Faulting every page
on a later pass would read the already freed ones back, and swap readahead would leave their
neighbours in the swap cache. With zswap on, zswap_store() is synchronous and the first pass
frees the folios already: no second pass, so zswpout counts each page once; so does a synchronous
device (zram).

A swap *file* never takes a large folio whole: cluster_alloc_swap_entry() (mm/swapfile.c)
refuses order > 0 entries without SWP_BLKDEV ("Swapfile is not block device"), so
shrink_folio_list() splits every large folio first (swpout_fallback, thp_swpout_fallback), and
a swap file is not SWP_SYNCHRONOUS_IO, so swap-in is order 0 (with swap readahead).
"""
import os
import subprocess
import time

import numpy as np

from . import pageflags

MADV_PAGEOUT = 21
KPF_WRITEBACK = 8
SWAP_BYTES = 128 << 20            # a cell swaps at most 16 MiB; swap never reaches half full
PRIORITY = 32767                  # above any swap device the host has
WRITEBACK_TIMEOUT_S = 10.0
MAX_PASSES = 5
_AREAS = {}                       # id(journal) -> swap file or device path
KINDS = ("file", "zram")
ZRAM_CONTROL = "/sys/class/zram-control"


def swap_area(journal, directory, kind="file"):
    """The run's swap area (made and swapped on at the first call for this journal): a swap
    file in `directory`, or kind="zram" a zram device of its own."""
    check_kind(kind)
    key = id(journal)
    if key in _AREAS and not journal.restored:
        return _AREAS[key]
    if kind == "zram":
        return _zram_area(journal, key)
    if kind.startswith("/dev/"):
        return _device_area(journal, key, kind)
    path = os.path.join(directory, f"foliobench-live-swap-{os.getpid()}")
    if journal.dry_run:
        journal.run(["swapon", "-p", PRIORITY, path], ["swapoff", path])
        _AREAS[key] = None
        return None
    with journal.critical():              # no signal between creating and journaling it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        journal.add_undo(f"remove the swap file {path}", lambda: _unlink(path), remove=[path])
    try:
        chunk = b"\0" * (1 << 20)
        for _ in range(SWAP_BYTES >> 20):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    _mkswap(path)
    _swapon(journal, path)
    _AREAS[key] = path
    journal.add_undo("forget the swap file", lambda: _AREAS.pop(key, None))
    return path


def check_kind(kind):
    """ValueError unless kind is "file", "zram", or a block device path, which is only taken in
    a disposable guest (FOLIOBENCH_GUEST, set by foliobench guest): mkswap overwrites it."""
    if kind in KINDS:
        return kind
    if str(kind).startswith("/dev/"):
        if not os.environ.get("FOLIOBENCH_GUEST"):
            raise ValueError(f"swap device {kind}: a whole block device is only swapped on in "
                             f"a disposable guest (foliobench guest --swap-disk); use file or "
                             f"zram here")
        return kind
    raise ValueError(f"swap kind {kind!r} is unknown; allowed: {', '.join(KINDS)}, or "
                     f"/dev/DEVICE in a guest")


def _device_area(journal, key, dev):
    """A whole block device (the guest's own virtio disk): SWP_BLKDEV, so large folios may be
    swapped out whole, but not SWP_SYNCHRONOUS_IO, so swap-in is order 0. Refused when it is
    mounted or already swapped on. Undo: swapoff."""
    if not os.path.exists(dev):
        raise OSError(2, f"no swap device {dev}")
    with open("/proc/mounts") as fh:
        if any(line.split()[0] == dev for line in fh):
            raise OSError(16, f"swap device {dev} is mounted")
    if dev in swap_devices():
        raise OSError(16, f"swap device {dev} is already swapped on")
    if not journal.dry_run:
        _mkswap(dev)
    _swapon(journal, dev)
    _AREAS[key] = dev
    journal.add_undo("forget the swap device", lambda: _AREAS.pop(key, None))
    return dev


def _zram_area(journal, key):
    """A zram device of our own (zram-control/hot_add; never one the host already has), sized
    SWAP_BYTES, swapped on. Undo, newest first: swapoff, reset, hot_remove."""
    if not os.path.exists(f"{ZRAM_CONTROL}/hot_add"):
        raise OSError(2, f"no {ZRAM_CONTROL}/hot_add (zram neither built in nor loaded: "
                         f"`modprobe zram num_devices=0` loads it without a device)")
    if journal.dry_run:
        journal.run(["swapon", "-p", PRIORITY, "/dev/zramN"], ["swapoff", "/dev/zramN"])
        _AREAS[key] = None
        return None
    with journal.critical():              # no signal between adding and journaling it
        with open(f"{ZRAM_CONTROL}/hot_add") as fh:    # reading it adds a device
            index = int(fh.read())
        name, dev = f"zram{index}", f"/dev/zram{index}"
        journal.add_undo(f"remove {name}", lambda: _sysfs(f"{ZRAM_CONTROL}/hot_remove", index),
                         command=["sh", "-c", f"echo {index} > {ZRAM_CONTROL}/hot_remove"])
    journal.add_undo(f"reset {name}", lambda: _sysfs(f"/sys/block/{name}/reset", 1),
                     command=["sh", "-c", f"echo 1 > /sys/block/{name}/reset"])
    _sysfs(f"/sys/block/{name}/disksize", SWAP_BYTES)
    deadline = time.monotonic() + 5
    while not os.path.exists(dev) and time.monotonic() < deadline:
        time.sleep(0.01)                               # udev/devtmpfs makes the node
    _mkswap(dev)
    _swapon(journal, dev)
    _AREAS[key] = dev
    journal.add_undo("forget the swap device", lambda: _AREAS.pop(key, None))
    return dev


def _mkswap(path):
    made = subprocess.run(["mkswap", path], capture_output=True, text=True)
    if made.returncode:
        raise OSError(made.returncode, f"mkswap {path}: {made.stderr.strip()}")


def _swapon(journal, path):
    """swapon at PRIORITY; its swapoff is journaled, on disk too, before swapon runs (a SIGKILL
    just after the swapon() syscall must leave the swapoff to `foliobench live restore`), and
    only swaps off what /proc/swaps lists (swap_show() pads the name with spaces)."""
    swapoff = ["sh", "-c", 'if grep -qF -- "$1 " /proc/swaps; then swapoff "$1"; fi', "sh", path]
    journal.run(["swapon", "-p", PRIORITY, path], swapoff, f"swapoff {path}", undo_first=True)


def _sysfs(path, value):
    with open(path, "w") as fh:
        fh.write(str(value))


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def swap_devices():
    """The swap areas /proc/swaps lists now."""
    with open("/proc/swaps") as fh:
        return [line.split()[0] for line in fh.read().splitlines()[1:] if line.strip()]


def _under_writeback(pfns):
    """Per PFN: under writeback (KPF_WRITEBACK, and not a free buddy page), /proc/kpageflags."""
    words = pageflags.kpageflags(pfns)

    def bit(b):
        return ((words >> np.uint64(b)) & np.uint64(1)).astype(bool)

    return bit(KPF_WRITEBACK) & ~bit(pageflags.KPF_BUDDY)


def _wait_writeback(pfns):
    deadline = time.monotonic() + WRITEBACK_TIMEOUT_S
    while len(pfns) and _under_writeback(pfns).any() and time.monotonic() < deadline:
        time.sleep(0.002)


def pageout(mapping, start, length, madvise):
    """Reclaim [start, start + length) of `mapping` to swap and make sure that no page of it
    stays mapped or in the swap cache (see the module docstring). A pass: MADV_PAGEOUT, wait
    until the pages' writeback ends (KPF_WRITEBACK of the PFNs they had, so other I/O on the
    host does not matter), drain every CPU's LRU batches, then ask mincore() which pages are
    still resident; those are mapped back with read faults (swap-cache hits: nothing is read,
    nothing read ahead) and the next pass frees them. At most MAX_PASSES passes.
    madvise(advice, start, length) is the mapping's."""
    nr_pages = length // 4096
    left = np.zeros(nr_pages, dtype=bool)       # resident after the previous pass
    for attempt in range(MAX_PASSES):
        if attempt:
            view = mapping.bytes(start, length)
            int(view[np.flatnonzero(left) * 4096].sum())
        pfns, present = pageflags.pagemap(mapping.addr + start, nr_pages)
        madvise(MADV_PAGEOUT, start, length)
        _wait_writeback(pfns[present])
        _drain_lru_batches(lambda: madvise(MADV_PAGEOUT, start, length))
        left = pageflags.resident(mapping.addr + start, nr_pages)
        if not left.any():
            return        # zswap or a synchronous device frees them in the first pass


def _drain_lru_batches(call):
    """Run `call` (a madvise(MADV_PAGEOUT), which starts with lru_add_drain()) once on each
    CPU this process may use, so no per-CPU folio batch (lru_add, lru_rotate, ...) holds a
    reference to one of our folios: a folio in a batch cannot be freed, and folios whose
    writeback ended with PG_reclaim wait in the lru_rotate batch of the CPU that completed
    the I/O. lru_add_drain_all() would do it in one go but has no system call of its own."""
    before = os.sched_getaffinity(0)
    try:
        for cpu in sorted(before):
            os.sched_setaffinity(0, {cpu})
            call()
    finally:
        os.sched_setaffinity(0, before)
