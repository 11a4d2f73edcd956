"""zswap: the compressed swap cache in front of a swap device, after mm/zswap.c zswap_store()
and zswap_load().

When enabled, swap_writepage() offers every folio to zswap_store() before the device. The
profile's zswap_store policy decides what happens to a large folio:

- reject_large (zswap_frontswap_store()'s "THP isn't supported" up to 6.7, zswap_store()'s
  folio_test_large() check 6.8..6.12): the folio is refused and written to the device whole
  (or, where swap-out split it first, its order-0 pages are stored one by one).
- per_page (6.13, "mm: zswap swap-out of large folios"): each page of the folio is compressed
  into its own entry; zswpout counts pages and the per-size zswpout stat counts the folio.

zswap_load() fills order-0 folios only; alloc_swap_folio() falls back to order 0 once zswap
was ever enabled (zswap_never_enabled()), so nothing comes back large through zswap.

Simplified: a fixed compression ratio; the pool limit is max_pool_percent (default 20) of
managed memory in compressed bytes; no writeback to the device (zswpwb) or shrinker.
"""
from . import vm_event as ev
from .mmzone import PAGE_SIZE

ZSWAP_STORE_POLICIES = {
    "reject_large": "large folios refused (written to the swap device); order-0 pages stored",
    "per_page": "large folios stored page by page",
}
COMPRESSION_RATIO = 3.0
MAX_POOL_PERCENT = 20


class Zswap:
    """zswap's state on one machine: enabled, ever enabled, stored pages, the pool size."""

    def __init__(self, policy="per_page"):
        if policy not in ZSWAP_STORE_POLICIES:
            raise ValueError(f"zswap_store policy {policy!r} is unknown; allowed: "
                             f"{', '.join(ZSWAP_STORE_POLICIES)}")
        self.policy = policy
        self.enabled = False
        self.ever_enabled = False
        self.stored_pages = 0
        self.reject_large = 0
        self.pool_limit_hit = 0

    def enable(self, on=True):
        """echo Y > /sys/module/zswap/parameters/enabled."""
        self.enabled = bool(on)
        self.ever_enabled = self.ever_enabled or self.enabled

    def pool_total_size(self):
        return int(self.stored_pages * PAGE_SIZE / COMPRESSION_RATIO)

    def store(self, m, order):
        """zswap_store() of a folio of `order`: True when zswap holds all its pages."""
        if not self.enabled:
            return False
        if order > 0 and self.policy == "reject_large":
            self.reject_large += 1
            return False
        n = 1 << order
        limit = m.managed_pages * PAGE_SIZE * MAX_POOL_PERCENT // 100
        if (self.stored_pages + n) * PAGE_SIZE / COMPRESSION_RATIO > limit:
            self.pool_limit_hit += 1
            return False
        self.stored_pages += n
        m.pgdat.events[ev.ZSWPOUT] += n
        if order > 0:
            m.pgdat.mthp_stats[order, ev.MTHP_STAT_ZSWPOUT] += 1
        return True

    def load(self, m, nr):
        """zswap_load() of nr order-0 pages."""
        if nr > self.stored_pages:
            raise ValueError(f"zswap holds {self.stored_pages} pages, cannot load {nr}")
        self.stored_pages -= nr
        m.pgdat.events[ev.ZSWPIN] += nr

    def stats(self):
        """/sys/kernel/debug/zswap-like figures."""
        return {"stored_pages": self.stored_pages, "pool_total_size": self.pool_total_size(),
                "reject_large": self.reject_large, "pool_limit_hit": self.pool_limit_hit}
