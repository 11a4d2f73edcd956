"""highalloc: allocate a share of memory as order-9 blocks under load, again under load, and
at rest (mmtests highalloc)."""
import numpy as np

from .base import Param, Workload, register, share


@register
class HighAlloc(Workload):
    name = "highalloc"
    headline = ("success_load1", "success_load2", "success_rest")
    description = " ".join(__doc__.split("\n\n")[0].split()).split(": ", 1)[1]
    params = {
        "share": Param(0.35, "share of memory requested as order-9 blocks per pass",
                       low=0.05, high=0.95),
        "load": Param(0.6, "share of memory held by the background load", low=0.0, high=0.9),
        "slab": Param(0.05, "share of the load that is unmovable slab", low=0.0, high=1.0),
    }

    def run(self, backend, p, extra):
        total = backend.total_pages
        rng = backend.rng
        # Background load: page cache and anon of mixed small orders and some slab, faulted
        # over most of memory and then thinned at random to `load`, so that it is spread thin.
        load = []
        load_pages = int(total * 0.9)
        for order, kind, mt, part in ((0, "file", "movable", 0.3 - p["slab"]),
                                      (2, "anon", "movable", 0.3), (4, "anon", "movable", 0.4),
                                      (0, "slab", "unmovable", p["slab"])):
            load.append(backend.alloc(int(load_pages * max(part, 0)) >> order, order, kind, mt,
                                      compact=False))
        load = np.concatenate(load)
        gone = rng.random(len(load)) < 1 - p["load"] / 0.9
        backend.free(load[gone])
        load = load[~gone]
        want = int(total * p["share"]) >> 9
        extra["map_before"] = backend.pageblock_map()
        figures = {"requested": 0, "granted": 0}
        for phase in ("load1", "load2", "rest"):
            if phase == "rest":
                backend.free(load)
                backend.tick(1000)
            else:
                # churn the load: free a random fifth, allocate it again
                gone = rng.random(len(load)) < 0.2
                backend.free(load[gone])
                load = np.concatenate([load[~gone], backend.alloc(int(gone.sum()), 0, "file",
                                                                  compact=False)])
            got = backend.alloc(want, 9)
            figures[f"success_{phase}"] = share(len(got), want)
            figures["requested"] += want
            figures["granted"] += len(got)
            backend.free(got)
        return figures
