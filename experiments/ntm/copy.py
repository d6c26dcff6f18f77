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

Evaluation: ``data.eval_overrides`` draws held-out sequences of length 40..120 (length
generalisation, as in the paper), 20 windows x 32 = 640 episodes (Collier's
eval_batch_size); ``bit_errors`` is the mean number of wrong bits per sequence.

Expected result: at the training lengths, "converged" is < 0.1 mean bit errors per sequence
(Collier & Beel's criterion); they report constant-initialised NTMs converge within the
31,250-step budget, about 2x faster than learned or random memory init. Lengths 40..120 are
expected to degrade with length (Collier's own model copies ~36 of 40 steps correctly).
The full run is not measured here yet: about 0.45 s per step on a busy 2-core CPU (~4 h).

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
        # convergence criterion); longer lengths with copy_lengths.py or `recurrentlab eval`
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
