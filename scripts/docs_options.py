"""Rewrite the options reference in docs/evaluation.md from the methods' and metrics' declarations.

Run it after adding or changing a declared option: ``.venv/bin/python scripts/docs_options.py``.
tests/test_docs_options.py fails while the file and the declarations differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from opticam.cli.catalog import DOCS_BEGIN, DOCS_END, docs_block

DOC = Path(__file__).resolve().parent.parent / "docs" / "evaluation.md"


def main() -> int:
    text = DOC.read_text(encoding="utf-8")
    if DOCS_BEGIN not in text or DOCS_END not in text:
        print(f"{DOC}: no generated block ({DOCS_BEGIN!r} ... {DOCS_END!r}) to replace", file=sys.stderr)
        return 1
    head, rest = text.split(DOCS_BEGIN, 1)
    _old, tail = rest.split(DOCS_END, 1)
    DOC.write_text(head + docs_block() + tail, encoding="utf-8")
    print(f"{DOC}: options reference rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
