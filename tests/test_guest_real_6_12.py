"""A real Debian 6.12 guest under TCG: the probe, a short workload and the matrix rows at 4K and
64K (tests/guest_real.py). Its own module so xdist's loadfile runs it beside the 6.1 one."""
import pytest
from guest_real import check_real_guest


@pytest.mark.slow
def test_real_6_12_guest_probe_workload_and_matrix_rows(tmp_path):
    m = check_real_guest("6.12", tmp_path)
    assert m["kernel"].startswith("6.12.")
