"""The live half of `foliobench fidelity`: the fixed set of paired experiments run on the
running kernel and recorded as a corpus (snapshots + live outcomes) that the twin replays.

Each run of an experiment: per-CPU lists settled (livekernel.fidelity.settle_pcp), the
experiment's preparation, a snapshot right before the action, the action with its /proc/vmstat
deltas and deferral trace events, buddyinfo and kpageflags after, then everything it allocated
given back. The experiments (EXPERIMENTS):
- compact_memory: echo 1 > /proc/sys/vm/compact_memory on the current state.
- hugetlb: thpcompact-shaped fragmentation of FRAGMENT_BYTES, then the hugetlb pool grown by
  all the free memory the host can spare (livekernel.fidelity.hugetlb_target()).
- mthp64k: the same fragmentation, then a second phase of 64K anonymous faults as large as the
  holes it left.
- kcompactd: the same fragmentation, then vm.compaction_proactiveness = PROACTIVENESS for
  PROACTIVE_MS while kcompactd runs on its own.
Sizes keep the whole set to a few minutes and inside the live memory cap.
"""
import os
import pathlib
import platform
import time

from livekernel import fidelity as lk
from livekernel import snapshot as livesnap
from livekernel.session import LiveRefused, LiveSession, mem_cap_bytes
from simcore import snapshot_file

from . import fidelity_corpus as corpus
from .fidelity_metrics import RECORDED_COUNTERS, figures, large_anon_pages

FRAGMENT_BYTES = 3 << 30
ARENA_BYTES = FRAGMENT_BYTES * 3 // 2     # the fragmentation plus the second faulting phase
PROACTIVENESS = 90
PROACTIVE_MS = 4000
EXPERIMENTS = ("compact_memory", "hugetlb", "mthp64k", "kcompactd")
DEFAULT_CAP = "30%"
LOCK_WAIT_S = 300.0          # others run live tests here: wait for the lock this long


def check_experiments(names):
    """The experiments asked for, in EXPERIMENTS order; ValueError naming an unknown one."""
    if not names:
        return list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"experiment {unknown[0]!r} is unknown; known: {', '.join(EXPERIMENTS)}")
    return [n for n in EXPERIMENTS if n in names]


def _fragment(backend):
    kept, faulted, holes = lk.thpcompact_fragment(backend, FRAGMENT_BYTES >> 12)
    return {"fragment_pages": faulted, "holes_pages": holes, "kept_handles": len(kept)}


def _act_compact(session, backend, prep):
    lk.compact_memory(session.journal)
    return "compact_memory", {}, {}


def _act_hugetlb(session, backend, prep):
    asked = lk.hugetlb_target(session.cap_bytes)
    if asked <= 0:
        raise LiveRefused("hugetlb: no free memory to spare on this host right now "
                          f"(MemFree less {lk.HUGETLB_RESERVE_BYTES >> 30} GiB)")
    got, before = lk.grow_hugetlb(session.journal, asked)
    session.pool_to = before
    return f"hugetlb={asked}", {"asked": asked, "granted": max(got, 0)}, {}


def _act_mthp(session, backend, prep):
    count = max(prep["holes_pages"] >> 4, 1)
    got = backend.fault_anon(count, [4])
    granted = len(got.get(4, ()))
    return f"fault=64K:{count}", {"asked": count, "granted": granted}, {}


def _act_kcompactd(session, backend, prep):
    lk.set_proactiveness(session.journal, PROACTIVENESS)
    time.sleep(PROACTIVE_MS / 1000)
    lk.set_proactiveness(session.journal, session.proactiveness_found)
    return f"kcompactd={PROACTIVE_MS}", {}, {"proactiveness": PROACTIVENESS,
                                             "ms": PROACTIVE_MS}


ACTIONS = {"compact_memory": (False, _act_compact), "hugetlb": (True, _act_hugetlb),
           "mthp64k": (True, _act_mthp), "kcompactd": (True, _act_kcompactd)}


class _Run:
    """What one live run needs besides the journal: the cap, values to put back early."""

    def __init__(self, live, cap_bytes):
        self.journal = live.journal
        self.cap_bytes = cap_bytes
        self.pool_to = None
        self.proactiveness_found = int(live.journal.read(lk.PROACTIVENESS))


