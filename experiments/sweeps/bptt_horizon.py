"""BPTT horizon: can a model learn a dependency longer than its gradient horizon?

    recurrentlab sweep experiments/sweeps/bptt_horizon.py --workdir runs/bptt_horizon --parallel 4
    recurrentlab sweep experiments/sweeps/bptt_horizon.py:full --workdir runs/bptt_horizon_full
    recurrentlab results runs/bptt_horizon

Task: delayed recall in stream mode, ``<mark> v d_1..d_D <query> [v]``: the answer depends
on one token D + 2 positions back. The gradient horizon is ``H = bptt_segments *
segment_len`` tokens: gradients never flow further back than the start of the current
window, while the carry (LSTM state, XL cache, RMT memory tokens, SHA-RNN attention memory,
NTM memory) still flows forward across windows under ``stop_gradient``. Grid: the distance
D against the horizon H (segment length fixed, ``bptt_segments`` varied), six models, three
seeds.

Expected pattern: for D + 2 <= H every stateful model can learn the task (accuracy -> 1);
for D + 2 > H the LSTM (and the NTM's controller) must latch the value without a gradient
telling it to, and falls to chance (1 / num_symbols) unless the write happens to generalise
from shorter distances; Transformer-XL can still attend into its cache when D + 2 <=
segment_len + mem_len, even though the cache is gradient-stopped (the gradient reaches the
query and key projections, which also made the cached keys); RMT memory tokens and SHA-RNN's
memory are written by the forward pass but trained only through the last H tokens. The
stateless Transformer answers only when value and query share a segment (D + 2 < S). The
plot ``plots/valid_accuracy_vs_data.distance.png`` shows accuracy against D, one line per
model and horizon.

Measured (CPU scale, 3 seeds, 108 runs: 20 min 53 s with ``--parallel 2`` on a 2-core CPU;
valid accuracy mean ± std, chance 0.125; H = bptt_segments * 16)::

    | model | D=8, H=16 | D=8, H=64 | D=24, H=16 | D=24, H=64 | D=56, H=16 | D=56, H=64 |
    |---|---|---|---|---|---|---|
    | lstm | 0.14±0.02 | 0.13±0.01 | 0.09±0.00 | 0.13±0.03 | 0.11±0.02 | 0.13±0.03 |
    | sha_rnn | 0.94±0.07 | 1.00±0.00 | 0.09±0.00 | 0.13±0.03 | 0.11±0.02 | 0.13±0.03 |
    | transformer | 0.55±0.01 | 0.56±0.01 | 0.09±0.00 | 0.13±0.03 | 0.11±0.02 | 0.13±0.03 |
    | transformer_xl | 1.00±0.00 | 1.00±0.00 | 0.09±0.00 | 0.16±0.07 | 0.11±0.02 | 0.12±0.03 |
    | rmt | 0.20±0.04 | 0.76±0.42 | 0.10±0.01 | 0.13±0.03 | 0.11±0.02 | 0.12±0.03 |
    | ntm | 0.13±0.01 | 0.14±0.02 | 0.09±0.00 | 0.13±0.03 | 0.11±0.02 | 0.13±0.03 |

At this budget (400 steps) only D = 8 separates the models: Transformer-XL and SHA-RNN
attend to it (SHA-RNN better with the longer horizon), the stateless Transformer answers only
when value and query share a segment (~half the episodes), and RMT learns to carry the value
in its memory tokens only when the gradient reaches back through them (H = 64: 0.76, two
seeds of three at 1.0; H = 16: 0.20). The LSTM and the NTM stay on their plateau at 400 steps;
D = 24 and 56 need the ``full`` budget.

Scales (``get_sweep(arg)`` / ``get_config("<model>[,full]")``):

* default (CPU): tiny models (10-40k parameters), S = 16, H in {16, 64}, D in {8, 24, 56},
  8 symbols, 400 steps: 6 models x 3 D x 2 H x 3 seeds = 108 runs, 21 min with
  ``--parallel 2`` on a 2-core CPU (measured above); the NTM runs are the slowest.
* ``full`` (one GPU): 1-5M-parameter models, S = 64, H in {64, 256, 1024}, D in {32, 128,
  512, 1024}, 16 symbols, 5,000 steps: 216 runs of a few minutes each on one GPU (not
  measured): about a day.
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.sweep import product, seeds, sweep
from recurrentlab.sweep.presets import MODELS, scaled_model, split_arg, tiny

SCALES = {  # scale: segment, bptt_segments values, distances, symbols, steps, batch
    "cpu": dict(segment=16, bptt=(1, 4), distances=(8, 24, 56), symbols=8, steps=400, batch=16),
    "gpu": dict(segment=64, bptt=(1, 4, 16), distances=(32, 128, 512, 1024), symbols=16,
                steps=5000, batch=64),
}


def get_config(arg: str | None = None):
    """``arg``: ``"<model>"`` (CPU scale) or ``"<model>,full"`` (GPU scale)."""
    model, scale = split_arg(arg)
    s = SCALES[scale]
    c = base_config()
    c.seed = 0  # parameters and data (swept)
    c.model = scaled_model(model, scale, segment_len=s["segment"])  # memory = one segment
    c.data = data_config(
        "synthetic",
        task="delayed_recall",  # <mark> v d_1..d_D <query> [v]
        distance=s["distances"][0],  # D (swept)
        num_symbols=s["symbols"],  # chance accuracy 1 / num_symbols
        mode="stream",  # episodes span windows; the carry crosses window edges
        eval_windows=8,  # held-out windows per evaluation
    )
    t = c.train
    t.batch_size = s["batch"]  # streams
    t.segment_len = s["segment"]  # S, fixed
    t.bptt_segments = s["bptt"][0]  # K (swept): horizon H = K * S
    t.carry_across_windows = True  # state flows on, gradients stop at the window edge
    t.num_steps = s["steps"]  # optimiser steps
    t.lr = 3e-3 if scale == "cpu" else 1e-3  # Adam
    t.warmup_steps = 20 if scale == "cpu" else 200  # linear warmup
    t.clip_norm = 1.0  # global-norm clipping
    t.log_every = 50  # train records
    t.eval_every = t.num_steps // 4  # accuracy along the way
    t.checkpoint_every = t.num_steps // 4  # resume points
    c.eval.batch_size = s["batch"]  # evaluation streams
    c.mesh.data_axis = 1 if scale == "cpu" else 0  # CPU: one device per run
    return c


def get_sweep(arg: str | None = None):
    """``arg``: None (CPU scale), ``"one_seed"`` (CPU scale, seed 0 only: 36 runs), ``"full"``,
    or ``"tiny"`` (4 runs of 12 steps: LSTM and Transformer-XL, D = 24, H = 16 or 64; seconds
    each, for the notebook)."""
    if arg == "tiny":
        return tiny(product(sweep("config_arg", ["lstm", "transformer_xl"]),
                            sweep("data.distance", [24]), sweep("train.bptt_segments", [1, 4])))
    scale = "gpu" if arg in ("full", "gpu") else "cpu"
    s = SCALES[scale]
    suffix = ",full" if scale == "gpu" else ""
    return product(
        sweep("config_arg", [m + suffix for m in MODELS]),
        sweep("data.distance", s["distances"]),
        sweep("train.bptt_segments", s["bptt"]),
        seeds(1 if arg == "one_seed" else 3),
    )
