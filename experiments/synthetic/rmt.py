"""Recurrent Memory Transformer on the RMT paper's synthetic tasks, split into segments.

    recurrentlab train --config experiments/synthetic/rmt.py:copy-6 --workdir runs/syn_rmt_copy6

``get_config(arg)``, arg ``<task>[-<segments>][-mem<M>]``: task ``copy``, ``reverse`` or
``associative_retrieval``; the episode (inputs of the longest episode) is cut into
``segments`` equal segments (defaults: copy 6, reverse 4, associative_retrieval 2, the
paper's hardest settings, Bulatov et al. 2022); M memory tokens (default 10).

Setup (booydar/LM-RMT ``run_copy.sh``, ``run_reverse*.sh``, ``train_synthetic.py``): 4 layers,
d 128, 4 heads of width 64, d_inner 256, dropout 0.1, Adam 1e-4, batch 32, clip 0.25,
Transformer-XL backbone without cache, memory tokens at both ends; the gradient flows through
all segments of an episode (``bptt_segments`` = segments, a fresh memory per episode).
924,686 parameters at the copy vocabulary of 14: the backbone's 923,406 and the trained
initial memory (10 x 128).

Tasks (recurrentlab.data synthetic): ``reverse`` x_1..x_24 <sep> [x_24..x_1] over 10 symbols,
teacher forcing, as the authors' generator; ``associative_retrieval`` 4 key-value pairs then a
query, one answer; ``copy`` x_1..x_24 <sep> [x_1..x_24] over 8 symbols with teacher forcing.
Deviation: the authors' copy answers the sequence twice ([sep, x, x]); ours answers it once.
The authors train up to 400k steps with the learning rate halved on validation plateaus down
to 1e-6; here 50k steps with a cosine decay to 1e-6.

Expected result (RMT paper, Bulatov et al. 2022): copy over 6 segments reaches accuracy 1.0 in most
seeds (Transformer-XL 0.30-0.86); reverse over 4 segments 1.0 (XL 0.78-0.88). Seeds fail
often: run several (``--config.seed``). Expected runtime: not timed yet (about 0.9M parameters,
a step runs 32 episodes of about 50 tokens plus 4M memory rows per segment).
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
        "rmt",
        num_mem_tokens=memory,  # --num_mem_tokens
        mem_init="shared_random",  # m copies of one random vector, trained, as the reference
        backbone="transformer_xl",  # the reference's MemTransformerLM
        mem_len=0,  # --mem_len 0: memory tokens only
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
    t.bptt_segments = segments  # gradient through every segment of the episode
    t.carry_across_windows = False  # episodic: a fresh memory per episode
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
