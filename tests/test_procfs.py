"""Tests of simcore.procfs on real kernel files (tests/data, see test_vmstat.py) and bad input."""
from pathlib import Path

import numpy as np
import pytest

from simcore.procfs import (
    PageTypeInfo,
    parse_buddyinfo,
    parse_extfrag,
    parse_pagetypeinfo,
    parse_vmstat,
)

DATA = Path(__file__).parent / "data"


def read(name):
    return (DATA / name).read_text()


# --- real files --------------------------------------------------------------------------------

def test_parse_buddyinfo_real_file():
    b = parse_buddyinfo(read("proc_buddyinfo.txt"))
    assert list(b) == [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
    # values as they read in the file
    np.testing.assert_array_equal(b[(0, "DMA")], [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3])
    np.testing.assert_array_equal(b[(0, "DMA32")], [1, 2, 4, 2, 5, 4, 3, 3, 4, 2, 752])
    np.testing.assert_array_equal(
        b[(0, "Normal")], [1593, 1004, 919, 461, 217, 128, 53, 31, 9, 31, 163])
    assert all(a.dtype == np.int64 for a in b.values())


def test_parse_buddyinfo_the_briefs_line():
    line = ("Node 0, zone   Normal   1874   1503    945    654    360    254    213    138     82"
            "     48    153 \n")
    np.testing.assert_array_equal(parse_buddyinfo(line)[(0, "Normal")],
                                  [1874, 1503, 945, 654, 360, 254, 213, 138, 82, 48, 153])


def test_parse_pagetypeinfo_real_file_without_cma():
    p = parse_pagetypeinfo(read("proc_pagetypeinfo.txt"))
    assert isinstance(p, PageTypeInfo)
    assert (p.pageblock_order, p.pages_per_block) == (9, 512)
    assert p.migratetype_names == ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate")
    assert len(p.free) == 3 * 5
    np.testing.assert_array_equal(p.free[(0, "Normal", "Unmovable")],
                                  [10, 213, 259, 124, 34, 6, 11, 12, 3, 0, 0])
    np.testing.assert_array_equal(p.free[(0, "DMA", "Movable")], [0] * 9 + [1, 3])
    assert p.blocks[(0, "DMA32")] == {"Unmovable": 0, "Movable": 1528, "Reclaimable": 0,
                                      "HighAtomic": 0, "Isolate": 0}
    assert p.blocks[(0, "Normal")]["Reclaimable"] == 26
    assert p.mixed == {} and p.capped == set()


def test_pagetypeinfo_agrees_with_buddyinfo_read_with_it():
    # The two files were read back to back; per zone, the sum over migratetypes of each
    # order is free_area[order].nr_free, which buddyinfo prints.
    p = parse_pagetypeinfo(read("proc_pagetypeinfo.txt"))
    b = parse_buddyinfo(read("proc_buddyinfo.txt"))
    for node, zone in b:
        total = sum(p.free[(node, zone, mt)] for mt in p.migratetype_names)
        np.testing.assert_array_equal(total, b[(node, zone)])


def test_parse_pagetypeinfo_with_cma_column():
    p = parse_pagetypeinfo(read("proc_pagetypeinfo_cma.txt"))
    assert p.migratetype_names == ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA",
                                   "Isolate")
    np.testing.assert_array_equal(p.free[(0, "Normal", "CMA")],
                                  [37, 12, 6, 3, 1, 0, 2, 0, 1, 4, 12])
    np.testing.assert_array_equal(p.free[(0, "DMA32", "CMA")], [0] * 11)
    assert p.blocks[(0, "Normal")] == {"Unmovable": 39, "Movable": 511, "Reclaimable": 26,
                                       "HighAtomic": 0, "CMA": 32, "Isolate": 0}
    # the other columns read the same as in the real file
    real = parse_pagetypeinfo(read("proc_pagetypeinfo.txt"))
    for key, counts in real.free.items():
        np.testing.assert_array_equal(p.free[key], counts)


