"""The trace file: a machine's page-allocator history, recorded from the kernel's tracepoints,
with the snapshot of memory it starts from (`foliobench live record`, docs/traces.md).

Format (version 1): a numpy .npz archive (zlib-compressed members):
- header: uint8 array, UTF-8 JSON: {"format": "foliobench-trace", "version": 1, "kernel":
  release, "events": {name: {"system": ..., "id": ..., "fields": {field: dtype}}}, "counts":
  {name: records}, "lost_events": N, "snapshot_sha256": digest, ...} plus what the recorder
  measured (duration, overhead, vmstat before and after, per-CPU ring-buffer stats).
- snapshot: uint8 array, the start snapshot's own file (simcore.snapshot_file), bundled so the
  trace replays on its twin alone; its SHA-256 is in the header.
- ev.<event>.<column>: one typed column per recorded field of each event, plus "ts" (trace
  clock, ns) and "cpu".

This module only encodes and decodes; recording is livekernel.record's job.
"""
import dataclasses
import hashlib
import io
import json
import os
import zipfile

import numpy as np

from . import npzfile

FORMAT = "foliobench-trace"
VERSION = 1
# the fields a replay reads, with their sizes in bytes: a trace whose kernel formatted these
# events otherwise is refused rather than misread
REPLAY_FIELDS = {
    "mm_page_alloc": {"pfn": 8, "order": 4, "gfp_flags": 8, "migratetype": 4},
    "mm_page_free": {"pfn": 8, "order": 4},
}


@dataclasses.dataclass
class Trace:
    header: dict
    events: dict                # name -> {column: array}
    snapshot: bytes

    @property
    def kernel(self):
        return self.header.get("kernel", "unknown")

    def count(self, name):
        cols = self.events.get(name)
        return 0 if not cols else len(cols["ts"])


def digest(data):
    return hashlib.sha256(bytes(data)).hexdigest()


def save(path, header, events, snapshot):
    """Write a trace atomically (temporary file in the same directory, then rename). header:
    the recorder's JSON-able figures; events: {name: {column: array}}; snapshot: the bytes of
    a snapshot file."""
    header = dict(header, format=FORMAT, version=VERSION, snapshot_sha256=digest(snapshot),
                  counts={name: int(len(cols["ts"])) for name, cols in events.items()})
    members = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
               "snapshot": np.frombuffer(bytes(snapshot), dtype=np.uint8)}
    for name, cols in events.items():
        for col, arr in cols.items():
            members[f"ev.{name}.{col}"] = np.ascontiguousarray(arr)
    npzfile.save_atomic(path, ".trace-", members)


def _read_members(source, what):
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with np.load(handle, allow_pickle=False) as npz:
            if "header" not in npz.files:
                raise ValueError(f"{what} is not a foliobench trace (no 'header' member)")
            return {m: npz[m] for m in npz.files}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        if isinstance(exc, ValueError) and "foliobench trace" in str(exc):
            raise
        raise ValueError(f"{what} is not a readable foliobench trace "
                         f"(truncated or foreign file: {exc})") from None


def load(source):
    """A Trace from a path or bytes; ValueError naming what is wrong: truncated or foreign file,
    another version, a missing or altered snapshot, columns of unequal length, or events whose
    kernel format lacks the fields a replay reads."""
    what = str(source) if isinstance(source, (str, os.PathLike)) else "trace data"
    members = _read_members(source, what)
    try:
        header = json.loads(members.pop("header").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} has a corrupt trace header: {exc}") from None
    npzfile.check_header(header, what, "foliobench trace", FORMAT, VERSION)
    snapshot = members.pop("snapshot", None)
    if snapshot is None or not len(snapshot):
        raise ValueError(f"{what} has no start snapshot; a trace replays only on the twin of "
                         f"the memory it started from")
    snapshot = snapshot.tobytes()
    if digest(snapshot) != header.get("snapshot_sha256"):
        raise ValueError(f"{what}: its snapshot does not match the digest in its header "
                         f"(altered or damaged)")
    events = {}
    for key, arr in members.items():
        _, name, col = key.split(".", 2)
        events.setdefault(name, {})[col] = arr
    for name, count in (header.get("counts") or {}).items():
        cols = events.get(name, {})
        lengths = {len(a) for a in cols.values()}
        if lengths != {count} or "ts" not in cols:
            raise ValueError(f"{what}: event {name} should have {count} records but its columns "
                             f"have {sorted(lengths)}")
    check_replayable(header, what)
    return Trace(header, events, snapshot)


def check_replayable(header, what="trace"):
    """ValueError unless the recorded formats of the replayed events carry the fields, of the
    sizes, that a replay reads (a kernel that formats them otherwise is not understood)."""
    formats = header.get("events") or {}
    for name, fields in REPLAY_FIELDS.items():
        fmt = formats.get(name)
        if fmt is None:
            raise ValueError(f"{what} has no {name} events recorded; a replay needs them")
        for field, size in fields.items():
            dtype = (fmt.get("fields") or {}).get(field)
            if dtype is None or np.dtype(dtype).itemsize != size:
                raise ValueError(f"{what} was recorded from a kernel whose {name} has no "
                                 f"{size}-byte field {field!r} (fields: "
                                 f"{', '.join(fmt.get('fields') or {})}); this foliobench "
                                 f"does not know that format")
