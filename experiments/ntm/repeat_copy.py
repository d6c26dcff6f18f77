"""NTM repeat copy task (Graves et al. 2014, sec. 4.2) with Collier & Beel's stable recipe.

    recurrentlab train --config experiments/ntm/repeat_copy.py --workdir runs/ntm_repeat_copy

Task: ``x_1..x_L <xN> [x_1..x_L]*N [<end>]`` with 8-bit vectors, L in 1..10, N in 1..10, read
as a language model (answer steps get ``<blank>`` as input). The NTM scores bits with the
paper's sigmoid cross-entropy and the ``<end>`` marker with one extra Bernoulli unit, the
paper's end channel (``input_mode="bits"``, ``predict_markers=True``; see
``recurrentlab/models/ntm.py``).

Setup: as ``copy.py`` (LSTM 100, memory 128 x 20, one read and one write head, shifts -1..1,
clip 20, Adam 1e-3, batch 32, clip 50, constant memory init). Graves et al. trained with
RMSProp 1e-4.

Deviations: the repeat count is a token ``<xN>`` (a one-hot input channel) where the paper
feeds N as a normalised scalar on an extra channel, so counts never seen in training cannot
generalise -- evaluation therefore tests *longer sequences* (L in 11..20, N in 1..10; the
paper's other generalisation test), not more repeats. Loss normalisation and markers
as in ``copy.py``.

Expected result: masked accuracy near 1 and < 0.1 mean bit errors per sequence at training
lengths; degradation at L 11..20. Steps-to-converge and runtime here are not measured yet.
A small check (L 1..3, N 1..3, 32 slots, otherwise this config; seed 0, busy 2-core CPU,
~8 min) reached only 66% masked train accuracy after 3,000 steps (loss 1.33, still falling)
and did not yet generalise to L 4..5: repeat copy needs far more steps than copy.
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
        task="repeat_copy",  # x_1..x_L <xN> [x_1..x_L]*N [<end>]
        mode="episodic",  # one episode per row, a fresh carry per window
        bits=8,  # 8-bit vectors
        min_len=1,  # L uniform in 1..10
        max_len=10,
        min_repeats=1,  # N uniform in 1..10
        max_repeats=10,
        eval_windows=20,  # 20 x 32 = 640 held-out episodes
        eval_overrides=dict(min_len=11, max_len=20),  # longer sequences, seen repeat counts
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
        bits=8,  # 8 bits per symbol
        predict_markers=True,  # the <end> marker is an answer: the paper's end channel
    )

    t = c.train
    t.batch_size = 32  # sequences per step
    t.segment_len = window  # the whole episode in one model call
    t.bptt_segments = 1  # one segment per window
    t.carry_across_windows = False  # episodic: fresh memory for every sequence
    t.num_steps = 31_250  # Collier's num_train_steps
    t.optimizer = "adam"  # Collier's default optimiser
    t.lr = 1e-3  # Collier's learning rate
    t.clip_norm = 50.0  # Collier's max_grad_norm
    t.log_every = 100  # train metrics
    t.eval_every = 1000  # held-out longer sequences
    t.checkpoint_every = 2000  # checkpoints

    e = c.eval
    e.batch_size = 32  # episodes per evaluation window
    e.segment_len = eval_window  # a window holds the longest evaluation episode
    e.final_splits = ("valid", "test")  # held-out episodes
    return c
