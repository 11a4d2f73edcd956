"""`foliobench live record`: a snapshot of memory, then the kernel's page-allocator,
compaction, migration and reclaim tracepoints while a command runs (or for a duration), into
one trace file (simcore.trace_file). Root.

Everything goes through a private tracefs instance (instances/foliobench-<pid>), so the
machine's own tracing (the top-level buffer, other instances) is never touched. Each change
is journaled (livekernel.journal): tracefs mounted if it was not, the instance made, its buffer
size, clock, events and tracing_on written; on exit, an error or Ctrl-C they are undone and the
instance removed, and after a SIGKILL `foliobench live restore` does it.

While recording, one thread per CPU reads that CPU's trace_pipe_raw without blocking and spools
whole ring-buffer pages to a file next to the output; the pages are decoded afterwards
(livekernel.tracefs), so the recording costs the kernel's tracepoints and a copy per page, never
text formatting. Lost events: the per-CPU stats (overrun, commit overrun, dropped events) and
the counts the ring buffer stores in page headers.
"""
import dataclasses
import io
import os
import pathlib
import platform
import resource
import shlex
import subprocess
import tempfile
import threading
import time

import numpy as np
import psutil

from simcore import snapshot_file, trace_file

from . import snapshot as live_snapshot
from . import tracefs
from .journal import LiveRunBusy, SettingsJournal
from .session import STATE_DIR

TRACEFS = "/sys/kernel/tracing"
PAGE_EVENTS = ("mm_page_alloc", "mm_page_free", "mm_page_free_batched", "mm_page_alloc_extfrag",
               "mm_page_pcpu_drain")
VMSCAN_EVENTS = ("mm_vmscan_direct_reclaim_begin", "mm_vmscan_direct_reclaim_end",
                 "mm_vmscan_kswapd_wake", "mm_vmscan_kswapd_sleep", "mm_vmscan_wakeup_kswapd",
                 "mm_vmscan_lru_shrink_inactive", "mm_vmscan_lru_shrink_active",
                 "mm_vmscan_node_reclaim_begin", "mm_vmscan_node_reclaim_end")
DEFAULT_BUFFER_KB = 32768            # per CPU: about 0.4 s of the busiest stream seen here
CHUNK_PAGES = 4096                   # pages decoded at once: 16 MiB, about 55 MB of temporaries
POLL_S = 0.005
LOCK_WAIT_S = 300.0           # other live runs on this shared machine: wait for them
STAT_KEYS = ("entries", "overrun", "commit overrun", "dropped events", "read events")


class RecordError(ValueError):
    """The recording will not start (no root, no tracefs, bad arguments): one line, exit 2."""


@dataclasses.dataclass
class Recording:
    path: str
    size: int
    events: int
    seconds: float
    lost: int
    counts: dict
    overhead: dict
    exit_code: int = 0


def wanted_events(events_dir):
    """(system, event) of every tracepoint to record that this kernel has."""
    out = [("kmem", e) for e in PAGE_EVENTS]
    comp = pathlib.Path(events_dir, "compaction")
    if comp.is_dir():
        out += [("compaction", p.name) for p in sorted(comp.iterdir())
                if (p / "format").is_file()]
    out.append(("migrate", "mm_migrate_pages"))
    out += [("vmscan", e) for e in VMSCAN_EVENTS]
    return [(s, e) for s, e in out if pathlib.Path(events_dir, s, e, "format").is_file()]


def load_formats(events_dir, events):
    """EventFormat of each (system, event); TraceFormatError for a replayed event whose fields
    this reader does not know."""
    formats = []
    for system, name in events:
        text = pathlib.Path(events_dir, system, name, "format").read_text()
        formats.append(tracefs.parse_format(text, system))
    by_name = {f.name: f for f in formats}
    for name, fields in trace_file.REPLAY_FIELDS.items():
        if name not in by_name:
            raise tracefs.TraceFormatError(f"this kernel has no kmem:{name} tracepoint")
        tracefs.require_fields(by_name[name], fields)
    return formats


