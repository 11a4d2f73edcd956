"""foliobench.soak / tools/soak: a planted bug is found, shrunk to a few operations, and the
printed repro reproduces it; a clean soak reports its rate."""
import subprocess
import sys

import numpy as np
import pytest

import simcore
from foliobench import soak
from simcore import swap


def _leaky_swap_free(monkeypatch):
    """Plant a bug: swap_free_nr() clears the slots but forgets the cluster count."""
    def free(self, offset, nr):
        self.swap_map[offset:offset + nr] = 0
    monkeypatch.setattr(swap.SwapDevice, "free", free)


def test_a_planted_bug_is_found_shrunk_and_reproduced(monkeypatch):
    _leaky_swap_free(monkeypatch)
    result = soak.soak("folio", 20_000, seed=3, run_length=600, check_every=50)
    assert result.violation is not None
    assert "swap cluster" in str(result.violation)
    ops = soak.shrink(result.config, result.ops, result.violation, budget_s=120)
    kinds = [op[0] for op in ops]
    assert len(ops) <= 6 and {"swapon", "swap_in"} <= set(kinds), ops
    snippet = soak.repro_snippet(result.config, ops)
    assert snippet.startswith("# violation: invariant: swap cluster")
    with pytest.raises(simcore.InvariantError, match="swap cluster"):
        exec(compile(snippet, "<repro>", "exec"), {})
    monkeypatch.undo()                                 # without the bug the repro passes
    exec(compile(snippet, "<repro>", "exec"), {})


def test_refused_call_that_changes_the_machine_is_a_violation(monkeypatch):
    real = simcore.Machine.split

    def split(self, pfn, new_order=0):
        self.pgdat.events[0] += 1                       # counts, then refuses
        return real(self, pfn, new_order)
    monkeypatch.setattr(simcore.Machine, "split", split)
    run = soak.Runner(soak.Config("folio", "linux-6.18", 0, 1))
    run.apply(("alloc", 0, 1, 0, 11))
    with pytest.raises(soak.Violation, match="refused-but-changed"):
        run.apply(("split", 0, 4))                      # new_order above the folio's: refused


def test_generate_is_deterministic_and_honours_skip():
    a = soak.generate(np.random.default_rng(5), 3000, skip=("swap_out", "ksm_same"))
    b = soak.generate(np.random.default_rng(5), 3000, skip=("swap_out", "ksm_same"))
    assert a == b
    assert all(op[0] != "swap_out" for op in a)
    assert all(op[0] != "misuse" or soak.MISUSE[op[1]] != "ksm_same" for op in a)
    assert {op[0] for op in a} == set(soak.OP_NAMES) - {"swap_out"}
    with pytest.raises(ValueError, match="'nope' is unknown"):
        soak.generate(np.random.default_rng(5), 10, skip=("nope",))


def test_tools_soak_command_line():
    proc = subprocess.run([sys.executable, "tools/soak", "--ops", "400", "--strategies",
                           "legacy", "--run-length", "200", "--check-every", "100"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "legacy" in proc.stdout and "ops/s" in proc.stdout and "no violation" in proc.stdout
    bad = subprocess.run([sys.executable, "tools/soak", "--strategies", "nope"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "'nope' is unknown" in bad.stderr
