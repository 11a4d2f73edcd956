"""KSM on the live kernel: ksmd switched on for a merge, every knob through the journal.

start() sets run=1 with a large pages_to_scan and a short sleep_millisecs (so a few full scans
take well under a second); each old value is journaled. When KSM was off before, an undo action
writes run=2 first (unmerge every KSM page: break_ksm() on each,
unmerge_and_remove_all_rmap_items()) and the journal then writes the old run value back, so no
merged page outlives the run.
wait_for_merge() polls pages_sharing until it reaches the pairs expected or stops growing for
two full scans (ksmd needs a scan to see a page's checksum stay the same before the unstable
tree takes it: cmp_and_merge_page()), bounded in time.
"""
import os
import time

KSM = "/sys/kernel/mm/ksm"
MADV_MERGEABLE = 12
PAGES_TO_SCAN = 20000
SLEEP_MS = 5
MERGE_TIMEOUT_S = 10.0
COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "full_scans",
            "pages_scanned", "pages_skipped", "stable_node_chains", "ksm_zero_pages")


def available():
    return os.path.exists(f"{KSM}/run")


def counters():
    """{"ksm/<name>": value} for the counters this kernel has."""
    out = {}
    for name in COUNTERS:
        try:
            with open(f"{KSM}/{name}") as fh:
                out[f"ksm/{name}"] = int(fh.read())
        except (OSError, ValueError):
            pass
    return out


def start(journal):
    """ksmd on, fast; returns (run value found, whether stop() may unmerge): unmerging is only
    ours to do when KSM was off and no page was merged (someone else's merged pages stay)."""
    old = journal.read(f"{KSM}/run")
    unmerge = old != "1" and not journal.dry_run and \
        counters().get("ksm/pages_sharing", 0) == 0
    journal.write(f"{KSM}/pages_to_scan", PAGES_TO_SCAN)
    journal.write(f"{KSM}/sleep_millisecs", SLEEP_MS)
    if old != "1":
        journal.write(f"{KSM}/run", 1)
        if unmerge:
            journal.add_undo("KSM: unmerge every merged page (run=2)", _unmerge)
    return old, unmerge


def stop(journal, old, unmerge):
    """Back to the run value found (run=2 first, unmerging what ksmd merged, when ours)."""
    if unmerge and journal.read(f"{KSM}/run") == "1":
        journal.write(f"{KSM}/run", 2)
    journal.write(f"{KSM}/run", old)


def _unmerge():
    with open(f"{KSM}/run") as fh:
        if fh.read().strip() != "1":
            return
    with open(f"{KSM}/run", "w") as fh:
        fh.write("2")


def wait_for_merge(expected, before, timeout=MERGE_TIMEOUT_S):
    """Poll until pages_sharing grew by `expected` or stopped growing for two full scans."""
    deadline = time.monotonic() + timeout
    base_sharing = before.get("ksm/pages_sharing", 0)
    last, last_scan = None, None
    while time.monotonic() < deadline:
        now = counters()
        grown = now.get("ksm/pages_sharing", 0) - base_sharing
        scans = now.get("ksm/full_scans", 0) - before.get("ksm/full_scans", 0)
        if grown >= expected:
            return now
        if last is None or grown != last:
            last, last_scan = grown, scans
        elif scans - last_scan >= 2 and scans >= 3:
            return now
        time.sleep(0.01)
    return counters()
