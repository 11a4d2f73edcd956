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

With trace=True a run also records the action's tracepoints (foliobench.fidelity_trace) and
stores them as <experiment>-<i>.trace.npz; append=True adds runs to an existing corpus.
"""
import os
import pathlib
import platform
import shutil
import tempfile
import time

from livekernel import fidelity as lk
from livekernel import record as lrecord
from livekernel import snapshot as livesnap
from livekernel.journal import SettingsJournal
from livekernel.session import STATE_DIR, LiveRefused, LiveSession, mem_cap_bytes
from simcore import snapshot_file

from . import fidelity_corpus as corpus
from . import fidelity_trace
from .fidelity_metrics import RECORDED_COUNTERS, figures, large_anon_pages

FRAGMENT_BYTES = 3 << 30
ARENA_BYTES = FRAGMENT_BYTES * 3 // 2     # the fragmentation plus the second faulting phase
PROACTIVENESS = 90
PROACTIVE_MS = 4000
EXPERIMENTS = ("compact_memory", "hugetlb", "mthp64k", "kcompactd")
DEFAULT_CAP = "30%"
LOCK_WAIT_S = 300.0          # others run live tests here: wait for the lock this long
TRACE_BUFFER_KB = 16384      # per CPU; readers drain it while the action runs


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


class _ActionTrace:
    """The action's tracepoints (trace=True, an EventRecorder whose ring buffers are allocated
    before the snapshot) or the deferral events' counts only (DeferralTrace).

    The recorder's instance and settings go in a journal of their own, nested in the run's
    (the same lock and state directory), so that they are undone at the end of each run."""

    def __init__(self, journal, trace):
        self.journal, self.trace = journal, trace
        self.recorder = self.spool = self.own = None
        self.counts = None
        self.recorded = None

    def prepare(self):
        if self.trace:
            lrecord.check_buffer(TRACE_BUFFER_KB, os.cpu_count() or 1)
            self.own = SettingsJournal(state_dir=STATE_DIR).__enter__()
            self.spool = tempfile.mkdtemp(prefix="foliobench-fidelity-trace-")
            self.recorder = lrecord.EventRecorder(self.own, self.spool, TRACE_BUFFER_KB,
                                                  events=fidelity_trace.names_of,
                                                  replay=False).start()

    def __enter__(self):
        if self.recorder is None:
            self._deferral = lk.DeferralTrace(self.journal).__enter__()
        else:
            self.recorder.trace_on()
        return self

    def __exit__(self, *exc):
        if self.recorder is None:
            self._deferral.__exit__(*exc)
            self.counts = self._deferral.counts
            return False
        self.recorder.stop()
        if exc[0] is None:
            self.recorded = self.recorder.collect()
            ev = self.recorded["events"]
            self.counts = {e: int(len(ev[e]["ts"])) if e in ev else 0
                           for e in lk.DEFERRAL_EVENTS}
        return False

    def close(self):
        if self.recorder is not None:
            self.recorder.stop()
        if self.own is not None:
            self.own.__exit__(None, None, None)
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)


def _save_trace(recorded, snapshot_path):
    """The recorded action's trace beside its snapshot; the manifest's "trace" entry."""
    path = pathlib.Path(snapshot_path)
    out = path.with_name(fidelity_trace.trace_name(path.name))
    header = {"kernel": platform.release(), "lost_events": recorded["lost"],
              "cpu_stats": {str(c): s for c, s in recorded["stats"].items()},
              "events": {f.name: {"system": f.system, "id": f.id,
                                  "fields": {k: f.dtype(k) for k in f.fields}}
                         for f in recorded["formats"]}}
    written = fidelity_trace.save(out, header, recorded["events"])
    os.chmod(out, 0o644)
    return {"file": out.name, "bytes": out.stat().st_size, "lost_events": recorded["lost"],
            "counts": written["counts"],
            "dropped_for_size": written.get("dropped_for_size", [])}


def run_once(live, cap_bytes, name, snapshot_path, trace=False):
    """One live run of experiment `name`; the snapshot is saved at snapshot_path (with
    `trace`, the action's tracepoints beside it). Returns the run's record for the corpus
    manifest."""
    fragments, act = ACTIONS[name]
    started = time.monotonic()
    settled = lk.settle_pcp(live.journal)
    run = _Run(live, cap_bytes)
    backend = live.factory()
    tracer = _ActionTrace(live.journal, trace)
    try:
        prep = _fragment(backend) if fragments else {}
        tracer.prepare()
        snap = livesnap.take()
        snapshot_file.save(str(snapshot_path), snap)
        os.chmod(snapshot_path, 0o644)          # a corpus file in the repository, not private
        before = lk.vmstat()
        with tracer:
            action, outcome, twin = act(run, backend, prep)
        after = lk.vmstat()
        buddy_after = lk.buddyinfo()
        large_after = large_anon_pages(lk.kpageflags())
    finally:
        if run.pool_to is not None:
            lk.shrink_hugetlb(live.journal, run.pool_to)
        backend.close()
        tracer.close()
    counters = {c: int(after.get(c, 0) - before.get(c, 0)) for c in RECORDED_COUNTERS}
    large_before = large_anon_pages(snap.kpageflags)
    rec = {"snapshot": pathlib.Path(snapshot_path).name, "action": action, "twin": twin,
           "live": {"outcome": outcome, "counters": counters, "buddyinfo_after": buddy_after,
                    "large_before": large_before, "large_after": large_after,
                    "figures": figures(counters, outcome, large_before, large_after,
                                       buddy_after),
                    "prep": prep, "pcp": settled, "deferral_events": tracer.counts,
                    "seconds": round(time.monotonic() - started, 2)}}
    if tracer.recorded is not None:
        rec["trace"] = _save_trace(tracer.recorded, snapshot_path)
    return rec


def _existing(directory, names, trace):
    """With append: the corpus in `directory` (foliobench.fidelity_corpus.load), its traced runs
    of `names` dropped when recording traced runs again (their files removed after the new
    manifest is written)."""
    manifest = corpus.load(directory)
    manifest.pop("directory", None)
    if trace:
        for exp in manifest["experiments"]:
            if exp["name"] in names:
                exp["runs"] = [r for r in exp["runs"] if "trace" not in r]
    return manifest


def _next_index(manifest, name):
    taken = [int(r["snapshot"].rsplit("-", 1)[1].split(".")[0])
             for e in manifest["experiments"] if e["name"] == name for r in e["runs"]]
    return max(taken, default=0) + 1


def record(directory, experiments=None, repeat=3, mem_cap=DEFAULT_CAP, progress=print,
           trace=False, append=False):
    """Run the experiments live `repeat` times each and write the corpus into `directory`
    (snapshots first, manifest.json last, each atomically). Returns the manifest.

    trace: each run also records its action's tracepoints (<experiment>-<i>.trace.npz).
    append: add the runs to the corpus already in `directory`, numbered after its own; with
    trace, its earlier traced runs of these experiments are replaced."""
    names = check_experiments(experiments)
    livesnap.require_root()
    cap_bytes = mem_cap_bytes(mem_cap)
    if cap_bytes < ARENA_BYTES:
        raise LiveRefused(f"the live memory cap ({cap_bytes >> 20} MiB, {mem_cap} of "
                          f"MemAvailable) is below the {ARENA_BYTES >> 20} MiB the "
                          f"experiments need; raise --mem-cap")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if append:
        manifest = _existing(directory, names, trace)
        if manifest["kernel"] != platform.release():
            raise LiveRefused(f"the corpus in {directory} was recorded on kernel "
                              f"{manifest['kernel']}, this is {platform.release()}: record a "
                              f"corpus of its own")
    else:
        manifest = corpus.new_manifest(platform.release(), repeat, {
            "fragment_bytes": FRAGMENT_BYTES, "proactiveness": PROACTIVENESS,
            "proactive_ms": PROACTIVE_MS, "pcp_fraction": lk.PCP_FRACTION_LOW_HIGH,
            "hugetlb_reserve_bytes": lk.HUGETLB_RESERVE_BYTES, "mem_cap": mem_cap})
    live = LiveSession(mem=f"{ARENA_BYTES >> 20}M", mem_cap=mem_cap)
    live.journal.lock_timeout = LOCK_WAIT_S
    with live:
        pool_found = lk.hugetlb_pool()
        for name in names:
            exp = next((e for e in manifest["experiments"] if e["name"] == name), None)
            if exp is None:
                exp = {"name": name, "runs": []}
                manifest["experiments"].append(exp)
            first = _next_index(manifest, name)
            for k, i in enumerate(range(first, first + repeat), 1):
                rec = run_once(live, cap_bytes, name, directory / f"{name}-{i}.npz", trace)
                exp["runs"].append(rec)
                traced = (f", trace {rec['trace']['bytes'] / 1e6:.2f} MB, lost "
                          f"{rec['trace']['lost_events']}" if "trace" in rec else "")
                progress(f"fidelity: {name} run {k}/{repeat} ({name}-{i}): {rec['action']} "
                         f"{corpus.brief(rec['live']['figures'])} "
                         f"({rec['live']['seconds']} s{traced})")
        if lk.hugetlb_pool() != pool_found:
            lk.shrink_hugetlb(live.journal, pool_found)
    manifest["experiments"].sort(key=lambda e: EXPERIMENTS.index(e["name"])
                                 if e["name"] in EXPERIMENTS else len(EXPERIMENTS))
    corpus.write_manifest(directory, manifest)
    _remove_stale_snapshots(directory, manifest)
    return manifest


def _remove_stale_snapshots(directory, manifest):
    """Snapshots and traces of an earlier recording (--force, or traced runs recorded again)
    that the new manifest does not name."""
    named = {run["snapshot"] for exp in manifest["experiments"] for run in exp["runs"]}
    named |= {run["trace"]["file"] for exp in manifest["experiments"] for run in exp["runs"]
              if "trace" in run}
    for path in directory.glob("*-*.npz"):
        if path.name not in named and path.name.split("-")[0] in EXPERIMENTS:
            path.unlink()
