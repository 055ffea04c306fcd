"""Every ``--help`` line of every command states its default, and argparse's complaints point to the help
of the command they are about."""

from __future__ import annotations

import argparse

import pytest

from opticam.cli import build_parser, main


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def options_without_a_default() -> list[str]:
    missing = []
    for name, parser in commands().items():
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.required:
                continue  # positionals, flags (store_true, --help, --version) and required options
            if "default" not in (action.help or ""):
                missing.append(f"opticam {name} {'/'.join(action.option_strings)}: {action.help!r}")
    return missing


def test_every_option_of_every_command_states_its_default():
    assert options_without_a_default() == []


def test_the_check_sees_the_options_it_must():
    names = {f"{c} {o}" for c, p in commands().items() for a in p._actions for o in a.option_strings}
    assert {"explain --checkpoint", "evaluate --json", "evaluate --split", "sanity --split", "bench --json"} <= names


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["explain", "x.png", "--bogus"], "(see 'opticam explain --help')"),  # unrecognized arguments
        (["explain", "x.png", "--objective", "nope"], "(see 'opticam explain --help')"),  # invalid choice
        (["evaluate", "--images", "d", "--target", "nope"], "(see 'opticam evaluate --help')"),
        (["evaluate", "--images", "d", "--bogus", "1"], "(see 'opticam evaluate --help')"),
        (["nope"], "(see 'opticam --help')"),  # no command yet: the top-level help
        (["--bogus"], "(see 'opticam --help')"),
    ],
)
def test_argparse_complaints_point_to_the_commands_help(capsys, argv, hint):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("opticam: error: ")
    assert err.rstrip().endswith(hint), err


def test_unrecognized_arguments_are_named(capsys):
    assert main(["report", "run.sqlite", "--bogus", "extra"]) == 2
    assert "unrecognized arguments: --bogus extra (see 'opticam report --help')" in capsys.readouterr().err
