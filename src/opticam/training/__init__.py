"""Training: the explainer heads of amortized Opti-CAM (``opticam train-explainer``).

* :mod:`.data`: the training images (a folder, a labelled set, a MedMNIST split) and their augmentation.
* :mod:`.explainer`: :func:`train_explainer`, seeded, checkpointed after every epoch and resumable;
  :func:`head_objective`, the Opti-CAM objective the head is trained on.

The head itself and its file live with the method that uses it (:mod:`opticam.methods.explainer_head`).
"""

from .data import TrainingImages, augment, training_images
from .explainer import DistillTargets, TrainingOutcome, TrainSettings, head_objective, train_explainer

__all__ = [
    "DistillTargets",
    "TrainSettings",
    "TrainingImages",
    "TrainingOutcome",
    "augment",
    "head_objective",
    "train_explainer",
    "training_images",
]
