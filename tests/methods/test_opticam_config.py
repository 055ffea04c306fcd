"""OptiCAMConfig's validation: every bad value raises ConfigValueError naming the option, with the same words
as before (the command line maps the name to its flag, tests/cli/test_usage_errors.py)."""

from __future__ import annotations

import pickle

import pytest

from opticam import ConfigValueError, OptiCAMConfig, OpticamError


@pytest.mark.parametrize(
    ("bad", "field", "related", "message"),
    [
        ({"iterations": -5}, "iterations", (), "iterations must be a whole number >= 0, got -5"),
        ({"iterations": True}, "iterations", (), "iterations must be a whole number >= 0, got True"),
        ({"lr": 0.0}, "lr", (), "lr must be a positive number, got 0.0"),
        ({"tol": float("nan")}, "tol", (), "tol must be a number >= 0, got nan"),
        ({"objective": "nope"}, "objective", (), "unknown objective 'nope'; use one of"),
        ({"precision": "int8"}, "precision", (), "unknown precision 'int8'"),
        ({"coarse_size": -1}, "coarse_size", (), "coarse_size must be a whole number >= 0, got -1"),
        ({"coarse_iterations": 3}, "coarse_iterations", ("coarse_size",), "coarse_iterations needs coarse_size"),
        (
            {"iterations": 2, "coarse_size": 8, "coarse_iterations": 5},
            "coarse_iterations",
            ("iterations",),
            "coarse_iterations (5) cannot exceed iterations (2)",
        ),
        ({"init_mix": 0.0}, "init_mix", (), "init_mix must be in (0, 1], got 0.0"),
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
