"""Parsers for the kernel's memory statistics files, as the kernel prints them.

Reads /proc/buddyinfo, /proc/pagetypeinfo, /proc/vmstat and debugfs extfrag/unusable_index and
extfrag/extfrag_index (layouts from mm/vmstat.c). Any number of nodes and zones is accepted, and
any migratetype set (with or without CMA). Each file must have NR_PAGE_ORDERS order columns.
Malformed input raises ValueError naming the 1-based line number and the line.
"""
import re
from dataclasses import dataclass, field

import numpy as np

from .mmzone import NR_PAGE_ORDERS
from .vmstat import PAGETYPEINFO_FREE_CAP  # noqa: F401  (the cap the parser sees, once)

# pagetypeinfo_showfree_print stops counting a free list here and prints ">100000".

_NODE_ZONE = r"Node\s+(\d+),\s+zone\s+([^\s,]+)"
_BUDDY_RE = re.compile(_NODE_ZONE + r"((?:\s+\d+)+)\s*")
_PTI_FREE_RE = re.compile(_NODE_ZONE + r",\s+type\s+(\S+)((?:\s+>?\d+)+)\s*")
_PTI_COUNT_RE = re.compile(_NODE_ZONE + r"((?:\s+\d+)+)\s*")
_PTI_ORDER_RE = re.compile(r"Page block order:\s*(\d+)\s*")
_PTI_PERBLOCK_RE = re.compile(r"Pages per block:\s*(\d+)\s*")
_PTI_FREE_HDR_RE = re.compile(r"Free pages count per migrate type at order((?:\s+\d+)+)\s*")
_PTI_BLOCKS_HDR_RE = re.compile(r"Number of blocks type((?:\s+\S+)+)\s*")
_PTI_MIXED_HDR_RE = re.compile(r"Number of mixed blocks((?:\s+\S+)+)\s*")
_EXTFRAG_RE = re.compile(_NODE_ZONE + r"((?:\s+-?\d+\.-?\d+)+)\s*")
_EXTFRAG_VALUE_RE = re.compile(r"(-?)(\d+)\.(?:(\d{3})|-(\d{2,3}))")
_VMSTAT_RE = re.compile(r"(\S+)\s+(-?\d+)\s*")


def _bad(lineno, line, why):
    return ValueError(f"line {lineno}: {why}: {line!r}")


