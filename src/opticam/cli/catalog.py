"""``opticam methods`` and ``opticam metrics``: what ``--methods`` and ``--metrics`` take, with every option.

Both print from the declarations (:mod:`opticam.options`): each entry's name and summary, then one row per
option with its type, default, the paper's value where there is one, what it accepts and what it does. A
spec is written ``name(option=value,...)``, a list ``a;b;c``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..methods.registry import describe_methods
from ..metrics.registry import describe_metrics

COLUMNS = ("option", "type", "default", "paper", "accepts", "help")


def register(sub: argparse._SubParsersAction) -> None:
    for kind, describe in (("methods", describe_methods), ("metrics", describe_metrics)):
        p = sub.add_parser(
            kind,
            help=f"list the {kind} that --{kind} takes, with each option's type and default",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("names", nargs="*", metavar="NAME", help=f"only these {kind} (default: all)")
        p.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables (default: Markdown)")
        p.set_defaults(func=catalog_command, kind=kind, describe=describe)


def select(entries: list[dict[str, Any]], names: Sequence[str], kind: str) -> list[dict[str, Any]]:
    """The entries named (all when none is); an unknown name is a usage error naming the known ones."""
    known = [e["name"] for e in entries]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown {kind[:-1]} {unknown[0]!r}; choose among: {', '.join(known)}")
    return [e for e in entries if not names or e["name"] in names]


def markdown(entries: list[dict[str, Any]]) -> str:
    """Each entry as a heading line and its options as a Markdown table (or "no options")."""
    out = []
    for entry in entries:
        out.append(f"## {entry['name']}\n\n{entry['summary']}\n")
        if not entry["options"]:
            out.append("No options.\n")
            continue
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + " --- |" * len(COLUMNS))
        for row in entry["options"]:
            out.append("| " + " | ".join(str(row[c]).replace("|", "\\|") for c in COLUMNS) + " |")
        out.append("")
    return "\n".join(out)


def catalog_command(args: argparse.Namespace) -> int:
    entries = select(args.describe(), args.names, args.kind)
    print(json.dumps(entries, indent=2) if args.json else markdown(entries))
    return 0
