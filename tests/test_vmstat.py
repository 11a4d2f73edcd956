"""Tests of simcore.vmstat: formulas worked by hand, and renderers against real kernel text.

Fixtures in tests/data were read from the running kernel (6.18, x86_64, no CONFIG_CMA):
proc_buddyinfo.txt, proc_pagetypeinfo.txt and proc_vmstat.txt from /proc, and a consistent
snapshot of /proc/buddyinfo with debugfs extfrag/unusable_index and extfrag/extfrag_index
(debugfs_*.txt, read back to back, buddyinfo identical before and after).
proc_pagetypeinfo_cma.txt is proc_pagetypeinfo.txt with a CMA row and column typed in by hand.
"""
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simcore.mmzone import MIGRATE_MOVABLE, MIGRATE_TYPES, MIGRATETYPE_NAMES, NR_PAGE_ORDERS
from simcore.procfs import parse_buddyinfo, parse_extfrag, parse_pagetypeinfo, parse_vmstat
from simcore.vmstat import (
    extfrag_for_order,
    fill_contig_page_info,
    fragmentation_index,
    fragmentation_score_node,
    fragmentation_score_wmark,
    fragmentation_score_zone,
    fragmentation_score_zone_weighted,
    render_buddyinfo,
    render_extfrag_index,
    render_pagetypeinfo,
    render_unusable_index,
    render_vmstat,
    unusable_free_index,
)

DATA = Path(__file__).parent / "data"


def read(name):
    return (DATA / name).read_text()


# A real /proc/buddyinfo line of this machine (orders 0..10):
# "Node 0, zone   Normal   1874   1503    945    654    360    254    213    138     82     48"
# "    153 "
NORMAL = np.array([1874, 1503, 945, 654, 360, 254, 213, 138, 82, 48, 153])
# free_pages = 1874*1 + 1503*2 + 945*4 + 654*8 + 360*16 + 254*32 + 213*64 + 138*128 + 82*256
#              + 48*512 + 153*1024
#            = 1874 + 3006 + 3780 + 5232 + 5760 + 8128 + 13632 + 17664 + 20992 + 24576 + 156672
#            = 261316
# free_blocks_total = 1874+1503+945+654+360+254+213+138+82+48+153 = 6224
# The same line with orders 9 and 10 emptied (no block of order >= 9 free):
NORMAL_NO_HUGE = np.array([1874, 1503, 945, 654, 360, 254, 213, 138, 82, 0, 0])
# free_pages = 261316 - 24576 - 156672 = 80068; free_blocks_total = 6224 - 48 - 153 = 6023
EMPTY = np.zeros(NR_PAGE_ORDERS, dtype=np.int64)


# --- formulas, by hand -----------------------------------------------------------------------

def test_fill_contig_page_info_by_hand():
    # order 0: every page is a suitable order-0 block: suitable = free_pages = 261316
    assert fill_contig_page_info(NORMAL, 0) == (261316, 6224, 261316)
    # order 9: 48 order-9 blocks + 153 order-10 blocks * 2 = 48 + 306 = 354
    assert fill_contig_page_info(NORMAL, 9) == (261316, 6224, 354)
    # order 10: 153
    assert fill_contig_page_info(NORMAL, 10) == (261316, 6224, 153)
    assert fill_contig_page_info(NORMAL_NO_HUGE, 9) == (80068, 6023, 0)
    assert fill_contig_page_info(EMPTY, 3) == (0, 0, 0)


def test_fragmentation_index_suitable_block_exists():
    # a free block of the order exists at 0, 9 and 10 -> -1000
    for order in (0, 9, 10):
        assert fragmentation_index(NORMAL, order) == -1000


def test_fragmentation_index_no_suitable_block():
    # order 9: 80068*1000 // 512 = 80068000 // 512 = 156382 (156382.8125)
    #          (1000 + 156382) // 6023 = 157382 // 6023 = 26 (6023*26 = 156598, rest 784)
    #          1000 - 26 = 974
    assert fragmentation_index(NORMAL_NO_HUGE, 9) == 974
    # order 10: 80068000 // 1024 = 78191 (78191.40625); 79191 // 6023 = 13 (78299, rest 892)
    #           1000 - 13 = 987
    assert fragmentation_index(NORMAL_NO_HUGE, 10) == 987


