"""Property-based tests (Hypothesis): over shapes, dtypes and value ranges, the public calls give a valid
result or an ``OpticamError`` subclass, never another exception.

Valid means: the documented shapes, values in [0, 1], finite. The models are the hand-checkable tiny ones
(``tests/tinymodels.py``) with a couple of Opti-CAM steps, and ``max_examples`` stays modest, so the whole
file runs in seconds. ROAD is left out (pytorch-grad-cam's imputation is too slow to run this often).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from opticam import OptiCAM, OpticamError, overlay
from opticam.metrics import drop_gain_terms, energy_pointing_game, insertion_deletion, pointing_game
from tests.tinymodels import tiny_pixel_model

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODEL = tiny_pixel_model()  # 3 channels in, 3 classes out; never trained, never changed by the calls below

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


def assert_maps(maps: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert tuple(maps.shape) == shape
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0 and float(maps.max()) <= 1


@SETTINGS
@given(
    x=images(),
    iterations=st.integers(0, 2),
    objective=st.sampled_from(["mask", "diff", "io-mask", "log-prob"]),
    normalization=st.sampled_from(["range", "max", "sigmoid"]),
    targets=st.one_of(st.none(), st.integers(-1, 3), st.lists(st.integers(0, 2), max_size=3)),
)
def test_opticam_explain_gives_valid_maps_or_an_opticam_error(x, iterations, objective, normalization, targets):
    cam = OptiCAM(MODEL, "features", iterations=iterations, objective=objective, normalization=normalization)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InputWarning for a 1 x 1 grid: a valid, constant map
        try:
            result = cam.explain(x, targets)
        except OpticamError as exc:
            event(f"refused: {type(exc).__name__}")
            return
    event("explained")
    assert_maps(result.maps, (x.shape[0], 1, *x.shape[-2:]))
    assert result.class_indices.shape == (x.shape[0],)
    assert bool(((result.class_indices >= 0) & (result.class_indices < 3)).all())


@st.composite
def probability_pairs(draw) -> tuple[list[float], list[float]]:
    """``(p, o)``: half the time two lists of probabilities of one length, else anything (lengths, NaN, < 0, > 1)."""
    if draw(st.booleans()):
        n = draw(st.integers(0, 6))
        unit = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0]))
        return draw(st.lists(unit, min_size=n, max_size=n)), draw(st.lists(unit, min_size=n, max_size=n))
    wild = st.lists(st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))), max_size=6)
    return draw(wild), draw(wild)


@SETTINGS
@given(pair=probability_pairs())
def test_drop_gain_terms_are_fractions_or_an_opticam_error(pair):
    p, o = pair
    try:
        terms = drop_gain_terms(torch.tensor(p), torch.tensor(o))
    except OpticamError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("scored")
    for t in (terms.drop, terms.gain, terms.increase):
        assert t.shape == (len(p),) and bool(torch.isfinite(t).all())
        assert bool(((t >= 0) & (t <= 1)).all())


@SETTINGS
@given(
    x=images(max_side=12, min_good_side=6),
    wrong_map=st.integers(0, 3),
    map_side=st.integers(0, 12),
    classes=st.lists(st.integers(-1, 3), max_size=4),
    step=st.one_of(st.integers(1, 60), st.just(0)),
)
def test_insertion_deletion_gives_aucs_in_0_1_or_an_opticam_error(x, wrong_map, map_side, classes, step):
    """``wrong_map < 3`` (most draws, and where Hypothesis shrinks to) gives maps and classes that fit."""
    if x.dim() == 4 and wrong_map < 3:
        maps = torch.rand(x.shape[0], 1, *x.shape[-2:])
        classes = [c % 3 for c in classes[: x.shape[0]]] + [0] * max(0, x.shape[0] - len(classes))
    else:
        maps = torch.rand(x.shape[0] if x.dim() == 4 else 1, 1, map_side, map_side)
    try:
        result = insertion_deletion(MODEL, x, maps, torch.tensor(classes, dtype=torch.long), step=step)
    except OpticamError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("scored")
    for auc in (result.insertion_auc, result.deletion_auc):
        assert auc.shape == (x.shape[0],) and bool(torch.isfinite(auc).all())
        assert bool(((auc >= 0) & (auc <= 1 + 1e-6)).all())


@st.composite
def box(draw) -> tuple[float, ...]:
    """A box ``(x0, y0, x1, y1)``: mostly a proper one, else any four numbers (inverted, NaN)."""
    if draw(st.integers(0, 7)):
        x0, y0 = draw(st.floats(-5, 15)), draw(st.floats(-5, 15))
        return (x0, y0, x0 + draw(st.floats(0.5, 10)), y0 + draw(st.floats(0.5, 10)))
    return tuple(draw(st.one_of(st.floats(-5, 20), st.just(float("nan")))) for _ in range(4))


@SETTINGS
@given(
    side=st.integers(1, 12),
    boxes=st.lists(st.lists(box(), min_size=1, max_size=2), min_size=1, max_size=3),
    wrong=st.sampled_from(["", "", "", "", "nan", "flat", "empty", "batch", "no-box"]),
)
def test_pointing_games_give_hits_and_shares_or_an_opticam_error(side, boxes, wrong):
    """``wrong == ""`` (most draws, and where Hypothesis shrinks to): one map per image's boxes."""
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
    try:
        hits = pointing_game(maps, boxes)
        shares = energy_pointing_game(maps, boxes)
    except OpticamError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("scored")
    assert hits.dtype == torch.bool and hits.shape == (len(boxes),)
    assert shares.shape == (len(boxes),) and bool(((shares >= 0) & (shares <= 1 + 1e-6)).all())


@SETTINGS
@given(
    image=images(max_side=8),
    map_shape=st.lists(st.integers(0, 8), min_size=1, max_size=4),
    alpha=st.one_of(st.floats(0, 1), st.floats(-0.5, 1.5)),
)
def test_overlay_gives_a_picture_of_the_image_size_or_an_opticam_error(image, map_shape, alpha):
    image = image[0] if image.dim() == 4 and image.shape[0] else image  # overlay draws one image
    saliency = torch.rand(map_shape)
    if image.dim() >= 2 and len(map_shape) != 2:
        saliency = torch.rand(1, *image.shape[-2:])  # mostly the right size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            picture = overlay(image, saliency, alpha=alpha)
    except OpticamError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("drawn")
    assert isinstance(picture, Image.Image) and picture.size == (image.shape[-1], image.shape[-2])


@pytest.mark.parametrize("side", [1, 2])
def test_a_tiny_image_still_gets_a_valid_map(side):
    """The smallest images the tiny model takes: a (constant) map, with the warning, not an exception."""
    cam = OptiCAM(MODEL, "features", iterations=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cam.explain(torch.rand(1, 3, side, side))
    assert_maps(result.maps, (1, 1, side, side))