def parse_stats(text):
    """{key: int} of a per_cpu/cpuN/stats file (entries, overrun, commit overrun, ...)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in STAT_KEYS:
            try:
                out[key.strip()] = int(value.split()[0])
            except (ValueError, IndexError):
                pass
    return out


def parse_vmstat(text):
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


class _Reader(threading.Thread):
    """Copies one CPU's trace_pipe_raw pages to a spool file until stopped and drained."""

    def __init__(self, path, spool, page_size):
        super().__init__(daemon=True)
        self.path, self.spool, self.page_size = path, spool, page_size
        self.stop = threading.Event()
        self.pages = 0
        self.cpu_s = 0.0
        self.error = None

    def run(self):
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                with open(self.spool, "wb", buffering=1 << 20) as out:
                    self._copy(fd, out)
            finally:
                os.close(fd)
        except OSError as exc:
            self.error = exc
        self.cpu_s = time.thread_time()

    def _copy(self, fd, out):
        while True:
            try:
                page = os.read(fd, self.page_size)
            except BlockingIOError:
                if self.stop.is_set():
                    return
                time.sleep(POLL_S)
                continue
            if not page:
                if self.stop.is_set():
                    return
                time.sleep(POLL_S)
                continue
            out.write(page.ljust(self.page_size, b"\0"))
            self.pages += 1


def require_root():
    if os.geteuid() != 0:
        raise RecordError(f"recording reads tracefs and a snapshot and needs root (running as "
                          f"uid {os.geteuid()})")


def check_buffer(buffer_kb, ncpu, available=None):
    """RecordError unless the ring buffers (buffer_kb per CPU) fit in a tenth of MemAvailable."""
    available = psutil.virtual_memory().available if available is None else available
    need = buffer_kb * 1024 * ncpu
    if buffer_kb < 64 or need > available // 10:
        raise RecordError(f"--buffer-kb {buffer_kb}: {ncpu} CPUs x {buffer_kb} KiB must be at "
                          f"least 64 KiB each and at most a tenth of MemAvailable "
                          f"({available >> 20} MiB)")


def _mount(journal, root):
    if os.path.isdir(os.path.join(root, "instances")):
        return
    if not os.path.isdir(root):
        raise RecordError(f"{root} does not exist: this kernel has no tracefs")
    journal.run(["mount", "-t", "tracefs", "nodev", root], ["umount", root],
                description=f"unmount tracefs at {root}")


def _instance(journal, root):
    path = os.path.join(root, "instances", f"foliobench-{os.getpid()}")
    with journal.critical():
        os.mkdir(path)
        journal.add_undo(f"remove tracefs instance {path}", lambda: os.rmdir(path),
                         command=["rmdir", path])
    return path


def _configure(journal, inst, events, buffer_kb):
    journal.write(f"{inst}/tracing_on", 0)
    journal.write(f"{inst}/buffer_size_kb", buffer_kb)
    journal.write(f"{inst}/trace_clock", "mono")      # one clock for all CPUs, in ns
    for system, name in events:
        journal.write(f"{inst}/events/{system}/{name}/enable", 1)


