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


def test_live_captures_refuse_a_bad_output_before_reading_anything(tmp_path, capsys):
    from foliobench import cli
    for verb in ("snapshot", "record"):
        assert cli.main(["live", verb, "-o", str(tmp_path)]) == 2
        assert "is a directory" in capsys.readouterr().err
        assert cli.main(["live", verb, "-o", str(tmp_path / "no" / "f.npz")]) == 2
        assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
