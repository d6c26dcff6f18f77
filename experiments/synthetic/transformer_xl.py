"""Transformer-XL on the RMT paper's synthetic tasks, split into segments: RMT's baseline.

    recurrentlab train --config experiments/synthetic/transformer_xl.py:copy-6 \\
        --workdir runs/syn_xl_copy6

``get_config(arg)``, arg ``<task>[-<segments>][-mem<M>]``: task ``copy``, ``reverse`` or
``associative_retrieval``; the episode is cut into ``segments`` equal segments (defaults:
copy 6, reverse 4, associative_retrieval 2); M cached positions per layer (default 10, the
same memory size as ``rmt.py``'s default memory tokens, so the two compare at equal memory).

Setup (booydar/LM-RMT ``run_copy.sh`` with ``--mem_len``): 4 layers, d 128, 4 heads of width
64, d_inner 256, dropout 0.1, Adam 1e-4, batch 32, clip 0.25; one episode per window with the
cache carried across its segments (the cache is gradient-stopped, as always in
Transformer-XL, so ``bptt_segments`` only groups the segments of an episode in one step).
923,406 parameters at the copy vocabulary of 14.

Tasks and deviations: see ``experiments/synthetic/rmt.py`` (copy answers the sequence once;
cosine decay instead of plateau halving).

Expected result (RMT paper, Bulatov et al. 2022): copy over 6 segments 0.30-0.86 accuracy; reverse
over 4 segments 0.78-0.88; run several seeds. Expected runtime: not timed yet.
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
    """``"copy-6-mem10"`` -> ("copy", 6, 10); missing parts take the defaults."""
    match = re.fullmatch(r"([a-z_]+)(?:-(\d+))?(?:-mem(\d+))?", arg or "copy")
    if not match or match.group(1) not in TASKS:
        raise ValueError(f"config arg '{arg}' must look like copy-6-mem10; tasks: "
                         f"{', '.join(TASKS)}")
    task = match.group(1)
    segments = int(match.group(2) or TASKS[task][0])
    memory = int(match.group(3) or 10)
    if segments < 1 or memory < 1:
        raise ValueError("segments and memory size must be >= 1")
    return task, segments, memory


def get_config(arg: str | None = None):
    task, segments, memory = parse(arg)
    c = base_config()
    c.seed = 0  # parameters, dropout and episodes
    c.data = data_config("synthetic", task=task, mode="episodic", **TASKS[task][1])
    longest = build_dataset(c.data, seed=0).max_episode_len()  # tokens of the longest episode
    segment = -(-(longest - 1) // segments)  # a window holds W inputs + 1 shifted target

    c.model = model_config(
        "transformer_xl",
        mem_len=memory,  # --mem_len: cached positions per layer
        num_layers=4,  # --n_layer 4
        d_model=128,  # --d_model 128
        num_heads=4,  # --n_head 4
        d_head=64,  # --d_head 64
        d_ff=256,  # --d_inner 256
        dropout=0.1,  # --dropout 0.1
        attn_dropout=0.0,  # --dropatt 0.0
        tie_weights=True,  # tied embeddings (reference default)
    )

    t = c.train
    t.batch_size = 32  # --batch_size 32
    t.segment_len = segment  # tokens per segment: the episode over `segments` segments
    t.bptt_segments = segments  # all segments of an episode in one window (cache carried)
    t.carry_across_windows = False  # episodic: an empty cache per episode
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
