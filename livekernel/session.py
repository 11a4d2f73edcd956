"""A live run's guard rails: root, the memory cap, the arena, the journal around it all.

    with LiveSession(mem="1G", mem_cap="50%") as live:
        row = workloads.run_one("highalloc", "kernel", backend_factory=live.factory)

The arena is what the workloads size themselves against (backend.total_pages): `mem` when
given, else the cap. The cap defaults to 50% of MemAvailable (psutil), so a workload that
"fills 95% of memory" fills 95% of the arena, never of the host. Asking for an arena above the
cap is refused before anything is touched.

Inside a disposable guest (FOLIOBENCH_GUEST=1, set by `foliobench guest`) the cap is lifted:
the default becomes GUEST_CAP of MemAvailable (the guest's own memory, not a host's), and the
backends are `disposable`, so a probe may fill the whole arena and make the kernel compact
directly (workloads.matrix_probes). The host keeps the 50% cap.
"""
import functools
import os
import re

import psutil

from simcore.units import format_size, parse_size

from .backend import LiveBackend
from .journal import LiveRunBusy, SettingsJournal

DEFAULT_CAP = "50%"
# in a disposable guest: what MemAvailable leaves (10%) is the kernel's and the run's own slack
# (page tables, the pagemap reads, Python), so filling the arena does not end in the OOM killer
GUEST_CAP = "90%"
# where a live run keeps its journal for `foliobench live restore` after a SIGKILL
STATE_DIR = os.environ.get("FOLIOBENCH_STATE_DIR", "/run/foliobench")
MIN_ARENA = 64 << 20
LOCK_WAIT_S = 10.0            # how long a live run waits for another one to end
LIVE_STRATEGY = "kernel"


class LiveRefused(ValueError):
    """The live run will not start (no root, over the cap): one line for the user."""


def require_root():
    uid = os.geteuid()
    if uid != 0:
        raise LiveRefused(f"live runs change kernel settings and need root (running as uid "
                          f"{uid}); --dry-run shows what a run would change")


def in_guest():
    """True inside a disposable guest booted by `foliobench guest`."""
    return os.environ.get("FOLIOBENCH_GUEST") == "1"


def default_cap():
    """The memory cap when none is given: GUEST_CAP in a disposable guest, else DEFAULT_CAP."""
    return GUEST_CAP if in_guest() else DEFAULT_CAP


def mem_cap_bytes(spec=DEFAULT_CAP, available=None):
    """The cap in bytes: "NN%" of MemAvailable or a size ("4G")."""
    available = psutil.virtual_memory().available if available is None else available
    text = str(spec).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if match:
        pct = float(match.group(1))
        if not 0 < pct <= 90:
            raise LiveRefused(f"--mem-cap {spec!r}: a share of MemAvailable must be in (0, 90]%")
        return int(available * pct / 100)
    cap = parse_size(text, "--mem-cap")
    if cap > available * 0.9:
        raise LiveRefused(f"--mem-cap {spec!r} is above 90% of MemAvailable "
                          f"({format_size(available >> 20 << 20)})")
    return cap


def arena_bytes(mem=None, cap=DEFAULT_CAP, available=None):
    """The arena for a live run: `mem` (refused above the cap) or the cap itself, in whole
    2 MiB units."""
    available = psutil.virtual_memory().available if available is None else available
    cap_bytes = mem_cap_bytes(cap, available)
    if mem is None:
        size = cap_bytes
    else:
        size = parse_size(mem, "--mem")
        if size > cap_bytes:
            raise LiveRefused(f"--mem {mem} would exceed the live memory cap of "
                              f"{cap_bytes >> 20} MiB ({cap} of MemAvailable "
                              f"{available >> 20} MiB); lower --mem or raise --mem-cap")
    size = size >> 21 << 21
    if size < MIN_ARENA:
        raise LiveRefused(f"the live arena ({size >> 20} MiB) is below {MIN_ARENA >> 20} MiB")
    return size


class LiveSession:
    """Root check, arena, and the journal every live backend writes through.

    dry_run: nothing is written, mapped or allocated; each write is printed (no root needed).
    allow_offline: memory blocks may be offlined (each onlined again at the end).
    allow_poison: the memory-failure probe may soft-offline pages (out of service until reboot).
    allow_zswap: the zswap probe may switch zswap on where it is off (large swap-in then stays
    off until reboot).
    mem_cap: None is default_cap() (50% of MemAvailable; GUEST_CAP in a disposable guest, whose
    backends may then fill their whole arena).
    swap_kind: the temporary swap area a swap-out makes: "file" (in workdir) or "zram".
    workdir: where the private temporary directory for page-cache files goes (a disk
    filesystem: tmpfs holes never enter the page cache)."""

    def __init__(self, mem=None, mem_cap=None, dry_run=False, allow_offline=False,
                 workdir="/var/tmp", out=None, allow_poison=False, swap_kind="file",
                 allow_zswap=False):
        if not dry_run:
            require_root()
        self.disposable = in_guest()
        self.arena = arena_bytes(mem, mem_cap or default_cap())
        self.mem = format_size(self.arena)
        self.journal = SettingsJournal(dry_run=dry_run, out=out, state_dir=STATE_DIR)
        self.journal.lock_timeout = LOCK_WAIT_S
        self.allow_offline = allow_offline
        self.allow_poison = allow_poison
        self.allow_zswap = allow_zswap
        self.swap_kind = swap_kind
        self.workdir = workdir
        if not os.path.isdir(workdir):
            raise LiveRefused(f"--live-dir {workdir!r} is not a directory")

    @property
    def factory(self):
        return functools.partial(LiveBackend, journal=self.journal, arena_bytes=self.arena,
                                 allow_offline=self.allow_offline,
                                 allow_poison=self.allow_poison,
                                 allow_zswap=self.allow_zswap, workdir=self.workdir,
                                 swap_kind=self.swap_kind, disposable=self.disposable)

    def __enter__(self):
        try:
            self.journal.__enter__()
        except LiveRunBusy as exc:
            raise LiveRefused(str(exc)) from None
        return self

    def __exit__(self, *exc):
        return self.journal.__exit__(*exc)
