"""Data: memory-mapped byte corpora and synthetic tasks, served as windows of ordered streams.

``data_config(name, **fields)`` gives ``config.data``; ``build_dataset(config.data, seed=...)``
gives a :class:`Dataset` whose windows are pure functions of (seed, step). See ``base.py`` for
the batch dict, ``corpora.py`` for enwik8 / text8 / text / embedded and the stream layout,
``synthetic.py`` for the tasks, their token ids and the episodic and stream modes.
"""

from recurrentlab.data.base import (
    SPLITS,
    Dataset,
    bit_error_counts,
    bit_errors,
    episode_sums,
    episodes_exact_match,
)
from recurrentlab.data.factory import DATASETS, build_dataset, data_config
from recurrentlab.data.synthetic import TASKS

__all__ = [
    "DATASETS",
    "SPLITS",
    "TASKS",
    "Dataset",
    "bit_error_counts",
    "bit_errors",
    "build_dataset",
    "data_config",
    "episode_sums",
    "episodes_exact_match",
]
