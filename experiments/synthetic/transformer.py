"""Decoder-only Transformer on the RMT paper's synthetic tasks, split into segments.

    recurrentlab train --config experiments/synthetic/transformer.py:reverse-4 \\
        --workdir runs/syn_transformer_reverse4

``get_config(arg)``, arg ``<task>[-<segments>]``: task ``copy``, ``reverse`` or
``associative_retrieval``; the episode is cut into ``segments`` equal segments (defaults:
copy 6, reverse 4, associative_retrieval 2). The model reads each segment alone (carry ``()``),
so with more than one segment it cannot see the input it must reproduce: the no-memory floor
that RMT and Transformer-XL are measured against. ``-1`` (one segment) is the upper bound.

Setup: 4 layers, d 128, 4 heads (width 32: this model has no separate head width; the
reference uses 64), d_ff 256, dropout 0.1, learned positions, Adam 1e-4, batch 32, clip 0.25.

Tasks and deviations: see ``experiments/synthetic/rmt.py``.

Expected result: with several segments, chance level on answers whose source lies in an
earlier segment (reverse over 4 segments: the answers need segments 1-2, so accuracy near
1/10); with one segment, accuracy near 1.0. Not yet measured. Expected runtime: not timed yet.
"""

import re

from recurrentlab.config import base_config
from recurrentlab.data import build_dataset, data_config
from recurrentlab.models import model_config

TASKS = {  # task: (default segments, data fields)
    "copy": (6, dict(bits=3, min_len=24, max_len=24, teacher_forcing=True)),
    "reverse": (4, dict(num_symbols=10, min_len=24, max_len=24, teacher_forcing=True)),
    "associative_retrieval": (2, dict(num_pairs=4)),
}


def parse(arg: str | None) -> tuple[str, int, int]:
    """``"copy-6"`` -> ("copy", 6, 0); missing parts take the defaults."""
    match = re.fullmatch(r"([a-z_]+)(?:-(\d+))?()", arg or "copy")
    if not match or match.group(1) not in TASKS:
        raise ValueError(f"config arg '{arg}' must look like copy-6; tasks: "
                         f"{', '.join(TASKS)}")
    task = match.group(1)
    segments = int(match.group(2) or TASKS[task][0])
    memory = 0  # no memory
    if segments < 1:
        raise ValueError("segments must be >= 1")
    return task, segments, memory


def get_config(arg: str | None = None):
    task, segments, _ = parse(arg)
    c = base_config()
    c.seed = 0  # parameters, dropout and episodes
    c.data = data_config("synthetic", task=task, mode="episodic", **TASKS[task][1])
    longest = build_dataset(c.data, seed=0).max_episode_len()  # tokens of the longest episode
    segment = -(-(longest - 1) // segments)  # a window holds W inputs + 1 shifted target

    c.model = model_config(
        "transformer",
        num_layers=4,  # --n_layer 4
        d_model=128,  # --d_model 128
        num_heads=4,  # --n_head 4
        d_ff=256,  # --d_inner 256
        max_len=segment,  # learned positions for one segment
        positions="learned",  # absolute positions within the segment
        dropout=0.1,  # --dropout 0.1
        attn_dropout=0.0,  # --dropatt 0.0
        tie_weights=True,  # tied embeddings (reference default)
    )

    t = c.train
    t.batch_size = 32  # --batch_size 32
    t.segment_len = segment  # tokens per segment: the episode over `segments` segments
    t.bptt_segments = segments  # all segments of an episode in one window
    t.carry_across_windows = False  # episodic (the carry is () anyway)
    t.num_steps = 50_000  # optimiser steps (the reference allows up to 400k)
    t.optimizer = "adam"  # --optim adam
    t.lr = 1e-4  # --lr 0.0001
    t.schedule = "cosine"  # decay to the end (the reference halves on plateaus)
    t.final_lr_fraction = 0.01  # --lr_min 1e-6
    t.clip_norm = 0.25  # --clip default 0.25
    t.log_every = 500  # train metrics
    t.eval_every = 5000  # held-out episodes
    t.checkpoint_every = 5000  # checkpoints

    e = c.eval
    e.batch_size = 32  # episodes per evaluation window
    e.final_splits = ("valid", "test")  # held-out episodes
    return c
