"""Reading the kernel's tracepoints: event format files, the binary ring-buffer pages of
trace_pipe_raw, and the text of trace / trace_pipe (for checking the binary reader).

Format files (events/<system>/<event>/format) give each event's id and its fields with offset,
size and signedness; parse_format() turns one into an EventFormat.

trace_pipe_raw hands out whole ring-buffer sub-buffers ("pages", buffer_subbuf_size_kb): a
page header (u64 timestamp, u64 commit whose low 30 bits are the data size and whose bits 31/30
say events were lost before this page and, with bit 30, that their count follows the data),
then events, each behind a 32-bit header of type_len:5 and time_delta:27 (see
kernel/trace/ring_buffer.c: rb_event_length(), rb_event_data(), and events/header_page and
header_event on this machine). type_len 1..28: the payload is type_len * 4 bytes after the
header; 0: its length is in the next word; 29 padding, 30 a time extension, 31 an absolute time
stamp. walk_pages() finds every record (compiled with numba: a trace holds millions), and
decode() gathers each event's fields as typed numpy columns with vectorised reads.

Nothing here writes to tracefs; livekernel.record owns the instance and its settings.
"""
import dataclasses
import re

import numba
import numpy as np

PAGE_HEADER = 16
COMMIT_SIZE_MASK = (1 << 30) - 1
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30
TYPE_PADDING, TYPE_TIME_EXTEND, TYPE_TIME_STAMP = 29, 30, 31
TS_SHIFT = 27
TS_MSB = np.uint64(0xF) << np.uint64(59)

_FIELD_RE = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
                       r"\s*signed:(?P<signed>-?\d+);")
_DTYPES = {(1, 0): "<u1", (1, 1): "<i1", (2, 0): "<u2", (2, 1): "<i2", (4, 0): "<u4",
           (4, 1): "<i4", (8, 0): "<u8", (8, 1): "<i8"}


class TraceFormatError(ValueError):
    """A format file or ring-buffer data this reader does not understand."""


@dataclasses.dataclass(frozen=True)
class EventFormat:
    """One tracepoint's format: name, numeric id, its own (non-common) scalar fields as
    {name: (offset, size, signed)}, and the print format (the flag tables live there)."""
    system: str
    name: str
    id: int
    fields: dict
    print_fmt: str = ""

    def dtype(self, field):
        offset, size, signed = self.fields[field]
        return _DTYPES[(size, signed)]


def parse_format(text, system=""):
    """An EventFormat from the text of an events/<system>/<event>/format file. Arrays, strings
    (__data_loc) and fields of odd sizes are left out: no event recorded here needs them."""
    name = re.search(r"^name:\s*(\S+)", text, re.M)
    ident = re.search(r"^ID:\s*(\d+)", text, re.M)
    if not name or not ident:
        raise TraceFormatError("not a tracepoint format file (no name: or ID: line)")
    fields = {}
    for m in _FIELD_RE.finditer(text):
        decl = m.group("decl").strip()
        if "[" in decl or "__data_loc" in decl:
            continue
        fname = decl.split()[-1].lstrip("*")
        size, signed = int(m.group("size")), int(m.group("signed")) != 0
        if fname.startswith("common_") or (size, int(signed)) not in _DTYPES:
            continue
        fields[fname] = (int(m.group("offset")), size, int(signed))
    fmt = re.search(r"^print fmt:\s*(.*)$", text, re.M)
    return EventFormat(system, name.group(1), int(ident.group(1)), fields,
                       fmt.group(1) if fmt else "")


def require_fields(fmt, wanted):
    """TraceFormatError unless `fmt` has every field of `wanted` ({name: size})."""
    for field, size in wanted.items():
        got = fmt.fields.get(field)
        if got is None or got[1] != size:
            have = ", ".join(f"{k}({v[1]})" for k, v in fmt.fields.items())
            raise TraceFormatError(f"{fmt.system}:{fmt.name} of this kernel has no {size}-byte "
                                   f"field {field!r} (it has {have}); this reader knows "
                                   f"another format")


def gfp_flag_table(print_fmt):
    """[(name, value)] of the __print_flags table in mm_page_alloc's print format (composite
    names such as GFP_KERNEL first, as the kernel prints them), evaluated from its C
    expressions; turns the text of a trace back into gfp bits."""
    table = []
    for m in re.finditer(r"\{\s*\(\s*unsigned long\s*\)(.*?),\s*\"(\w+)\"\s*\}", print_fmt):
        expr = re.sub(r"\(\s*(gfp_t|unsigned long)\s*\)", "", m.group(1))
        expr = re.sub(r"(\d+)UL", r"\1", expr)
        if not re.fullmatch(r"[\d\s()<>|&~]*", expr):
            continue
        table.append((m.group(2), eval(expr, {"__builtins__": {}}) & (1 << 64) - 1))  # noqa: S307
    return table


# -- binary pages ----------------------------------------------------------------------------

@numba.njit(cache=True)
def _u32(buf, off):
    return (np.uint32(buf[off]) | (np.uint32(buf[off + 1]) << 8)
            | (np.uint32(buf[off + 2]) << 16) | (np.uint32(buf[off + 3]) << 24))


@numba.njit(cache=True)
def _u64(buf, off):
    return np.uint64(_u32(buf, off)) | (np.uint64(_u32(buf, off + 4)) << np.uint64(32))


