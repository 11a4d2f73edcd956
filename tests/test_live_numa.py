"""The live backend's NUMA step without root or a second node: the PFN -> node lookup on a
fake sysfs tree, and numa_migrate()'s control flow (place on the other node, reset the policy,
balancing on through the journal, touch until the folios are back) against a fake kernel."""
import mmap

import numpy as np
import pytest

from livekernel import features, numa
from workloads.backend import Unsupported

BLOCK_PAGES = 32768             # 128 MiB memory blocks


def _sysfs(tmp_path, layout, cpus=None):
    nodes, memory = tmp_path / "node", tmp_path / "memory"
    memory.mkdir()
    (memory / "block_size_bytes").write_text(f"{BLOCK_PAGES * 4096:x}\n")
    for node, blocks in layout.items():
        d = nodes / f"node{node}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text((cpus or {}).get(node, "") + "\n")
        for b in blocks:
            (memory / f"memory{b}").mkdir()
            (d / f"memory{b}").symlink_to(memory / f"memory{b}")
    return nodes, memory


def test_pfn_node_from_the_memory_blocks(tmp_path):
    nodes, memory = _sysfs(tmp_path, {0: [0, 1], 1: [2, 3]}, {0: "0", 1: "1-2"})
    block_pages, blocks = numa.pfn_to_node_map(nodes, memory)
    assert block_pages == BLOCK_PAGES
    got = numa.pfn_nodes([0, BLOCK_PAGES * 2 - 1, BLOCK_PAGES * 2, BLOCK_PAGES * 4 - 1,
                          BLOCK_PAGES * 4, -1], block_pages, blocks)
    assert got.tolist() == [0, 0, 1, 1, -1, -1]
    assert numa.cpu_node(2, nodes) == 1 and numa.cpu_node(0, nodes) == 0
    with pytest.raises(LookupError):
        numa.cpu_node(3, nodes)


def test_no_memory_blocks_is_a_lookup_error(tmp_path):
    (tmp_path / "node" / "node0").mkdir(parents=True)
    (tmp_path / "memory").mkdir()
    with pytest.raises(LookupError, match="no memory blocks"):
        numa.pfn_to_node_map(tmp_path / "node", tmp_path / "memory")


def test_node_lists():
    assert numa.parse_list("0-2,5\n") == [0, 1, 2, 5]
    assert numa.parse_list("") == []


def test_scan_knobs_prefer_debugfs_then_sysctls(tmp_path, monkeypatch):
    debug, sysctl = tmp_path / "debug", tmp_path / "sys"
    debug.mkdir()
    sysctl.mkdir()
    (sysctl / "numa_balancing_scan_delay_ms").write_text("1000")
    monkeypatch.setattr(numa, "SCAN_DIRS", ((str(debug), ""), (str(sysctl), "numa_balancing_")))
    assert numa.scan_knobs() == {f"{sysctl}/numa_balancing_scan_delay_ms": 0}
    (debug / "scan_delay_ms").write_text("1000")
    (debug / "scan_period_min_ms").write_text("1000")
    assert numa.scan_knobs() == {f"{debug}/scan_delay_ms": 0, f"{debug}/scan_period_min_ms": 100}


def _zoneinfo(free_normal, free_movable=0):
    """Node 0 (DMA, DMA32, Normal, Movable, Device; Normal's free pages given) and node 1, in
    /proc/zoneinfo's layout: "protection:" holds one lowmem_reserve per zone type."""
    def zone(node, name, free, high, managed, protection):
        return (f"Node {node}, zone {name:>8}\n  per-node stats\n      nr_inactive_anon 5\n"
                f"  pages free     {free}\n        boost    0\n        min      {high // 2}\n"
                f"        low      {high * 3 // 4}\n        high     {high}\n"
                f"        spanned  {managed}\n        present  {managed}\n"
                f"        managed  {managed}\n        cma      0\n"
                f"        protection: ({protection})\n      nr_free_pages {free}\n")
    return "".join([zone(0, "DMA", 0, 0, 0, "0, 0, 0, 0, 0"),
                    zone(0, "DMA32", 0, 0, 0, "0, 0, 0, 0, 0"),
                    zone(0, "Normal", free_normal, 1000, 100000, "0, 0, 0, 500, 9999"),
                    zone(0, "Movable", free_movable, 200, 20000, "0, 0, 0, 0, 0"),
                    zone(0, "Device", 0, 0, 0, "0, 0, 0, 0, 0"),
                    zone(1, "Normal", 90000, 1000, 100000, "0, 0, 0, 0, 0")])


