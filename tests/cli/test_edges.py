"""The command line's edges (issue 22): exit statuses that agree between commands, help lines that state
their defaults, one name per idea, bounded waits. On the mini model (the ``mini`` fixture): milliseconds."""

from __future__ import annotations

import argparse
import io
import json
import re
import socket
import sqlite3
import sys
import time

import pytest
from PIL import Image

from opticam.cli import build_parser, main
from opticam.errors import ResourceError, UsageError
from opticam.evaluation.distributed import check_pool_sizes, check_ray_address


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "cat.png"
    Image.new("RGB", (20, 16), (150, 90, 40)).save(path)
    return path


@pytest.fixture
def dataset(tmp_path):
    """One readable image, one corrupt, one missing."""
    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", (20, 16), (40, 90, 150)).save(folder / "a.png")
    (folder / "b.png").write_text("not an image")
    (folder / "labels.csv").write_text("file,class_index\na.png,3\nb.png,4\nc.png,5\n")
    return folder


def err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# -- help ------------------------------------------------------------------------------------------------
def _shown(default) -> list[str]:
    """How a help text may spell ``default``: as is, a float without its .0, a list joined by spaces."""
    if isinstance(default, list | tuple):
        return [" ".join(map(str, default)), ", ".join(map(str, default))]
    forms = [str(default)]
    if isinstance(default, float) and default.is_integer():
        forms.append(str(int(default)))
    return forms


