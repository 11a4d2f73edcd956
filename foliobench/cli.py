"""The foliobench command. Bad input: one line on stderr, exit code 2, no traceback."""
import argparse
import sys

import simcore
from workloads.fragment import fragment


class UsageError(Exception):
    """A problem with what the user asked for; reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _demo(args):
    m = simcore.Machine(mem=args.mem, seed=args.seed)
    print(f"# {m!r}, min_free_kbytes {m.min_free_kbytes}")
    fragment(m, fill=args.fill, free_share=args.free)
    m.check()
    print(f"# after filling {args.fill:.0%} of memory and freeing {args.free:.0%} of the movable "
          f"folios (seed {args.seed})\n")
    print("# /proc/buddyinfo")
    print(m.buddyinfo(), end="")
    print("\n# extfrag/extfrag_index")
    print(m.extfrag_index(), end="")
    print("\n# extfrag/unusable_index")
    print(m.unusable_index(), end="")
    frag = ", ".join(f"{zone} {v / 1000:.3f}" for zone, v in m.fragmentation_index(9).items())
    print(f"\nfragmentation index at order 9: {frag}")
    print(f"proactive compaction score (node): {m.fragmentation_score()}")
    return 0


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is outside 0..1")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def build_parser():
    parser = _Parser(prog="foliobench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build a machine, fragment it, print buddyinfo and the "
                                       "fragmentation indices")
    demo.add_argument("--mem", default="16G", help="machine size (default 16G)")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.add_argument("--fill", type=_fraction, default=0.9, help="share of memory to fill")
    demo.add_argument("--free", type=_fraction, default=0.5, help="share of movable folios freed")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except (UsageError, ValueError) as exc:
        print(f"foliobench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("foliobench: interrupted", file=sys.stderr)
        return 130