def test_fragmentation_index_no_free_and_negative_corner():
    assert fragmentation_index(EMPTY, 0) == 0
    assert fragmentation_index(EMPTY, 9) == 0
    # one free order-0 page, order 1: 1*1000 // 2 = 500; (1000 + 500) // 1 = 1500;
    # 1000 - 1500 = -500 (the kernel does not clamp)
    one_page = EMPTY.copy()
    one_page[0] = 1
    assert fragmentation_index(one_page, 1) == -500


def test_unusable_free_index_by_hand():
    # order 0: (261316 - 261316 << 0) * 1000 // 261316 = 0
    assert unusable_free_index(NORMAL, 0) == 0
    # order 9: (261316 - 354*512) = 261316 - 181248 = 80068; 80068000 // 261316 = 306
    #          (261316*306 = 79962696, rest 105304)
    assert unusable_free_index(NORMAL, 9) == 306
    # order 10: (261316 - 153*1024) = 104644; 104644000 // 261316 = 400
    #           (261316*400 = 104526400, rest 117600)
    assert unusable_free_index(NORMAL, 10) == 400
    # nothing usable at 9 when no block >= 9 is free: 80068*1000 // 80068 = 1000
    assert unusable_free_index(NORMAL_NO_HUGE, 9) == 1000
    # no free memory at all counts as all unusable
    assert unusable_free_index(EMPTY, 0) == 1000
    assert unusable_free_index(EMPTY, 10) == 1000


def test_extfrag_for_order_by_hand():
    assert extfrag_for_order(NORMAL, 0) == 0
    # 80068*100 // 261316 = 8006800 // 261316 = 30 (261316*30 = 7839480, rest 167320)
    assert extfrag_for_order(NORMAL, 9) == 30
    # 104644*100 // 261316 = 10464400 // 261316 = 40 (10452640, rest 11760)
    assert extfrag_for_order(NORMAL, 10) == 40
    assert extfrag_for_order(NORMAL_NO_HUGE, 9) == 100
    # no free memory: 0, unlike unusable_free_index
    assert extfrag_for_order(EMPTY, 9) == 0


def test_fragmentation_scores_by_hand():
    # Zones of this machine's node 0 (present pages from /proc/zoneinfo):
    dma = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3])
    dma32 = np.array([1, 2, 4, 2, 5, 4, 3, 3, 4, 2, 752])
    # DMA: free_pages = 256 + 512 + 3*1024 = 3840; suitable(9) = 1 + 3*2 = 7 -> 3584 pages;
    #      (3840 - 3584)*100 // 3840 = 25600 // 3840 = 6
    assert fragmentation_score_zone(dma) == 6
    # DMA32: free_pages = 1+4+16+16+80+128+192+384+1024+1024+770048 = 772917;
    #        suitable(9) = 2 + 752*2 = 1506 -> 771072; 1845*100 // 772917 = 0
    assert fragmentation_score_zone(dma32) == 0
    assert fragmentation_score_zone(NORMAL) == 30
    # node_present = 3998 + 782336 + 5505024 = 6291358, divisor 6291359
    # DMA: 3998*6 // 6291359 = 0; DMA32: 0;
    # Normal: 5505024*30 = 165150720 // 6291359 = 26 (163575334, rest 1575386)
    assert fragmentation_score_zone_weighted(NORMAL, 5505024, 6291358) == 26
    assert fragmentation_score_zone_weighted(dma, 3998, 6291358) == 0
    assert fragmentation_score_node([(dma, 3998), (dma32, 782336), (NORMAL, 5505024)]) == 26
    # the "+ 1" of the divisor: a lone zone of 100 pages scoring 30 weighs 3000 // 101 = 29
    assert fragmentation_score_node([(NORMAL, 100)]) == 29
    # node_present_pages counts every zone: with a second zone of 100 pages scoring 100,
    # 3000 // 201 = 14 and 10000 // 201 = 49, so 63
    assert fragmentation_score_node([(NORMAL, 100), (NORMAL_NO_HUGE, 100)]) == 63


def test_fragmentation_score_wmark():
    # default proactiveness 20: low = 100 - 20 = 80, high = 80 + 10 = 90
    assert fragmentation_score_wmark(20, low=True) == 80
    assert fragmentation_score_wmark(20, low=False) == 90
    # proactiveness 100 and 97: low clamped up to 5, high 15
    assert fragmentation_score_wmark(100, low=True) == 5
    assert fragmentation_score_wmark(97, low=False) == 15
    # proactiveness 0: low 100, high min(110, 100) = 100
    assert fragmentation_score_wmark(0, low=True) == 100
    assert fragmentation_score_wmark(0, low=False) == 100
    # 95 -> 5 exactly, 94 -> 6
    assert fragmentation_score_wmark(94, low=True) == 6
    with pytest.raises(ValueError):
        fragmentation_score_wmark(101)


