"""AD / AG / AI by hand, p and o through the model, torchcam's ClassificationMetric on the real model,
and the pointing games by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchcam.metrics import ClassificationMetric

from opticam.methods import FakeCAM
from opticam.methods.gradcam import GradCAM
from opticam.metrics import average_drop_gain_increase, class_probabilities, drop_gain_terms
from opticam.metrics.localization import box_mask, energy_pointing_game, pointing_game
from tests.tinymodels import FixedMaps

pytestmark = pytest.mark.usefixtures("one_thread")


def test_terms_by_hand():
    p = torch.tensor([0.5, 0.8, 0.2, 0.4])
    o = torch.tensor([0.25, 0.9, 0.2, 0.1])
    t = drop_gain_terms(p, o)
    # drop: (0.5-0.25)/0.5, 0, 0, (0.4-0.1)/0.4; gain: 0, (0.9-0.8)/(1-0.8), 0, 0; increase only image 2.
    torch.testing.assert_close(t.drop, torch.tensor([0.5, 0.0, 0.0, 0.75]))
    torch.testing.assert_close(t.gain, torch.tensor([0.0, 0.5, 0.0, 0.0]))
    torch.testing.assert_close(t.increase, torch.tensor([0.0, 1.0, 0.0, 0.0]))
    avg = average_drop_gain_increase(p, o)
    assert avg["AD"] == pytest.approx(100 * 1.25 / 4)
    assert avg["AG"] == pytest.approx(100 * 0.5 / 4)
    assert avg["AI"] == pytest.approx(25.0)


def test_terms_at_the_edges():
    t = drop_gain_terms(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.3, 0.2, 1.0]))
    assert t.drop.tolist() == pytest.approx([0.0, 0.8, 0.0])
    # p = 0: nothing to drop, gain 0.3 / 1; p = 1: nothing above it to gain (the limit, not NaN).
    assert t.gain.tolist() == pytest.approx([0.3, 0.0, 0.0])
    assert torch.isfinite(t.drop).all() and torch.isfinite(t.gain).all()


def test_a_subnormal_probability_follows_the_formula():
    """float32 below its smallest normal (a softmax far from the class gives such values): p = 1e-40 falling
    to 0 drops by all of it, and to half of it by half (a clamped denominator gave 0.0085)."""
    p = torch.tensor([1e-40, 1e-40, 1 - 2**-24], dtype=torch.float32)
    t = drop_gain_terms(p, torch.tensor([0.0, 5e-41, 1.0]))
    assert t.drop.tolist()[:2] == pytest.approx([1.0, 0.5], rel=1e-3)
    assert t.gain.tolist()[2] == pytest.approx(1.0)


class Linear2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean(dim=(1, 2, 3)) * 4, torch.zeros(x.shape[0])], dim=1)


def test_class_probabilities_masks_in_pixel_space():
    x = torch.full((2, 3, 4, 4), 0.5)
    maps = torch.zeros(2, 1, 4, 4)
    maps[0] = 1.0
    maps[1, :, :2] = 1.0  # half the image kept
    p, o = class_probabilities(Linear2(), x, maps, torch.tensor([0, 1]))
    sig = torch.sigmoid
    torch.testing.assert_close(p, torch.stack([sig(torch.tensor(2.0)), 1 - sig(torch.tensor(2.0))]))
    torch.testing.assert_close(o, torch.stack([sig(torch.tensor(2.0)), 1 - sig(torch.tensor(1.0))]))


def test_ad_ai_equal_torchcam_on_the_real_model(lite0, sample_batch):
    """Our AD and AI equal torchcam's ClassificationMetric to 1e-4 (percent), same maps/model/images."""
    x, labels = sample_batch
    x, labels = x[:4], labels[:4]
    scores = {}
    for method in (GradCAM(lite0.model, lite0.target_layer), FakeCAM(lite0.model)):
        maps = method.explain(x, labels).maps
        p, o = class_probabilities(lite0.model, x, maps, labels)
        ours = average_drop_gain_increase(p, o)
        metric = ClassificationMetric(FixedMaps(lite0.model, maps), lambda t: torch.softmax(t, dim=-1))
        metric.update(x, labels.tolist())
        theirs = metric.summary()
        assert ours["AD"] == pytest.approx(100 * theirs["avg_drop"], abs=1e-4)
        assert ours["AI"] == pytest.approx(100 * theirs["conf_increase"], abs=1e-4)
        scores[method.name] = ours
    # The maps make a difference: Fake-CAM keeps all but one pixel and hardly drops; Grad-CAM drops more.
    assert scores["fakecam"]["AD"] < 1.0 < scores["gradcam"]["AD"]


def test_box_mask_and_tolerance():
    m = box_mask([(1, 2, 3, 4)], 5, 5)
    assert m.nonzero().tolist() == [[2, 1], [2, 2], [3, 1], [3, 2]]
    near = box_mask([(1, 2, 3, 4)], 5, 5, tolerance=1)
    assert near[1, 1] and near[4, 2] and near[2, 0] and near[2, 3]
    assert not near[1, 0] and not near[0, 1]  # diagonal distance sqrt(2) > 1, and 2 rows away
    with pytest.raises(ValueError, match="empty"):
        box_mask([(3, 2, 1, 4)], 5, 5)


def test_pointing_games_by_hand():
    maps = torch.zeros(2, 1, 10, 10)
    maps[0, 0, 5, 5] = 1.0  # peak inside the box
    maps[0, 0, 0, 0] = 0.5
    maps[1, 0, 9, 9] = 1.0  # peak outside, 4 pixels from the box corner diagonally
    maps[1, 0, 4, 4] = 0.5
    boxes = [[(4, 4, 7, 7)], [(4, 4, 7, 7), (0, 0, 1, 1)]]
    assert pointing_game(maps, boxes, tolerance=0).tolist() == [True, False]
    assert pointing_game(maps, boxes, tolerance=15).tolist() == [True, True]
    energy = energy_pointing_game(maps, boxes)
    assert energy.tolist() == pytest.approx([1.0 / 1.5, 0.5 / 1.5])
    assert energy_pointing_game(torch.zeros(1, 1, 4, 4), [[(0, 0, 2, 2)]]).tolist() == [0.0]
    with pytest.raises(ValueError, match="boxes for 1 images"):
        pointing_game(maps, boxes[:1])