def _lines(text):
    """(1-based line number, line) for each non-blank line."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield lineno, line


def _orders(lineno, line, fields):
    values = fields.split()
    if len(values) != NR_PAGE_ORDERS:
        raise _bad(lineno, line, f"expected {NR_PAGE_ORDERS} order columns, got {len(values)}")
    return values


def _node_zone(m, seen, key_extra, lineno, line):
    key = (int(m.group(1)), m.group(2)) + key_extra
    if key in seen:
        raise _bad(lineno, line, f"duplicate entry {key}")
    return key


def parse_buddyinfo(text):
    """/proc/buddyinfo -> {(node, zone): int64 array of free blocks per order}."""
    out = {}
    for lineno, line in _lines(text):
        m = _BUDDY_RE.fullmatch(line)
        if not m:
            raise _bad(lineno, line, "not a buddyinfo line")
        key = _node_zone(m, out, (), lineno, line)
        out[key] = np.array([int(v) for v in _orders(lineno, line, m.group(3))], dtype=np.int64)
    return out


@dataclass
class PageTypeInfo:
    """Parsed /proc/pagetypeinfo.

    free: {(node, zone, migratetype_name): int64 array per order}. The kernel stops counting a
    free list at 100000 entries and prints ">100000"; such a cell parses as 100000 (a lower
    bound) and its (node, zone, migratetype_name, order) is listed in `capped`.
    blocks: {(node, zone): {migratetype_name: pageblocks}} ("Number of blocks type").
    mixed: the same for "Number of mixed blocks" (only with CONFIG_PAGE_OWNER), else empty.
    migratetype_names: the column titles, in the file's order.
    """
    pageblock_order: int | None
    pages_per_block: int | None
    free: dict
    blocks: dict
    migratetype_names: tuple = ()
    mixed: dict = field(default_factory=dict)
    capped: set = field(default_factory=set)


def parse_pagetypeinfo(text):
    """/proc/pagetypeinfo -> PageTypeInfo. Nodes repeat the whole layout; all are merged.

    An empty text (every node memoryless) gives pageblock_order = pages_per_block = None.
    """
    pageblock_order = pages_per_block = None
    free, blocks, mixed, capped = {}, {}, {}, set()
    names = None          # column titles of the current counts table
    all_names = []        # every migratetype seen, in first-seen order
    section = None        # "free", "blocks" or "mixed"
    for lineno, line in _lines(text):
        m = _PTI_ORDER_RE.fullmatch(line)
        if m:
            value = int(m.group(1))
            if pageblock_order is not None and value != pageblock_order:
                raise _bad(lineno, line, f"page block order differs from {pageblock_order}")
            pageblock_order, section = value, None
            continue
        m = _PTI_PERBLOCK_RE.fullmatch(line)
        if m:
            value = int(m.group(1))
            if pages_per_block is not None and value != pages_per_block:
                raise _bad(lineno, line, f"pages per block differs from {pages_per_block}")
            pages_per_block, section = value, None
            continue
        m = _PTI_FREE_HDR_RE.fullmatch(line)
        if m:
            orders = _orders(lineno, line, m.group(1))
            if orders != [str(o) for o in range(NR_PAGE_ORDERS)]:
                raise _bad(lineno, line, f"orders must be 0..{NR_PAGE_ORDERS - 1}")
            if pageblock_order is None or pages_per_block is None:
                raise _bad(lineno, line, "free table before the page block header")
            section = "free"
            continue
        m = _PTI_BLOCKS_HDR_RE.fullmatch(line) or _PTI_MIXED_HDR_RE.fullmatch(line)
        if m:
            if pageblock_order is None or pages_per_block is None:
                raise _bad(lineno, line, "block table before the page block header")
            names = m.group(1).split()
            if len(set(names)) != len(names):
                raise _bad(lineno, line, "repeated migratetype")
            all_names += [n for n in names if n not in all_names]
            section = "mixed" if line.startswith("Number of mixed") else "blocks"
            continue
        if section == "free":
            m = _PTI_FREE_RE.fullmatch(line)
            if not m:
                raise _bad(lineno, line, "not a free-count line")
            key = _node_zone(m, free, (m.group(3),), lineno, line)
            counts = []
            for order, cell in enumerate(_orders(lineno, line, m.group(4))):
                if cell.startswith(">"):
                    capped.add(key + (order,))
                    cell = cell[1:]
                counts.append(int(cell))
            free[key] = np.array(counts, dtype=np.int64)
            if key[2] not in all_names:
                all_names.append(key[2])
            continue
        if section in ("blocks", "mixed"):
            m = _PTI_COUNT_RE.fullmatch(line)
            if not m:
                raise _bad(lineno, line, f"not a {section} count line")
            table = blocks if section == "blocks" else mixed
            key = _node_zone(m, table, (), lineno, line)
            counts = m.group(3).split()
            if len(counts) != len(names):
                raise _bad(lineno, line, f"expected {len(names)} columns, got {len(counts)}")
            table[key] = {n: int(c) for n, c in zip(names, counts)}
            continue
        raise _bad(lineno, line, "unexpected line in pagetypeinfo")
    return PageTypeInfo(pageblock_order, pages_per_block, free, blocks,
                        tuple(all_names), mixed, capped)


def _extfrag_value(token):
    """One "%d.%03d" cell of the C pair (index / 1000, index % 1000) -> index / 1000.

    C's remainder takes the dividend's sign, so -500 prints as "0.-500" and -1000 as "-1.000".
    """
    m = _EXTFRAG_VALUE_RE.fullmatch(token)
    if not m:
        return None
    sign, whole, frac_pos, frac_neg = m.groups()
    index = int(whole) * 1000 + int(frac_pos if frac_pos is not None else frac_neg)
    if sign or frac_neg is not None:
        index = -index
    return index / 1000


def parse_extfrag(text):
    """debugfs extfrag/unusable_index or extfrag/extfrag_index -> {(node, zone): float array}.

    Values are the kernel's x1000 index divided by 1000 (so -1.0 means "a block is free").
    """
    out = {}
    for lineno, line in _lines(text):
        m = _EXTFRAG_RE.fullmatch(line)
        if not m:
            raise _bad(lineno, line, "not an extfrag line")
        key = _node_zone(m, out, (), lineno, line)
        values = [_extfrag_value(t) for t in _orders(lineno, line, m.group(3))]
        if any(v is None for v in values):
            raise _bad(lineno, line, "malformed index value")
        out[key] = np.array(values, dtype=np.float64)
    return out


def parse_vmstat(text):
    """/proc/vmstat -> {name: value}, in file order. Negative values are accepted."""
    out = {}
    for lineno, line in _lines(text):
        m = _VMSTAT_RE.fullmatch(line)
        if not m:
            raise _bad(lineno, line, "not a 'name value' line")
        name = m.group(1)
        if name in out:
            raise _bad(lineno, line, f"duplicate counter {name}")
        out[name] = int(m.group(2))
    return out


_ZONEINFO_ZONE_RE = re.compile(_NODE_ZONE + r"\s*")
_ZONEINFO_PROTECTION_RE = re.compile(r"\s*protection:\s*\(([\d,\s]*)\)\s*")
_ZONEINFO_VALUE_RE = re.compile(r"\s*([a-z_][a-z0-9_ ]*?):?\s+(-?\d+)\s*")
_ZONEINFO_CPU_RE = re.compile(r"\s*cpu:\s*(\d+)\s*")


def parse_zoneinfo(text):
    """/proc/zoneinfo -> {(node, zone): dict} (layout of zoneinfo_show_print() in mm/vmstat.c).

    Each zone's dict holds its integer lines by name ("spanned", "present", "managed", "min",
    "low", "high", "start_pfn", "nr_free_pages", ...; the first zone of a node also carries the
    "per-node stats"), "protection" as a tuple, and "pcp_count": the per-CPU list lengths
    (`count:` under each `cpu:`), in CPU order. Lines the parser does not know (headers such as
    "pagesets") are skipped; a value line before any zone header is an error."""
    out = {}
    zone = None
    cpu = None
    for lineno, line in _lines(text):
        m = _ZONEINFO_ZONE_RE.fullmatch(line)
        if m:
            key = _node_zone(m, out, (), lineno, line)
            zone = out[key] = {"protection": (), "pcp_count": []}
            cpu = None
            continue
        m = _ZONEINFO_PROTECTION_RE.fullmatch(line)
        if m:
            if zone is None:
                raise _bad(lineno, line, "protection before any zone header")
            zone["protection"] = tuple(int(v) for v in m.group(1).replace(",", " ").split())
            continue
        m = _ZONEINFO_CPU_RE.fullmatch(line)
        if m:
            cpu = int(m.group(1))
            continue
        m = _ZONEINFO_VALUE_RE.fullmatch(line)
        if m:
            if zone is None:
                raise _bad(lineno, line, "value before any zone header")
            name, value = m.group(1).strip(), int(m.group(2))
            if cpu is not None and name == "count":
                zone["pcp_count"].append(value)
            elif cpu is None or name not in ("high", "batch", "high_min", "high_max"):
                zone.setdefault(name, value)
            continue
    if not out:
        raise ValueError("no zone in zoneinfo text")
    return out
