"""Metrics: numbers computed from a model, images and their saliency maps.

* :mod:`.drop_gain`: the paper's Average Drop / Average Gain / Average Increase (per-image terms and means).
* :mod:`.insdel`: insertion and deletion (RISE).
* :mod:`.localization`: pointing game and energy pointing game on ground-truth boxes.
* :mod:`.box_accuracy`: MaxBoxAccV2 (Choe et al., CVPR 2020) and top-1 localization.
* :mod:`.road`: ROAD, remove and debias (Rong et al., ICML 2022), per image, via pytorch-grad-cam.
"""

from .box_accuracy import IOU_LEVELS, THRESHOLDS, BoxAccuracy, box_accuracy, max_iou_per_threshold, top1_localization
from .drop_gain import DropGainTerms, average_drop_gain_increase, class_probabilities, drop_gain_terms
from .insdel import BLUR_KERNEL, BLUR_SIGMA, InsDelResult, blur, curve_counts, insertion_deletion, saliency_ranks
from .localization import box_mask, energy_pointing_game, pointing_game
from .road import road_combined

__all__ = [
    "IOU_LEVELS",
    "THRESHOLDS",
    "BoxAccuracy",
    "box_accuracy",
    "max_iou_per_threshold",
    "top1_localization",
    "BLUR_KERNEL",
    "BLUR_SIGMA",
    "DropGainTerms",
    "InsDelResult",
    "average_drop_gain_increase",
    "blur",
    "box_mask",
    "class_probabilities",
    "curve_counts",
    "drop_gain_terms",
    "energy_pointing_game",
    "insertion_deletion",
    "pointing_game",
    "road_combined",
    "saliency_ranks",
]
