"""hotunplug-cycles: memory blocks offlined and onlined in cycles under load; offline isolates
the block and migrates everything out, failing (EBUSY) on unmovable or pinned pages."""
import numpy as np

from .base import Param, Workload, register, share


@register
class HotunplugCycles(Workload):
    name = "hotunplug-cycles"
    headline = ("offline_success", "offline_failures")
    description = " ".join(__doc__.split("\n\n")[0].split()).split(": ", 1)[1]
    machine = {"movable": "movable", "memory_block": "block"}
    params = {
        "block": Param("128M", "memory block size", choices=("32M", "64M", "128M", "256M")),
        "movable": Param("4G", "ZONE_MOVABLE size (0 for none)", quick="256M"),
        "fill": Param(0.7, "share of memory filled under load", low=0.1, high=0.9),
        "slab": Param(0.02, "share of the fill that is unmovable slab", low=0.0, high=0.5),
        "pinned": Param(0.0, "share of movable folios pinned (short-term pins)", low=0.0,
                        high=1.0),
        "cycles": Param(8, "offline/online cycles", quick=4, low=1, high=1000),
    }

    def run(self, backend, p, extra):
        rng = backend.rng
        total = backend.total_pages
        pages = int(total * p["fill"])
        held = [backend.alloc(int(pages * 0.4), 0, "file", compact=False),
                backend.alloc(int(pages * 0.3) >> 4, 4, "anon", compact=False),
                backend.alloc(int(pages * (0.3 - p["slab"])) >> 9, 9, "anon", compact=False),
                backend.alloc(int(pages * p["slab"]), 0, "slab", "unmovable", compact=False)]
        movable = np.concatenate(held[:3])
        backend.set_flags(movable[rng.random(len(movable)) < p["pinned"]], "pinned")
        blocks = backend.memory_blocks()
        movable_zone = [b["index"] for b in blocks if b["zone"] == "Movable" and b["removable"]]
        candidates = movable_zone or [b["index"] for b in blocks if b["zone"] == "Normal"
                                      and b["removable"]] or [b["index"] for b in blocks
                                                              if b["removable"]]
        ok = 0
        time0 = backend.counters()["migrate_time_ns"]
        extra["map_before"] = backend.pageblock_map()
        reasons = {}
        for _cycle in range(p["cycles"]):
            index = int(candidates[rng.integers(len(candidates))])
            done, reason = backend.offline_block(index)
            if done:
                ok += 1
                backend.online_block(index)
            else:
                key = reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
            backend.tick(100)
        extra["offline_failures"] = reasons
        cycle_ms = (backend.counters()["migrate_time_ns"] - time0) / 1e6 / p["cycles"]
        # the reasons go into the row too (the saved table, the printed one): "busy: 3; ..."
        failures = "; ".join(f"{k}: {n}" for k, n in sorted(reasons.items()))
        return {"requested": p["cycles"], "granted": ok, "offline_success": share(ok, p["cycles"]),
                "offline_failures": failures, "modelled_ms_per_cycle": cycle_ms,
                "zone_movable_blocks": len(movable_zone)}
