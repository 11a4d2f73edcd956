"""A quick way to fragment a machine: interleaved movable, page-cache and slab allocations filling
most of memory, then a random half of the movable ones freed (the shape of mmtests' thpfioscale
and highalloc preparations, without their timing)."""
import numpy as np

from simcore.mmzone import PAGEBLOCK_NR_PAGES

# (order, migratetype, kind, share of the filled pages)
DEFAULT_MIX = (
    (0, "movable", "anon", 0.20),
    (2, "movable", "anon", 0.15),
    (4, "movable", "anon", 0.15),
    (9, "movable", "anon", 0.15),
    (0, "movable", "file", 0.15),
    (2, "movable", "file", 0.10),
    (0, "unmovable", "slab", 0.05),
    (0, "reclaimable", "slab", 0.05),
)


def fragment(machine, fill=0.9, free_share=0.5, mix=DEFAULT_MIX, batch_pages=PAGEBLOCK_NR_PAGES):
    """Fill `fill` of the machine's pages with `mix`, a batch of each entry in turn, then free
    `free_share` of the movable folios, chosen with the machine's seeded generator.

    Returns the head PFNs still allocated (movable survivors and all unmovable ones)."""
    if not 0 < fill <= 1 or not 0 <= free_share <= 1:
        raise ValueError(f"fill {fill!r} must be in (0, 1] and free_share {free_share!r} in [0, 1]")
    rng = machine.rng
    target = int(machine.managed_pages * fill)
    shares = np.array([entry[3] for entry in mix], dtype=float)
    shares /= shares.sum()
    allocated = [[] for _ in mix]
    used = 0
    exhausted = np.zeros(len(mix), dtype=bool)
    while used < target and not exhausted.all():
        for i, (order, mt, kind, _) in enumerate(mix):
            if exhausted[i]:
                continue
            want = max(1, int(batch_pages * shares[i] * len(mix)) >> order)
            want = min(want, max(1, (target - used) >> order))
            pfns = machine.alloc_many(want, order, mt, kind)
            allocated[i].append(pfns)
            used += len(pfns) << order
            if len(pfns) < want:
                exhausted[i] = True
            if used >= target:
                break
    keep = []
    for (_order, mt, _, _), chunks in zip(mix, allocated):
        pfns = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        if mt == "movable":
            gone = rng.random(len(pfns)) < free_share
            machine.free_many(pfns[gone])
            pfns = pfns[~gone]
        keep.append(pfns)
    return np.concatenate(keep)


def thpcompact_pattern(machine, fill=0.8, order=4, refill=0.5):
    """mmtests thpcompact's shape: anonymous memory faulted as order-`order` folios over `fill`
    of the machine, the first half of every 2 MiB chunk unmapped, and `refill` of the holes
    filled again with page cache (order 0). Returns the head PFNs still allocated."""
    if not 0 < fill <= 1 or not 0 <= refill <= 1:
        raise ValueError(f"fill {fill!r} must be in (0, 1] and refill {refill!r} in [0, 1]")
    anon = machine.alloc_many(int(machine.managed_pages * fill) >> order, order, "movable",
                              "anon", compact=False)
    first_half = (anon & (PAGEBLOCK_NR_PAGES - 1)) < PAGEBLOCK_NR_PAGES // 2
    machine.free_many(anon[first_half])
    holes = int(first_half.sum()) << order
    cache = machine.alloc_many(int(holes * refill), 0, "movable", "file", compact=False)
    return np.concatenate([anon[~first_half], cache])
