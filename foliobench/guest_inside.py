"""The guest's side of `foliobench guest`: the commands of one boot (split at ++) run one after
the other in this one Python process, each only when the one before succeeded, with each
command's time on stderr. Under QEMU's TCG, importing foliobench (numpy, numba, pandas,
matplotlib, read over 9p) takes minutes; one process pays for it once, not once per command."""
import sys
import time

from foliobench import cli
from foliobench.guest import split_commands


def main(argv):
    """Exit code of the first command that failed, else 0."""
    # guest.log interleaves stdout and stderr: lines in the order they were printed
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    code = 0
    for part in split_commands(argv):
        t0 = time.monotonic()
        code = cli.main(part)
        sys.stdout.flush()
        print(f"foliobench guest: `{' '.join(part[:2])}` exit {code} in "
              f"{time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        if code:
            break
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
