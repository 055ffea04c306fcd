"""OptiCAMConfig's validation: every bad value raises ConfigValueError naming the option and what it accepts,
in the words of its declaration (opticam.options; the command line maps the name to its flag,
tests/cli/test_usage_errors.py)."""

from __future__ import annotations

import pickle

import pytest

from opticam import ConfigValueError, OptiCAMConfig, OpticamError


@pytest.mark.parametrize(
    ("bad", "field", "related", "message"),
    [
        ({"iterations": -5}, "iterations", (), "option iterations=-5: expected a whole number >= 0"),
        ({"iterations": True}, "iterations", (), "option iterations=true: expected a whole number >= 0"),
        ({"lr": 0.0}, "lr", (), "option lr=0.0: expected a finite number > 0"),
        ({"tol": float("nan")}, "tol", (), "option tol=nan: expected a finite number >= 0"),
        (
            {"objective": "nope"},
            "objective",
            (),
            "option objective=nope: expected one of mask, diff, io-mask, log-prob",
        ),
        ({"precision": "int8"}, "precision", (), "option precision=int8: expected one of float32"),
        ({"coarse_size": -1}, "coarse_size", (), "option coarse_size=-1: expected a whole number >= 0"),
        ({"coarse_iterations": 3}, "coarse_iterations", ("coarse_size",), "coarse_iterations needs coarse_size"),
        (
            {"iterations": 2, "coarse_size": 8, "coarse_iterations": 5},
            "coarse_iterations",
            ("iterations",),
            "coarse_iterations (5) cannot exceed iterations (2)",
        ),
        ({"init_mix": 0.0}, "init_mix", (), "option init_mix=0.0: expected a finite number in (0, 1]"),
    ],
)
def test_a_bad_value_names_its_field(bad, field, related, message):
    for make in (lambda: OptiCAMConfig(**bad), lambda: OptiCAMConfig().replace(**bad)):
        with pytest.raises(ConfigValueError) as caught:
            make()
        exc = caught.value
        assert isinstance(exc, ValueError) and isinstance(exc, OpticamError)  # `except ValueError` still works
        assert exc.field == field and exc.related == related and exc.fields == (field, *related)
        assert str(exc).startswith(message)


def test_the_error_survives_pickling():
    """A Ray worker's exception reaches the driver pickled: the field names come along."""
    with pytest.raises(ConfigValueError) as caught:
        OptiCAMConfig(coarse_iterations=3)
    again = pickle.loads(pickle.dumps(caught.value))
    assert (type(again), str(again), again.field, again.related) == (
        ConfigValueError,
        str(caught.value),
        "coarse_iterations",
        ("coarse_size",),
    )


def test_an_unknown_option_is_still_a_type_error():
    with pytest.raises(TypeError, match="unknown Opti-CAM option"):
        OptiCAMConfig().replace(iteration=3)
