"""asv track_ benchmarks of the digital twin's fidelity: each recorded experiment of the fidelity
corpus (fidelity/corpus/<kernel-release>/, `foliobench fidelity --record`) replayed on the twin
and its distance from the live kernel reported, so the history site shows fidelity over commits.

Cheap by design: the first recorded run of each experiment is replayed (four twins of this
machine, about 5 s each), and the live side is the recorded spread of all runs. Every value is
an error, lower is better: points for shares and the unusable index, |log2 factor| for the
scanner and migration counters. The gate (benchmarks/gate.py) fails when one grows by more than
gate.FIDELITY_TOLERANCE.
"""
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
# asv's benchmark processes import the installed foliobench: this checkout's (its corpus and
# its twin) must come first, as for simcore in tools/history's exported commits
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
EXPERIMENTS = ["compact_memory", "hugetlb", "mthp64k", "kcompactd"]
SHARE_FIGURES = ("granted_share", "compaction_success")
COUNTER_FIGURES = ("compact_stall", "pgmigrate_success", "compact_migrate_scanned",
                   "compact_free_scanned")


def corpus_dir():
    """The recorded corpus (the newest kernel release's when there are several)."""
    found = sorted(p.parent for p in (REPO / "fidelity" / "corpus").glob("*/manifest.json"))
    if not found:
        raise FileNotFoundError("no fidelity corpus under fidelity/corpus/")
    return found[-1]


def _worst(errors):
    vals = [e for e in errors if e == e]          # NaN: the figure does not apply
    return max(vals) if vals else float("nan")


class FidelityOutcome:
    """Per experiment of the corpus: the twin's error against the live spread (deterministic)."""

    params = [EXPERIMENTS]
    param_names = ["experiment"]
    timeout = 600

    def setup_cache(self):
        from foliobench import fidelity_corpus, fidelity_twin
        manifest = fidelity_corpus.load(corpus_dir())
        comparison = fidelity_twin.replay_corpus(manifest, runs=1)
        return {exp["name"]: {f["figure"]: f["error"] for f in exp["strategies"][0]["figures"]}
                for exp in comparison["experiments"]}

    def track_share_error(self, cache, experiment):
        """Granted share and compaction success: the worse |twin - live median| in points."""
        return _worst(cache[experiment][f] for f in SHARE_FIGURES)

    track_share_error.unit = "points"

    def track_counter_error(self, cache, experiment):
        """compact_stall, pgmigrate_success and both scanners: the worst |log2(twin / live)|."""
        return _worst(cache[experiment][f] for f in COUNTER_FIGURES)

    track_counter_error.unit = "log2 factor"

    def track_large_kept_error(self, cache, experiment):
        """Large-folio kept share: |twin - live median| in points."""
        return cache[experiment]["large_kept"]

    track_large_kept_error.unit = "points"

    def track_unusable_error(self, cache, experiment):
        """Normal's unusable free space index (order 9) after the action, x100."""
        return cache[experiment]["unusable_after"]

    track_unusable_error.unit = "points"
