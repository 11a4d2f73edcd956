"""Capture the tracefs fixtures of tests/test_trace.py on this machine (root):
the same ring buffer read twice, as the text of `trace` and as trace_pipe_raw pages, plus the
format files of the recorded events. Usage: tools/capture_trace_fixture.py OUTDIR -- COMMAND"""
import os
import pathlib
import subprocess
import sys

from livekernel import record
from livekernel.journal import SettingsJournal
from livekernel.session import STATE_DIR

EVENTS = [("kmem", "mm_page_alloc"), ("kmem", "mm_page_free"), ("kmem", "mm_page_free_batched"),
          ("kmem", "mm_page_alloc_extfrag"), ("kmem", "mm_page_pcpu_drain"),
          ("migrate", "mm_migrate_pages"), ("compaction", "mm_compaction_kcompactd_sleep")]


def main(out, command):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    journal = SettingsJournal(state_dir=STATE_DIR)
    with journal:
        record._mount(journal, record.TRACEFS)
        inst = record._instance(journal, record.TRACEFS)
        journal.write(f"{inst}/tracing_on", 0)
        journal.write(f"{inst}/buffer_size_kb", 64)
        journal.write(f"{inst}/trace_clock", "mono")
        journal.write(f"{inst}/options/overwrite", 0)     # keep the first events, drop later
        for system, name in EVENTS:
            journal.write(f"{inst}/events/{system}/{name}/enable", 1)
            text = pathlib.Path(inst, "events", system, name, "format").read_text()
            (out / f"{name}.format").write_text(text)
        journal.write(f"{inst}/tracing_on", 1)
        subprocess.run(command, check=True)
        journal.write(f"{inst}/tracing_on", 0)
        (out / "trace.txt").write_text(pathlib.Path(inst, "trace").read_text())
        for cpu_dir in sorted(pathlib.Path(inst, "per_cpu").iterdir()):
            fd = os.open(cpu_dir / "trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
            pages = []
            try:
                while True:
                    try:
                        page = os.read(fd, 4096)
                    except BlockingIOError:
                        break
                    if not page:
                        break
                    pages.append(page.ljust(4096, b"\0"))
            finally:
                os.close(fd)
            (out / f"{cpu_dir.name}.raw").write_bytes(b"".join(pages))
            (out / f"{cpu_dir.name}.stats").write_text((cpu_dir / "stats").read_text())


if __name__ == "__main__":
    argv = sys.argv[1:]
    sep = argv.index("--")
    main(argv[0], argv[sep + 1:])
