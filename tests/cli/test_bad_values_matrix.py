"""Every command, every flag that takes a value, every kind of bad value: one line on stderr, a non-zero exit,
no traceback, and nothing computed.

The table below is checked against the parsers themselves (:func:`test_the_matrix_covers_every_flag`): a flag
added to any command without a line here fails that test, so a new flag cannot arrive without its bad
values being tried. Flags that take no value (``--save-maps``, ``--ray``, ...) have nothing to get wrong.

Each case runs ``opticam.cli.main`` in this process on a valid command line (``BASE``, itself checked to work
by :func:`test_every_base_command_line_works`) with one bad value appended (the last value of a flag wins).
The default model is replaced by a mini classifier with EfficientNet's layer names and 1000 classes, and
every kind of model work (a method's ``explain``, the benchmark, the web server) fails the test at once if
it starts: a bad value must be refused before any of it.
"""

from __future__ import annotations

import argparse
import os
import socket

import pytest
from PIL import Image

import opticam.cli.bench as bench_cli
import opticam.cli.model_args as common
import opticam.models.loading as loading
from opticam.cli import build_parser, main
from opticam.methods.base import SaliencyMethod
from opticam.models.specs import DEFAULT_MODEL
from tests.tinymodels import mini_model

COMMANDS = [
    "explain",
    "demo",
    "compare",
    "evaluate",
    "sanity",
    "report",
    "serve",
    "bench",
    "train-explainer",
    "methods",
    "metrics",
]

# -- the bad values, by kind ---------------------------------------------------------------------------
# Placeholders in braces are filled in per test (see `places`): {missing} a path that does not exist, {text}
# a text file, {dir} an existing folder, {empty} a folder without images, {proc} a folder nothing can be
# written in, {busy} a port something listens on, {free} one nothing does, {crowd} more workers than CPUs.
COUNT = ["0", "-1", "abc", "1.5"]  # at least 1
NONNEG = ["-1", "abc"]
POSITIVE_FLOAT = ["0", "-1", "nan", "abc"]
IMAGES_IN = ["{missing}", "{text}", "{empty}"]
DATASET = ["{missing}", "{text}", "{empty}"]
MODEL = {
    "--model": ["nope_net", "torchvision:nope"],
    "--checkpoint": ["{missing}", "{text}", "{dir}"],
    "--device": ["tpu", "cuda:99", ""],
}
LAYER = {"--layer": ["nope", "classifier", "global_pool"]}
OPTICAM = {
    "--batch-size": ["0", "-3", "abc"],
    "--iterations": ["-5", "abc", "1e9"],
    "--lr": ["0", "-1", "nan", "inf", "abc"],
    "--objective": ["nope"],
    "--normalization": ["nope"],
    "--coarse-size": NONNEG,
    "--coarse-iterations": ["-1", "abc", "3"],  # 3 without --coarse-size
    "--preset": ["nope"],
}
RAY = {
    "--ray-address": ["127.0.0.1:1", "127.0.0.1:abc", "127.0.0.1:99999"],
    "--workers": ["0", "-1", "abc", "100000", "{crowd}"],
    "--cpus-per-worker": POSITIVE_FLOAT,
    "--gpus-per-worker": ["-1", "nan", "abc"],
}
METHODS = {"--methods": ["nope", "opticam(nope=1)", "", "opticam(iterations=-1)"]}

