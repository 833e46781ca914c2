"""Every example in ``layerscope --help`` and ``layerscope <command> --help`` parses as written.

The examples are read from the help text as a user sees it (continuation lines joined where a
line ends in a backslash, ``# comments`` dropped) and given to the same argument parser; an
example with a misspelt option, a missing argument, or two lines run together fails here.
"""

from __future__ import annotations

import shlex

import pytest

from layerscope.cli import COMMANDS, build_parser


def _examples(help_text: str) -> list[list[str]]:
    """The command lines of a help text that run layerscope, as argv lists after 'layerscope'."""
    lines, pending = [], ""
    for raw in help_text.splitlines():
        if not pending and not raw.strip().startswith(("layerscope ", "accelerate launch ")):
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        lines.append(words[words.index("layerscope") + 1:])
    return lines


def _help(name: str | None) -> str:
    parser = build_parser()
    if name is None:
        return parser.format_help()
    sub = next(a for a in parser._subparsers._group_actions if a.choices).choices[name]  # noqa: SLF001
    return sub.format_help()


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_examples_parse(name):
    text = _help(name)
    for line in text.splitlines():  # a continuation swallowed by the string literal shows as a gap
        if line.strip().startswith(("layerscope ", "accelerate ")):
            assert "     --" not in line.split("#")[0], f"two example lines run together: {line.strip()}"
    examples = _examples(text)
    if name is not None:
        assert any(argv[0] == name for argv in examples), f"no example of layerscope {name}"
    for argv in examples:
        if argv[0] == "<command>":
            continue
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"`layerscope {shlex.join(argv)}` does not parse (exit {exc.code})")


def test_examples_reader_catches_two_lines_run_together():
    text = "examples:\n  layerscope info a.pt \\\n      --json\n  layerscope info b.pt --jsn  # typo\n"
    assert _examples(text) == [["info", "a.pt", "--json"], ["info", "b.pt", "--jsn"]]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["info", "b.pt", "--jsn"])
