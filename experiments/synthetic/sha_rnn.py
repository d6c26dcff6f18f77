"""A small SHA-RNN on one synthetic task: ``get_config(task)`` for copy | repeat_copy |
associative_recall | reverse | associative_retrieval | delayed_recall.

    recurrentlab train --config experiments/synthetic/sha_rnn.py:delayed_recall \\
        --workdir runs/synthetic_sha_rnn_delayed_recall

Episodic mode: a window holds one episode per stream (the carry is reset per window); the
window is cut into 16-token segments and the model reads earlier segments of the episode
through its LSTM state and its attention memory, which covers the whole window (mem_len =
window), so the attention span is never the limit: the task measures what the LSTM + single
head learn, with the gradient through all segments of the episode.

Expected runtime: a copy step (3 segments) took 0.17 CPU-seconds on a shared 2-core x86
machine, so 3,000 steps are about 10 minutes on a laptop CPU (repeat copy, 7 segments, about
twice that); a GPU is not needed. Expected result: not yet measured; copy, reverse and associative
retrieval are within reach of one attention head over the full episode (masked accuracy
near 1 is the target), repeat copy and associative recall are harder for this size.
"""

from recurrentlab.config import base_config
from recurrentlab.data import build_dataset, data_config
from recurrentlab.models import model_config

SEGMENT = 16  # tokens per model call


def get_config(arg: str | None = None):
    task = arg or "copy"
    c = base_config()
    c.seed = 0  # parameters, dropout and episodes
    c.data = data_config("synthetic", task=task, mode="episodic")  # task defaults
    longest = build_dataset(c.data, seed=0).max_episode_len()  # tokens of the longest episode
    segments = -(-(longest - 1) // SEGMENT)  # a window holds W inputs + 1 shifted target
    window = segments * SEGMENT

    c.model = model_config(
        "sha_rnn",
        d_model=128,  # width
        d_ff=512,  # Boom width, 4x as in the paper
        num_layers=2,  # blocks
        attn_layers=(-2,),  # the head in block nlayers-2 (here the first), as the paper
        mem_len=window,  # the memory covers the whole episode
        dropout_input=0.0,  # no dropout on algorithmic tasks
        dropout_hidden=0.0,  # no dropout
        dropout_attn=0.0,  # no dropout
        dropout_attn_probs=0.0,  # no dropout (keeps the fused attention path in training)
        dropout_output=0.0,  # no dropout
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
