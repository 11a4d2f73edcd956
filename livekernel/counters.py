"""What the live backend reads back, as a base of LiveBackend: /proc/vmstat with the per-size
mTHP stats, /proc/buddyinfo and the fragmentation indices over it, KSM's counters and the
wall time measured per subsystem."""
from simcore import vmstat as simvmstat
from simcore.procfs import parse_buddyinfo, parse_vmstat

from . import ksm


class Counters:
    """Counter readings (LiveBackend sets _sizes, migrate_time_ns and time_ns)."""

    def counters(self):
        with open("/proc/vmstat") as fh:
            out = parse_vmstat(fh.read())
        for order, d in self._sizes.items():
            stats = d / "stats"
            for f in stats.iterdir() if stats.is_dir() else ():
                try:
                    out[f"mthp_{4 << order}K_{f.name}"] = int(f.read_text())
                except (OSError, ValueError):
                    pass
        out["migrate_time_ns"] = self.migrate_time_ns
        out["migrate_large_succeeded"] = out.get("thp_migration_success", 0)
        out["migrate_nr_split"] = out.get("thp_migration_split", 0)
        return out

    def _nr_free(self):
        with open("/proc/buddyinfo") as fh:
            return parse_buddyinfo(fh.read())

    def fragmentation(self):
        zones = self._nr_free().values()
        return {"fragindex": max(simvmstat.fragmentation_index(nr, 9) for nr in zones),
                "unusable": max(simvmstat.unusable_free_index(nr, 9) for nr in zones)}

    def buddyinfo(self):
        with open("/proc/buddyinfo") as fh:
            return fh.read()

    def pageblock_map(self):
        """None: pageblock migratetypes are not exported to user space (pagetypeinfo has only
        per-zone counts), so the live kernel has no fragmentation map."""
        return None


    def extra_counters(self):
        """Per-size mTHP stats as "hugepages-64kB/swpout", KSM's counters as "ksm/...", and
        the wall time measured per subsystem as "time_ns/...". """
        out = {}
        for _order, d in self._sizes.items():
            stats = d / "stats"
            for f in stats.iterdir() if stats.is_dir() else ():
                try:
                    out[f"{d.name}/{f.name}"] = int(f.read_text())
                except (OSError, ValueError):
                    pass
        if ksm.available():
            out.update(ksm.counters())
        out.update({f"time_ns/{k}": v for k, v in self.time_ns.items()})
        return out
