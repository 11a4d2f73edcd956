"""Every command's --help renders: argparse expands %-formats in help texts only when asked."""
import argparse

from foliobench.cli import build_parser


def _parsers(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_command_help_renders():
    seen = []
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert text.startswith("usage:"), path
        seen.append(" ".join(path))
    # the walk reaches nested commands (live snapshot, live record, sweep show, ...)
    assert "live record" in seen and "fidelity" in seen and len(seen) > 15
