"""foliobench fidelity on the live kernel (root): a short recording restores every setting and
leaves a corpus the twin replays."""
import os

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