def test_formula_argument_checks():
    with pytest.raises(ValueError):
        fill_contig_page_info(NORMAL, 11)
    with pytest.raises(ValueError):
        fill_contig_page_info(NORMAL[:10], 0)
    with pytest.raises(ValueError):
        fill_contig_page_info(-NORMAL, 0)


# --- formulas, properties against independent oracles -----------------------------------------

zone_free = hnp.arrays(np.int64, NR_PAGE_ORDERS,
                       elements=st.one_of(st.integers(0, 3), st.integers(0, 10**9)))
orders = st.integers(0, NR_PAGE_ORDERS - 1)


@given(zone_free, orders)
def test_formulas_match_exact_oracle(nr_free, order):
    # Oracle: list every free block, split each into order-`order` pieces by division.
    sizes = [(1 << o, int(n)) for o, n in enumerate(nr_free)]
    free_pages = sum(size * n for size, n in sizes)
    total = sum(n for _, n in sizes)
    suitable = sum((size // (1 << order)) * n for size, n in sizes)
    assert fill_contig_page_info(nr_free, order) == (free_pages, total, suitable)

    usable = suitable * (1 << order)
    if free_pages:
        assert unusable_free_index(nr_free, order) == int(Fraction(1000 * (free_pages - usable),
                                                                   free_pages))
        # floor(floor(1000x)/10) == floor(100x): the two kernel measures agree
        assert extfrag_for_order(nr_free, order) == unusable_free_index(nr_free, order) // 10
    fi = fragmentation_index(nr_free, order)
    if total == 0:
        assert fi == 0
    elif suitable:
        assert fi == -1000
    else:
        # blocks are all smaller than the request (each <= half of it), so -500 <= fi < 1000
        expect = 1000 - int(Fraction(1000 + int(Fraction(free_pages * 1000, 1 << order)), total))
        assert fi == expect
        assert -500 <= fi < 1000


# --- renderers against the real kernel's text -------------------------------------------------

def buddy_to_array(parsed, node=0):
    """(zone names, (nzones, orders, MIGRATE_TYPES)) with each zone's counts spread over types."""
    names = [zone for (n, zone) in parsed if n == node]
    arr = np.zeros((len(names), NR_PAGE_ORDERS, MIGRATE_TYPES), dtype=np.int64)
    for z, name in enumerate(names):
        counts = parsed[(node, name)]
        # split unevenly over two types so the renderer's sum over migratetypes is exercised
        arr[z, :, 0] = counts // 3
        arr[z, :, MIGRATE_MOVABLE] = counts - counts // 3
    return names, arr


def test_render_buddyinfo_equals_real_file():
    text = read("proc_buddyinfo.txt")
    names, arr = buddy_to_array(parse_buddyinfo(text))
    assert names == ["DMA", "DMA32", "Normal"]
    assert render_buddyinfo(0, names, arr) == text


def pagetypeinfo_to_arrays(pti, node=0):
    names = [zone for (n, zone) in pti.blocks if n == node]
    free = np.zeros((len(names), NR_PAGE_ORDERS, MIGRATE_TYPES), dtype=np.int64)
    blocks = np.zeros((len(names), MIGRATE_TYPES), dtype=np.int64)
    for z, name in enumerate(names):
        for mt_name, count in pti.blocks[(node, name)].items():
            mt = MIGRATETYPE_NAMES.index(mt_name)
            blocks[z, mt] = count
            free[z, :, mt] = pti.free[(node, name, mt_name)]
    return names, free, blocks


def test_render_pagetypeinfo_equals_real_file_without_cma():
    text = read("proc_pagetypeinfo.txt")
    pti = parse_pagetypeinfo(text)
    names, free, blocks = pagetypeinfo_to_arrays(pti)
    assert names == ["DMA", "DMA32", "Normal"]
    assert "CMA" not in pti.migratetype_names
    assert render_pagetypeinfo(0, names, free, blocks,
                               migratetype_names=pti.migratetype_names) == text


def test_render_pagetypeinfo_default_prints_cma_like_hand_made_file():
    text = read("proc_pagetypeinfo_cma.txt")
    names, free, blocks = pagetypeinfo_to_arrays(parse_pagetypeinfo(text))
    assert render_pagetypeinfo(0, names, free, blocks) == text
    # the hand-made file is the real one plus CMA: dropping CMA gives the real file back
    assert render_pagetypeinfo(0, names, free, blocks,
                               migratetype_names=[m for m in MIGRATETYPE_NAMES if m != "CMA"]) \
        == read("proc_pagetypeinfo.txt")


def test_render_pagetypeinfo_caps_huge_free_counts():
    # pagetypeinfo_showfree_print: "%s%6lu " with ">" once the walk reaches 100000 entries
    free = np.zeros((1, NR_PAGE_ORDERS, MIGRATE_TYPES), dtype=np.int64)
    free[0, 0, MIGRATE_MOVABLE] = 99999
    free[0, 1, MIGRATE_MOVABLE] = 100000
    free[0, 2, MIGRATE_MOVABLE] = 2_500_000
    text = render_pagetypeinfo(0, ["Normal"], free, np.zeros((1, MIGRATE_TYPES), np.int64))
    row = [line for line in text.splitlines() if "type      Movable" in line]
    assert row == ["Node    0, zone   Normal, type      Movable  99999 >100000 >100000"
                   "      0      0      0      0      0      0      0      0 "]


def test_render_pagetypeinfo_memoryless_node_prints_nothing():
    empty = np.zeros((0, NR_PAGE_ORDERS, MIGRATE_TYPES), dtype=np.int64)
    assert render_pagetypeinfo(1, [], empty, np.zeros((0, MIGRATE_TYPES), np.int64)) == ""


def test_render_unusable_and_extfrag_index_equal_kernel_debugfs():
    # The kernel computed these files from exactly the free lists in the buddyinfo snapshot.
    buddy = parse_buddyinfo(read("debugfs_snapshot_buddyinfo.txt"))
    names, arr = buddy_to_array(buddy)
    assert render_unusable_index(0, names, arr) == read("debugfs_unusable_index.txt")
    assert render_extfrag_index(0, names, arr) == read("debugfs_extfrag_index.txt")
    # the migratetype axis is optional for these two
    assert render_unusable_index(0, names, arr.sum(axis=2)) == read("debugfs_unusable_index.txt")


def test_render_extfrag_index_prints_like_c():
    # C: "%2d.%03d" of (index / 1000, index % 1000), both truncating towards zero.
    # orders 0..10 of a zone with two free order-0 pages and one order-2 block:
    # free_pages = 2 + 4 = 6, blocks = 3
    # order 0, 1, 2: a suitable block exists -> -1000 -> "-1.000"
    # order 3: 6000 // 8 = 750; (1000 + 750) // 3 = 583; 1000 - 583 = 417 -> " 0.417"
    # order 4: 6000 // 16 = 375; 1375 // 3 = 458; 542 -> " 0.542"
    # order 5: 187; 1187 // 3 = 395; 605.  order 6: 93; 1093 // 3 = 364; 636.
    # order 7: 46; 1046 // 3 = 348; 652.   order 8: 23; 1023 // 3 = 341; 659.
    # order 9: 11; 1011 // 3 = 337; 663.   order 10: 5; 1005 // 3 = 335; 665.
    z = np.zeros((1, NR_PAGE_ORDERS), dtype=np.int64)
    z[0, 0], z[0, 2] = 2, 1
    assert render_extfrag_index(3, ["Movable"], z) == (
        "Node 3, zone  Movable -1.000 -1.000 -1.000  0.417  0.542  0.605  0.636  0.652"
        "  0.659  0.663  0.665 \n")
    # one free page, order 1 gives -500: C prints -500 / 1000 = 0 and -500 % 1000 = -500
    z = np.zeros((1, NR_PAGE_ORDERS), dtype=np.int64)
    z[0, 0] = 1
    assert render_extfrag_index(0, ["DMA"], z).split()[4:7] == ["-1.000", "0.-500", "0.-250"]
    # unusable_index for the same zone: order 0 usable -> 0.000, above it 1000 -> 1.000
    assert render_unusable_index(0, ["DMA"], z) == (
        "Node 0, zone      DMA 0.000" + " 1.000" * 10 + " \n")


def test_render_vmstat_equals_real_file():
    text = read("proc_vmstat.txt")
    assert render_vmstat(parse_vmstat(text)) == text


def test_render_vmstat_rejects_negative_and_bad_names():
    assert render_vmstat({"compact_stall": 3, "pgmigrate_success": 0}) == \
        "compact_stall 3\npgmigrate_success 0\n"
    with pytest.raises(ValueError):
        render_vmstat({"compact_stall": -1})
    with pytest.raises(ValueError):
        render_vmstat({"compact stall": 1})


def test_render_shape_checks():
    with pytest.raises(ValueError):
        render_buddyinfo(0, ["DMA32", "Normal"], np.zeros((1, NR_PAGE_ORDERS, MIGRATE_TYPES)))
    with pytest.raises(ValueError):
        render_pagetypeinfo(0, ["Normal"], np.zeros((1, NR_PAGE_ORDERS, MIGRATE_TYPES), int),
                            np.zeros((1, MIGRATE_TYPES), int), migratetype_names=["Reserve"])


# --- round trips through our parsers -----------------------------------------------------------

ZONES = ("DMA", "DMA32", "Normal", "HighMem", "Movable", "Device")


@st.composite
def node_free(draw, max_value=300000):
    names = draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=4, unique=True))
    free = draw(hnp.arrays(np.int64, (len(names), NR_PAGE_ORDERS, MIGRATE_TYPES),
                           elements=st.one_of(st.integers(0, 5), st.integers(0, max_value))))
    return names, free


