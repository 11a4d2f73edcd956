"""foliobench agreement: a measured matrix against the simulator profile of its release."""
import copy
import json

import pytest

from foliobench import agreement, cli
from foliobench import matrix as fmatrix
from foliobench.verdicts import NOT_AT_ALL, PERFECTLY, UNTESTED
from workloads.matrix_probes import get_probe


@pytest.mark.parametrize("release,profile", [("6.1.0-57-amd64", "linux-6.1"),
                                             ("6.12.117+deb12-amd64", "linux-6.12"),
                                             ("6.18.44-fc-v1045", "linux-6.18"),
                                             ("6.11.0", "linux-6.10"), ("7.0.1", "linux-6.18")])
def test_profile_for_release(release, profile):
    assert agreement.profile_for(release) == profile


def test_profile_for_refuses_older_kernels():
    with pytest.raises(ValueError, match="no simulator profile at or below kernel 5.15"):
        agreement.profile_for("5.15.0")


def _measured(tmp_path):
    """The simulator's own 6.12 matrix posing as a live one, with one cell changed and one
    left untested."""
    probes = [get_probe("swap-out"), get_probe("ksm")]
    sim = fmatrix.sim_matrix("linux-6.12", [0, 4], probes=probes)
    real = copy.deepcopy(sim)
    real.update(backend="live", kernel="6.12.117+deb12-amd64", label="live 6.12")
    cell = real["rows"][0]["cells"]["64K"]
    cell["verdict"] = NOT_AT_ALL if cell["verdict"] != NOT_AT_ALL else PERFECTLY
    real["rows"][1]["cells"]["4K"] = {"verdict": UNTESTED, "reason": "no KSM", "evidence": {}}
    path = tmp_path / "matrix.json"
    path.write_text(fmatrix.render_json(fmatrix.document([real], backend="live")))
    return path


def test_agreement_counts_and_keeps_both_pieces_of_evidence(tmp_path):
    doc = agreement.agreement(agreement.load_measured(_measured(tmp_path)))
    (k,) = doc["kernels"]
    assert k["profile"] == "linux-6.12"
    assert (k["measured"], k["agreeing"]) == (3, 2)
    bad = k["rows"][0]["cells"]["64K"]
    assert bad["agree"] is False and bad["real"] != bad["sim"]
    assert bad["real_evidence"].startswith(bad["real"])
    assert bad["sim_evidence"].startswith(bad["sim"])
    assert k["rows"][1]["cells"]["4K"]["measured"] is False
    text = agreement.render_markdown(doc)
    assert "2 of 3 measured cells agree" in text
    assert "Disagreements, with both pieces of evidence" in text and ", 64K**: real: " in text


def test_command_line(tmp_path, capsys):
    path = _measured(tmp_path)
    assert cli.main(["agreement", str(path), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 of 3 measured cells agree")
    (saved,) = (tmp_path / "out" / "agreement").iterdir()
    assert json.loads((saved / "agreement.json").read_text())["agreeing"] == 2
    sim_only = tmp_path / "sim.json"
    sim_only.write_text(fmatrix.render_json(fmatrix.run_sim(["linux-6.1"], [0],
                                                            probes=[get_probe("ksm")])))
    assert cli.main(["agreement", str(sim_only), "--no-save"]) == 2
    assert cli.main(["agreement", str(tmp_path / "none.json"), "--no-save"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "holds only simulator matrices" in err[0] and "does not exist" in err[1]
