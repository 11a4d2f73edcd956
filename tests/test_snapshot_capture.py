"""Snapshot capture (livekernel.snapshot), the snapshot file format and the zoneinfo parser."""
import os
import pathlib

import numpy as np
import pytest

from foliobench.cli import main
from simcore import procfs, snapshot_file

DATA = pathlib.Path(__file__).parent / "data"
IS_ROOT = os.geteuid() == 0
live = pytest.mark.live


def _small_snapshot(seed=0):
    rng = np.random.default_rng(seed)
    flags = np.repeat(rng.integers(0, 1 << 40, 50, dtype=np.uint64), rng.integers(1, 300, 50))
    counts = np.minimum(rng.integers(0, 3, len(flags)), 70000).astype(np.uint16)
    files = {name: (DATA / f"live_{name}.txt").read_text()
             for name in ("zoneinfo", "pagetypeinfo", "buddyinfo")}
    return snapshot_file.Snapshot(flags, counts, files, {"vm/x": "1"}, "6.18-test", {"a": 1})


def test_snapshot_file_round_trip(tmp_path):
    snap = _small_snapshot()
    path = tmp_path / "s.npz"
    snapshot_file.save(path, snap)
    back = snapshot_file.load(path)
    assert np.array_equal(back.kpageflags, snap.kpageflags)
    assert np.array_equal(back.kpagecount, snap.kpagecount)
    assert back.files == snap.files and back.settings == snap.settings
    assert back.kernel == "6.18-test" and back.meta == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]      # no temporary file left


def test_run_length_encoding_is_exact():
    values = np.array([5, 5, 5, 1, 2, 2, 5], dtype=np.uint64)
    runs, lengths = snapshot_file.run_length_encode(values)
    assert runs.tolist() == [5, 1, 2, 5] and lengths.tolist() == [3, 1, 2, 1]
    assert np.array_equal(snapshot_file.run_length_decode(runs, lengths), values)


@pytest.mark.parametrize("damage", ["truncate", "foreign", "garbage"])
def test_bad_snapshot_file_is_named(tmp_path, damage):
    path = tmp_path / "s.npz"
    snapshot_file.save(path, _small_snapshot())
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    elif damage == "foreign":
        np.savez(path, a=np.arange(3))
    else:
        path.write_bytes(b"not a snapshot at all")
    with pytest.raises(ValueError, match="snapshot"):
        snapshot_file.load(path)


def test_live_zoneinfo_sample_parses():
    zones = procfs.parse_zoneinfo((DATA / "live_zoneinfo.txt").read_text())
    dma32 = zones[(0, "DMA32")]
    assert dma32["start_pfn"] == 4096
    assert dma32["spanned"] >= dma32["present"] >= dma32["managed"] > 0
    assert dma32["min"] < dma32["low"] < dma32["high"]
    normal = zones[(0, "Normal")]
    assert len(normal["pcp_count"]) == len(dma32["pcp_count"]) >= 1
    assert len(normal["protection"]) == len(zones)
    assert "nr_free_pages" in normal


def test_zoneinfo_parser_rejects_values_before_a_zone():
    with pytest.raises(ValueError, match="line 1"):
        procfs.parse_zoneinfo("  spanned 12\n")


def test_live_samples_agree_with_each_other():
    """The captured buddyinfo and pagetypeinfo parse, and the free counts agree zone by zone
    where the two files were read a moment apart (equal order by order within 5%)."""
    buddy = procfs.parse_buddyinfo((DATA / "live_buddyinfo.txt").read_text())
    pti = procfs.parse_pagetypeinfo((DATA / "live_pagetypeinfo.txt").read_text())
    assert pti.pageblock_order == 9
    for (node, zone), counts in buddy.items():
        per_type = sum(v for (n, z, _), v in pti.free.items() if (n, z) == (node, zone))
        pages = lambda c: int((c << np.arange(len(c))).sum())    # noqa: E731
        assert abs(pages(per_type) - pages(counts)) <= 0.05 * max(pages(counts), 1) + 64


def test_snapshot_without_root_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out = tmp_path / "s.npz"
    assert main(["live", "snapshot", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs root" in err
    assert not out.exists()


@live
@pytest.mark.skipif(not IS_ROOT, reason="reading /proc/kpageflags needs root")
def test_live_snapshot_covers_memory(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["live", "snapshot", "-o", str(out)]) == 0
    snap = snapshot_file.load(out)
    zones = procfs.parse_zoneinfo(snap.files["zoneinfo"])
    end = max(z["start_pfn"] + z["spanned"] for z in zones.values() if z.get("spanned"))
    assert snap.nr_pfns >= end
    buddy = (snap.kpageflags >> np.uint64(10)) & np.uint64(1)
    assert buddy.sum() > 0
    assert "thp/enabled" in snap.settings and "vm/min_free_kbytes" in snap.settings
    assert "MB in" in capsys.readouterr().out