MATRIX: dict[str, dict[str, list[str]]] = {
    "explain": {
        "images": IMAGES_IN,
        "--class": ["-1", "1000", "abc"],
        "--out": ["{text}", "{proc}/out"],
        "--topk": ["0", "1001", "abc"],
        "--method": [
            "nope",
            "",
            "opticam(nope=1)",
            "opticam-amortized(refine=-1)",
            "opticam-amortized(head={missing})",
        ],
        **MODEL,
        **LAYER,
        **OPTICAM,
        **RAY,
    },
    "demo": {"--out": ["{text}", "{proc}/demo"], "--iterations": ["-5", "abc", "1e9"]},
    "compare": {
        "images": IMAGES_IN,
        **METHODS,
        "--out": ["{dir}", "{proc}/c.png", "{tmp}/c.txt"],
        "--class": ["-1", "1000", "abc"],
        "--iterations": ["-5", "abc"],
        "--preset": ["nope"],
        "--curves": ["{dir}", "{proc}/curves.png", "{tmp}/curves.txt"],
        "--insdel-step": ["0", "abc"],
        "--dpi": COUNT,
        **MODEL,
    },
    "evaluate": {
        "--split": ["nope", "test"],  # not a split; a split of a data set that is not an .npz
        "--images": DATASET,
        **METHODS,
        "--limit": COUNT,
        "--boxes": ["{missing}", "{text}"],
        "--target": ["nope"],
        "--db": ["{text}", "{dir}", "{proc}/e.sqlite"],
        "--json": ["{dir}", "{proc}/e.json"],
        "--metrics": ["nope", "drop-gain,nope", "", "localization", "insdel(step=0)", "insdel(step", "road(nope=1)"],
        "--insdel-step": NONNEG,
        "--insdel-batch": COUNT,
        "--cam-batch-size": COUNT,
        "--extremal-iterations": COUNT,
        **RAY,
        **MODEL,
        **LAYER,
        **OPTICAM,
    },
    "sanity": {
        "--split": ["nope", "test"],
        "--images": DATASET,
        **METHODS,
        "--limit": COUNT,
        "--seed": ["abc", "1.5"],
        "--json": ["{dir}", "{proc}/s.json"],
        "--out": ["{text}", "{proc}/s"],
        **MODEL,
        **LAYER,
        **OPTICAM,
    },
    "report": {
        "db": ["{missing}", "{text}", "{dir}"],
        "--out": ["{dir}", "{proc}/r.html", "{tmp}/r.txt"],
        "--run": ["zzzz"],
        "--grid-images": ["-1", "abc"],
        "--show-images": ["nope.png"],
        "--methods": ["nope"],
        "--images-root": ["{missing}", "{text}"],
    },
    "serve": {
        "--checkpoint": ["{missing}", "{text}"],
        "--host": ["no.such.host.invalid"],
        "--port": ["0", "-1", "99999", "abc", "{busy}"],
        "--allowed-host": ["", "http://evil.example", "evil.example:8000", "two words"],
        "--models": ["nope_net"],
        "--methods": ["nope"],
        "--images": ["{missing}", "{text}", "{empty}"],
        "--max-mb": POSITIVE_FLOAT,
        "--max-megapixels": POSITIVE_FLOAT,
        "--max-iterations": COUNT,
        "--iterations": ["0", "abc", "100000"],
        "--queue": COUNT,
        "--device": ["tpu"],
    },
    "bench": {
        **MODEL,
        "--layer": LAYER["--layer"],
        "--batches": ["0", "abc"],
        "--iterations": COUNT,
        "--repeats": COUNT,
        "--variants": ["nope"],
        "--images": ["{missing}", "{text}", "{empty}"],
        "--threads": COUNT,
        "--json": ["{dir}", "{proc}/b.json"],
    },
    "train-explainer": {
        "--images": ["{missing}", "{text}", "{empty}"],
        "--split": ["nope", "train"],  # a split of a folder, which has none
        "--rows": ["abc", "5:2", "-1:3", "1", "9999:10000"],
        "--out": ["{dir}", "{proc}/h.pt", "{tmp}/h.txt"],
        "--epochs": ["-1", "abc"],
        "--distill": ["{missing}", "{text}"],
        "--distill-epochs": ["-1", "abc", "2"],  # 2 without --distill
        "--batch-size": COUNT,
        "--head-lr": POSITIVE_FLOAT,
        "--seed": ["abc", "1.5"],
        "--train-objective": ["nope"],
        "--target": ["nope", "labels"],  # the labels of a folder without labels.csv
        "--hidden": COUNT,
        **MODEL,
        **LAYER,
    },
    "methods": {"names": ["nope"]},
    "metrics": {"names": ["nope"]},
}

# A valid command line per command: (positionals, options). The dataset holds one readable image.
BASE: dict[str, tuple[list[str], list[str]]] = {
    "explain": (["{image}"], ["--out", "{tmp}/out", "--iterations", "1"]),
    "demo": ([], ["--out", "{tmp}/demo", "--iterations", "1"]),
    "compare": (["{image}"], ["--out", "{tmp}/c.png", "--iterations", "1", "--methods", "opticam,fakecam"]),
    "evaluate": (
        [],
        [
            "--images",
            "{dataset}",
            "--db",
            "{tmp}/e.sqlite",
            "--methods",
            "fakecam,opticam",
            "--metrics",
            "drop-gain",
            "--iterations",
            "1",
        ],
    ),  # fmt: skip
    "sanity": ([], ["--images", "{dataset}", "--methods", "fakecam", "--limit", "1"]),
    "report": (["{db}"], ["--out", "{tmp}/r.html", "--grid-images", "0"]),
    "serve": ([], ["--port", "{free}"]),
    "bench": ([], ["--random-images", "--batches", "1", "--iterations", "1", "--repeats", "1"]),
    "train-explainer": ([], ["--images", "{images}", "--out", "{tmp}/h.pt", "--epochs", "1", "--no-progress"]),
    "methods": (["opticam"], []),
    "metrics": (["insdel"], []),
}


# -- the mini model and the guards -------------------------------------------------------------------------
class WorkStarted(AssertionError):
    """Model work began although a value was bad."""


