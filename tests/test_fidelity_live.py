"""foliobench fidelity on the live kernel (root): a short recording restores every setting and
leaves a corpus the twin replays."""
import os

import numpy as np
import pytest
from livestate import leftovers, settings

from foliobench import fidelity_corpus, fidelity_live
from livekernel import fidelity as lk

pytestmark = [pytest.mark.live, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(lk.HUGETLB_POOL),
                                 reason="needs root and a 2 MiB hugetlb pool")]


def _state():
    out = settings()
    out[lk.PCP_FRACTION] = open(lk.PCP_FRACTION).read().strip()
    out["tracefs instances"] = sorted(p for p in os.listdir("/run/foliobench")
                                      if p.startswith("tracefs-"))
    return out


def test_recording_restores_every_setting_and_writes_a_corpus(tmp_path):
    before = _state()
    manifest = fidelity_live.record(tmp_path, ["compact_memory", "kcompactd"], repeat=1,
                                    progress=lambda text: None)
    assert _state() == before
    assert leftovers("/var/tmp") == []
    loaded = fidelity_corpus.load(tmp_path)
    assert [e["name"] for e in loaded["experiments"]] == ["compact_memory", "kcompactd"]
    for exp in manifest["experiments"]:
        (run,) = exp["runs"]
        live = run["live"]
        # the per-CPU lists were settled and measured; the deferral trace ran
        assert isinstance(live["pcp"]["pcp_before"]["Normal"], int)
        assert isinstance(live["pcp"]["pcp_after"]["Normal"], int)
        assert live["deferral_events"] is None or set(live["deferral_events"]) == set(
            lk.DEFERRAL_EVENTS)
        assert live["figures"]["compact_migrate_scanned"] >= 0
    kc = manifest["experiments"][1]["runs"][0]
    assert kc["action"] == f"kcompactd={fidelity_live.PROACTIVE_MS}"
    assert kc["live"]["prep"]["fragment_pages"] > 0


def test_traced_runs_are_appended_then_recorded_again(tmp_path):
    """--append --trace: a traced run added after the corpus's own, its tracepoints stored
    and summed to the kernel's counters; a second time it replaces the first; every setting
    restored, no tracefs instance left."""
    from foliobench import fidelity_trace
    before = _state()
    fidelity_live.record(tmp_path, ["compact_memory"], repeat=1, progress=lambda text: None)
    for _ in range(2):
        fidelity_live.record(tmp_path, ["compact_memory"], repeat=1, trace=True, append=True,
                             progress=lambda text: None)
        assert _state() == before
        runs = fidelity_corpus.load(tmp_path)["experiments"][0]["runs"]
        assert [r["snapshot"] for r in runs] == ["compact_memory-1.npz", "compact_memory-2.npz"]
        assert "trace" not in runs[0] and runs[1]["trace"]["lost_events"] == 0
        data = fidelity_trace.load(tmp_path / runs[1]["trace"]["file"])
        assert data.count("mm_compaction_begin") == data.count("mm_compaction_end") > 0
        migrated = data.events.get("mm_migrate_pages", {"succeeded": np.zeros(0)})
        counters = runs[1]["live"]["counters"]
        assert abs(int(migrated["succeeded"].sum()) - counters["pgmigrate_success"]) <= max(
            16, counters["pgmigrate_success"] // 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "compact_memory-1.npz", "compact_memory-2.npz", "compact_memory-2.trace.npz",
        "manifest.json"]
    assert not os.path.isdir("/sys/kernel/tracing/instances") or not [
        p for p in os.listdir("/sys/kernel/tracing/instances") if p.startswith("foliobench")]
