"""The paper's evaluation as a resumable benchmark: datasets, the SQLite store, the runner, the tables.

See ``docs/evaluation.md`` for the protocol and the store's schema.
"""

from .dataset import DatasetError, Sample, read_dataset
from .runner import TARGETS, EvaluationSettings, evaluate, run_config
from .store import ResultRow, ResultStore, config_hash
from .summary import markdown_table, summarize, summary_json

__all__ = [
    "TARGETS",
    "DatasetError",
    "EvaluationSettings",
    "ResultRow",
    "ResultStore",
    "Sample",
    "config_hash",
    "evaluate",
    "markdown_table",
    "read_dataset",
    "run_config",
    "summarize",
    "summary_json",
]
