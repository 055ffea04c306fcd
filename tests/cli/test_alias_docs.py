"""docs/cli.md's table of alias flags says, for each flag that fills a declared option, the commands that have it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from opticam.cli import build_parser
from opticam.methods.opticam_config import flag_options
from opticam.methods.registry import METHODS
from opticam.metrics.registry import METRICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def documented() -> dict[str, set[str]]:
    text = DOC.read_text(encoding="utf-8").split("| flag | fills | on |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in text.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = set(re.findall(r"`([a-z]+)`", cells[-1]))
    return rows


def commands_with(flag: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name for name, p in sub.choices.items() if flag in p._option_string_actions}


def declared_flags() -> set[str]:
    options = [*flag_options(), *(o for e in METHODS.values() for o in e.options if o.flag)]
    options += [o for m in METRICS.values() for o in m.options if o.flag]
    flags = {f"--{o.flag.replace('_', '-')}" for o in options}
    return {f for f in flags if commands_with(f)}  # fields that no parser offers as a flag are spec-only


def test_every_alias_flag_is_documented_with_the_commands_that_have_it():
    rows = documented()
    assert set(rows) == declared_flags()
    for flag, commands in rows.items():
        assert commands == commands_with(flag), flag
