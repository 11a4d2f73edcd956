"""pagecache-churn (quick size, folio) with GFP_ATOMIC order-3 buffers (or, with `nowait`,
GFP_NOWAIT order-3 slab pages): the highatomic reserve it builds, per profile. Prints one line
per (profile, share): requested/granted, the order-9 success, pages migrated, the peak and final
nr_reserved_highatomic (all zones).

    PYTHONPATH=$PWD .venv/bin/python tools/highatomic_churn.py [atomic|nowait]
"""
import functools
import sys

import simcore.machine as sm
from workloads.backend import SimBackend
from workloads.base import run_one

PROFILES = ("linux-6.1", "linux-6.12", "linux-6.18")
SHARES = (0.0, 0.05, 0.2)


def reserved(m):
    return sum(v["nr_reserved_highatomic"] for v in m.zoneinfo().values())


def main(knob="atomic"):
    if knob not in ("atomic", "nowait"):
        raise SystemExit(f"knob {knob!r} must be atomic or nowait")
    peak = [0]
    alloc_many = sm.Machine.alloc_many

    def watched(self, *args, **kwargs):
        out = alloc_many(self, *args, **kwargs)
        peak[0] = max(peak[0], reserved(self))
        return out

    sm.Machine.alloc_many = watched

    def factory(made, profile, **kw):
        made.append(SimBackend(profile=profile, **kw))
        return made[-1]

    for profile in PROFILES:
        for share in SHARES:
            peak[0] = 0
            made = []
            row = run_one("pagecache-churn", "folio", quick=True, params={knob: share},
                          backend_factory=functools.partial(factory, made, profile))
            print(profile, knob, share, row.get(f"{knob}_requested"),
                  row.get(f"{knob}_granted"),
                  row["highorder_success"], row["pages_migrated"], "peak reserved", peak[0],
                  "end", reserved(made[0].machine), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:2])
