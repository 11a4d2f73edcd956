"""Compaction strategies: how compaction treats large folios, one small class each.

A strategy decides three things the kernel changed across releases:
- isolate_large_folios: whether the migrate scanner takes large folios (below the requested
  order and below a pageblock) or steps over them;
- split_free_pages: whether the free scanner splits every isolated free page to order 0
  (split_map_pages()) or keeps its order;
- how compaction_alloc() hands out targets: a built-in target_policy, or a strategy's own
  compiled compaction_alloc/compaction_free (see the README's "Writing a strategy").

    simcore.strategies()                       -> ["folio", "legacy", "split", ...]
    simcore.register_strategy("mine", Mine)    # a CompactionStrategy subclass
    simcore.Machine(mem="16G", compaction="mine")
"""
from . import compaction, freescan

_REGISTRY = {}


class CompactionStrategy:
    """Base class. Subclasses set the class attributes; `name` is filled in on registration."""

    name = None
    kernel = ""                 # which kernels behave like this
    description = ""
    isolate_large_folios = True
    split_free_pages = False
    target_policy = freescan.TARGET_SMALLEST_FIT
    # Optional numba-compiled functions (see freescan.compaction_alloc for the signature):
    # compaction_alloc(pgdat, target, src_pfn, order) -> target pfn or -1, where
    # target = (cc, pool); compaction_free(pgdat, target, pfn, order) takes an unused one back.
    compaction_alloc = None
    compaction_free = None

    @classmethod
    def knobs(cls):
        return (int(bool(cls.isolate_large_folios)), int(bool(cls.split_free_pages)),
                int(cls.target_policy))

    @classmethod
    def entries(cls):
        """(slowpath, slowpath_many, compact_node) compiled entry points for this strategy."""
        if cls.compaction_alloc is None:
            return (compaction.entry_alloc_folio_slowpath, compaction.entry_alloc_folios_slowpath,
                    compaction.entry_compact_node)
        cached = cls.__dict__.get("_entries")
        if cached is None:
            cached = compaction.entries_for(cls.compaction_alloc, cls.compaction_free)
            cls._entries = cached
        return cached


class Legacy(CompactionStrategy):
    kernel = "before 6.9"
    description = ("the migrate scanner skips every large folio (CMA's alloc_contig_range "
                   "excepted) and the free scanner splits isolated free pages to order 0, so "
                   "compaction_alloc() hands out base pages only")
    isolate_large_folios = False
    split_free_pages = True
    target_policy = freescan.TARGET_ORDER0


class Split(CompactionStrategy):
    kernel = "6.9 interim (\"enable compacting >0 order folios\" alone)"
    description = ("large folios below the requested order are isolated, but targets are still "
                   "base pages: migrate_pages() splits each large folio and moves its pieces")
    isolate_large_folios = True
    split_free_pages = True
    target_policy = freescan.TARGET_ORDER0


class Folio(CompactionStrategy):
    kernel = "6.9 and later"
    description = ("isolated free pages keep their order on per-order lists; compaction_alloc() "
                   "takes the smallest fitting one and splits it buddy-style, so large folios "
                   "migrate whole")
    isolate_large_folios = True
    split_free_pages = False
    target_policy = freescan.TARGET_SMALLEST_FIT


def register_strategy(name, cls):
    """Register a CompactionStrategy subclass under `name` (replacing any of that name)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"strategy name {name!r} must be an identifier-like string")
    if not (isinstance(cls, type) and issubclass(cls, CompactionStrategy)):
        raise ValueError(f"strategy {name!r} must be a CompactionStrategy subclass, got {cls!r}")
    if (cls.compaction_alloc is None) != (cls.compaction_free is None):
        raise ValueError(f"strategy {name!r} must define both compaction_alloc and "
                         f"compaction_free, or neither")
    if cls.target_policy not in (freescan.TARGET_ORDER0, freescan.TARGET_SMALLEST_FIT):
        raise ValueError(f"strategy {name!r}: target_policy {cls.target_policy!r} is unknown")
    cls.name = name
    _REGISTRY[name] = cls
    return cls


def strategies():
    """Names of the registered strategies, built-ins first in kernel order."""
    return list(_REGISTRY)


def get_strategy(name):
    """The strategy class registered as `name`; ValueError listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"compaction strategy {name!r} is unknown; known: "
                         f"{', '.join(strategies())}") from None


register_strategy("legacy", Legacy)
register_strategy("split", Split)
register_strategy("folio", Folio)
