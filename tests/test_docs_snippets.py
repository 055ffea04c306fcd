"""Every snippet of the README and of docs/ runs as written: each ```python block is executed (a page's blocks
in order, in one namespace, in an empty folder), and every ``opticam`` command line of a ```bash block is
parsed by the real parser (nothing runs). A Python block that cannot run offline is preceded by
``<!-- snippet: skip (the reason) -->``, and the reason must be given."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SKIP = re.compile(r"<!--\s*snippet:\s*skip\b(.*?)-->\s*$", re.S)


def blocks(page: Path, language: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` of each block of ``language`` in ``page``."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) != language:
            continue
        before = text[: match.start()].rstrip("\n")
        last = before.rsplit("\n", 1)[-1]
        skip = SKIP.search(last)
        found.append((before.count("\n") + 2, match.group(2), skip.group(1).strip() if skip else None))
    return found


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


PYTHON_PAGES = [p for p in PAGES if blocks(p, "python")]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=rel)
def test_python_snippets_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a snippet writes lands here
    namespace: dict = {"__name__": f"snippets_of_{page.stem}"}
    for line, code, skip in blocks(page, "python"):
        if skip is not None:
            assert re.fullmatch(r"\(.+\)", skip), f"{rel(page)}:{line}: a skipped snippet says why: (reason)"
            continue
        try:
            exec(compile(code, f"{rel(page)}:{line}", "exec"), namespace)
        except Exception as exc:  # the page and line of the block that failed, and why
            raise AssertionError(f"the snippet at {rel(page)}:{line} fails: {exc!r}") from exc


def test_few_snippets_are_skipped():
    skipped = [(rel(p), line) for p in PAGES for line, _, skip in blocks(p, "python") if skip is not None]
    assert len(skipped) <= 2, skipped


def command_lines(code: str) -> list[str]:
    """The ``opticam ...`` commands of a bash block: continuation lines joined, comments and what follows
    ``|``, ``&&``, ``;`` or ``>`` dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word in ("|", "&&", ";", ">", "||"):
                words = words[:i]
                break
        if words and Path(words[0]).name == "opticam":
            commands.append(words[1:])
    return commands


BASH = [(p, line, argv) for p in PAGES for line, code, _ in blocks(p, "bash") for argv in command_lines(code)]


def test_the_docs_show_commands():
    assert {argv[0] for _, _, argv in BASH if argv} >= {"explain", "compare", "evaluate", "report", "serve"}


@pytest.mark.parametrize(("page", "line", "argv"), BASH, ids=[f"{rel(p)}:{n} {' '.join(a)[:60]}" for p, n, a in BASH])
def test_every_command_line_in_the_docs_parses(page, line, argv, capsys):
    from opticam.cli import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{rel(page)}:{line}: opticam {' '.join(argv)}: {capsys.readouterr().err.strip()} ({exc.code})")
    assert isinstance(args, argparse.Namespace) and args.command == argv[0]


def test_scripts_named_in_bash_blocks_exist():
    for page in PAGES:
        for _, code, _ in blocks(page, "bash"):
            for script in re.findall(r"\bbash ((?:scripts|benchmarks)/\S+\.sh)", code):
                assert (ROOT / script).is_file(), f"{rel(page)} names {script}"


def test_the_options_list_names_every_opticam_option():
    """docs/models.md lists every field of OptiCAMConfig and every value of its choices."""
    from opticam.methods import opticam_config

    text = (ROOT / "docs/models.md").read_text(encoding="utf-8")
    start = text.index("Options (every field of `opticam.OptiCAMConfig`")
    options = text[start : text.index("\n\n", start)]
    for field in dataclasses.fields(opticam_config.OptiCAMConfig):
        assert f"`{field.name}`" in options, field.name
    for values in (opticam_config.OBJECTIVES, opticam_config.NORMALIZATIONS, opticam_config.INITS,
                   opticam_config.SCHEDULES, opticam_config.PRECISIONS):  # fmt: skip
        for value in values:
            assert f"`{value}`" in options, value


def test_the_readme_is_a_landing_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    assert "bash scripts/test.sh" in (ROOT / ".ci/run").read_text()  # the README's test command is CI's


def test_links_to_pages_and_anchors_resolve():
    """Every relative Markdown link of the README and docs/ names a file that exists, and an anchor into a
    page names one of its headings (GitHub's slugs)."""
    link = re.compile(r"\]\(([^)\s]+)\)")

    def slug(heading: str) -> str:
        heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        return heading.replace(" ", "-")

    for page in PAGES:
        for target in link.findall(page.read_text(encoding="utf-8")):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{rel(page)} links to {target}"
            if anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.M)
                assert anchor in {slug(h) for h in headings}, f"{rel(page)} links to {target}"
