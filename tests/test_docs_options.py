"""docs/evaluation.md's options reference is the declarations, as ``opticam methods`` / ``metrics`` print them."""

from __future__ import annotations

from pathlib import Path

from opticam.cli.catalog import DOCS_BEGIN, DOCS_END, docs_block
from opticam.methods.registry import METHODS
from opticam.metrics.registry import METRICS
from opticam.options import format_value

DOC = Path(__file__).resolve().parent.parent / "docs" / "evaluation.md"


def block_in_doc() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(DOCS_BEGIN) == 1 and text.count(DOCS_END) == 1, "the generated block is missing"
    return DOCS_BEGIN + text.split(DOCS_BEGIN, 1)[1].split(DOCS_END, 1)[0] + DOCS_END


def test_the_options_reference_matches_the_declarations():
    assert block_in_doc() == docs_block(), "docs/evaluation.md is out of date: run scripts/docs_options.py"


def test_the_reference_names_every_option_with_its_type_and_default():
    """Read from the declarations directly, not through the generator: each entry has its heading, and each
    option a row that starts with its name, kind and default, inside that entry's section."""
    block = block_in_doc()
    for entries, options_of in ((METHODS, lambda e: e.all_options()), (METRICS, lambda m: m.options)):
        for name, entry in entries.items():
            heading = f"#### `{name}`\n"
            assert heading in block, name
            section = block.split(heading, 1)[1].split("\n#### ", 1)[0].split("\n### ", 1)[0]
            options = list(options_of(entry))
            assert (not options) == ("No options." in section), name
            for option in options:
                default = "none" if option.default is None else format_value(option.default)
                assert f"| {option.name} | {option.kind} | {default} |" in section, (name, option.name)