def test_room_on_a_node_is_above_high_watermark_and_reserve():
    text = _zoneinfo(free_normal=1600)
    # Normal: free 1600 > high 1000 + reserve for a movable request 500 (not Device's 9999)
    assert numa.zone_room(0, text) == {"Normal": (1600, 1000, 500), "Movable": (0, 200, 0)}
    assert numa.zone_room(1, text) == {"Normal": (90000, 1000, 0)}
    assert numa.room_for(0, 99, text) and not numa.room_for(0, 100, text)
    # any zone with room will do (migrate_balanced_pgdat() takes the first)
    assert numa.room_for(0, 500, _zoneinfo(free_normal=0, free_movable=701))
    assert not numa.room_for(2, 1, text)                 # no such node: no room


class FakeKernel:
    """Folios at PFNs on node 0 (blocks 0-1) or node 1 (blocks 2-3); mbind(MPOL_PREFERRED)
    and the new fault put them on node 1 (those in `small` as order 0); after `after`
    touches with numa_balancing on, each folio not in `stuck` comes back to node 0, and
    those in `split` come back as order 0."""

    def __init__(self, n, after=3, stuck=(), split=(), zoneinfo=None, cache_pages=0,
                 small=()):
        self.pfns = np.arange(n, dtype=np.int64) * 16
        self.orders = np.full(n, 4)
        self.after, self.stuck, self.split = after, set(stuck), set(split)
        self.touches, self.calls, self.settings, self.dropped_ranges = 0, [], {}, []
        self.zoneinfo, self.cache_pages, self.dropped = zoneinfo, cache_pages, []
        self.small = list(small)
        self.free = 100000                 # node 0's free pages (Normal)
        if zoneinfo:
            self.free = 1000 + 500 + 1     # at its high watermark plus reserve: no room
            self._write_zoneinfo()

    def _write_zoneinfo(self):
        self.zoneinfo.write_text(_zoneinfo(self.free))

    def drop_caches(self, value):
        self.dropped.append(value)
        self.free += self.cache_pages
        self._write_zoneinfo()

    def room(self):
        return numa.room_for(0, 16 * len(self.pfns), self.zoneinfo.read_text()) \
            if self.zoneinfo else True

    def mbind(self, addr, length, mode, node=None, flags=0):
        self.calls.append((mode, node, flags))
        if mode == numa.MPOL_PREFERRED:     # the range is faulted again there
            self.pfns = self.pfns % BLOCK_PAGES + 2 * BLOCK_PAGES
            self.orders[self.small] = 0

    def touch(self):
        self.touches += 1
        if self.settings.get(numa.NUMA_BALANCING) == 1 and self.touches >= self.after \
                and self.room():
            for i in range(len(self.pfns)):
                if i not in self.stuck and self.pfns[i] >= 2 * BLOCK_PAGES:
                    self.pfns[i] -= 2 * BLOCK_PAGES
                    if i in self.split:
                        self.orders[i] = 0


