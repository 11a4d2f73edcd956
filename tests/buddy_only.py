"""Machines whose per-CPU lists pass every page straight through, for tests of the buddy
allocator's own mechanics (simcore.pcp and tests/test_pcp.py cover the lists)."""
from simcore import pcp


def pcp_disabled(m):
    """The per-CPU lists as zone_pcp_disable() leaves them (the boot pageset: high 0, batch
    1): every allocation and free goes straight to the buddy allocator."""
    m.drain_all_pages()
    p = m.pgdat.pcp
    for cpu in range(m.cpus):
        for z in range(pcp.NR_ZONES):
            b = pcp.H_SIZE + (cpu * pcp.NR_ZONES + z) * pcp.P_SIZE
            p[b + pcp.P_HIGH] = p[b + pcp.P_HIGH_MIN] = p[b + pcp.P_HIGH_MAX] = 0
            p[b + pcp.P_BATCH] = 1
    return m
