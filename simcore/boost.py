"""Watermark boosting after mm/page_alloc.c boost_watermark() and the fallback paths that call
it, and mm/vmscan.c balance_pgdat()'s boosted reclaim.

When an allocation falls back to a pageblock of another migratetype (a fragmenting fallback),
the zone's watermarks rise by a pageblock (zone->watermark_boost, at most
watermark_boost_factor/10000 of the high watermark), ZONE_BOOSTED_WATERMARK is set and, for a
request that may wake kswapd, kswapd is woken. kswapd then reclaims towards the boosted high
watermark without swapping or writing back, drops the boost and wakes kcompactd for
pageblock_order, so that compaction can clean up before the next fallback.

Which fallbacks boost is the profile's watermark_boost policy (BOOST_POLICIES):
- every_fallback (5.0 to 6.14): steal_suitable_fallback() boosts for every fallback short of
  taking a whole free pageblock (or a highatomic block).
- claim_only (6.15 on): try_to_claim_block() boosts when it tries to claim a partly used block;
  __rmqueue_steal()'s single-buddy steals (a movable request below pageblock_order/2) do not.

Simplified: fallbacks are seen after each Machine allocation call from the pageblocks that
changed type (claims) and the foreign blocks the new folios lie in (steals), one boost per
block; a claim of a wholly free block is told apart by the block holding no folio other than
this call's. The boost is added to the zone's min/low/high/promo marks (wmark_pages() adds it)
and taken off when kswapd finishes.
"""
import numba as nb
import numpy as np

from .mmzone import (
    MIGRATE_CMA,
    MIGRATE_HIGHATOMIC,
    MIGRATE_MOVABLE,
    PAGE_HEAD,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    PB_MIGRATETYPE_MASK,
    ZONE_NAMES,
)
from .pgdat import (
    Z_END,
    Z_MANAGED,
    Z_START,
    Z_WMARK_HIGH,
    Z_WMARK_MIN,
    Z_WMARK_PROMO,
    view_at,
)

jit = nb.njit(cache=True, nogil=True)

BOOST_POLICIES = {
    "every_fallback": "steal_suitable_fallback() boosts the watermarks for every fallback that "
                      "does not take a whole free pageblock",
    "claim_only": "try_to_claim_block() boosts on a claim attempt of a partly used block; "
                  "single-buddy steals of small movable requests do not",
}
DEFAULT_WATERMARK_BOOST_FACTOR = 15000


class Boost:
    """zone->watermark_boost per zone, and the sysctl."""

    def __init__(self, factor=DEFAULT_WATERMARK_BOOST_FACTOR):
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) \
                or not 0 <= factor < 1 << 31:
            raise ValueError(f"watermark_boost_factor {factor!r} must be an integer from 0 to "
                             f"{(1 << 31) - 1}")
        self.factor = int(factor)
        self.boost = np.zeros(len(ZONE_NAMES), dtype=np.int64)

    def state(self):
        return (self.factor, tuple(int(b) for b in self.boost))


def before_alloc(m):
    """What observe() compares with: the pageblock types before the call."""
    return m.pgdat.pageblock_flags & PB_MIGRATETYPE_MASK


def _should_try_claim_block(order, mt):
    """should_try_claim_block() for the request (the free buddy's order is not known after the
    fact; the request's order stands in for it)."""
    return order >= PAGEBLOCK_ORDER // 2 or mt != MIGRATE_MOVABLE


# PB_MIGRATETYPE_MASK in each byte of a word: _fallback_candidates() compares 8 blocks at once
_MT_MASK_WORD = np.uint64(int.from_bytes(bytes([PB_MIGRATETYPE_MASK]) * 8, "little"))


@jit
def _claimed_blocks(flags, types_before, mt, out, write):
    """How many blocks changed their type to `mt` since types_before; with `write`, those
    blocks too, ascending, into out. Eight blocks per step: a call rarely changes any, and
    the whole map is compared."""
    nr_words = len(types_before) // 8
    now_words = flags[:nr_words * 8].view(np.uint64)
    before_words = types_before[:nr_words * 8].view(np.uint64)
    n = 0
    for w in range(nr_words):
        if (now_words[w] & _MT_MASK_WORD) != before_words[w]:
            for b in range(w * 8, w * 8 + 8):
                t = flags[b] & PB_MIGRATETYPE_MASK
                if t != types_before[b] and t == mt:
                    if write:
                        out[n] = b
                    n += 1
    for b in range(nr_words * 8, len(types_before)):
        t = flags[b] & PB_MIGRATETYPE_MASK
        if t != types_before[b] and t == mt:
            if write:
                out[n] = b
            n += 1
    return n


