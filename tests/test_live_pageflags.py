"""livekernel.pageflags on this process's own pages (no root needed: mincore and the present
bit of /proc/self/pagemap are open to every process)."""
import ctypes
import mmap
import os

import numpy as np
import pytest

from livekernel import pageflags

PAGE = 4096
pytestmark = [pytest.mark.live,
              pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"),
                                 reason="no /proc/self/pagemap (not Linux)")]


def private_anon(nr_pages):
    m = mmap.mmap(-1, nr_pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return m, ctypes.addressof(ctypes.c_char.from_buffer(m))


def test_resident_follows_faults_and_madv_dontneed():
    m, addr = private_anon(64)
    view = np.frombuffer(m, dtype=np.uint8)
    assert not pageflags.resident(addr, 64).any()          # nothing faulted yet
    view[0:32 * PAGE:PAGE] = 1
    res = pageflags.resident(addr, 64)
    assert res[:32].all() and not res[32:].any()
    assert (pageflags.resident(addr, 64) == pageflags.pagemap(addr, 64)[1]).all()
    m.madvise(mmap.MADV_DONTNEED, 8 * PAGE, 8 * PAGE)
    res = pageflags.resident(addr, 64)
    assert res[:8].all() and not res[8:16].any() and res[16:32].all()
    del view


def test_resident_names_the_range_it_cannot_read():
    with pytest.raises(OSError, match=r"mincore\(0x1001, 1 pages\)"):
        pageflags.resident(0x1001, 1)                       # not page aligned: EINVAL
