"""cma-reservations: a CMA area filled by movable allocations, large folios included, then
cma_alloc of contiguous ranges of a size mix, migrating out what is there (alloc_contig_range)."""
import numpy as np

from .base import Param, Workload, parse_size_mix, register


@register
class CmaReservations(Workload):
    name = "cma-reservations"
    headline = ("cma_latency_ms_median",)
    description = " ".join(__doc__.split("\n\n")[0].split()).split(": ", 1)[1]
    machine = {"cma": "cma_size"}
    params = {
        "cma_size": Param("1G", "size of the CMA area", quick="128M"),
        "fill": Param(0.9, "share of memory filled with movable folios", low=0.1, high=0.95),
        "mix": Param("4K:2,64K:1,2M:1", "folio size mix of the fill"),
        "pinned": Param(0.01, "share of the folios pinned", low=0.0, high=1.0),
        "requests": Param("2M:4,8M:2,32M:1", "cma_alloc sizes and counts (size:count,...)",
                          quick="2M:4,8M:2"),
    }

    def run(self, backend, p, extra):
        rng = backend.rng
        total = backend.total_pages
        mix = parse_size_mix(p["mix"])
        weights = np.array(list(mix.values()))
        weights = weights / weights.sum()
        held = []
        for o, w in zip(mix, weights):
            held.append(backend.alloc(int(total * p["fill"] * w) >> o, o, compact=False))
        held = np.concatenate(held)
        backend.set_flags(held[rng.random(len(held)) < p["pinned"]], "pinned")
        requested = granted = 0
        extra["map_before"] = backend.pageblock_map()
        latencies = []
        for item in str(p["requests"]).split(","):
            size, _, count = item.partition(":")
            nbytes = simcore_size(size)
            for _ in range(int(count or 1)):
                before = backend.counters()["migrate_time_ns"]
                token = backend.cma_alloc(nbytes // 4096)
                latencies.append(backend.counters()["migrate_time_ns"] - before)
                requested += 1
                granted += token is not None
        return {"requested": requested, "granted": granted,
                "cma_latency_ms_median": float(np.median(latencies)) / 1e6 if latencies else
                float("nan")}


def simcore_size(text):
    from simcore.units import parse_size
    return parse_size(text.strip(), "cma request size")