def _snapshot_bytes(snap):
    """The snapshot's file, as bytes (compressed after the recording, not while tracing)."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="foliobench-snap-") as tmp:
        path = os.path.join(tmp, "snapshot.npz")
        snapshot_file.save(path, snap)
        buf.write(pathlib.Path(path).read_bytes())
    return buf.getvalue()


def _run(command, duration):
    """Run the command (or sleep `duration`): its wall time, exit code and CPU time (user +
    system of it and the children it waited for: the tracepoints' cost lands in it, and it
    moves less than wall time when others load the machine)."""
    t0 = time.perf_counter()
    cpu0 = _children_cpu()
    if command:
        try:
            proc = subprocess.Popen(command)
        except OSError as exc:
            raise RecordError(f"cannot run {shlex.join(command)}: {exc.strerror or exc}") \
                from None
        try:
            code = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    else:
        time.sleep(duration)
        code = 0
    return time.perf_counter() - t0, code, _children_cpu() - cpu0


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline(command):
    """The command's wall time without recording (the overhead's reference: run once before
    and once after the recorded run)."""
    seconds, code, cpu = _run(command, None)
    if code:
        raise RecordError(f"{shlex.join(command)} exited with {code} before recording")
    return seconds, cpu


def _decode_spool(spool, cpu, formats, page_size, into):
    """Decode one CPU's spooled pages chunk by chunk, appending columns to `into`; returns
    (records, lost stored in pages, pages flagged lost, bad pages, unknown ids)."""
    totals = np.zeros(5, dtype=np.int64)
    size = os.path.getsize(spool)
    with open(spool, "rb") as fh:
        for _start in range(0, size, CHUNK_PAGES * page_size):
            data = fh.read(CHUNK_PAGES * page_size)
            recs = tracefs.walk_pages(data, page_size)
            cols, unknown = tracefs.decode(recs, formats)
            for name, c in cols.items():
                c["cpu"] = np.full(len(c["ts"]), cpu, dtype=np.uint16)
                into.setdefault(name, []).append(c)
            totals += (len(recs.ts), recs.lost, recs.flagged_pages, recs.bad_pages, unknown)
    return totals


def _merge(parts, formats):
    """{event: {column: array}} sorted by timestamp, every format present (empty if unseen)."""
    out = {}
    for fmt in formats:
        chunks = parts.get(fmt.name, [])
        cols = ["ts", "cpu"] + list(fmt.fields)
        if chunks:
            merged = {c: np.concatenate([ch[c] for ch in chunks]) for c in cols}
        else:
            merged = {"ts": np.empty(0, np.uint64), "cpu": np.empty(0, np.uint16)}
            merged.update({f: np.empty(0, fmt.dtype(f)) for f in fmt.fields})
        order = np.argsort(merged["ts"], kind="stable")
        out[fmt.name] = {c: merged[c][order] for c in cols}
    return out


def record(output, command=None, duration=None, buffer_kb=DEFAULT_BUFFER_KB, measure=True,
           root=TRACEFS, say=print):
    """Record (see the module docstring) into `output`; a Recording with what was measured.
    command: argv list, or None with `duration` seconds."""
    require_root()
    if bool(command) == (duration is not None):
        raise RecordError("give a command (-- COMMAND ...) or --duration SECONDS, not both")
    if duration is not None and not 0 < duration <= 600:
        raise RecordError(f"--duration {duration}: must be in (0, 600] seconds")
    ncpu = os.cpu_count() or 1
    check_buffer(buffer_kb, ncpu)
    out_dir = os.path.dirname(os.path.abspath(output))
    base = baseline(command) if command and measure else None
    journal = SettingsJournal(state_dir=STATE_DIR)
    journal.lock_timeout = LOCK_WAIT_S
    spool_dir = tempfile.mkdtemp(prefix=".foliobench-record-", dir=out_dir)
    try:
        try:
            journal.__enter__()
        except LiveRunBusy as exc:
            raise RecordError(str(exc)) from None
        try:
            rec = _record_locked(journal, root, spool_dir, command, duration, buffer_kb, ncpu,
                                 say)
        finally:
            journal.__exit__(None, None, None)
        if journal.errors:
            say("foliobench: some tracing settings could not be restored (see above)")
        if base is not None:
            # once before and once after: a cold first run (disk, page cache) biases either one
            base = (base, baseline(command))
        return _write(output, rec, base, command, duration)
    finally:
        for name in os.listdir(spool_dir):
            os.unlink(os.path.join(spool_dir, name))
        os.rmdir(spool_dir)


class EventRecorder:
    """Records tracepoints into typed columns between start() and stop(), through a private
    instance (every write journaled in `journal`, which the caller holds): what `live record`
    and `foliobench fidelity --trace` share.

    events: a function of the instance's events directory giving the (system, name) pairs to
    enable (default wanted_events); replay: refuse a kernel whose mm_page_alloc/mm_page_free
    formats a replay cannot read (load_formats())."""

    def __init__(self, journal, spool_dir, buffer_kb=DEFAULT_BUFFER_KB, events=None,
                 root=TRACEFS, replay=True):
        self.journal, self.spool_dir, self.buffer_kb = journal, spool_dir, buffer_kb
        self.events, self.root, self.replay = events, root, replay
        self.readers = {}
        self.inst = None

    def start(self):
        """Mount, make the instance, enable the events and start the readers; tracing stays
        off until trace_on()."""
        _mount(self.journal, self.root)
        inst = self.inst = _instance(self.journal, self.root)
        wanted = (self.events or wanted_events)(f"{inst}/events")
        try:
            if self.replay:
                self.formats = load_formats(f"{inst}/events", wanted)
            else:
                self.formats = [tracefs.parse_format(
                    pathlib.Path(inst, "events", s, e, "format").read_text(), s)
                    for s, e in wanted]
        except tracefs.TraceFormatError as exc:
            raise RecordError(str(exc)) from None
        self.enabled = wanted
        sub = pathlib.Path(inst, "buffer_subbuf_size_kb")
        self.page_size = int(sub.read_text().split()[0]) * 1024 if sub.exists() else 4096
        _configure(self.journal, inst, wanted, self.buffer_kb)
        self.cpus = sorted(int(p.name[3:]) for p in pathlib.Path(inst, "per_cpu").iterdir())
        self.readers = {cpu: _Reader(f"{inst}/per_cpu/cpu{cpu}/trace_pipe_raw",
                                     os.path.join(self.spool_dir, f"cpu{cpu}.raw"),
                                     self.page_size) for cpu in self.cpus}
        for r in self.readers.values():
            r.start()
        return self

    def trace_on(self):
        self.journal.write(f"{self.inst}/tracing_on", 1)

    def stop(self):
        """Tracing off and the readers drained (also on Ctrl-C: an open trace_pipe_raw keeps
        the instance busy, rmdir: EBUSY)."""
        if self.inst is not None:
            self.journal.write(f"{self.inst}/tracing_on", 0)
        for r in self.readers.values():
            r.stop.set()
        for r in self.readers.values():
            r.join()

    def collect(self):
        """{"events": {name: {column: array}} in time order, "formats", "stats" (per CPU),
        "totals" (records, lost in pages, pages flagged, bad pages, unknown ids), "lost",
        "decode_s", "reader_cpu_s", "spooled_bytes"}; OSError when a reader failed."""
        errors = [f"cpu{c}: {r.error}" for c, r in self.readers.items() if r.error]
        if errors:
            raise OSError(f"reading trace_pipe_raw failed: {'; '.join(errors)}")
        stats = {cpu: parse_stats(pathlib.Path(self.inst, "per_cpu", f"cpu{cpu}",
                                               "stats").read_text()) for cpu in self.cpus}
        parts = {}
        totals = np.zeros(5, dtype=np.int64)
        started = time.perf_counter()
        for cpu in self.cpus:
            totals += _decode_spool(self.readers[cpu].spool, cpu, self.formats,
                                    self.page_size, parts)
        merged = _merge(parts, self.formats)
        return {"events": merged, "formats": self.formats, "stats": stats, "totals": totals,
                "lost": lost_events(stats, totals),
                "decode_s": time.perf_counter() - started,
                "reader_cpu_s": sum(r.cpu_s for r in self.readers.values()),
                "spooled_bytes": sum(r.pages for r in self.readers.values()) * self.page_size,
                "page_size": self.page_size, "buffer_kb": self.buffer_kb}


def lost_events(stats, totals):
    """Events lost: each CPU's overrun, commit overrun and dropped events, plus the counts the
    ring buffer stored in page headers."""
    return int(sum(s.get("overrun", 0) + s.get("commit overrun", 0) + s.get("dropped events", 0)
                   for s in stats.values()) + int(totals[1]))


def _record_locked(journal, root, spool_dir, command, duration, buffer_kb, ncpu, say):
    rec = EventRecorder(journal, spool_dir, buffer_kb, root=root).start()
    traced_from = time.monotonic()
    try:
        vm_before = parse_vmstat(pathlib.Path("/proc/vmstat").read_text())
        # tracing goes on before the snapshot is read: a page allocated while the per-PFN
        # files are read has its event, whichever way the read saw it (the replay sorts that
        # out)
        rec.trace_on()
        traced_from = time.monotonic()
        say(f"record: snapshot of memory ({len(rec.enabled)} tracepoints on) ...")
        snap = live_snapshot.take()
        gap_s = time.monotonic() - traced_from
        seconds, code, cpu_s = _run(command, duration)
    finally:
        rec.stop()
        traced_s = time.monotonic() - traced_from
        vm_after = parse_vmstat(pathlib.Path("/proc/vmstat").read_text())
    out = rec.collect()
    out.update(snapshot=_snapshot_bytes(snap), snapshot_gap_s=gap_s, traced_s=traced_s,
               kernel=snap.kernel, seconds=seconds, cpu_s=cpu_s, exit_code=code,
               vm_before=vm_before, vm_after=vm_after, ncpu=ncpu)
    return out


def _write(output, rec, base, command, duration):
    records, page_lost, flagged, bad, unknown = (int(v) for v in rec["totals"])
    lost = rec["lost"]
    stat_lost = lost - page_lost
    seconds = rec["seconds"]
    overhead = {"wall_s": round(seconds, 4), "reader_cpu_s": round(rec["reader_cpu_s"], 4),
                "reader_cpu_share": round(rec["reader_cpu_s"] / max(rec["traced_s"], 1e-9), 4)}
    if command:
        overhead["cpu_s"] = round(rec["cpu_s"], 4)
    if base is not None:
        mean = sum(b[0] for b in base) / len(base)
        mean_cpu = sum(b[1] for b in base) / len(base)
        overhead.update(baseline_wall_s=round(mean, 4),
                        baseline_runs_s=[round(b[0], 4) for b in base],
                        wall_ratio=round(seconds / max(mean, 1e-9), 4),
                        baseline_cpu_s=round(mean_cpu, 4),
                        baseline_runs_cpu_s=[round(b[1], 4) for b in base],
                        cpu_ratio=round(rec["cpu_s"] / max(mean_cpu, 1e-9), 4))
    header = {
        "kernel": rec["kernel"], "host": platform.node(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command, "duration_s": duration, "exit_code": rec["exit_code"],
        "seconds": round(seconds, 4), "records": records,
        "events_per_s": round(records / rec["traced_s"]),
        "lost_events": lost, "lost_detail": {"stats": stat_lost, "page_headers": page_lost,
                                             "pages_flagged": flagged, "bad_pages": bad,
                                             "unknown_ids": unknown},
        "cpu_stats": {str(c): s for c, s in rec["stats"].items()},
        "buffer_kb_per_cpu": rec["buffer_kb"], "page_size": rec["page_size"],
        "spooled_bytes": rec["spooled_bytes"], "decode_s": round(rec["decode_s"], 3),
        "snapshot_read_s": round(rec["snapshot_gap_s"], 4),
        "traced_s": round(rec["traced_s"], 4),
        "trace_clock": "mono", "overhead": overhead,
        "vmstat_before": rec["vm_before"], "vmstat_after": rec["vm_after"],
        "events": {f.name: {"system": f.system, "id": f.id,
                            "fields": {k: f.dtype(k) for k in f.fields}}
                   for f in rec["formats"]},
    }
    trace_file.save(output, header, rec["events"], rec["snapshot"])
    return Recording(str(output), os.path.getsize(output), records, rec["traced_s"], lost,
                     {n: int(len(c["ts"])) for n, c in rec["events"].items()}, overhead,
                     rec["exit_code"])
