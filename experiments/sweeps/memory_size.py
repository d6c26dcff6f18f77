"""Memory size: how much memory does each memory model need, and what does it cost?

    recurrentlab sweep experiments/sweeps/memory_size.py --workdir runs/memory_size --parallel 4
    recurrentlab sweep experiments/sweeps/memory_size.py:full --workdir runs/memory_size_full
    recurrentlab results runs/memory_size

Each model's memory knob, on one task that needs memory across segments:

============== ======================= ==============================================
model          field                   what one unit holds
============== ======================= ==============================================
rmt            ``model.num_mem_tokens`` a d-wide memory token passed segment to segment
transformer_xl ``model.mem_len``        one cached hidden state per layer (no gradient)
sha_rnn        ``model.mem_len``        one normalised hidden state for the single head
ntm            ``model.memory_slots``   one row of the external memory matrix
============== ======================= ==============================================

Task: associative retrieval (``k_1 v_1 .. k_K v_K q <query> [v]``) with K = 8 pairs (19
tokens), episodic, in segments of S = 4 tokens: the pairs arrive over five segments and the
query in the last, so the model must hold up to 8 pairs in whatever it passes between
segments. The gradient spans the whole episode (bptt_segments = 5).

Expected pattern: accuracy rises with memory and saturates once the memory holds the
episode: XL at mem_len >= 16 (the 4 segments before the query), SHA-RNN likewise (its LSTM
state helps at small mem_len), NTM once slots >= pairs (8), RMT at a few tokens (each token is
a d-wide vector that can hold several pairs; the RMT paper sees gains up to 10-20 tokens on
retrieval). Time per step grows with memory for XL/SHA-RNN (attention over more keys) and
for RMT (2m more rows per segment); ``tokens_per_sec`` shows the cost.

Protocol: each model at the 3 learning rates of its grid, a control cell per model (the whole
episode in one segment: no memory needed), ``train.stop_when = accuracy>=0.99``; ``recurrentlab
results`` keeps the best learning rate per cell and marks a model whose control fails.

Scales: default (CPU) tiny models, 400 steps, 2 seeds, 5 sizes + a control per model, 3
learning rates: 144 runs of up to 1-3 min on a laptop core (estimated, not measured as a
whole; NTM runs slowest; solved runs stop early). ``full`` (one GPU): 1-5M-parameter
models, K = 32 pairs (67 tokens) in segments of 8, 5,000 steps, 3 seeds: 216 runs, a few hours
on one GPU (not measured).
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.sweep import seeds, sweep
from recurrentlab.sweep.presets import memory_field, model_grid, scaled_model, split_arg

SIZES = {  # model: memory sizes swept (CPU scale; full scale doubles them)
    "rmt": (1, 2, 4, 8, 16),
    "transformer_xl": (0, 4, 8, 16, 32),
    "sha_rnn": (0, 4, 8, 16, 32),
    "ntm": (4, 8, 16, 32, 64),
}
SCALES = {"cpu": dict(pairs=8, segment=4, steps=400, batch=32, seeds=2),
          "gpu": dict(pairs=32, segment=8, steps=5000, batch=128, seeds=3)}


def get_config(arg: str | None = None):
    """``arg``: ``"<model>"`` (CPU scale) or ``"<model>,full"``."""
    model, scale = split_arg(arg, default_model="rmt")
    s = SCALES[scale]
    episode = 2 * s["pairs"] + 3  # tokens of one episode
    c = base_config()
    c.seed = 0  # parameters and data (swept)
    c.model = scaled_model(model, scale, segment_len=s["segment"])  # memory field swept
    c.data = data_config(
        "synthetic",
        task="associative_retrieval",  # k_1 v_1 .. k_K v_K q <query> [v]
        num_pairs=s["pairs"],  # K pairs to hold
        num_keys=max(26, s["pairs"]),  # key alphabet
        mode="episodic",  # one episode per window; the carry restarts per episode
        eval_windows=8,  # held-out windows
    )
    t = c.train
    t.batch_size = s["batch"]  # episodes per step
    t.segment_len = s["segment"]  # S: the episode arrives over several segments
    t.bptt_segments = -(-(episode - 1) // s["segment"])  # the window is the whole episode
    t.carry_across_windows = False  # episodic
    t.num_steps = s["steps"]  # optimiser steps
    t.lr = 3e-3 if scale == "cpu" else 1e-3  # Adam
    t.warmup_steps = 20 if scale == "cpu" else 200  # linear warmup
    t.clip_norm = 1.0  # global-norm clipping
    t.log_every = 50  # train records
    t.eval_every = t.num_steps // 4  # accuracy along the way
    t.stop_when = "accuracy>=0.99"  # solved: steps to solve
    t.checkpoint_every = t.num_steps // 4  # resume points
    c.eval.batch_size = s["batch"]  # evaluation episodes per window
    c.mesh.data_axis = 1 if scale == "cpu" else 0  # CPU: one device per run
    return c


def control(scale: str) -> dict:
    """The control cell: the whole episode in one segment, so no memory is needed."""
    episode = 2 * SCALES[scale]["pairs"] + 3
    return {"train.segment_len": episode - 1, "train.bptt_segments": 1, "protocol.control": True}


def get_sweep(arg: str | None = None):
    """``arg``: None (CPU scale) or ``"full"``. Each model at each learning rate of its grid
    (``presets.LR_GRID``), every memory size, plus its control cell (the episode in one
    segment: ``recurrentlab results`` reports a model that fails it as not trained to
    capability)."""
    scale = "gpu" if arg in ("full", "gpu") else "cpu"
    factor, suffix = (2, ",full") if scale == "gpu" else (1, "")
    runs = []
    for model, sizes in SIZES.items():
        cells = sweep(f"model.{memory_field(model)}", [n * factor for n in sizes])
        cells.append(control(scale))
        runs += model_grid([model + suffix], cells, seeds(SCALES[scale]["seeds"]))
    return runs
