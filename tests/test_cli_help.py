"""Every option of every subcommand says what it does and what its default is."""

from __future__ import annotations

import argparse

import pytest

from realjudge.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``parser`` and every sub(sub)command parser under it, with their command paths."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, (*path, name))
    return found


PARSERS = _parsers(build_parser())
EXEMPT = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def help_problem(action: argparse.Action) -> str | None:
    """The rule: every option and positional has a help text, and that text contains the word
    "default" -- unless the option is a plain on/off flag (store_true, store_false, ...:
    absent means off) or is required. --help, --version and subcommand lists are exempt."""
    if isinstance(action, EXEMPT):
        return None
    if not action.help or action.help == argparse.SUPPRESS:
        return "no help"
    is_flag = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
    positional_required = not action.option_strings and action.nargs not in ("?", "*")
    if is_flag or action.required or positional_required:
        return None
    if "default" not in action.help.lower():
        return "help does not state the default"
    return None


def test_the_rule_catches_what_it_should():
    p = argparse.ArgumentParser()
    bad = [p.add_argument("--a", type=int), p.add_argument("--b", help="a number")]
    good = [
        p.add_argument("--c", help="a number (default: 3)", default=3),
        p.add_argument("--d", action="store_true", help="switch it on"),
        p.add_argument("--e", required=True, help="where"),
    ]
    assert [help_problem(a) for a in bad] == ["no help", "help does not state the default"]
    assert [help_problem(a) for a in good] == [None, None, None]
    toggle = p.add_argument("--f", action=argparse.BooleanOptionalAction, help="on or off")
    assert help_problem(toggle) == "help does not state the default"


def test_every_option_has_help_with_its_default():
    problems = [
        f"realjudge {' '.join(path)} {'/'.join(a.option_strings) or a.dest}: {problem}"
        for path, parser in PARSERS
        for a in parser._actions
        if (problem := help_problem(a))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", [p for p, _ in PARSERS], ids=lambda p: " ".join(p) or "top")
def test_help_renders_without_escaped_percent_signs(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*path, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "%%" not in text and "%(" not in text
