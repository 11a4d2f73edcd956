"""The fidelity corpus: a directory of snapshots and the live outcomes recorded with them.

    <dir>/manifest.json            format, version, kernel release, repeat, settings, experiments
    <dir>/<experiment>-<i>.npz     the snapshot taken right before run i's action
    <dir>/<experiment>-<i>.trace.npz  the action's tracepoints, for a traced run
                                   (foliobench.fidelity_trace; the run's "trace" entry)

manifest.json: {"format": "foliobench-fidelity-corpus", "version": 1, "kernel": release,
"recorded_at", "host", "repeat", "settings": {...}, "experiments": [{"name", "runs": [{"snapshot",
"action", "twin": {...}, "live": {"outcome", "counters", "buddyinfo_after", "figures", ...}}]}]}.
The manifest is written last, so a directory without one is not a corpus.
"""
import json
import pathlib
import platform
import time

from simcore import npzfile

from . import results

FORMAT = "foliobench-fidelity-corpus"
VERSION = 1
MANIFEST = "manifest.json"


class CorpusError(ValueError):
    """The directory is not a usable fidelity corpus (one line for the user)."""


def new_manifest(kernel, repeat, settings):
    return {"format": FORMAT, "version": VERSION, "kernel": kernel,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": platform.node(), "repeat": repeat, "settings": settings, "experiments": []}


def write_manifest(directory, manifest):
    results.write_text(pathlib.Path(directory), MANIFEST, json.dumps(manifest, indent=1) + "\n")


def load(directory, experiments=None):
    """The manifest of the corpus in `directory`, checked (every snapshot present), keeping only
    `experiments` when given. CorpusError says what is wrong."""
    d = pathlib.Path(directory)
    if not d.is_dir():
        raise CorpusError(f"corpus directory {str(directory)!r} does not exist")
    path = d / MANIFEST
    if not path.is_file():
        raise CorpusError(f"{str(directory)!r} is not a fidelity corpus (no {MANIFEST}; record "
                          f"one with 'foliobench fidelity --record DIR')")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{path}: not readable JSON ({exc})") from None
    npzfile.check_header(manifest, str(path), "fidelity corpus manifest", FORMAT, VERSION,
                         error=CorpusError)
    for exp in manifest.get("experiments", []):
        for run in exp.get("runs", []):
            if not (d / run["snapshot"]).is_file():
                raise CorpusError(f"{path}: snapshot {run['snapshot']!r} of {exp['name']} is "
                                  f"missing")
            if "trace" in run and not (d / run["trace"]["file"]).is_file():
                raise CorpusError(f"{path}: trace {run['trace']['file']!r} of {exp['name']} "
                                  f"is missing")
    if experiments:
        have = [e["name"] for e in manifest["experiments"]]
        unknown = [n for n in experiments if n not in have]
        if unknown:
            raise CorpusError(f"experiment {unknown[0]!r} is not in the corpus; it has: "
                              f"{', '.join(have)}")
        manifest["experiments"] = [e for e in manifest["experiments"] if e["name"] in experiments]
    manifest["directory"] = str(d)
    return manifest


def brief(fig):
    """One-line summary of a run's figures for progress output."""
    parts = []
    for key, fmt in (("granted_share", "granted {:.1f}%"), ("compact_stall", "stalls {}"),
                     ("pgmigrate_success", "migrated {}"), ("unusable_after", "unusable {:.3f}")):
        if fig.get(key) is not None:
            parts.append(fmt.format(fig[key]))
    return ", ".join(parts)
