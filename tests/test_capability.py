"""Capability before comparison: every model solves its control cell within a fixed budget.

The control is the main job's (``experiments/sweeps/quick_comparison.py``): delayed recall
with D = 4, an episode inside one 8-token segment, so every model — the stateless
Transformer too — can answer from the segment alone. A model that misses it within the budget
is not trained to capability (wrong init, learning rate or a bug), and every comparison it is
in says nothing. The LSTM with AWD's embedding init (uniform ±0.1) fails this (measured:
valid accuracy 0.133 after 600 steps); the synthetic setup (N(0, 1) embeddings) solves it by
step 200.
"""

from pathlib import Path

import pytest

from recurrentlab.config import load_config_file
from recurrentlab.sweep.presets import MODELS
from recurrentlab.train.trainer import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 600  # optimiser steps; each model solves its control in 100-300 here


def control_config(model: str, **model_fields):
    config = load_config_file(ROOT / "experiments/sweeps/quick_comparison.py", model)
    config.data.distance = 4  # the control cell: D in 0..4 in training, 4 at evaluation
    config.data.eval_overrides.min_distance = 4
    config.protocol.control = True
    config.data.eval_windows = 4  # 128 answers per evaluation: enough for 0.99 to mean it
    config.train.num_steps = BUDGET
    config.train.checkpoint_every = BUDGET
    config.eval.final_splits = ("valid",)
    config.model.update(model_fields)
    return config


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_each_model_solves_its_control_cell(model, tmp_path):
    summary = train_and_evaluate(control_config(model), tmp_path / model)
    accuracy = summary["final"]["valid"]["accuracy"]
    assert summary.get("stopped_early"), f"{model}: control not solved in {BUDGET} steps " \
                                         f"(valid accuracy {accuracy:.3f})"
    assert accuracy >= 0.99