def test_parse_pagetypeinfo_capped_mixed_and_two_nodes():
    text = (
        "Page block order: 9\n"
        "Pages per block:  512\n"
        "\n"
        "Free pages count per migrate type at order       0      1      2      3      4      5"
        "      6      7      8      9     10 \n"
        "Node    0, zone   Normal, type      Movable >100000  54321      0      0      0      0"
        "      0      0      0      0      1 \n"
        "\n"
        "Number of blocks type     Unmovable      Movable \n"
        "Node 0, zone   Normal            3         4093 \n"
        "\n"
        "Number of mixed blocks    Unmovable      Movable \n"
        "Node 0, zone   Normal            1            2 \n"
        "Page block order: 9\n"
        "Pages per block:  512\n"
        "\n"
        "Free pages count per migrate type at order       0      1      2      3      4      5"
        "      6      7      8      9     10 \n"
        "Node    1, zone   Normal, type      Movable      7      0      0      0      0      0"
        "      0      0      0      0      0 \n"
        "\n"
        "Number of blocks type     Unmovable      Movable \n"
        "Node 1, zone   Normal            0         4096 \n"
    )
    p = parse_pagetypeinfo(text)
    np.testing.assert_array_equal(p.free[(0, "Normal", "Movable")],
                                  [100000, 54321, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    assert p.capped == {(0, "Normal", "Movable", 0)}
    assert p.mixed == {(0, "Normal"): {"Unmovable": 1, "Movable": 2}}
    assert p.blocks[(1, "Normal")] == {"Unmovable": 0, "Movable": 4096}
    assert p.free[(1, "Normal", "Movable")][0] == 7


def test_parse_extfrag_real_debugfs_files():
    u = parse_extfrag(read("debugfs_unusable_index.txt"))
    assert list(u) == [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
    assert u[(0, "DMA")].tolist() == [0.0] * 9 + [0.066, 0.2]
    assert u[(0, "Normal")][1] == 0.007 and u[(0, "Normal")][10] == 0.199
    e = parse_extfrag(read("debugfs_extfrag_index.txt"))
    assert all(v.tolist() == [-1.0] * 11 for v in e.values())


def test_parse_extfrag_c_remainders():
    # C prints index -500 as "0.-500" and -5 as "0.-05" ("%03d" of -5); -1000 as "-1.000"
    line = ("Node 0, zone   Normal -1.000  0.-500  0.-05  0.974  0.000 -1.000 -1.000 -1.000"
            " -1.000 -1.000  1.000 \n")
    assert parse_extfrag(line)[(0, "Normal")].tolist() == [
        -1.0, -0.5, -0.005, 0.974, 0.0, -1.0, -1.0, -1.0, -1.0, -1.0, 1.0]


def test_parse_vmstat_real_file():
    text = read("proc_vmstat.txt")
    v = parse_vmstat(text)
    assert len(v) == len(text.splitlines())
    assert list(v)[:2] == ["nr_free_pages", "nr_free_pages_blocks"]
    assert list(v)[-1] == "nr_unstable" and v["nr_unstable"] == 0
    for name in ("compact_stall", "compact_fail", "compact_success", "pgmigrate_success",
                 "thp_migration_success", "thp_fault_alloc"):
        assert isinstance(v[name], int) and v[name] >= 0


# --- malformed input ---------------------------------------------------------------------------

GOOD_BUDDY = "Node 0, zone      DMA      0      0      0      0      0      0      0      0" \
             "      1      1      3 \n"


@pytest.mark.parametrize("bad", [
    "Node 0, zone   Normal   1   2   3 \n",                      # too few orders
    "Node 0, zone   Normal" + "   1" * 12 + " \n",               # too many orders
    "Node 0, zone   Normal   1   2   x   4   5   6   7   8   9   10   11\n",
    "Nod 0, zone   Normal" + "   1" * 11 + "\n",
    GOOD_BUDDY,                                                  # duplicate (node, zone)
])
def test_parse_buddyinfo_malformed(bad):
    with pytest.raises(ValueError, match=r"^line 2: .*") as info:
        parse_buddyinfo(GOOD_BUDDY + bad)
    assert repr(bad.rstrip("\n")) in str(info.value)


def pagetypeinfo_with(line_no, replacement):
    lines = read("proc_pagetypeinfo.txt").splitlines(keepends=True)
    lines[line_no - 1] = replacement
    return "".join(lines)


@pytest.mark.parametrize("line_no, bad", [
    (1, "Page block order: nine\n"),
    (5, "Node    0, zone      DMA, type    Unmovable      0      0      0 \n"),
    (7, "Node    0, zone      DMA, type  Reclaimable      0      0      0      0      0      0"
        "      0      0      0      0      >x \n"),
    (12, "Node 0, zone    DMA32            0         1528 \n"),    # block row in the free table
    (22, "Node 0, zone      DMA            1            7            0            0 \n"),
    (23, "Node    0, zone    DMA32, type      Movable      1      2      4      2      5      4"
         "      3      3      4      2    752 \n"),               # free row in the blocks table
    (24, "garbage\n"),
])
def test_parse_pagetypeinfo_malformed(line_no, bad):
    with pytest.raises(ValueError, match=rf"^line {line_no}: ") as info:
        parse_pagetypeinfo(pagetypeinfo_with(line_no, bad))
    assert repr(bad.rstrip("\n")) in str(info.value)


def test_parse_pagetypeinfo_table_before_header():
    text = "".join(read("proc_pagetypeinfo.txt").splitlines(keepends=True)[3:])
    with pytest.raises(ValueError, match=r"^line 1: "):
        parse_pagetypeinfo(text)


def test_parse_pagetypeinfo_inconsistent_page_block_order():
    text = read("proc_pagetypeinfo.txt")
    with pytest.raises(ValueError, match=r"^line 25: "):
        parse_pagetypeinfo(text + "Page block order: 10\n")


@pytest.mark.parametrize("bad", [
    "Node 0, zone   Normal 0.000 0.007 \n",                       # too few orders
    "Node 0, zone   Normal" + " 0.5" * 11 + " \n",                # not "%03d"
    "Node 0, zone   Normal" + " 0.000" * 10 + " 0.-5 \n",         # "%03d" of -5 is "-05"
    "Node 0, zone   Normal" + " 0,000" * 11 + " \n",
])
def test_parse_extfrag_malformed(bad):
    good = "Node 0, zone      DMA" + " 0.000" * 11 + " \n"
    with pytest.raises(ValueError, match=r"^line 2: ") as info:
        parse_extfrag(good + bad)
    assert repr(bad.rstrip("\n")) in str(info.value)


@pytest.mark.parametrize("bad", ["pgfault\n", "pgfault 12 13\n", "pgfault twelve\n",
                                 "nr_free_pages 1\n"])                  # last: duplicate
def test_parse_vmstat_malformed(bad):
    with pytest.raises(ValueError, match=r"^line 3: ") as info:
        parse_vmstat("nr_free_pages 1\n\n" + bad)   # blank lines count
    assert repr(bad.rstrip("\n")) in str(info.value)


def test_parse_pagetypeinfo_free_table_only_names_from_rows():
    # a file cut before the blocks table still reports the migratetypes of its free rows
    lines = read("proc_pagetypeinfo_cma.txt").splitlines(keepends=True)
    p = parse_pagetypeinfo("".join(lines[:22]))
    assert p.blocks == {}
    assert p.migratetype_names == ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA",
                                   "Isolate")


@pytest.mark.parametrize("path, parse", [
    ("/proc/buddyinfo", parse_buddyinfo), ("/proc/pagetypeinfo", parse_pagetypeinfo),
    ("/proc/vmstat", parse_vmstat),
])
def test_parse_live_proc(path, parse):
    # the live backend reads these files on this machine
    try:
        text = Path(path).read_text()
    except OSError as e:
        pytest.skip(f"{path} unreadable: {e}")
    assert parse(text)
