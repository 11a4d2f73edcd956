"""pagecache-churn (quick size, folio) with GFP_ATOMIC order-3 buffers: the highatomic reserve
it builds, per profile. Prints one line per (profile, atomic share): atomic requested/granted,
the order-9 success, pages migrated, the peak and final nr_reserved_highatomic (all zones).

    PYTHONPATH=$PWD .venv/bin/python tools/highatomic_churn.py
"""
from workloads.base import run_one
from workloads.backend import SimBackend
import simcore.machine as sm
peak = [0]
orig = sm.Machine.alloc_many
def wrapped(self, *a, **kw):
    out = orig(self, *a, **kw)
    peak[0] = max(peak[0], sum(v["nr_reserved_highatomic"] for v in self.zoneinfo().values()))
    return out
sm.Machine.alloc_many = wrapped
for profile in ("linux-6.1", "linux-6.18"):
    for atomic in (0.0, 0.05, 0.2):
        peak[0] = 0
        made = []
        def factory(**kw):
            made.append(SimBackend(profile=profile, **kw)); return made[-1]
        row = run_one("pagecache-churn", "folio", quick=True, params={"atomic": atomic},
                      backend_factory=factory)
        m = made[0].machine
        print(profile, atomic, row.get("atomic_requested"), row.get("atomic_granted"),
              row["highorder_success"], row["pages_migrated"], "peak reserved", peak[0],
              "end", m.zoneinfo()["DMA32"]["nr_reserved_highatomic"], flush=True)
