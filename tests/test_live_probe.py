"""The live capability probe: on this machine's real kernel, and on a fake tree."""
import json
import os
import platform
import subprocess
import sys

import pytest

from livekernel.probe import probe

pytestmark = pytest.mark.live

REAL = os.path.exists("/sys/kernel/mm")


@pytest.mark.skipif(not REAL, reason="no /sys/kernel/mm: not a Linux machine with sysfs")
def test_probe_reads_this_kernel():
    caps = probe()
    assert caps["kernel"].detail == platform.release()
    assert caps["root"].available == (os.geteuid() == 0)
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
        assert f"enabled={fh.read().split('[')[1].split(']')[0]}" in caps["thp"].detail
    with open("/sys/devices/system/memory/block_size_bytes") as fh:
        assert caps["memory_blocks"].values["block_size"] == int(fh.read(), 16)
    meminfo = open("/proc/meminfo").read()
    assert caps["cma"].available == ("CmaTotal:" in meminfo and
                                     "CmaTotal:              0 kB" not in meminfo)
    for cap in caps.values():
        assert cap.detail                       # every line says what was seen or why not


def test_probe_says_why_on_a_bare_tree(tmp_path):
    (tmp_path / "proc/sys/vm").mkdir(parents=True)
    (tmp_path / "proc/sys/vm/compaction_proactiveness").write_text("20\n")
    (tmp_path / "proc/meminfo").write_text("MemTotal: 1000 kB\nCmaTotal: 0 kB\n")
    (tmp_path / "sys/kernel/debug").mkdir(parents=True)
    caps = probe(tmp_path)
    assert not caps["thp"].available
    assert "missing file /sys/kernel/mm/transparent_hugepage/enabled" in caps["thp"].detail
    assert "CONFIG_COMPACTION" in caps["compaction"].detail
    assert "CmaTotal is 0 kB" in caps["cma"].detail
    assert "debugfs not mounted" in caps["debugfs_extfrag"].detail
    assert "missing file /sys/devices/system/memory/block_size_bytes" in \
        caps["memory_blocks"].detail
    assert not caps["ksm"].available and "CONFIG_KSM" in caps["ksm"].detail


def test_cli_probe_json():
    proc = subprocess.run([sys.executable, "-m", "foliobench", "live", "probe", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) >= {"kernel", "root", "thp", "mthp", "compaction", "hugetlb",
                        "debugfs_extfrag", "memory_blocks", "cma", "swap", "zswap", "ksm"}