@numba.njit(cache=True)
def _walk(buf, page_size, out_off, out_ts, out_type, out_page):
    """Every data record of the pages in `buf`: payload offset, timestamp, common_type and
    page index into the out arrays. Returns (records, lost events stored in page headers,
    pages flagged as missing events without a count, bad pages)."""
    n = 0
    lost = 0
    flagged = 0
    bad = 0
    npages = len(buf) // page_size
    for p in range(npages):
        base = p * page_size
        ts = _u64(buf, base)
        commit = _u64(buf, base + 8)
        size = np.int64(commit & np.uint64(COMMIT_SIZE_MASK))
        if commit & np.uint64(MISSED_STORED) and PAGE_HEADER + size + 8 <= page_size:
            lost += np.int64(_u64(buf, base + PAGE_HEADER + size))
        elif commit & np.uint64(MISSED_EVENTS):
            flagged += 1
        if size > page_size - PAGE_HEADER:
            bad += 1
            continue
        off = base + PAGE_HEADER
        end = off + size
        while off + 4 <= end:
            hdr = _u32(buf, off)
            type_len = hdr & np.uint32(31)
            delta = np.uint64(hdr >> np.uint32(5))
            if type_len == TYPE_PADDING:
                if delta == 0:
                    break
                ts += delta
                off += 4 + np.int64(_u32(buf, off + 4))
            elif type_len == TYPE_TIME_EXTEND:
                ts += (np.uint64(_u32(buf, off + 4)) << np.uint64(TS_SHIFT)) + delta
                off += 8
            elif type_len == TYPE_TIME_STAMP:
                stamp = (np.uint64(_u32(buf, off + 4)) << np.uint64(TS_SHIFT)) | delta
                ts = stamp | (ts & np.uint64(0xF000000000000000))
                off += 8
            else:
                if type_len == 0:
                    length = np.int64(_u32(buf, off + 4)) - 4
                    data = off + 8
                else:
                    length = np.int64(type_len) * 4
                    data = off + 4
                if length < 2 or data + length > end:
                    bad += 1
                    break
                ts += delta
                if n < len(out_off):
                    out_off[n] = data
                    out_ts[n] = ts
                    out_type[n] = np.uint16(buf[data]) | (np.uint16(buf[data + 1]) << 8)
                    out_page[n] = p
                n += 1
                off = data + length
    return n, lost, flagged, bad


@dataclasses.dataclass
class RawRecords:
    """The records of a run of pages: payload offsets into `buf`, timestamps, event ids."""
    buf: np.ndarray
    offset: np.ndarray
    ts: np.ndarray
    type: np.ndarray
    page: np.ndarray
    lost: int
    flagged_pages: int
    bad_pages: int


def walk_pages(data, page_size=4096):
    """RawRecords of the ring-buffer pages in `data` (bytes or a uint8 array, whole pages)."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) \
        else np.ascontiguousarray(data, dtype=np.uint8)
    if len(buf) % page_size:
        raise TraceFormatError(f"{len(buf)} bytes of ring-buffer data is not a whole number of "
                               f"{page_size}-byte pages")
    cap = max(16, len(buf) // 8)         # the smallest record is 8 bytes (header + id + pad)
    out_off = np.empty(cap, dtype=np.int64)
    out_ts = np.empty(cap, dtype=np.uint64)
    out_type = np.empty(cap, dtype=np.uint16)
    out_page = np.empty(cap, dtype=np.int64)
    n, lost, flagged, bad = _walk(buf, page_size, out_off, out_ts, out_type, out_page)
    n = min(n, cap)
    return RawRecords(buf, out_off[:n], out_ts[:n], out_type[:n], out_page[:n], int(lost),
                      int(flagged), int(bad))


def gather(buf, offsets, field_offset, dtype):
    """One field of many records: the little-endian value at offsets + field_offset."""
    dt = np.dtype(dtype)
    if not len(offsets):
        return np.empty(0, dtype=dt.newbyteorder("="))
    idx = offsets[:, None] + field_offset + np.arange(dt.itemsize)
    return buf[idx].copy().view(dt).ravel().astype(dt.newbyteorder("="))


def decode(records, formats):
    """{event name: {"ts": ..., field: column, ...}} for every format in `formats` (a list of
    EventFormat), and {"unknown_ids": count of records of other ids}."""
    out = {}
    known = np.zeros(len(records.type), dtype=bool)
    for fmt in formats:
        sel = records.type == fmt.id
        known |= sel
        offs = records.offset[sel]
        cols = {"ts": records.ts[sel]}
        for field, (offset, _size, _signed) in fmt.fields.items():
            cols[field] = gather(records.buf, offs, offset, fmt.dtype(field))
        out[fmt.name] = cols
    return out, int((~known).sum())


# -- text ------------------------------------------------------------------------------------

_LINE_RE = re.compile(r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]"
                      r"\s+\S+\s+(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s?(?P<rest>.*)$")
_KV_RE = re.compile(r"(\w+)=(\S+)")


def parse_text_line(line):
    """(event, cpu, ts in ns, {key: text}) of one line of `trace` / `trace_pipe`, or None for a
    comment or a line of another shape."""
    m = _LINE_RE.match(line)
    if not m:
        return None
    sec, _, frac = m.group("ts").partition(".")
    ts = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
    return m.group("event"), int(m.group("cpu")), ts, dict(_KV_RE.findall(m.group("rest")))


def text_value(text, gfp_table=None):
    """A field's value from its text: hex (0x...), decimal, or gfp names joined by |."""
    if re.fullmatch(r"0x[0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if gfp_table is not None:
        if text == "none":
            return 0
        names = dict(gfp_table)
        value = 0
        for part in text.split("|"):
            if re.fullmatch(r"0x[0-9a-fA-F]+", part):
                value |= int(part, 16)
                continue
            if part not in names:
                raise TraceFormatError(f"gfp flag {part!r} is not in this kernel's table")
            value |= names[part]
        return value
    return text
