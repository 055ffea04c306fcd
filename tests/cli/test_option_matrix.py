"""The bad-value matrix of every declared option, generated from the declarations themselves.

For every registered method and metric, every option, every bad value its declaration names
(:meth:`opticam.options.Option.bad_values`: the wrong type, out of range, a malformed list, an empty value),
an unknown option name and unbalanced parentheses: each command that takes specs (``compare``, ``evaluate``,
``sanity`` take ``--methods``; ``evaluate`` takes ``--metrics``; ``serve`` checks the methods it offers) must
answer exit status 2 and one line, with no traceback and no model work started. A new method or option
joins the matrix by being declared: there is no list here to keep up to date.

The web API's part is in tests/web/test_web.py (``test_every_declared_bad_option_is_a_400``). Explain and
bench take no specs: their flags are in tests/cli/test_bad_values_matrix.py.
"""

from __future__ import annotations

import pytest

from opticam.cli import main
from opticam.methods.registry import METHODS
from opticam.metrics.registry import METRICS
from opticam.options import format_value
from tests.cli.test_bad_values_matrix import BASE, busy_port, files, fill, no_work, places, report_db  # noqa: F401


def bad_specs(entries: dict, options_of) -> list[str]:
    specs = []
    for name, entry in entries.items():
        options = options_of(entry)
        specs.append(f"{name}(nope=1)")
        specs.append(f"{name}(")
        for option in options:
            specs += [f"{name}({option.name}={value})" for value in option.bad_values()]
            specs.append(f"{name}({option.name}={format_value(option.default)},{option.name}=x)")  # given twice
    return specs


METHOD_SPECS = bad_specs(METHODS, lambda entry: entry.all_options())
METRIC_SPECS = bad_specs(METRICS, lambda metric: metric.options)


def test_the_matrix_covers_every_option_of_every_method_and_metric():
    """Not a formality: each option must name bad values, and layer options must include a layer without
    feature maps (the case that gave a pytorch-grad-cam traceback)."""
    for entries, options_of in ((METHODS, lambda e: e.all_options()), (METRICS, lambda m: m.options)):
        for name, entry in entries.items():
            for option in options_of(entry):
                assert len(option.bad_values()) >= 2, (name, option.name)
    assert "gradcam(layer=classifier)" in METHOD_SPECS and "eigencam(layer=classifier)" in METHOD_SPECS
    assert "kpcacam(kernel=nope)" in METHOD_SPECS and "finercam(alpha=nan)" in METHOD_SPECS
    assert "insdel(step=-1)" in METRIC_SPECS and "road(percentiles=1;;2)" in METRIC_SPECS


def with_methods(command: str, spec: str, paths: dict) -> list[str]:
    positionals, options = BASE[command]
    return [command, *fill(positionals, paths), *fill(options, paths), "--methods", spec]


def one_line(capsys, argv: list[str]) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"opticam {' '.join(argv)}: exit {code}\n{err}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("opticam: error: "), err


@pytest.mark.parametrize("command", ["compare", "evaluate", "sanity"])
@pytest.mark.parametrize("spec", METHOD_SPECS)
def test_a_bad_method_option_is_one_line_and_exit_2(capsys, mini, no_work, places, command, spec):  # noqa: F811
    one_line(capsys, with_methods(command, spec, places))


@pytest.mark.parametrize("spec", METRIC_SPECS)
def test_a_bad_metric_option_is_one_line_and_exit_2(capsys, mini, no_work, places, spec):  # noqa: F811
    positionals, options = BASE["evaluate"]
    one_line(capsys, ["evaluate", *fill(positionals, places), *fill(options, places), "--metrics", f"drop-gain,{spec}"])


@pytest.mark.parametrize("spec", [s for s in METHOD_SPECS if "layer=" not in s])
def test_serve_refuses_a_bad_spec_in_the_methods_it_offers(capsys, mini, no_work, places, spec):  # noqa: F811
    positionals, options = BASE["serve"]
    one_line(capsys, ["serve", *fill(positionals, places), *fill(options, places), "--methods", spec])


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("kpcacam(kernel=bad)", "option kernel=bad: expected one of linear, poly, rbf, sigmoid, cosine"),
        ("finercam(base_method=bad)", "option base_method=bad: expected one of gradcam"),
        ("finercam(alpha=nan)", "option alpha=nan: expected a finite number"),
        ("gradcam(layer=classifier)", "gradcam(layer=...) classifier: outputs [1, 1000], not feature maps"),
        ("eigencam(layer=global_pool)", "eigencam(layer=...) global_pool: outputs"),
        ("finercam(comparison_categories=0;1)", "comparison_categories=0;1: expected whole numbers >= 1"),
    ],
)
def test_the_cases_a_new_user_hit_say_what_is_wrong(capsys, mini, no_work, places, spec, words):  # noqa: F811
    main(with_methods("compare", spec, places))
    assert words in capsys.readouterr().err


def test_a_list_option_runs(capsys, mini, places):  # noqa: F811
    """``finercam(comparison_categories=1;2)``: the list is whole numbers, as declared (it was refused)."""
    argv = with_methods("compare", "finercam(comparison_categories=1;2)", places)
    assert main(argv) == 0, capsys.readouterr().err


def _declared_flags() -> list[tuple[str, str]]:
    """(--flag, bad value) for every declared option that a flag fills: Opti-CAM's, the methods' and the
    metrics' aliases (``--cam-batch-size``, ``--extremal-iterations``, ``--insdel-step``, ``--insdel-batch``)."""
    from opticam.methods.opticam_config import flag_options

    options = [*flag_options()]
    options += [o for entry in METHODS.values() for o in entry.options if o.flag]
    options += [o for metric in METRICS.values() for o in metric.options if o.flag]
    pairs = {(f"--{o.flag.replace('_', '-')}", v) for o in options for v in o.bad_values() if v != ""}
    return sorted(pairs)


def _commands_taking(flag: str) -> list[str]:
    """The commands whose parser has ``flag`` (read from the parser, so a new command joins by itself)."""
    import argparse

    from opticam.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [name for name, p in sub.choices.items() if name in BASE and flag in p._option_string_actions]


FLAG_CASES = [(command, flag, value) for flag, value in _declared_flags() for command in _commands_taking(flag)]


def test_the_flag_matrix_reaches_explain_and_bench():
    commands = {command for command, _, _ in FLAG_CASES}
    assert {"explain", "compare", "evaluate", "sanity", "bench"} <= commands, commands


@pytest.mark.parametrize(("command", "flag", "value"), FLAG_CASES)
def test_a_bad_value_for_a_declared_flag_is_one_line_and_exit_2(capsys, mini, no_work, places, command, flag, value):  # noqa: F811
    """A flag that fills a declared option is checked by that declaration, on every command that has it."""
    positionals, options = BASE[command]
    one_line(capsys, [command, *fill(positionals, places), *fill(options, places), f"{flag}={value}"])
