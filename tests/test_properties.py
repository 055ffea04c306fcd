"""Property-based tests (Hypothesis): over shapes, dtypes and value ranges, each public call refuses exactly
the inputs it documents as wrong, with the documented ``OpticamError`` subclass, and gives a valid result
for all the others, equal to what an independent computation says.

Each test computes from the drawn input alone the set of error types the input warrants (its defects, as
the docstrings list them). No defect: the call must succeed, and its result is checked (shapes, values in
[0, 1], finite, and a property computed here: the predicted class, the curve's end points, the boxes'
share by brute force, the blend's end points). Defects: the call must raise one of those error types (any
other exception fails too). The models are the hand-checkable tiny ones (``tests/tinymodels.py``) with a
couple of Opti-CAM steps, and ``max_examples`` stays modest, so the whole file runs in seconds. ROAD is left
out (pytorch-grad-cam's imputation is too slow to run this often).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from opticam import OptiCAM, OpticamError, overlay
from opticam.errors import InputError, InputTypeError, NumericalError, TargetError
from opticam.metrics import drop_gain_terms, energy_pointing_game, insertion_deletion, pointing_game
from tests.tinymodels import tiny_pixel_model

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODEL = tiny_pixel_model()  # 3 channels in, 3 classes out; never trained, never changed by the calls below
CLASSES = 3

DTYPES = [torch.float32, torch.float64, torch.float16, torch.uint8, torch.int64]


@st.composite
def wild_images(draw, *, max_side: int = 10) -> torch.Tensor:
    """Tensors of 2 to 5 dimensions (mostly 4), any dtype, values in a drawn range, sometimes NaN."""
    dims = draw(st.sampled_from([4, 4, 4, 3, 2, 5]))
    shape = [draw(st.integers(0, 3)), draw(st.sampled_from([3, 3, 1, 2, 4]))]
    shape += [draw(st.integers(0, max_side)) for _ in range(2)]
    shape = shape[-dims:] if dims <= 4 else [1, *shape]
    low = draw(st.sampled_from([0.0, 0.0, -1.0, -3.0]))
    high = draw(st.sampled_from([1.0, 1.0, 1.2, 255.0]))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16)))) * (high - low) + low
    if draw(st.booleans()) and x.numel() and draw(st.integers(0, 4)) == 0:
        x.view(-1)[0] = float("nan")
    return x.to(draw(st.sampled_from(DTYPES)))


@st.composite
def good_images(draw, *, min_side: int = 1, max_side: int = 10) -> torch.Tensor:
    """What the tiny model takes: ``[B, 3, H, W]`` float32 in [0, 1] (constant images included)."""
    batch, height, width = (
        draw(st.integers(1, 3)),
        draw(st.integers(min_side, max_side)),
        draw(st.integers(min_side, max_side)),
    )
    seed = draw(st.integers(0, 2**16))
    x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return torch.full_like(x, draw(st.sampled_from([0.0, 1.0]))) if draw(st.integers(0, 5)) == 0 else x


def images(max_side: int = 10, min_good_side: int = 1) -> st.SearchStrategy[torch.Tensor]:
    """Half good images, half anything: the valid path is exercised as often as the refusals."""
    return st.one_of(good_images(min_side=min_good_side, max_side=max_side), wild_images(max_side=max_side))


def image_defects(x: torch.Tensor) -> set[type[OpticamError]]:
    """What is wrong with ``x`` as images for the tiny pixel-space model (float32, 3 channels), as
    ``check_images`` and ``check_images_for_model`` document it: each defect and its error type."""
    defects: set[type[OpticamError]] = set()
    if x.dim() != 4 or x.numel() == 0:
        defects.add(InputError)  # not [B, C, H, W], or empty
    if x.dim() == 4 and x.shape[1] != 3:
        defects.add(InputError)  # the model's channels
    if not x.is_floating_point() or x.dtype != torch.float32:
        defects.add(InputTypeError)  # integer pixels, or not the model's dtype
    if x.is_floating_point() and x.numel():
        finite = x[torch.isfinite(x)].float()
        if finite.numel() < x.numel():
            defects.add(NumericalError)
        if finite.numel() and (float(finite.min()) < -0.5 or float(finite.max()) > 1.5):
            defects.add(InputError)  # 0-255 or normalized values for a pixel-space model
    return defects


def outcome(call: Callable[[], Any], defects: set[type[OpticamError]]) -> Any:
    """``call()``'s result when the input has no defect (it must not refuse it), else ``None`` after checking
    that it refused with the error type of one of the defects."""
    try:
        result = call()
    except OpticamError as exc:
        assert type(exc) in defects, f"refused a {'valid input' if not defects else 'bad input'} with {exc!r}"
        event(f"refused: {type(exc).__name__}")
        return None
    assert not defects, f"accepted an input with defects {sorted(d.__name__ for d in defects)}"
    event("accepted")
    return result


def assert_maps(maps: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert tuple(maps.shape) == shape and maps.dtype == torch.float32
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0 and float(maps.max()) <= 1


@SETTINGS
@given(
    x=images(),
    iterations=st.integers(0, 2),
    objective=st.sampled_from(["mask", "diff", "io-mask", "log-prob"]),
    normalization=st.sampled_from(["range", "max", "sigmoid"]),
    kind=st.sampled_from(["none", "one", "per-image", "per-image", "any"]),
    one=st.integers(-1, 3),
    many=st.lists(st.integers(0, 2), max_size=3),
)
def test_opticam_explains_valid_images_and_refuses_the_others_by_type(
    x, iterations, objective, normalization, kind, one, many
):
    """Valid images: maps ``[B, 1, H, W]`` in [0, 1], the logits of the model, the classes asked for (the
    predicted ones for ``None``). A bad target (out of range, a list of another length): ``TargetError``.

    ``kind`` picks the targets: none, one class for all, one per image (the list cut or padded to the
    batch), or the drawn list as it is (any length)."""
    defects = image_defects(x)
    batch = x.shape[0] if x.dim() == 4 else None
    targets = {"none": None, "one": one, "any": many}.get(kind)
    if kind == "per-image":
        targets = (many + [0] * 3)[: x.shape[0]]
    if isinstance(targets, int) and not 0 <= targets < CLASSES:
        defects.add(TargetError)
    if isinstance(targets, list) and len(targets) != batch:
        defects.add(TargetError)
    cam = OptiCAM(MODEL, "features", iterations=iterations, objective=objective, normalization=normalization)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InputWarning for a 1 x 1 grid: a valid, constant map
        result = outcome(lambda: cam.explain(x, targets), defects)
    if result is None:
        return
    assert_maps(result.maps, (batch, 1, *x.shape[-2:]))
    with torch.no_grad():
        logits = MODEL(x)
    assert torch.allclose(result.logits, logits, atol=1e-6)
    if targets is None:
        expected = logits.argmax(dim=1).tolist()
    else:
        expected = [targets] * batch if isinstance(targets, int) else targets
    assert result.class_indices.tolist() == expected


@st.composite
def probability_pairs(draw) -> tuple[list[float], list[float]]:
    """``(p, o)``: half the time two lists of probabilities of one length, else anything (lengths, NaN, < 0, > 1).
    Subnormal float32 values included (``p = 1e-40, o = 0`` must drop by 1, as the formula says)."""
    if draw(st.booleans()):
        n = draw(st.integers(0, 6))
        unit = st.one_of(st.floats(0, 1, width=32), st.sampled_from([0.0, 1.0, 1e-40]))
        return draw(st.lists(unit, min_size=n, max_size=n)), draw(st.lists(unit, min_size=n, max_size=n))
    wild = st.lists(st.one_of(st.floats(-0.5, 1.5, width=32), st.just(float("nan"))), max_size=6)
    return draw(wild), draw(wild)


@SETTINGS
@given(pair=probability_pairs())
def test_drop_gain_terms_follow_their_definition_and_refuse_what_is_not_a_probability(pair):
    """Same length and every value in [0, 1]: the terms are ``max(p - o, 0) / p`` (0 for p = 0),
    ``max(o - p, 0) / (1 - p)`` (0 for p = 1) and ``[p < o]``, each in [0, 1]; anything else: InputError."""
    p, o = pair
    bad = len(p) != len(o) or not all(0 <= v <= 1 for v in p + o)  # NaN compares False: bad
    terms = outcome(lambda: drop_gain_terms(torch.tensor(p), torch.tensor(o)), {InputError} if bad else set())
    if terms is None:
        return
    drop = [max(a - b, 0) / a if a > 0 else 0.0 for a, b in zip(p, o, strict=True)]
    gain = [max(b - a, 0) / (1 - a) if a < 1 else 0.0 for a, b in zip(p, o, strict=True)]
    increase = [float(a < b) for a, b in zip(p, o, strict=True)]
    for got, want in ((terms.drop, drop), (terms.gain, gain), (terms.increase, increase)):
        assert got.shape == (len(p),) and bool(torch.isfinite(got).all())
        assert bool(((got >= 0) & (got <= 1)).all())
        assert got.tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)


@SETTINGS
@given(
    x=images(max_side=12, min_good_side=6),
    wrong_map=st.integers(0, 3),
    map_side=st.integers(0, 12),
    classes=st.lists(st.integers(-1, 3), max_size=4),
    step=st.one_of(st.integers(1, 60), st.just(0)),
)
def test_insertion_deletion_curves_start_and_end_where_the_model_says(x, wrong_map, map_side, classes, step):
    """``wrong_map < 3`` (most draws, and where Hypothesis shrinks to) gives maps and classes that fit.

    Valid inputs: the curves have ``ceil(H W / step) + 1`` points from fraction 0 to 1; deletion starts at
    and insertion ends at the class probability on ``x``, deletion ends at the one on a black image; each
    AUC lies between its curve's minimum and maximum, in [0, 1]. Otherwise the documented error types."""
    if x.dim() == 4 and wrong_map < 3:
        maps = torch.rand(x.shape[0], 1, *x.shape[-2:])
        classes = [c % CLASSES for c in classes[: x.shape[0]]] + [0] * max(0, x.shape[0] - len(classes))
    else:
        maps = torch.rand(x.shape[0] if x.dim() == 4 else 1, 1, map_side, map_side)
    defects = image_defects(x)
    if x.dim() == 4:
        if maps.shape[0] != x.shape[0] or maps.shape[-2:] != x.shape[-2:]:
            defects.add(InputError)
        if min(x.shape[-2:]) < 6:
            defects.add(InputError)  # smaller than the 11 x 11 blur's reflect padding allows
        if len(classes) != x.shape[0] or any(not 0 <= c < CLASSES for c in classes):
            defects.add(TargetError)
    if step < 1:
        defects.add(InputError)
    target = torch.tensor(classes, dtype=torch.long)
    result = outcome(lambda: insertion_deletion(MODEL, x, maps, target, step=step), defects)
    if result is None:
        return
    pixels = x.shape[-2] * x.shape[-1]
    assert result.fractions.shape == (math.ceil(pixels / step) + 1,)
    assert float(result.fractions[0]) == 0 and float(result.fractions[-1]) == 1
    rows = torch.arange(x.shape[0])
    with torch.no_grad():
        on_x = torch.softmax(MODEL(x), 1)[rows, target]
        on_black = torch.softmax(MODEL(torch.zeros_like(x)), 1)[rows, target]
    assert torch.allclose(result.deletion[:, 0], on_x, atol=1e-5)
    assert torch.allclose(result.insertion[:, -1], on_x, atol=1e-5)
    assert torch.allclose(result.deletion[:, -1], on_black, atol=1e-5)
    for curve, auc in ((result.insertion, result.insertion_auc), (result.deletion, result.deletion_auc)):
        assert auc.shape == (x.shape[0],) and bool(torch.isfinite(auc).all())
        assert bool(((auc >= curve.min(1).values - 1e-6) & (auc <= curve.max(1).values + 1e-6)).all())
        assert bool(((auc >= 0) & (auc <= 1 + 1e-6)).all())


