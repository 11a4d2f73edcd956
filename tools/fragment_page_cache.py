"""Fragment this machine's free memory with clean page cache, so that a recorded program
meets memory pressure and its THP faults compact (docs/traces.md, "Under memory pressure").

    python tools/fragment_page_cache.py FILE --leave 2G [--keep-every 2]

FILE is fallocate()d (no data written) as large as MemAvailable minus --leave; reading it with
POSIX_FADV_RANDOM allocates one order-0 page-cache folio per 4 KiB read, and then every page
but one in --keep-every is dropped again with POSIX_FADV_DONTNEED: the free memory left is in
small scattered pieces. Everything it holds is clean page cache, which reclaim may take back
at any time; `--drop` drops it all and removes FILE. Reads /proc/meminfo, so it is a tool, not
part of simcore.
"""
import argparse
import os
import sys
import time

PAGE = 4096


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def size_of(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units \
        else int(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--leave", default="2G", help="MemAvailable to leave unfilled")
    ap.add_argument("--keep-every", type=int, default=2, help="keep one page in N")
    ap.add_argument("--drop", action="store_true", help="drop FILE's cache and remove it")
    args = ap.parse_args()
    if args.drop:
        fd = os.open(args.file, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        os.unlink(args.file)
        return 0
    size = (meminfo("MemAvailable") - size_of(args.leave)) // PAGE * PAGE
    if size <= 0:
        print(f"MemAvailable is below --leave {args.leave}; nothing to fill", file=sys.stderr)
        return 2
    t0 = time.time()
    fd = os.open(args.file, os.O_RDWR | os.O_CREAT, 0o600)
    os.posix_fallocate(fd, 0, size)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    for off in range(0, size, PAGE):
        os.pread(fd, 1, off)
    filled = time.time() - t0
    for off in range(0, size, PAGE):
        if (off // PAGE) % args.keep_every:
            os.posix_fadvise(fd, off, PAGE, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    print(f"filled {size >> 20} MiB of page cache in {filled:.1f} s, dropped all but one page "
          f"in {args.keep_every} in {time.time() - t0 - filled:.1f} s; MemFree now "
          f"{meminfo('MemFree') >> 20} MiB")
    with open("/proc/buddyinfo") as f:
        print(f.read(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