@pytest.fixture
def no_work(monkeypatch):
    """Any model work fails the test at once (outside main's error handling: an AssertionError)."""

    def refuse(*_args, **_kwargs):
        raise WorkStarted("model work started: the bad value was not refused first")

    monkeypatch.setattr(SaliencyMethod, "explain", refuse)
    monkeypatch.setattr(bench_cli, "benchmark", refuse)
    monkeypatch.setattr("uvicorn.run", refuse)


# -- the places the placeholders stand for ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    image = root / "cat.png"
    Image.new("RGB", (20, 16), (150, 90, 40)).save(image)
    text = root / "notes.txt"
    text.write_text("not an image, not a checkpoint, not SQLite\n")
    empty = root / "empty"
    empty.mkdir()
    dataset = root / "data"
    dataset.mkdir()
    Image.new("RGB", (20, 16), (40, 90, 150)).save(dataset / "a.png")
    (dataset / "labels.csv").write_text("file,class_index\na.png,3\n")
    plain = root / "plain"  # images without labels (train-explainer's target is then the predicted class)
    plain.mkdir()
    Image.new("RGB", (20, 16), (90, 150, 40)).save(plain / "b.png")
    return {"image": image, "text": text, "empty": empty, "dataset": dataset, "images": plain, "dir": root}


@pytest.fixture(scope="module")
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def report_db(files, tmp_path_factory):
    """A result file with one run (evaluate's base command line, on the mini model)."""
    folder = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        real = loading.load_model
        mp.setattr(common, "load_model", lambda name, **kw: mini_model() if name == DEFAULT_MODEL else real(name, **kw))
        db = folder / "run.sqlite"
        argv = ["evaluate", "--images", str(files["dataset"]), "--db", str(db), "--methods", "fakecam"]
        assert main([*argv, "--metrics", "drop-gain"]) == 0
    return db


@pytest.fixture
def places(files, busy_port, report_db, tmp_path):
    return {
        **{k: str(v) for k, v in files.items()},
        "missing": str(tmp_path / "missing" / "nothing.png"),
        "proc": "/proc/opticam-test",
        "busy": str(busy_port),
        "free": str(free_port()),
        "crowd": str((os.cpu_count() or 1) + 1),
        "db": str(report_db),
        "tmp": str(tmp_path),
    }


def fill(items: list[str], places: dict[str, str]) -> list[str]:
    return [item.format(**places) for item in items]


def command_line(command: str, flag: str, value: str, places: dict[str, str]) -> list[str]:
    """The base command line with ``value`` for ``flag`` (a positional replaces the base's, an option is
    appended so that it wins over the base's)."""
    positionals, options = BASE[command]
    if flag.startswith("-"):
        return [command, *fill(positionals, places), *fill(options, places), flag, value.format(**places)]
    return [command, value.format(**places), *fill(options, places)]


# -- the parsers' own list of flags ----------------------------------------------------------------------
def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def value_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every argument that takes a value: options by their first spelling, positionals by their dest."""
    no_value = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction, argparse._VersionAction)
    return [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions if not isinstance(a, no_value)]


def test_the_matrix_covers_every_flag():
    """A new flag needs its bad values here (docs/architecture.md, "Where to add ... a command or a flag")."""
    parsers = subparsers()
    assert set(COMMANDS) == set(parsers), "a new command needs a BASE command line and a MATRIX entry"
    for command in COMMANDS:
        flags = set(value_flags(parsers[command]))
        missing = sorted(flags - set(MATRIX[command]))
        stale = sorted(set(MATRIX[command]) - flags)
        assert not missing, f"opticam {command}: add bad values for {missing} to MATRIX in {__file__}"
        assert not stale, f"opticam {command}: MATRIX lists flags the command does not have: {stale}"
        assert all(MATRIX[command].values()), f"opticam {command}: every flag needs at least one bad value"


CASES = [(c, flag, value) for c in COMMANDS for flag, values in MATRIX[c].items() for value in values]


@pytest.mark.parametrize(("command", "flag", "value"), CASES, ids=[f"{c} {f} {v!r}" for c, f, v in CASES])
def test_a_bad_value_is_one_line_and_a_non_zero_exit(capsys, mini, no_work, places, command, flag, value):
    argv = command_line(command, flag, value, places)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"opticam {' '.join(argv)} was accepted"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("opticam: error: "), err


def test_every_base_command_line_works(capsys, mini, places, monkeypatch):
    """Each bad value above is the only thing wrong with its command line: the base itself succeeds."""
    served = []
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: served.append(kwargs["port"]))
    for command in COMMANDS:
        positionals, options = BASE[command]
        argv = [command, *fill(positionals, places), *fill(options, places)]
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    assert len(served) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv", [[], ["nope"], ["--bogus"], ["explain"], ["explain", "--help-me"]])
def test_argparse_complaints_are_one_line_too(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("opticam: error: ") and "usage:" not in err


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"opticam {version('opticam')}"
