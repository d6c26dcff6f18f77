"""An LSTM on one synthetic task: ``get_config(task)`` for copy | repeat_copy |
associative_recall | reverse | associative_retrieval | delayed_recall.

    recurrentlab train --config experiments/synthetic/lstm.py:delayed_recall \\
        --workdir runs/synthetic_lstm_delayed_recall

The LSTM baseline of the NTM paper (Graves et al. 2014): 3 layers of 256 units, no dropout,
here with a 64-wide token embedding and an untied decoder. Episodic mode: a window holds one
episode per stream (the carry is reset per window); the window is cut into 16-token segments
and the gradient flows through all segments of the episode, so the only limit on what the
LSTM can carry is its state.

Expected runtime: about 0.1-0.3 s per step on 2 CPU cores (3,000 steps ~ 5-15 min; estimate,
not timed), seconds on a GPU. Expected result: not yet measured. The NTM paper's LSTM learns
copy up to its training lengths but generalises poorly beyond them; associative recall and
repeat copy are slow to learn for an LSTM; delayed recall is solved while the delay fits the
state's memory span, the probe the BPTT-horizon sweeps turn.
"""

from recurrentlab.config import base_config
from recurrentlab.data import build_dataset, data_config
from recurrentlab.models import model_config

SEGMENT = 16  # tokens per model call
TASKS = ("copy", "repeat_copy", "associative_recall", "reverse", "associative_retrieval",
         "delayed_recall")


def get_config(arg: str | None = None):
    task = arg or "copy"
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; use one of {', '.join(TASKS)}")
    c = base_config()
    c.seed = 0  # parameters and episodes
    c.data = data_config("synthetic", task=task, mode="episodic")  # task defaults
    longest = build_dataset(c.data, seed=0).max_episode_len()  # tokens of the longest episode
    segments = -(-(longest - 1) // SEGMENT)  # a window holds W inputs + 1 shifted target

    c.model = model_config(
        "lstm",
        embed_dim=64,  # token embedding
        hidden_dim=256,  # units per layer (NTM paper's LSTM baseline)
        num_layers=3,  # 3 layers (NTM paper's LSTM baseline)
        tie_weights=False,  # all three layers keep 256 units; a 256 -> vocab decoder
        dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0,  # no dropout on algorithmic tasks
        wdrop=0.0,  # no weight drop
    )

    t = c.train
    t.batch_size = 32  # episodes per step
    t.segment_len = SEGMENT  # tokens per model call
    t.bptt_segments = segments  # the gradient spans the whole episode
    t.carry_across_windows = False  # episodic: a fresh carry each window
    t.num_steps = 3000  # optimiser steps
    t.optimizer = "adam"  # Adam for the small tasks
    t.lr = 1e-3  # peak learning rate
    t.warmup_steps = 100  # linear warmup
    t.schedule = "cosine"  # decay to the end
    t.final_lr_fraction = 0.1  # end at 1e-4
    t.clip_norm = 1.0  # global-norm clipping
    t.log_every = 50  # train metrics
    t.eval_every = 500  # held-out windows every 500 steps
    t.checkpoint_every = 1000  # checkpoints

    e = c.eval
    e.batch_size = 32  # episodes per evaluation window
    e.final_splits = ("valid",)  # held-out episodes
    return c