@settings(max_examples=60)
@given(node_free(max_value=10**9 // MIGRATE_TYPES), st.integers(0, 7))
def test_buddyinfo_round_trip(zf, node):
    names, free = zf
    parsed = parse_buddyinfo(render_buddyinfo(node, names, free))
    assert list(parsed) == [(node, z) for z in names]
    for z, name in enumerate(names):
        np.testing.assert_array_equal(parsed[(node, name)], free[z].sum(axis=1))


@settings(max_examples=60)
@given(node_free(), hnp.arrays(np.int64, MIGRATE_TYPES, elements=st.integers(0, 10**6)),
       st.booleans())
def test_pagetypeinfo_round_trip(zf, block_row, with_cma):
    names, free = zf
    blocks = np.tile(block_row, (len(names), 1))
    blocks[:, 0] += np.arange(len(names))
    mts = [m for m in MIGRATETYPE_NAMES if with_cma or m != "CMA"]
    # two nodes, as the kernel prints them: one after the other
    text = (render_pagetypeinfo(0, names, free, blocks, mts)
            + render_pagetypeinfo(1, names[::-1], free[::-1], blocks[::-1], mts))
    pti = parse_pagetypeinfo(text)
    assert (pti.pageblock_order, pti.pages_per_block) == (9, 512)
    assert pti.migratetype_names == tuple(mts)
    for node, _zone_order in ((0, names), (1, names[::-1])):
        for z, name in enumerate(names):
            for mt_name in mts:
                mt = MIGRATETYPE_NAMES.index(mt_name)
                np.testing.assert_array_equal(pti.free[(node, name, mt_name)],
                                              np.minimum(free[z, :, mt], 100000))
                assert pti.blocks[(node, name)][mt_name] == blocks[z, mt]
    n_capped = int((free[:, :, [MIGRATETYPE_NAMES.index(m) for m in mts]] >= 100000).sum())
    assert len(pti.capped) == 2 * n_capped


@settings(max_examples=60)
@given(node_free(max_value=10**6))
def test_extfrag_files_round_trip(zf):
    names, free = zf
    unusable = parse_extfrag(render_unusable_index(2, names, free))
    extfrag = parse_extfrag(render_extfrag_index(2, names, free))
    for z, name in enumerate(names):
        row = free[z].sum(axis=1)
        want_u = [unusable_free_index(row, o) / 1000 for o in range(NR_PAGE_ORDERS)]
        want_e = [fragmentation_index(row, o) / 1000 for o in range(NR_PAGE_ORDERS)]
        assert unusable[(2, name)].tolist() == want_u
        assert extfrag[(2, name)].tolist() == want_e


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True),
                       st.integers(0, 2**64 - 1), min_size=1))
def test_vmstat_round_trip(counters):
    text = render_vmstat(counters)
    assert parse_vmstat(text) == counters
    assert list(parse_vmstat(text)) == list(counters)
