"""Evaluation: from maps to stored numbers and reports.

* :mod:`.scoring`: :func:`explain_and_score`, a method and a batch in hand to maps with their AD / AG / AI.
* :mod:`.dataset`: labelled image sets (``labels.csv``, synset folders, MedMNIST ``.npz`` via :mod:`.npz`);
  :func:`load_sample`, the one way to a sample's image.
* :mod:`.runner`: the resumable benchmark over a dataset (AD/AG/AI, insertion/deletion per image).
* :mod:`.store`: the SQLite result store. :mod:`.summary`: the tables. :mod:`.report`: the HTML report.

See ``docs/evaluation.md`` for the protocol and the store's schema.
"""

from .dataset import DatasetError, Sample, find_boxes_file, load_sample, read_boxes, read_dataset
from .runner import TARGETS, EvaluationSettings, evaluate, run_config
from .scoring import MethodResult, explain_and_score, explain_with
from .store import ResultRow, ResultStore, StoreCorruptError, StoreError, config_hash
from .summary import markdown_table, summarize, summary_json

__all__ = [
    "TARGETS",
    "DatasetError",
    "EvaluationSettings",
    "MethodResult",
    "ResultRow",
    "ResultStore",
    "Sample",
    "StoreCorruptError",
    "StoreError",
    "config_hash",
    "evaluate",
    "explain_and_score",
    "explain_with",
    "find_boxes_file",
    "load_sample",
    "read_boxes",
    "markdown_table",
    "read_dataset",
    "run_config",
    "summarize",
    "summary_json",
]
