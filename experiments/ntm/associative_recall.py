"""NTM associative recall (Graves et al. 2014, sec. 4.3) with Collier & Beel's stable recipe.

    recurrentlab train --config experiments/ntm/associative_recall.py \\
        --workdir runs/ntm_associative_recall

Task: ``<sep> item_1 <sep> item_2 ... <sep> item_k <query> item_q <query> [item_{q+1}]`` with
k in 2..6 items of three 6-bit vectors, read as a language model; only the three vectors of
the answer item are scored, with the paper's bitwise sigmoid cross-entropy
(``input_mode="bits"``; see ``recurrentlab/models/ntm.py``).

Setup (Collier & Beel, as ``copy.py``): LSTM 100, memory 128 x 20, one read and one write
head, shifts -1..1, clip 20, constant memory init, Adam 1e-3, batch 32, clip 50, 31,250
steps. Markers are one-hot input channels (the paper: two delimiter channels).

Evaluation: ``data.eval_overrides`` draws 7..12 items (the paper's generalisation test;
Collier's README shows their NTM recalling correctly at 12 items), 640 held-out episodes.

Expected result: < 0.1 mean bit errors per answer at 2..6 items, and few errors at 7..12
items (as Graves et al. report; Collier's README example at 12 items is perfect).
Steps-to-converge and runtime here are not measured yet.
"""

from recurrentlab.config import base_config
from recurrentlab.data import build_dataset, data_config
from recurrentlab.models import model_config


def get_config(arg: str | None = None):
    if arg:  # this config has no variants
        raise ValueError(f"unknown config argument '{arg}'; this config takes none")
    c = base_config()
    c.seed = 0  # parameters and episodes
    c.data = data_config(
        "synthetic",
        task="associative_recall",  # items, a query item, answer: the next item
        mode="episodic",  # one episode per row, a fresh carry per window
        bits=6,  # 6-bit vectors
        item_len=3,  # three vectors per item
        min_items=2,  # k uniform in 2..6
        max_items=6,
        eval_windows=20,  # 20 x 32 = 640 held-out episodes
        eval_overrides=dict(min_items=7, max_items=12),  # generalisation to more items
    )
    dataset = build_dataset(c.data, seed=0)
    window = dataset.max_episode_len("train") - 1  # inputs of the longest train episode
    eval_window = dataset.max_episode_len("valid") - 1  # ... of the longest eval episode

    c.model = model_config(
        "ntm",
        controller_size=100,  # LSTM units
        memory_slots=128,  # N
        memory_width=20,  # M
        num_read_heads=1,  # one read head
        num_write_heads=1,  # one write head
        shift_radius=1,  # shifts -1, 0, 1
        clip=20.0,  # clip head parameters and outputs
        memory_init="constant",  # 1e-6 everywhere
        input_mode="bits",  # bits in, bitwise sigmoid cross-entropy out
        bits=6,  # 6 bits per symbol
    )

    t = c.train
    t.batch_size = 32  # episodes per step
    t.segment_len = window  # the whole episode in one model call
    t.bptt_segments = 1  # one segment per window
    t.carry_across_windows = False  # episodic: fresh memory for every episode
    t.num_steps = 31_250  # Collier's num_train_steps
    t.optimizer = "adam"  # Collier's default optimiser
    t.lr = 1e-3  # Collier's learning rate
    t.clip_norm = 50.0  # Collier's max_grad_norm
    t.log_every = 100  # train metrics
    t.eval_every = 1000  # held-out episodes with more items
    t.checkpoint_every = 2000  # checkpoints

    e = c.eval
    e.batch_size = 32  # episodes per evaluation window
    e.segment_len = eval_window  # a window holds the longest evaluation episode
    e.final_splits = ("valid", "test")  # held-out episodes
    return c
