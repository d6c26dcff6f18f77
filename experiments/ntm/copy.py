"""NTM copy task (Graves et al. 2014) with Collier & Beel's stable recipe.

    recurrentlab train --config experiments/ntm/copy.py --workdir runs/ntm_copy

Task: ``x_1..x_L <sep> [x_1..x_L]`` with 8-bit vectors, L uniform in 1..20, read as a language
model (the token at ``<sep>`` predicts x_1; answer steps get ``<blank>`` as input). The NTM sees
each token as its 8 bits plus marker channels and scores the answer with the paper's bitwise
sigmoid cross-entropy (``input_mode="bits"``; see ``recurrentlab/models/ntm.py``).

Setup (MarkPKCollier/NeuralTuringMachine ``run_tasks.py`` defaults with the constant memory
init the paper recommends): LSTM controller 100 units, memory 128 x 20, one read and one write
head, shifts -1..1, clip 20, Adam 1e-3, batch 32, global-norm clip 50, 31,250 steps
(1M sequences). One episode per window; the whole episode is one segment, so the gradient
spans the episode (the NTM's carry is exact, so segmenting would not change the math).

Deviation: the loss is the mean over answer tokens of the summed 8-bit cross-entropy;
Collier sums over all answer steps and divides by the batch, so the same clip value of 50
acts about L (~10) times later here. Markers use one-hot input channels (the paper: one
delimiter channel, all-zero inputs while answering).

Evaluation: every 250 steps on 640 held-out sequences of the training lengths (20 windows x 32,
Collier's eval_batch_size); ``bit_errors`` is the mean number of wrong bits per sequence.
``train.stop_when = "bit_errors<0.1"`` is Collier & Beel's convergence criterion, so a run stops
at the first evaluation that meets it and its summary records the step. Length generalisation
(the paper's 40..120) is measured afterwards on sequences of exactly L vectors::

    python experiments/reports/ntm_copy.py runs/ntm_copy     # L = 20, 40, 80, 120

``get_config("lstm")``: the NTM paper's LSTM baseline (3 layers of 256, a 64-wide token
embedding in and a softmax over the vocabulary out instead of the NTM's bit channels: 1.47M
parameters against the NTM's 67K) on the same data, optimiser, clip, batch, budget and stop
criterion. ``get_sweep()`` runs both models with seeds 0, 1, 2.

Measured (2026-11-26, one run per CPU core of a 2-core machine, jax 0.10.2; wall times include
the evaluations and contention from other work on the same core):

============ ============= ======== ============================================================
run          steps to <0.1 minutes  bit errors per sequence (exact copies) at L = 20 / 40 / 80 / 120
============ ============= ======== ============================================================
NTM seed 0   1,000         2.7      0.105 (99.8%) / 0.227 (99.8%) / 1.44 (99.5%) / 3.66 (99.2%)
NTM seed 1   3,500         7.5      0.005 (99.5%) / 0.017 (98.3%) / 0.042 (96.1%) / 0.098 (90.3%)
NTM seed 2   not met       90.7     17.8 (0%) / 139 (0%) / 307 (0%) / 471 (0%); 3.93 at 1..20
LSTM seed 0  not met       98.9     60.8 (0%) / 143 (0%) / 305 (0%) / 466 (0%); 27.3 at 1..20
============ ============= ======== ============================================================

Two NTM seeds of three converge, in 1,000 and 3,500 steps (32K and 112K sequences), and copy
sequences six times longer than any they trained on almost perfectly: the learned program
(write at a moving head, then read back in order) does not depend on the length. The third
seed is still improving after the 31,250-step budget (3.9 bit errors on lengths 1..20) and
does not generalise; Collier & Beel also report that some seeds fail. The LSTM, with 22x the
parameters, is far from converged after the same budget (27 bit errors per sequence; chance
is about 4 per vector) and is at chance beyond its training lengths, as in Graves et al.
(their LSTM learns copy more slowly and does not generalise in length).

``get_config("small")`` -- a measured check of the same recipe on a smaller problem::

    recurrentlab train --config experiments/ntm/copy.py:small --workdir runs/ntm_copy_small

trains on lengths 1..5 with 32 memory slots for 3,000 steps and evaluates on lengths 6..10.
Measured (seed 0, 2 busy CPU cores, ~18 min): train accuracy 1.0 from step ~1,500; held-out
lengths 6..10 at step 3,000: 0.031 mean bit errors per sequence, 96.9% of 128 sequences
copied exactly, 0.16 bits per answer token (step 2,500: 0.039 bit errors).
"""