@st.composite
def box(draw) -> tuple[float, ...]:
    """A box ``(x0, y0, x1, y1)``: mostly a proper one on whole pixels (ints or floats), else any four numbers
    (inverted, empty, NaN)."""
    if draw(st.sampled_from([True] * 7 + [False])):
        x0, y0 = draw(st.integers(-5, 15)), draw(st.integers(-5, 15))
        corners = (x0, y0, x0 + draw(st.integers(1, 10)), y0 + draw(st.integers(1, 10)))
        return tuple(map(float, corners)) if draw(st.booleans()) else corners
    return tuple(draw(st.one_of(st.floats(-5, 20), st.just(float("nan")))) for _ in range(4))


def proper(b: tuple[float, ...]) -> bool:
    return all(math.isfinite(v) for v in b) and b[2] > b[0] and b[3] > b[1]


def brute_force_games(maps: torch.Tensor, boxes, tolerance: float) -> tuple[list[bool], list[float]]:
    """Pointing game and energy share pixel by pixel, boxes on whole pixels: the first maximum in raster order
    within ``tolerance`` of a box pixel; the mass on pixels ``x0 <= col < x1``, ``y0 <= row < y1``."""
    hits, shares = [], []
    for m, image_boxes in zip(maps[:, 0].tolist(), boxes, strict=True):
        height, width = len(m), len(m[0])
        values = [m[r][c] for r in range(height) for c in range(width)]
        row, col = divmod(values.index(max(values)), width)
        box_pixels = [
            (bx, by)
            for x0, y0, x1, y1 in image_boxes
            for bx in range(int(x0), int(x1))
            for by in range(int(y0), int(y1))
        ]
        hits.append(any((bx - col) ** 2 + (by - row) ** 2 <= tolerance**2 for bx, by in box_pixels))
        inside = sum(
            m[r][c]
            for r in range(height)
            for c in range(width)
            if any(x0 <= c < x1 and y0 <= r < y1 for x0, y0, x1, y1 in image_boxes)
        )
        shares.append(inside / sum(values))
    return hits, shares


