"""The snapshot file: one machine's physical memory as the kernel exported it, compressed.

A snapshot holds, per PFN, the /proc/kpageflags word (KPF_* bits of fs/proc/page.c) and the
/proc/kpagecount value, plus the text of /proc/zoneinfo, pagetypeinfo, buddyinfo, vmstat and
meminfo, the THP/mTHP settings, the vm sysctls and the kernel release.

Format (version 1): a numpy .npz archive (zlib-compressed members):
- header: uint8 array, UTF-8 JSON: {"format": "foliobench-snapshot", "version": 1,
  "nr_pfns": N, "files": {"zoneinfo": text, ...}, "settings": {...}, "kernel": release, ...}
- kpf_values, kpf_lengths: kpageflags run-length encoded (uint64 word, uint32 run length):
  free memory, holes and the tails of large folios are long runs of one word.
- kpc_values, kpc_lengths: kpagecount run-length encoded, counts clipped to 65535 (uint16).

This module only encodes and decodes; reading the running kernel is livekernel.snapshot's job.
"""
import dataclasses
import io
import json
import os
import zipfile

import numpy as np

from . import npzfile

FORMAT = "foliobench-snapshot"
VERSION = 1
MEMBERS = ("header", "kpf_values", "kpf_lengths", "kpc_values", "kpc_lengths")
KPC_MAX = np.iinfo(np.uint16).max


@dataclasses.dataclass
class Snapshot:
    """A decoded snapshot: per-PFN arrays and the captured text files and settings."""
    kpageflags: np.ndarray          # uint64 per PFN
    kpagecount: np.ndarray          # uint16 per PFN (clipped)
    files: dict                     # name -> text ("zoneinfo", "pagetypeinfo", "buddyinfo", ...)
    settings: dict = dataclasses.field(default_factory=dict)
    kernel: str = "unknown"
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def nr_pfns(self):
        return len(self.kpageflags)


def run_length_encode(values):
    """(run values, run lengths as uint32) of a 1-D array."""
    values = np.asarray(values)
    if not len(values):
        return values[:0], np.zeros(0, dtype=np.uint32)
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    lengths = np.diff(np.append(starts, len(values))).astype(np.uint32)
    return values[starts], lengths


def run_length_decode(values, lengths):
    return np.repeat(values, lengths.astype(np.int64))


def save(path, snap):
    """Write `snap` to `path` atomically (a temporary file in the same directory, then rename)."""
    kpf_values, kpf_lengths = run_length_encode(np.asarray(snap.kpageflags, dtype=np.uint64))
    kpc = np.minimum(np.asarray(snap.kpagecount, dtype=np.uint64), KPC_MAX).astype(np.uint16)
    kpc_values, kpc_lengths = run_length_encode(kpc)
    header = {"format": FORMAT, "version": VERSION, "nr_pfns": int(len(snap.kpageflags)),
              "files": snap.files, "settings": snap.settings, "kernel": snap.kernel,
              "meta": snap.meta}
    blob = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    npzfile.save_atomic(path, ".snapshot-", {
        "header": blob, "kpf_values": kpf_values, "kpf_lengths": kpf_lengths,
        "kpc_values": kpc_values, "kpc_lengths": kpc_lengths})


READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError)


def _unreadable(what, exc):
    if isinstance(exc, ValueError) and "foliobench snapshot" in str(exc):
        return exc
    return ValueError(f"{what} is not a readable foliobench snapshot "
                      f"(truncated or foreign file: {exc})")


def load(source):
    """A Snapshot from a path or bytes; ValueError naming what is wrong with a file that is not
    a complete foliobench snapshot (truncated, foreign, another version)."""
    what = source if isinstance(source, (str, os.PathLike)) else "snapshot data"
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        npz = np.load(handle, allow_pickle=False)
    except READ_ERRORS as exc:
        raise _unreadable(what, exc) from None
    with npz:
        try:
            missing = [m for m in MEMBERS if m not in npz.files]
            if missing:
                raise ValueError(f"{what} is not a foliobench snapshot (no {missing[0]!r} member)")
            header_blob = npz["header"]
        except READ_ERRORS as exc:
            raise _unreadable(what, exc) from None
        try:
            header = json.loads(header_blob.tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{what} has a corrupt snapshot header: {exc}") from None
        npzfile.check_header(header, what, "foliobench snapshot", FORMAT, VERSION)
        try:
            # one per-PFN array at a time: its runs are dropped once it is decoded
            flags = run_length_decode(npz["kpf_values"].astype(np.uint64, copy=False),
                                      npz["kpf_lengths"])
            counts = run_length_decode(npz["kpc_values"].astype(np.uint16, copy=False),
                                       npz["kpc_lengths"])
        except READ_ERRORS as exc:
            raise _unreadable(what, exc) from None
    nr = header.get("nr_pfns")
    if len(flags) != nr or len(counts) != nr:
        raise ValueError(f"{what} is inconsistent: header says {nr} PFNs, kpageflags has "
                         f"{len(flags)} and kpagecount {len(counts)}")
    files = header.get("files") or {}
    for name in ("zoneinfo", "pagetypeinfo", "buddyinfo"):
        if not isinstance(files.get(name), str):
            raise ValueError(f"{what} lacks the captured /proc/{name}")
    return Snapshot(flags, counts, files, header.get("settings") or {},
                    header.get("kernel", "unknown"), header.get("meta") or {})