def run_once(live, cap_bytes, name, snapshot_path):
    """One live run of experiment `name`; the snapshot is saved at snapshot_path. Returns the
    run's record for the corpus manifest."""
    fragments, act = ACTIONS[name]
    started = time.monotonic()
    settled = lk.settle_pcp(live.journal)
    run = _Run(live, cap_bytes)
    backend = live.factory()
    try:
        prep = _fragment(backend) if fragments else {}
        snap = livesnap.take()
        snapshot_file.save(str(snapshot_path), snap)
        os.chmod(snapshot_path, 0o644)          # a corpus file in the repository, not private
        before = lk.vmstat()
        with lk.DeferralTrace(live.journal) as trace:
            action, outcome, twin = act(run, backend, prep)
        after = lk.vmstat()
        buddy_after = lk.buddyinfo()
        large_after = large_anon_pages(lk.kpageflags())
    finally:
        if run.pool_to is not None:
            lk.shrink_hugetlb(live.journal, run.pool_to)
        backend.close()
    counters = {c: int(after.get(c, 0) - before.get(c, 0)) for c in RECORDED_COUNTERS}
    large_before = large_anon_pages(snap.kpageflags)
    return {"snapshot": pathlib.Path(snapshot_path).name, "action": action, "twin": twin,
            "live": {"outcome": outcome, "counters": counters, "buddyinfo_after": buddy_after,
                     "large_before": large_before, "large_after": large_after,
                     "figures": figures(counters, outcome, large_before, large_after,
                                        buddy_after),
                     "prep": prep, "pcp": settled, "deferral_events": trace.counts,
                     "seconds": round(time.monotonic() - started, 2)}}


def record(directory, experiments=None, repeat=3, mem_cap=DEFAULT_CAP, progress=print):
    """Run the experiments live `repeat` times each and write the corpus into `directory`
    (snapshots first, manifest.json last, each atomically). Returns the manifest."""
    names = check_experiments(experiments)
    livesnap.require_root()
    cap_bytes = mem_cap_bytes(mem_cap)
    if cap_bytes < ARENA_BYTES:
        raise LiveRefused(f"the live memory cap ({cap_bytes >> 20} MiB, {mem_cap} of "
                          f"MemAvailable) is below the {ARENA_BYTES >> 20} MiB the "
                          f"experiments need; raise --mem-cap")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    live = LiveSession(mem=f"{ARENA_BYTES >> 20}M", mem_cap=mem_cap)
    live.journal.lock_timeout = LOCK_WAIT_S
    manifest = corpus.new_manifest(platform.release(), repeat, {
        "fragment_bytes": FRAGMENT_BYTES, "proactiveness": PROACTIVENESS,
        "proactive_ms": PROACTIVE_MS, "pcp_fraction": lk.PCP_FRACTION_LOW_HIGH,
        "hugetlb_reserve_bytes": lk.HUGETLB_RESERVE_BYTES, "mem_cap": mem_cap})
    with live:
        pool_found = lk.hugetlb_pool()
        for name in names:
            runs = []
            for i in range(1, repeat + 1):
                rec = run_once(live, cap_bytes, name, directory / f"{name}-{i}.npz")
                runs.append(rec)
                progress(f"fidelity: {name} run {i}/{repeat}: {rec['action']} "
                         f"{corpus.brief(rec['live']['figures'])} ({rec['live']['seconds']} s)")
            manifest["experiments"].append({"name": name, "runs": runs})
        if lk.hugetlb_pool() != pool_found:
            lk.shrink_hugetlb(live.journal, pool_found)
    corpus.write_manifest(directory, manifest)
    _remove_stale_snapshots(directory, manifest)
    return manifest


def _remove_stale_snapshots(directory, manifest):
    """Snapshots of an earlier recording (--force) that the new manifest does not name."""
    named = {run["snapshot"] for exp in manifest["experiments"] for run in exp["runs"]}
    for path in directory.glob("*-*.npz"):
        if path.name not in named and path.name.split("-")[0] in EXPERIMENTS:
            path.unlink()
