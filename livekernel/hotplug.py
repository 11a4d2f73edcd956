"""Memory blocks and CMA on the live kernel, as a base of LiveBackend: memory_blocks() from
/sys/devices/system/memory, offline_block()/online_block() through the journal (only with
allow_offline, only blocks listed removable; a ZONE_MOVABLE block comes back as
online_movable; an online ZONE_MOVABLE block says how many of its pages are PG_reserved, early-boot
memory that makes its offlining fail with EBUSY), cma_alloc() Unsupported."""
import pathlib
import signal
import time

from workloads.backend import Unsupported

from . import pageflags
from .arena import PAGE
from .knobs import MEMORY, read_text

OFFLINE_TIMEOUT_S = 20.0


class _OfflineTimeout(Exception):
    pass


def _online_movable(state):
    """Undo of offlining a ZONE_MOVABLE block: online it into ZONE_MOVABLE again."""
    if read_text(state) == "offline":
        with open(state, "w") as fh:
            fh.write("online_movable")


class MemoryBlocks:
    """CMA and memory-block steps (LiveBackend sets journal, allow_offline, _movable_blocks and
    migrate_time_ns)."""

    def cma_alloc(self, nr_pages):
        with open("/proc/meminfo") as fh:
            cma = [line for line in fh if line.startswith("CmaTotal:")]
        if not cma or int(cma[0].split()[1]) == 0:
            raise Unsupported("cma_alloc: no CMA area (CmaTotal 0 kB; reserve one with cma= on "
                              "the kernel command line)")
        raise Unsupported("cma_alloc: the kernel offers no user-space cma_alloc without "
                          "debugfs cma/<area>/alloc (CONFIG_CMA_DEBUGFS); not implemented")

    def cma_release(self, token):
        raise Unsupported("cma_release: no cma_alloc on the live kernel")

    def memory_blocks(self):
        base = pathlib.Path(MEMORY)
        try:
            block_pages = int((base / "block_size_bytes").read_text(), 16) // PAGE
        except OSError as exc:
            raise Unsupported(f"memory blocks: {exc}") from None
        out = []
        for d in sorted(base.glob("memory[0-9]*"), key=lambda p: int(p.name[6:])):
            idx = int(d.name[6:])

            def read(n, d=d):
                return (d / n).read_text().strip() if (d / n).exists() else ""

            zones = read("valid_zones").split()
            block = {"index": idx, "start_pfn": idx * block_pages, "nr_pages": block_pages,
                     "zone": zones[0] if len(zones) == 1 else (zones[0] if zones else "none"),
                     "state": read("state"), "removable": read("removable") == "1"}
            if block["zone"] == "Movable" and block["state"] == "online" and not self.dry_run:
                # movablecore= makes ZONE_MOVABLE of the top of each node after memblock has
                # put early-boot data there (top-down): has_unmovable_pages() finds those
                # PG_reserved pages and offline_pages() fails with EBUSY, whatever our folios
                block["reserved_pages"] = pageflags.reserved_pages(block["start_pfn"],
                                                                   block_pages)
            out.append(block)
        return out

    def offline_block(self, index):
        if not self.allow_offline:
            raise Unsupported("memory offline needs --allow-offline (allow_offline=True)")
        path = pathlib.Path(MEMORY) / f"memory{int(index)}"
        if not path.is_dir():
            raise ValueError(f"memory block {index!r} does not exist")
        if (path / "removable").read_text().strip() != "1":
            return False, "not listed removable by the kernel"
        if self.journal.read(path / "state") != "online":
            return False, "already offline"
        state = path / "state"
        movable = read_text(path / "valid_zones") == "Movable"
        if movable and int(index) not in self._movable_blocks:
            # "state" reads "online" whatever the zone, and writing "online" back lets the
            # kernel pick one (default_zone_for_pfn(): ZONE_NORMAL once the movable span no
            # longer covers the block): a ZONE_MOVABLE block comes back as online_movable
            self._movable_blocks.add(int(index))
            self.journal.add_undo(
                f"online memory{int(index)} into ZONE_MOVABLE",
                lambda: _online_movable(state),
                command=["sh", "-c", f"if [ \"$(cat {state})\" = offline ]; then "
                                     f"echo online_movable > {state}; fi"])
        t0 = time.perf_counter_ns()
        old = signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, OFFLINE_TIMEOUT_S)
        try:
            if int(index) in self._movable_blocks:
                self.journal.write_only(state, "offline")
            else:
                self.journal.write(state, "offline")
        except _OfflineTimeout:
            return False, f"ETIMEDOUT: offline still migrating after {OFFLINE_TIMEOUT_S:.0f} s"
        except Exception as exc:            # JournalError with the kernel's reason (EBUSY...)
            return False, str(exc).split(": ", 1)[-1]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            self.migrate_time_ns += time.perf_counter_ns() - t0
        return True, ""

    @staticmethod
    def _alarm(signum, frame):
        raise _OfflineTimeout

    def online_block(self, index):
        path = pathlib.Path(MEMORY) / f"memory{int(index)}" / "state"
        if self.journal.read(path) == "online":
            return False, "already online"
        if int(index) in self._movable_blocks:
            self.journal.write_only(path, "online_movable")
        else:
            self.journal.write(path, "online")
        return True, ""

