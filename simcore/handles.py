"""Compiled lookups behind Machine.handles_of(), handle_generation() and handle_pfn().

A backend names folios by handle and asks for handles and their reclaim generations after
every allocation call; one compiled pass over the call's folios costs less than the numpy
checks and gathers over small arrays they were. Same results, same refusals: each returns
False where its Python caller raises the ValueError."""
import numba as nb

from .mmzone import PAGE_HEAD
from .pgdat import view_at

jit = nb.njit(cache=True, nogil=True)


@jit
def heads_to_handles(view, pfns, nr_pages, out):
    """out[i]: the handle of the folio headed at pfns[i]; False if one is not a folio head."""
    mem_map = view_at(view).mem_map
    for i in range(len(pfns)):
        pfn = pfns[i]
        if pfn < 0 or pfn >= nr_pages or mem_map[pfn].type != PAGE_HEAD:
            return False
    for i in range(len(pfns)):
        out[i] = mem_map[pfns[i]].next
    return True


@jit
def generations(handles, table_len, gen, out):
    """out[i]: the reclaim generation of handles[i] (0 beyond `gen`: never reclaimed); False if
    a handle is outside the handle table."""
    for i in range(len(handles)):
        if handles[i] < 0 or handles[i] >= table_len:
            return False
    for i in range(len(handles)):
        h = handles[i]
        out[i] = gen[h] if h < len(gen) else 0
    return True


@jit
def handles_to_pfns(table, handles, out):
    """out[i]: where the folio of handles[i] lives; False if a handle names no live folio."""
    for i in range(len(handles)):
        h = handles[i]
        if h < 0 or h >= len(table) or table[h] < 0:
            return False
        out[i] = table[h]
    return True
