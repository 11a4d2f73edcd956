"""One real guest boot per kernel (QEMU's TCG, Debian's 6.1 and 6.12 from tools/setup): the
capability probe, a short live workload and the matrix rows the host cannot run, with what each
row's evidence must show. Used by test_guest_real_6_1.py and test_guest_real_6_12.py: one module
per kernel, so xdist's --dist loadfile gives the two boots to two workers, and 1-vCPU guests run
side by side on a 2-core machine (foliobench.guest.boot_slots).

The guest is sized for CI (docs/guests.md, "The real-guest tests"): 1 GiB in two NUMA nodes of
512 MiB, 1 vCPU, 512 MiB of ZONE_MOVABLE (three online movable blocks; the top block of each
node holds early-boot PG_reserved pages and is skipped, the clean one is offlined). Under TCG
the time goes with the memory the rows fill (compaction-direct and hot-unplug fill the whole
guest), so this is the smallest layout where every row still has its evidence."""
import json
import os

import pytest

from foliobench import guest

# the rows the host cannot run, plus compact_memory and swap-out (the guest's own kernel)
MATRIX_PROBES = ("compaction-direct", "compaction-memory", "hotunplug", "memory-failure", "numa",
                 "swap-out")
# one size per kernel, the one its rows can measure: 6.1 has no mTHP (a 64K fault is a THP or
# base pages), 6.12 has the 64K size, measured without the 4K cost reference
# (--no-cost-reference: a 4K cell fills the guest with 4K pages, minutes under TCG; the
# verdicts then rest on success and kept order)
GUEST_SIZES = {"6.1": ("4K",), "6.12": ("64K",)}
# mitigations=off: the guest is disposable, and speculation barriers change nothing the rows
# measure (its own effect on the time under TCG was not measured separately). nokaslr: where
# early-boot memory lands decides which ZONE_MOVABLE blocks hold PG_reserved pages; with a
# random physical placement one boot in several left none of the three movable blocks clean
# (6.12, fresh-clone CI run of 2026-12-02 07:16 UTC: "every ZONE_MOVABLE block holds
# early-boot (PG_reserved) pages"), while without it both kernels boot with the same layout,
# two blocks reserved and one clean
GUEST_PARAMS = dict(mem="1G", cpus=1, numa=2, movable="512M", disk="512M",
                    append="mitigations=off nokaslr")
# a boot that takes longer has hung or met a far slower machine than CI's (measured in
# docs/guests.md); killed then, with its process group
TIMEOUT_S = 1500


def need_guest(release):
    """The installed kernel, or a skip with the reason this machine cannot boot it."""
    if os.environ.get("FOLIOBENCH_GUEST_TESTS") == "0":
        pytest.skip("real guests switched off (FOLIOBENCH_GUEST_TESTS=0)")
    reason = guest.unavailable_reason()
    if reason:
        pytest.skip(f"cannot boot a guest here: {reason}")
    try:
        return guest.resolve_kernel(release)
    except ValueError as exc:
        pytest.skip(f"no {release} kernel: {exc}")


def guest_argv(sizes):
    argv = ["live", "probe", "--json", "++",
            "run", "highalloc", "--backend", "live", "--quick", "--mem", "128M",
            "--live-dir", "/mnt", "--format", "csv", "--no-plots", "++",
            "matrix", "--backend", "live", "--allow-offline", "--allow-poison",
            "--live-dir", "/mnt", "--sizes", ",".join(sizes), "--format", "json",
            "--no-cost-reference", "--swap", "zram"]
    for probe in MATRIX_PROBES:
        argv += ["--probe", probe]
    return argv


def check_real_guest(release, tmp_path):
    kernel = need_guest(release)
    sizes = GUEST_SIZES[release]
    params = guest.boot_params(**GUEST_PARAMS, kernel=kernel)
    code, run_dir, meta = guest.run_guest(guest_argv(sizes), kernel, params, timeout=TIMEOUT_S,
                                          root=tmp_path, echo=None)
    log = (run_dir / "guest.log").read_text()
    assert code == 0, log[-3000:]
    assert meta["booted"] and meta["kernel"] == kernel.release
    assert run_dir.parent == tmp_path / "guest" and kernel.release in run_dir.name
    saved = json.loads((run_dir / "guest.json").read_text())
    assert saved["params"]["numa"] == 2 and saved["boot_s"] > 0
    assert saved["total_cpu_s"] > 0          # QEMU's CPU time, reaped with vng
    probe = json.loads(log[log.index("{"):log.index("\n}\n") + 2])
    assert probe["kernel"]["detail"] == kernel.release
    assert "Movable" in probe["zones"]["detail"]
    assert probe["mthp"]["available"] == (release != "6.1")
    (result,) = (run_dir / "runs").iterdir()
    records = json.loads((result / "results.json").read_text())["records"]
    assert records and records[0]["backend"] == "live"
    assert records[0]["highorder_requested"] > 0
    doc = json.loads((run_dir / "matrix" / "latest.json").read_text())
    (m,) = doc["matrices"]
    assert m["kernel"] == kernel.release and m["sizes"] == list(sizes)
    assert [row["probe"] for row in m["rows"]] == list(MATRIX_PROBES)
    # every row reported its time (where a guest's time goes)
    assert all(f"matrix: {name} (" in log for name in MATRIX_PROBES)
    for size in sizes:
        cells = {row["probe"]: row["cells"][size] for row in m["rows"]}
        _check_cells(cells, size)
    return m


def _check_cells(cells, size):
    # what the host cannot run, the guest measures: direct compaction (the guest may be
    # filled), ZONE_MOVABLE, memory-failure
    for name in ("compaction-direct", "compaction-memory", "hotunplug", "memory-failure",
                 "swap-out"):
        assert cells[name]["verdict"] != "untested", (size, name, cells[name]["reason"])
    direct = cells["compaction-direct"]["evidence"]
    assert direct["unit"] == "order-9 allocations" and direct["counters"].get("compact_stall")
    assert direct["succeeded"] >= 1, direct
    # the blocks memblock left PG_reserved pages in (the top of each node) are skipped, the
    # others all offline
    unplug = cells["hotunplug"]["evidence"]
    assert unplug["blocks_with_reserved_pages"] >= 1, unplug
    assert unplug["succeeded"] == unplug["attempted"] >= 1, unplug
    failure = cells["memory-failure"]["evidence"]
    assert failure["succeeded"] >= 1, failure
    # swap on a zram device of the run's own: no 128M swap file written through the emulated
    # disk, and the simulator's swap area is zram-like (docs/guests.md)
    swap = cells["swap-out"]["evidence"]
    assert swap["counters"].get("pswpout", 0) > 0, swap
    # NUMA balancing driven from the live backend (livekernel/features.py): the folios placed
    # on node 1 come back to the task's node 0 through hinting faults
    numa = cells["numa"]
    assert numa["verdict"] != "untested", (size, numa["reason"])
    assert numa["evidence"]["counters"].get("numa_pages_migrated", 0) > 0, numa["evidence"]
    assert numa["evidence"]["counters"].get("numa_hint_faults", 0) > 0, numa["evidence"]
