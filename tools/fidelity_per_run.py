"""Per-run twin and live figures of a fidelity corpus, where the table shows medians:
python tools/fidelity_per_run.py [EXPERIMENT ...] [--corpus DIR]

For each recorded run of the experiments named (default compact_memory): the twin's and the
live vmstat deltas side by side (twin/live), and for compact_memory where the twin's
compaction ended each zone (status, migrate and free scanner at the end, from the twin's
mm_compaction_end record). Deterministic: the twin replays the recorded snapshot.
"""
import argparse
import json
import pathlib

from foliobench.fidelity_twin import profile_for_kernel, replay_run
from simcore import Machine
from simcore.tracepoints import COMPACTION_END

KEYS = ("pgmigrate_success", "compact_free_scanned", "compact_migrate_scanned",
        "compact_isolated", "pgmigrate_fail")


def compaction_ends(path, profile):
    """[(zone start, status, migrate_pfn, free_pfn)] of a compact_memory on the twin."""
    m = Machine.from_snapshot(str(path), profile=profile)
    m.trace_events(True, capacity=1 << 22)
    statuses = m.compact()
    ends = [r for r in m.trace_records() if r["event"] == COMPACTION_END]
    return statuses, [(hex(r["zone_start"]), r.get("status"), hex(r["migrate_pfn"]),
                       hex(r["free_pfn"])) for r in ends]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", default=["compact_memory"])
    parser.add_argument("--corpus", default="fidelity/corpus/6.18.44-fc-v1045")
    args = parser.parse_args()
    corpus = pathlib.Path(args.corpus)
    manifest = json.loads((corpus / "manifest.json").read_text())
    profile = profile_for_kernel(manifest["kernel"])
    for exp in manifest["experiments"]:
        if exp["name"] not in args.experiments:
            continue
        for run in exp["runs"]:
            twin = replay_run(corpus / run["snapshot"], run, profile)
            live = run["live"]["counters"]
            print(run["snapshot"], " ".join(f"{k}={twin['counters'].get(k)}/{live.get(k)}"
                                            for k in KEYS), flush=True)
            if run["action"] == "compact_memory":
                print("  twin:", *compaction_ends(corpus / run["snapshot"], profile),
                      flush=True)


if __name__ == "__main__":
    main()