@SETTINGS
@given(
    side=st.integers(1, 12),
    boxes=st.lists(st.lists(box(), min_size=1, max_size=2), min_size=1, max_size=3),
    wrong=st.sampled_from(["", "", "", "", "", "", "nan", "flat", "empty", "batch", "no-box"]),
    tolerance=st.sampled_from([0.0, 1.0, 2.5, 15.0]),
)
def test_pointing_games_agree_with_a_pixel_by_pixel_count(side, boxes, wrong, tolerance):
    """``wrong == ""`` (most draws, and where Hypothesis shrinks to): one map per image's boxes; then the hits
    and shares equal :func:`brute_force_games`. NaN, a flat or empty map, a batch of another size, an image
    without a box, an inverted or NaN box: InputError."""
    maps = torch.rand(len(boxes), 1, side, side)
    if wrong == "nan":
        maps.view(-1)[0] = float("nan")
    elif wrong == "flat":
        maps = maps.reshape(-1)
    elif wrong == "empty":
        maps = maps[:, :, :0]
    elif wrong == "batch":
        maps = maps[1:]
    elif wrong == "no-box":
        boxes = [[], *boxes[1:]]
    bad = wrong != "" or not all(proper(b) for image_boxes in boxes for b in image_boxes)
    defects = {InputError} if bad else set()
    games = outcome(
        lambda: (pointing_game(maps, boxes, tolerance=tolerance), energy_pointing_game(maps, boxes)), defects
    )
    if games is None:
        return
    hits, shares = games
    expected_hits, expected_shares = brute_force_games(maps, boxes, tolerance)
    assert hits.dtype == torch.bool and hits.tolist() == expected_hits
    assert shares.shape == (len(boxes),) and bool(((shares >= 0) & (shares <= 1 + 1e-6)).all())
    assert shares.tolist() == pytest.approx(expected_shares, rel=1e-4, abs=1e-6)