@jit
def _fallback_candidates(view, types_before, pfns, mt):
    """The blocks fallback_blocks() looks at: blocks whose type changed to `mt` during the
    call (claims, ascending), then the distinct foreign blocks the new folios lie in (steals,
    ascending). Returns (blocks, number of claims)."""
    flags = view_at(view).pageblock_flags
    nr_claimed = _claimed_blocks(flags, types_before, mt, np.empty(0, dtype=np.int64), False)
    claimed = np.empty(nr_claimed, dtype=np.int64)
    if nr_claimed:
        _claimed_blocks(flags, types_before, mt, claimed, True)
    stolen = np.empty(len(pfns), dtype=np.int64)
    nr_stolen = 0
    for i in range(len(pfns)):
        b = pfns[i] >> PAGEBLOCK_ORDER
        t = flags[b] & PB_MIGRATETYPE_MASK
        # a block this call reserved for highatomic use counts with the type it had before
        # (reserve_highatomic_pageblock() runs after the fallback, if any); one that was
        # highatomic already is the request's own reserve, no fallback
        if t == MIGRATE_HIGHATOMIC:
            t = types_before[b]
        if t != mt and t != MIGRATE_HIGHATOMIC and not (mt == MIGRATE_MOVABLE
                                                        and t == MIGRATE_CMA):
            stolen[nr_stolen] = b
            nr_stolen += 1
    stolen = np.sort(stolen[:nr_stolen])
    out = np.empty(nr_claimed + nr_stolen, dtype=np.int64)
    out[:nr_claimed] = claimed
    n = nr_claimed
    for i in range(nr_stolen):
        if i == 0 or stolen[i] != stolen[i - 1]:
            out[n] = stolen[i]
            n += 1
    return out[:n], nr_claimed


def fallback_blocks(m, pfns, order, mt, types_before):
    """Pageblocks this call fell back to, whose fallback boosts under the profile's policy."""
    pfns = np.ascontiguousarray(pfns, dtype=np.int64)
    blocks, nr_claimed = _fallback_candidates(m.pgdat.view, types_before, pfns, mt)
    if not len(blocks):
        return blocks
    return _boosting_blocks(m, pfns, order, mt, blocks, nr_claimed)


def _boosting_blocks(m, pfns, order, mt, blocks, nr_claimed):
    """Of _fallback_candidates()' blocks, those whose fallback boosts."""
    claimed, stolen = blocks[:nr_claimed], blocks[nr_claimed:]
    if len(claimed):
        # a wholly free block taken over is no fragmenting fallback (current_order >=
        # pageblock_order): it holds no folio but this call's
        mem_map = m.pgdat.mem_map
        ours = set(pfns.tolist())
        partial = []
        for b in claimed:
            start = int(b) * PAGEBLOCK_NR_PAGES
            heads = np.flatnonzero(mem_map["type"][start:start + PAGEBLOCK_NR_PAGES]
                                   == PAGE_HEAD) + start
            if any(int(h) not in ours for h in heads):
                partial.append(int(b))
        claimed = np.array(partial, dtype=np.int64)
    if m.profile.watermark_boost == "claim_only" and not _should_try_claim_block(order, mt):
        stolen = stolen[:0]
    return np.concatenate([claimed, stolen])


def boost_watermark(m, z):
    """boost_watermark(): raise zone z's watermarks by a pageblock, up to
    watermark_boost_factor/10000 of its high mark. Returns whether it boosted."""
    b = m.boost
    zone = m.pgdat.zones[z]
    if not b.factor or PAGEBLOCK_NR_PAGES * 4 > zone[Z_MANAGED]:
        return False
    high = int(zone[Z_WMARK_HIGH]) - int(b.boost[z])
    max_boost = high * b.factor // 10000
    if not max_boost:
        return False
    max_boost = max(PAGEBLOCK_NR_PAGES, max_boost)
    new = min(int(b.boost[z]) + PAGEBLOCK_NR_PAGES, max_boost)
    zone[Z_WMARK_MIN:Z_WMARK_PROMO + 1] += new - int(b.boost[z])
    b.boost[z] = new
    return True


def observe(m, pfns, order, mt, types_before, may_wake_kswapd):
    """After an allocation call: boost each zone a fragmenting fallback hit and, where the
    request may wake kswapd, wake it for order 0 (rmqueue()'s ZONE_BOOSTED_WATERMARK check).
    Returns the number of boosts."""
    pfns = np.ascontiguousarray(pfns, dtype=np.int64)
    blocks, nr_claimed = _fallback_candidates(m.pgdat.view, types_before, pfns, mt)
    if not len(blocks):             # most calls: no fallback
        return 0
    blocks = _boosting_blocks(m, pfns, order, mt, blocks, nr_claimed)
    boosted = 0
    zones = m.pgdat.zones
    for blk in blocks:
        pfn = int(blk) * PAGEBLOCK_NR_PAGES
        for z in range(len(ZONE_NAMES)):
            if zones[z, Z_START] <= pfn < zones[z, Z_END]:
                boosted += boost_watermark(m, z)
                break
    if boosted and may_wake_kswapd:
        from . import vmscan
        vmscan.wakeup_kswapd(m, 0, len(ZONE_NAMES) - 1, boosted=True)
    return boosted


def unboost(m):
    """balance_pgdat() after boosted reclaim: the boost goes, kcompactd is woken for
    pageblock_order. Returns whether any zone was boosted."""
    b = m.boost
    if not b.boost.any():
        return False
    m.pgdat.zones[:, Z_WMARK_MIN:Z_WMARK_PROMO + 1] -= b.boost[:, None]
    b.boost[:] = 0
    return True


def reset(m):
    """__setup_per_zone_wmarks() sets watermark_boost to 0 with the new marks."""
    m.boost.boost[:] = 0
