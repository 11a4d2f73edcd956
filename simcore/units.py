"""Sizes as users write them: "512M", "16G", "64K", or a number of bytes."""
import re

import numpy as np

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# ASCII: \d would also take full-width and other Unicode digits
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE | re.ASCII)


def parse_size(value, what="size"):
    """Bytes from an int (numpy integers too) or a string such as "16G", "512M", "64K", "2MiB";
    ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r} is not a size; use bytes or a string like '16G'")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"{what} {value!r} is negative")
        return int(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(match.group(1)) * _SUFFIX[match.group(2).upper()]
    raise ValueError(f"{what} {value!r} is not a size; use bytes or a number with K, M, G or T "
                     f"(e.g. '512M', '16G')")


def format_size(nbytes):
    """The shortest exact K/M/G/T spelling of a byte count ("16G", "64K", "12345")."""
    for suffix in ("T", "G", "M", "K"):
        unit = _SUFFIX[suffix]
        if nbytes and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)