from recurrentlab.config import base_config
from recurrentlab.data import build_dataset, data_config
from recurrentlab.models import model_config
from recurrentlab.sweep import product, seeds, sweep


def get_config(arg: str | None = None):
    """``arg``: nothing or ``"ntm"`` (the paper's setup), ``"lstm"`` (the paper's LSTM baseline,
    same task and recipe) or ``"small"`` (the NTM on lengths 1..5)."""
    model = {None: "ntm", "": "ntm", "ntm": "ntm", "lstm": "lstm", "small": "ntm"}.get(arg)
    if model is None:
        raise ValueError(f"config arg '{arg}' unknown; use nothing, 'ntm', 'lstm' or 'small'")
    small = arg == "small"  # lengths 1..5, 32 slots, 3,000 steps, evaluated on lengths 6..10
    c = base_config()
    c.seed = 0  # parameters and episodes
    c.data = data_config(
        "synthetic",
        task="copy",  # x_1..x_L <sep> [x_1..x_L]
        mode="episodic",  # one episode per row, a fresh carry per window
        bits=8,  # 8-bit vectors (256 symbols)
        min_len=1,  # L uniform in 1..20 (small: 1..5)
        max_len=5 if small else 20,
        eval_windows=4 if small else 20,  # 20 x 32 = 640 held-out episodes (small: 128)
        # small: length generalisation; full: held-out episodes of the training lengths (the
        # convergence criterion); longer lengths with experiments/reports/ntm_copy.py or
        # `recurrentlab eval`
        eval_overrides=dict(min_len=6, max_len=10) if small else {},
    )
    dataset = build_dataset(c.data, seed=0)
    window = dataset.max_episode_len("train") - 1  # inputs of the longest train episode
    eval_window = dataset.max_episode_len("valid") - 1  # ... of the longest eval episode

    if model == "ntm":
        c.model = model_config(
            "ntm",
            controller_size=100,  # LSTM units
            memory_slots=32 if small else 128,  # N
            memory_width=20,  # M
            num_read_heads=1,  # one read head
            num_write_heads=1,  # one write head
            shift_radius=1,  # shifts -1, 0, 1
            clip=20.0,  # clip head parameters and outputs (Collier's clip_value)
            memory_init="constant",  # 1e-6 everywhere (Collier & Beel's recommendation)
            input_mode="bits",  # bits in, bitwise sigmoid cross-entropy out
            bits=8,  # 8 bits per symbol
        )
    else:
        c.model = model_config(
            "lstm",
            embed_dim=64,  # token embedding (the NTM reads the 8 bits instead)
            hidden_dim=256,  # units per layer (Graves et al.'s LSTM baseline)
            num_layers=3,  # 3 layers (Graves et al.'s LSTM baseline)
            tie_weights=False,  # a 256 -> vocabulary softmax
            dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0,  # none
        )

    t = c.train
    t.batch_size = 32  # sequences per step
    t.segment_len = window  # the whole episode in one model call
    t.bptt_segments = 1  # one segment per window
    t.carry_across_windows = False  # episodic: fresh memory for every sequence
    t.num_steps = 3000 if small else 31_250  # Collier's num_train_steps
    t.optimizer = "adam"  # Collier's default optimiser
    t.lr = 1e-3  # Collier's learning rate
    t.clip_norm = 50.0  # Collier's max_grad_norm
    t.log_every = 100  # train metrics
    t.eval_every = 250  # held-out sequences (the resolution of the steps to converge)
    t.stop_when = "" if small else "bit_errors<0.1"  # Collier & Beel's convergence criterion
    t.checkpoint_every = 2000  # checkpoints
    t.progress_bar = False  # long runs log to metrics.jsonl and TensorBoard

    e = c.eval
    e.batch_size = 32  # episodes per evaluation window
    e.segment_len = eval_window  # a window holds the longest evaluation episode
    e.final_splits = ("valid", "test")  # held-out episodes
    c.mesh.data_axis = 1  # one device: small models, one run per CPU core
    return c


def get_sweep(arg: str | None = None):
    """The NTM and the LSTM baseline, three seeds each, both stopped at convergence::

        recurrentlab sweep experiments/ntm/copy.py --workdir runs/ntm_copy --parallel 2
        python experiments/reports/ntm_copy.py runs/ntm_copy   # + errors at lengths 40..120
    """
    del arg
    return product(sweep("config_arg", ["ntm", "lstm"]), seeds(3))
