"""What foliobench's own file formats share: an npz written atomically, and a JSON header whose
format name and version are checked before anything else is read."""
import os
import tempfile

import numpy as np


def save_atomic(path, prefix, members):
    """np.savez_compressed(members) to `path` through a temporary file in the same directory
    and a rename, so that `path` is either the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez_compressed(out, **members)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def check_header(header, what, noun, fmt, version, error=ValueError):
    """Raise `error` naming `what` unless `header` is a dict of format `fmt` and version
    `version`; `noun` is what such a file is called ("foliobench trace")."""
    found = header.get("format") if isinstance(header, dict) else None
    if found != fmt:
        raise error(f"{what} is not a {noun} (format {found!r})")
    if header.get("version") != version:
        raise error(f"{what} is {noun} version {header.get('version')!r}; this foliobench "
                    f"reads version {version}")