def test_every_help_line_states_its_default():
    """Each flag with a default (not None, not False) says it in its help: the word 'default' and the value,
    or 'default:' followed by what decides it (``--device``: cuda if present)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for command, subparser in sub.choices.items():
        for action in subparser._actions:
            default = action.default
            if default is None or default is False or default == argparse.SUPPRESS:
                continue
            text = action.help or ""
            if "default" not in text or not (any(f in text for f in _shown(default)) or "default:" in text):
                missing.append(f"opticam {command} {'/'.join(action.option_strings)} (default {default!r})")
    assert not missing, "help lines that do not state their default:\n" + "\n".join(missing)


def test_version_and_aliases():
    parser = build_parser()
    args = parser.parse_args(["bench", "--samples", "d"])
    assert str(args.samples) == "d" and str(parser.parse_args(["bench", "--images", "d"]).samples) == "d"
    assert (
        parser.parse_args(["serve", "--samples", "d"]).samples == parser.parse_args(["serve", "--images", "d"]).samples
    )
    assert parser.parse_args(["report", "r.sqlite", "--images", "a.png"]).show_images == "a.png"
    assert parser.parse_args(["evaluate", "--samples", "d"]).images == "d"


# -- exit statuses that agree --------------------------------------------------------------------------------
def test_evaluate_with_unreadable_images_finishes_then_exits_1(capsys, mini, dataset, tmp_path):
    """Like explain: the others are scored and the table printed, then a summary line and exit status 1."""
    db = tmp_path / "e.sqlite"
    argv = ["evaluate", "--images", str(dataset), "--db", str(db), "--methods", "fakecam", "--metrics", "drop-gain"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "| fakecam | 1 |" in captured.out  # the table, with the one readable image
    assert "opticam: skipping b.png" in captured.err and "opticam: skipping c.png" in captured.err
    assert captured.err.strip().splitlines()[-1] == "opticam: 2 of 3 image(s) could not be read"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone() == (1,)
    assert main([*argv[:2], str(dataset), *argv[3:], "--limit", "1"]) == 0  # the readable image alone: 0


def test_explain_and_sanity_say_the_same(capsys, mini, dataset, image, tmp_path):
    assert main(["explain", str(image), str(dataset / "b.png"), "--out", str(tmp_path / "o"), "--iterations", "1"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "opticam: 1 of 2 image(s) could not be read"
    assert main(["sanity", "--images", str(dataset), "--methods", "fakecam", "--limit", "2"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "opticam: 1 of 2 image(s) could not be read"


def test_sanity_json_names_the_images_it_checked(capsys, mini, dataset, tmp_path):
    """A skipped image is not among the images the JSON lists, wherever it stands in the data set."""
    (dataset / "labels.csv").write_text("file,class_index\nb.png,4\na.png,3\n")  # the unreadable one first
    out = tmp_path / "s.json"
    assert main(["sanity", "--images", str(dataset), "--methods", "fakecam", "--json", str(out)]) == 1
    assert json.loads(out.read_text())["images"] == ["a.png"]


def test_no_image_at_all_is_one_line(capsys, mini, dataset, tmp_path):
    bad = [str(dataset / "b.png"), str(dataset / "c.png")]
    assert main(["explain", *bad, "--out", str(tmp_path / "o")]) == 1
    (line,) = err_lines(capsys)
    assert line.startswith("opticam: error: none of the 2 images could be read (the first: ")


def test_an_os_error_while_writing_is_one_line_naming_the_path(capsys, mini, image, tmp_path, monkeypatch):
    from opticam.evaluation.explain_job import ExplainOutput

    def refuse(self, out):
        raise PermissionError(13, "Permission denied", str(out / f"{self.stem}.png"))

    monkeypatch.setattr(ExplainOutput, "write", refuse)
    assert main(["explain", str(image), "--out", str(tmp_path / "o"), "--iterations", "1"]) == 1
    assert err_lines(capsys) == [f"opticam: error: {tmp_path / 'o' / 'cat.png'}: Permission denied"]


# -- one name per idea, presets, the output ------------------------------------------------------------------
def test_explain_topk_prints_the_top5_once_per_image_and_records_the_preset(capsys, mini, image, tmp_path):
    out = tmp_path / "o"
    assert main(["explain", str(image), "--topk", "3", "--out", str(out), "--preset", "fast", "--iterations", "1"]) == 0
    text = capsys.readouterr().out
    assert text.count("top-5 classes") == 1 and text.count("explaining class") == 3
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(records) == 3 and {r["preset"] for r in records} == {"fast"}
    assert {r["settings"]["iterations"] for r in records} == {1} and records[0]["settings"]["objective"] == "log-prob"


def test_evaluate_preset_spells_its_options_in_the_method_key(capsys, mini, dataset, tmp_path):
    db = tmp_path / "e.sqlite"
    argv = ["evaluate", "--images", str(dataset), "--limit", "1", "--db", str(db), "--methods", "opticam,fakecam"]
    assert main([*argv, "--metrics", "drop-gain", "--preset", "fast", "--iterations", "2"]) == 0
    with sqlite3.connect(db) as conn:
        methods = {m for (m,) in conn.execute("SELECT DISTINCT method FROM results")}
    assert methods == {"opticam(iterations=2,lr=1.0,objective=log-prob,schedule=cosine)", "fakecam"}
    assert "methods opticam(iterations=2,lr=1.0" in capsys.readouterr().err  # explicit flags win over the preset


def test_compare_takes_the_preset(capsys, mini, image, tmp_path):
    out = tmp_path / "c.png"
    assert main(["compare", str(image), "--methods", "opticam,fakecam", "--preset", "tenth", "--out", str(out)]) == 0
    assert "opticam: AD" in capsys.readouterr().out and out.is_file()


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("command", "terminal", "flags", "shown"),
    [
        ("explain", True, [], True),
        ("explain", True, ["--no-progress"], False),
        ("explain", False, [], False),
        ("evaluate", True, [], True),
        ("evaluate", True, ["--no-progress"], False),
        ("evaluate", False, [], False),
    ],
)
def test_a_progress_bar_only_on_a_terminal_and_never_with_no_progress(
    mini, image, dataset, tmp_path, monkeypatch, command, terminal, flags, shown
):
    """What the user sees on stderr: a bar that counts to the end on a terminal; nothing of it in a log
    (stderr redirected to a file) or with --no-progress."""
    if command == "explain":
        argv = ["explain", str(image), "--out", str(tmp_path / "o"), "--iterations", "3"]
    else:
        argv = ["evaluate", "--images", str(dataset), "--limit", "1", "--db", str(tmp_path / "e.sqlite")]
        argv += ["--methods", "fakecam", "--metrics", "drop-gain"]
    stream = Terminal() if terminal else io.StringIO()
    with monkeypatch.context() as m:
        m.setattr(sys, "stderr", stream)
        assert main([*argv, *flags]) == 0
    bar = re.findall(r"\d+%\|[^|]*\| *(\d+)/(\d+)", stream.getvalue())
    assert bool(bar) == shown, stream.getvalue()
    if shown:
        assert bar[-1][0] == bar[-1][1]  # it reached the end


def test_every_command_that_shows_progress_takes_no_progress(monkeypatch):
    """Each of them parses --no-progress, and with it no bar is shown even on a terminal."""
    from opticam.cli.progress import show_progress

    monkeypatch.setattr(sys, "stderr", Terminal())
    parser = build_parser()
    required = {"explain": ["a.png"], "evaluate": ["--images", "d"], "sanity": ["--images", "d"],
                "report": ["r.sqlite"]}  # fmt: skip
    for command in ("explain", "demo", "evaluate", "sanity", "report", "bench"):
        argv = [command, *required.get(command, [])]
        assert show_progress(parser.parse_args(argv)) is True, command
        quiet = parser.parse_args([*argv, "--no-progress"])
        assert quiet.no_progress is True and show_progress(quiet) is False, command


# -- bounded waits and pools --------------------------------------------------------------------------------
def test_a_ray_address_nobody_listens_on_fails_within_seconds():
    with socket.socket() as s:  # a port that was free a moment ago: closed, nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ResourceError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        check_ray_address(f"127.0.0.1:{port}", timeout=2.0)
    with pytest.raises(ResourceError):
        check_ray_address(f"ray://127.0.0.1:{port}", timeout=2.0)
    assert time.monotonic() - start < 6
    check_ray_address("auto")  # left to Ray: nothing to try


def test_local_pool_sizes():
    check_pool_sizes(2, 1.0, 0, local_cpus=2, cpus_given=False)
    with pytest.raises(UsageError, match="share the CPUs explicitly with --cpus-per-worker 0.67"):
        check_pool_sizes(3, 1.0, 0, local_cpus=2, cpus_given=False)
    check_pool_sizes(3, 0.5, 0, local_cpus=2, cpus_given=True)  # asked for explicitly: shared
    with pytest.raises(UsageError, match="at most 4 workers per CPU"):
        check_pool_sizes(9, 0.1, 0, local_cpus=2, cpus_given=True)
    check_pool_sizes(500, 1.0, 0)  # a cluster: its own business, up to the bound
    with pytest.raises(UsageError, match="at most 1024"):
        check_pool_sizes(1025, 1.0, 0)


@pytest.mark.parametrize(
    ("terminal", "flags", "shown"), [(True, [], True), (True, ["--no-progress"], False), (False, [], False)]
)
def test_sanity_progress_lines_only_on_a_terminal(mini, dataset, monkeypatch, terminal, flags, shown):
    """sanity's per-stage lines are progress like the others' bars: on a terminal, never in a log or with
    --no-progress (they were printed whenever --no-progress was absent)."""
    stream = Terminal() if terminal else io.StringIO()
    with monkeypatch.context() as m:
        m.setattr(sys, "stderr", stream)
        main(["sanity", "--images", str(dataset), "--methods", "fakecam", "--limit", "2", *flags])
    assert ("opticam sanity: " in stream.getvalue()) == shown, stream.getvalue()