@SETTINGS
@given(
    image=images(max_side=8),
    map_shape=st.lists(st.integers(0, 8), min_size=1, max_size=4),
    alpha=st.one_of(st.floats(0, 1), st.floats(-0.5, 1.5)),
)
def test_overlay_blends_the_image_and_the_heat_map_or_refuses_by_type(image, map_shape, alpha):
    """One image ``[1|3, H, W]`` (or ``[1, C, H, W]``) and a map of its size, ``alpha`` in [0, 1]: an RGB
    picture of the image's size whose every pixel lies between the image's own (``alpha = 0``, computed
    here) and the heat map's (``alpha = 1``, the same whatever the image); else InputError."""
    image = image[0] if image.dim() == 4 and image.shape[0] else image  # overlay draws one image
    saliency = torch.rand(map_shape)
    if image.dim() >= 2 and len(map_shape) != 2:
        saliency = torch.rand(1, *image.shape[-2:])  # mostly the right size
    one = image[0] if image.dim() == 4 and image.shape[0] == 1 else image
    squeezed = saliency
    while squeezed.dim() > 2 and squeezed.shape[0] == 1:
        squeezed = squeezed[0]
    bad = one.dim() != 3 or one.shape[0] not in (1, 3) or tuple(squeezed.shape) != tuple(one.shape[-2:])
    bad = bad or not 0 <= alpha <= 1

    def draw(img: torch.Tensor, a: float) -> Image.Image:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return overlay(img, saliency, alpha=a)

    picture = outcome(lambda: draw(image, alpha), {InputError} if bad else set())
    if picture is None:
        return
    height, width = one.shape[-2:]
    assert isinstance(picture, Image.Image) and picture.mode == "RGB" and picture.size == (width, height)
    base = torch.nan_to_num(one.float(), nan=0.0).clamp(0, 1).double().expand(3, -1, -1)
    expected_base = np.round(base.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    plain, heat = np.asarray(draw(image, 0.0)), np.asarray(draw(image, 1.0))
    assert np.array_equal(plain, expected_base)
    assert np.array_equal(heat, np.asarray(draw(1 - torch.nan_to_num(one.float()), 1.0)))  # image-free
    pixels = np.asarray(picture).astype(int)
    low, high = np.minimum(plain, heat).astype(int), np.maximum(plain, heat).astype(int)
    assert bool(((pixels >= low - 1) & (pixels <= high + 1)).all())


@pytest.mark.parametrize("side", [1, 2])
def test_a_tiny_image_still_gets_a_valid_map(side):
    """The smallest images the tiny model takes: a (constant) map, with the warning, not an exception."""
    cam = OptiCAM(MODEL, "features", iterations=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cam.explain(torch.rand(1, 3, side, side))
    assert_maps(result.maps, (1, 1, side, side))