class FakeMapping:
    addr = 1 << 30

    def __init__(self, kernel):
        self.kernel = kernel

    def madvise(self, advice, start, length):
        assert advice == mmap.MADV_DONTNEED
        self.kernel.dropped_ranges.append((start // 4096, length // 4096))

    def bytes(self, start, length):
        self.kernel.touch()
        return np.zeros(length, dtype=np.uint8)


class Steps(features.FeatureSteps):
    dry_run = False

    def __init__(self, kernel, disposable=True, balancing="0"):
        self.kernel, self.may_fill_memory, self.time_ns = kernel, disposable, {}
        self._order = kernel.orders.copy()
        self.region = {"mm": FakeMapping(kernel), "start": 0}
        self.journal = type("J", (), {"read": staticmethod(lambda path: balancing),
                                      "write_only": staticmethod(self._write_only)})()

    def _write_only(self, path, value):
        assert path == "/proc/sys/vm/drop_caches", path
        self.kernel.drop_caches(value)

    def _anon_only(self, handles, what):
        return np.asarray(handles, dtype=np.int64)

    def _anon_ranges(self, handles):
        return [(self.region, 0, len(handles) * 16)]

    def folio_pfns(self, handles):
        return self.kernel.pfns[handles]

    def folio_orders(self, handles):
        return self.kernel.orders[handles]

    def _set(self, path, value):
        self.kernel.settings[path] = value


MIGRATE_LINES = (
    "  python-1 [000] .....  1.000: mm_migrate_pages: nr_succeeded=16 nr_failed=0 "
    "nr_thp_succeeded=0 nr_thp_failed=0 nr_thp_split=0 nr_split=1 mode=MIGRATE_ASYNC "
    "reason=numa_misplaced\n"
    "  python-1 [000] .....  1.100: mm_migrate_pages: nr_succeeded=16 nr_failed=0 "
    "nr_thp_succeeded=0 nr_thp_failed=0 nr_thp_split=0 nr_split=0 mode=MIGRATE_ASYNC "
    "reason=numa_misplaced\n"
    "  kcompactd0-9 [000] .....  1.200: mm_migrate_pages: nr_succeeded=3 nr_failed=1 "
    "nr_thp_succeeded=0 nr_thp_failed=0 nr_thp_split=0 nr_split=0 mode=MIGRATE_SYNC_LIGHT "
    "reason=compaction\n")


class FakeTrace:
    """DeferralTrace with the lines above as the window's trace."""

    def __init__(self, journal, events=()):
        assert events == (features.MIGRATE_EVENT,)
        self.text = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.text = MIGRATE_LINES
        return False


def test_migrate_pages_events_summed_per_reason():
    assert features.fidelity.migrate_totals(MIGRATE_LINES) == {
        "numa_misplaced": {"calls": 2, "succeeded": 32, "failed": 0, "thp_succeeded": 0,
                           "thp_failed": 0, "thp_split": 0, "large_folio_split": 1},
        "compaction": {"calls": 1, "succeeded": 3, "failed": 1, "thp_succeeded": 0,
                       "thp_failed": 0, "thp_split": 0, "large_folio_split": 0}}
    assert features.fidelity.migrate_totals(None) is None
    assert features.fidelity.migrate_totals("") == {}


@pytest.fixture
def machine(tmp_path, monkeypatch):
    nodes, memory = _sysfs(tmp_path, {0: [0, 1], 1: [2, 3]}, {0: "0", 1: ""})
    (tmp_path / "numa_balancing").write_text("0\n")
    monkeypatch.setattr(features, "NODES", str(nodes))
    monkeypatch.setattr(numa, "NUMA_BALANCING", str(tmp_path / "numa_balancing"))
    monkeypatch.setattr(numa, "pfn_to_node_map", lambda: (BLOCK_PAGES, {0: 0, 1: 0, 2: 1,
                                                                        3: 1}))
    monkeypatch.setattr(numa, "nodes_with_memory", lambda: [0, 1])
    monkeypatch.setattr(numa, "current_cpu", lambda: 0)
    monkeypatch.setattr(numa, "cpu_node", lambda cpu: 0)
    monkeypatch.setattr(numa, "scan_knobs", lambda: {"/debug/scan_delay_ms": 0})
    monkeypatch.setattr(numa, "debugfs_mounted", lambda: True)
    (tmp_path / "zoneinfo").write_text(_zoneinfo(free_normal=100000))
    monkeypatch.setattr(features.fidelity, "DeferralTrace", FakeTrace)
    monkeypatch.setattr(numa, "ZONEINFO", str(tmp_path / "zoneinfo"))
    pinned = []
    monkeypatch.setattr(features.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(features.os, "sched_setaffinity", lambda pid, cpus: pinned.append(cpus))
    return tmp_path, pinned


def test_folios_placed_away_come_back_through_balancing(machine, monkeypatch):
    _, pinned = machine
    kernel = FakeKernel(8, split=[3])
    monkeypatch.setattr(numa, "mbind", kernel.mbind)
    steps = Steps(kernel)
    moved = steps.numa_migrate(np.arange(8))
    assert moved == [True] * 8
    # bound to node 1 with MOVE|STRICT, then the default policy back (balancing may move them)
    assert kernel.calls == [(numa.MPOL_PREFERRED, 1, 0), (numa.MPOL_DEFAULT, None, 0)]
    assert kernel.dropped_ranges == [(0, 8 * 16)]       # MADV_DONTNEED before the new fault
    assert kernel.settings == {numa.NUMA_BALANCING: 1, "/debug/scan_delay_ms": 0}
    assert pinned == [{0}, {0, 1}]                   # on the task's CPU, then as it was
    seen = steps.numa_observed
    assert seen["task_node"] == 0 and seen["placed_on"] == 1 and seen["placed"] == 8
    assert seen["placed_whole"] == 8
    assert seen["kept_order"] == 7 / 8 and seen["split_to"] == {0: 1, 4: 7}
    assert seen["migrate_pages_calls"]["numa_misplaced"]["large_folio_split"] == 1
    assert "numa" in steps.time_ns


def test_folios_that_stay_away_are_false_after_the_timeout(machine, monkeypatch):
    kernel = FakeKernel(4, stuck=[1, 2])
    monkeypatch.setattr(numa, "mbind", kernel.mbind)
    steps = Steps(kernel)
    assert steps.numa_migrate(np.arange(4), timeout_s=0.05) == [True, False, False, True]
    assert steps.numa_observed["kept_order"] == 1.0


def test_one_node_keeps_its_reason(machine, monkeypatch, tmp_path):
    one = tmp_path / "one"
    (one / "node0").mkdir(parents=True)
    monkeypatch.setattr(features, "NODES", str(one))
    with pytest.raises(Unsupported, match="one NUMA node \\(node0\\)"):
        Steps(FakeKernel(1)).numa_migrate(np.arange(1))


def test_without_numa_balancing_or_on_the_host_it_is_unsupported(machine, monkeypatch):
    tmp_path, _ = machine
    with pytest.raises(Unsupported, match="not a disposable guest"):
        Steps(FakeKernel(1), disposable=False).numa_migrate(np.arange(1))
    monkeypatch.setattr(numa, "NUMA_BALANCING", str(tmp_path / "missing"))
    with pytest.raises(Unsupported, match="CONFIG_NUMA_BALANCING"):
        Steps(FakeKernel(1)).numa_migrate(np.arange(1))


def test_a_full_task_node_gets_its_caches_dropped_in_a_guest(machine, monkeypatch):
    tmp_path, _ = machine
    kernel = FakeKernel(4, zoneinfo=tmp_path / "zoneinfo", cache_pages=5000)
    monkeypatch.setattr(numa, "mbind", kernel.mbind)
    steps = Steps(kernel)
    assert steps.numa_migrate(np.arange(4), timeout_s=1) == [True] * 4
    assert kernel.dropped == [3]
    seen = steps.numa_observed
    assert seen["room_zones"]["Normal"] == (1501, 1000, 500)
    assert seen["room_zones_after_drop_caches"]["Normal"] == (6501, 1000, 500)
    assert seen["room_for_sample"] is True


def test_a_full_task_node_on_the_host_is_left_alone_and_said(machine, monkeypatch):
    tmp_path, _ = machine
    kernel = FakeKernel(4, zoneinfo=tmp_path / "zoneinfo", cache_pages=5000)
    monkeypatch.setattr(numa, "mbind", kernel.mbind)
    steps = Steps(kernel, disposable=False, balancing="1")
    assert steps.numa_migrate(np.arange(4), timeout_s=0.05) == [False] * 4
    assert kernel.dropped == []
    assert steps.numa_observed["room_for_sample"] is False
    assert "room_zones_after_drop_caches" not in steps.numa_observed


def test_a_folio_faulted_again_at_another_order_does_not_count(machine, monkeypatch):
    kernel = FakeKernel(4, small=[2])
    monkeypatch.setattr(numa, "mbind", kernel.mbind)
    steps = Steps(kernel)
    assert steps.numa_migrate(np.arange(4), timeout_s=1) == [True, True, False, True]
    seen = steps.numa_observed
    assert seen["placed"] == 4 and seen["placed_whole"] == 3 and seen["kept_order"] == 1.0
