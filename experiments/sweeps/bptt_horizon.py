"""BPTT horizon: can a model learn a dependency longer than its gradient horizon?

    recurrentlab sweep experiments/sweeps/bptt_horizon.py --workdir runs/bptt_horizon --parallel 2
    recurrentlab results runs/bptt_horizon
    recurrentlab sweep experiments/sweeps/bptt_horizon.py:full --workdir runs/bptt_horizon_full

Task: delayed recall in stream mode, ``<mark> v d_1..d_D <query> [v]``: the answer is the token
D + 2 positions back. The gradient horizon is ``H = bptt_segments * segment_len`` tokens:
gradients never flow further back than the start of the current window, while the carry (LSTM
state, XL cache, RMT memory tokens, SHA-RNN attention memory, NTM memory) still flows forward
across windows under ``stop_gradient``. So for D + 2 > H a recurrent model must learn to latch
``v`` with no gradient telling it to — the question this sweep exists for.

Cells (segment S = 16 tokens, 8 symbols, chance 1/8):

============  =====  ===  ===================================================================
cell          D      H    what it tests
============  =====  ===  ===================================================================
control       12     16   an episode is exactly one segment: every model can answer from the
                          segment alone (``protocol.control``; a model that fails it is "not
                          trained to capability" and its other cells are no finding)
inside        24     64   the answer 26 tokens back, inside the horizon and every memory
beyond        24     16   the same, beyond the horizon: the gradient never sees ``v``
============  =====  ===  ===================================================================

Every model is trained at the two upper learning rates of its grid (``presets.LR_GRID``: a
CPU-time budget; the full grid is ``get_sweep("full_grid")``), 3 seeds, a 1,500-step budget
that ``train.stop_when = accuracy>=0.99`` ends early; ``recurrentlab results`` keeps the best
learning rate per cell by validation and reports test accuracy (mean ± std over seeds),
seeds solved and steps to solve. Memories hold 32 states (XL cache,
SHA-RNN memory, NTM slots; RMT 8 tokens), so D = 24 is inside every memory. The LSTM uses
the synthetic-task setup with chrono initialisation for lags up to 64 (``presets``).

Expected pattern: inside the horizon every stateful model can learn it; beyond it the LSTM
and the NTM controller have no gradient to learn the latch (chance, unless writing ``v``
generalises from shorter lags — there are none here); Transformer-XL attends into its cache,
which the gradient does not reach, but the query/key projections that read the cache are
trained on the current segment, so it may still solve it; SHA-RNN likewise through its
attention memory; RMT must write ``v`` into memory tokens with no gradient through them. The
stateless Transformer is at chance in both D = 24 cells by construction.

Measured (CPU scale, 108 + 18 runs, 3 seeds; ``recurrentlab sweep experiments/sweeps/bptt_horizon.py
--workdir runs/bptt_horizon --parallel 2``: 62 min on a 2-core CPU that other jobs loaded
throughout, load average 9-12, so expect well under that on an idle one). Test accuracy of
the learning rate ``recurrentlab results`` chose per cell, mean ± std over seeds, seeds that
reached 99 % and their mean steps to solve; chance 0.125::

    | model          | control D=12, H=16       | inside D=24, H=64        | beyond D=24, H=16 |
    |----------------|--------------------------|--------------------------|-------------------|
    | lstm           | 1.000 ± 0     3/3 @ 200  | 0.999 ± 0.001 3/3 @ 300  | 0.150 ± 0.034 0/3 |
    | sha_rnn        | 0.785 ± 0.369 2/3 @ 900  | 0.744 ± 0.443 2/3 @ 400  | 0.134 ± 0.014 0/3 |
    | transformer    | 1.000 ± 0     3/3 @ 100  | 0.115 ± 0.006 0/3        | 0.134 ± 0.014 0/3 |
    | transformer_xl | 0.965 ± 0.027 0/3 (*)    | 0.984 ± 0.014 1/3 @ 400  | 0.188 ± 0.078 0/3 |
    | rmt            | 0.956 ± 0.077 2/3 @ 300  | 0.115 ± 0.006 0/3        | 0.155 ± 0.014 0/3 |
    | ntm            | 1.000 ± 0     3/3 @ 533  | 0.994 ± 0.001 3/3 @ 1433 | 0.134 ± 0.014 0/3 |
    | lstm + snap1   | 1.000 ± 0     3/3 @ 233  | 1.000 ± 0     3/3 @ 300  | 0.963 ± 0.004 0/3 |

    (*) control failed: reported as "not trained to capability" in every cell

The last row is the ``train.carry_gradient`` dimension (``CARRY_GRADIENTS``): the same LSTM,
data and budget with SnAp-1 influence traces carrying the gradient across window edges (18
runs, 8 min 21 s at ``--parallel 2`` on the shared 2-core CPU; SnAp-1 trains at 7-8k
tokens/s here against 66-96k for truncated BPTT). Beyond the horizon it reaches 0.958, 0.965
and 0.965 by step 1,500 (lr 3e-3; at 1e-2: 0.931, 0.951 and one seed at chance), still
rising, against 0.150 with truncated BPTT: the gradient that crosses the window edge is what
teaches the latch. None of the three reached 99 % in the 1,500-step budget;
``carry_gradient.py`` runs the same comparison to completion, exact RTRL included, on a
smaller LSTM.

What it shows. The horizon wall is real for every model that learns the dependency at all:
inside the horizon the LSTM (3/3 by step 300, with chrono initialisation), the NTM (3/3) and
SHA-RNN (2/3) learn to carry ``v`` 26 tokens; beyond it, with the same carry able to hold
``v`` and the same budget, all of them sit at chance — the gradient never tells them to keep
``v``, and nothing in these fixed-distance episodes lets a shorter-lag skill generalise.
Transformer-XL and SHA-RNN do not escape it either: their caches/memories hold ``v`` beyond
the horizon, but the representation that marks ``v`` as worth reading is learned only where
the gradient connects ``v`` and the query (XL 0.19 ± 0.08, slightly above chance). The
stateless Transformer solves its control and is at chance at D = 24 by construction. Two
rows are not findings about the architectures: Transformer-XL's control stays just short of
99 % (0.965) at the two learning rates run here (``full_grid`` adds 1e-3), so its row is
marked; and RMT, which solves its control, does not discover the memory write at D = 24 even
inside the horizon — without short episodes in the mix it never does at this size (the main
job's mixture curriculum is what lets it learn; see ``quick_comparison.py`` and
``presets``). Learning curves: ``docs/figures/bptt_horizon_curves.png``. Past the horizon,
``train.carry_gradient`` is the way across (the last row above; ``carry_gradient.py``).

Scales (``get_sweep(arg)`` / ``get_config("<model>[,full]")``):

* default (CPU): tiny models (10-40k parameters), 6 models x 3 cells x 2 learning rates x 3
  seeds = 108 runs, and the LSTM again with ``carry_gradient="snap1"`` (18 runs): 126.
* ``full_grid``: the same at all 3 learning rates of each grid (162 + 27 runs).
* ``one_seed``: the default with seed 0 only (36 + 6 runs).
* ``full`` (one GPU): 1-5M-parameter models, S = 64, H in {64, 1024}, D in {60 (control),
  250}, 16 symbols, 5,000 steps (not measured).
* ``tiny``: 4 runs of 12 steps (LSTM and Transformer-XL, the two D = 24 cells), for the
  notebook.
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.sweep import product, seeds, sweep, zip_
from recurrentlab.sweep.presets import MODELS, model_grid, scaled_model, split_arg, tiny

SCALES = {  # segment S, cells (D, bptt_segments, control), symbols, steps, batch, memory
    "cpu": dict(segment=16, cells=((12, 1, True), (24, 4, False), (24, 1, False)), symbols=8,
                steps=1500, batch=16, memory=32),
    "gpu": dict(segment=64, cells=((60, 1, True), (250, 16, False), (250, 1, False)),
                symbols=16, steps=5000, batch=64, memory=256),
}


def get_config(arg: str | None = None):
    """``arg``: ``"<model>"`` (CPU scale) or ``"<model>,full"`` (GPU scale)."""
    model, scale = split_arg(arg)
    s = SCALES[scale]
    distance, bptt, _ = s["cells"][1]
    longest_lag = max(b for _, b, _ in s["cells"]) * s["segment"]
    memory = {"transformer_xl": s["memory"], "sha_rnn": s["memory"], "ntm": s["memory"]}
    c = base_config()
    c.seed = 0  # parameters and data (swept)
    c.model = scaled_model(model, scale, segment_len=s["segment"], memory=memory.get(model),
                           longest_lag=longest_lag)
    c.data = data_config(
        "synthetic",
        task="delayed_recall",  # <mark> v d_1..d_D <query> [v]
        distance=distance,  # D (swept)
        num_symbols=s["symbols"],  # chance accuracy 1 / num_symbols
        mode="stream",  # episodes span windows; the carry crosses window edges
        eval_windows=16,  # held-out windows per evaluation
    )
    t = c.train
    t.batch_size = s["batch"]  # streams
    t.segment_len = s["segment"]  # S, fixed
    t.bptt_segments = bptt  # K (swept): horizon H = K * S
    t.carry_across_windows = True  # state flows on, gradients stop at the window edge
    t.num_steps = s["steps"]  # budget; solved runs stop earlier
    t.stop_when = "accuracy>=0.99"  # solved: steps to solve
    t.lr = 3e-3  # Adam (swept over the model's grid)
    t.warmup_steps = 20 if scale == "cpu" else 200  # linear warmup
    t.clip_norm = 1.0  # global-norm clipping
    t.log_every = 50  # train records
    t.eval_every = 100  # learning curves and the stop criterion
    t.checkpoint_every = 500  # resume points
    t.progress_bar = False  # sweeps log to files
    c.eval.batch_size = s["batch"]  # evaluation streams
    c.eval.final_splits = ("valid", "test")  # lr chosen on valid, accuracy reported on test
    c.mesh.data_axis = 1 if scale == "cpu" else 0  # CPU: one device per run
    return c


VARIANTS = ("one_seed", "full_grid", "full", "tiny")  # the get_sweep arguments besides None
# The carry_gradient dimension: these models again with a gradient through the carry. SnAp-1
# only: exact RTRL updates a [256, 38k] influence per stream and token for this LSTM (~2.5
# GFLOP each, ~10^4 x a truncated step); carry_gradient.py measures it on a smaller LSTM.
CARRY_GRADIENT_MODELS = ("lstm",)
CARRY_GRADIENTS = ("snap1",)


def cells(scale: str = "cpu") -> list[dict]:
    """The sweep's cells as overrides: distance, bptt_segments and protocol.control."""
    d, k, control = zip(*SCALES[scale]["cells"], strict=True)
    return zip_(sweep("data.distance", d), sweep("train.bptt_segments", k),
                sweep("protocol.control", control))


def get_sweep(arg: str | None = None):
    """``arg``: None (CPU scale, 3 seeds, 2 learning rates per model), ``"full_grid"`` (3
    learning rates), ``"one_seed"``, ``"full"`` (GPU scale) or ``"tiny"`` (4 runs of 12 steps
    for the notebook)."""
    if arg == "tiny":
        return [{**run, "train.eval_every": 6} for run in tiny(product(
            sweep("config_arg", ["lstm", "transformer_xl"]), sweep("data.distance", [24]),
            sweep("train.bptt_segments", [1, 4])))]
    if arg not in (None, "one_seed", "full_grid", "full", "gpu"):
        raise ValueError(f"unknown sweep '{arg}'; use one_seed, full_grid, full or tiny")
    scale = "gpu" if arg in ("full", "gpu") else "cpu"
    suffix = ",full" if scale == "gpu" else ""
    lrs = 3 if arg in ("full_grid", "full", "gpu") else 2  # the upper rates of each grid
    runs = seeds(1 if arg == "one_seed" else 3)
    return (model_grid([m + suffix for m in MODELS], cells(scale), runs, lrs=lrs)
            + model_grid([f"{m}{suffix}" for m in CARRY_GRADIENT_MODELS], cells(scale),
                         sweep("train.carry_gradient", CARRY_GRADIENTS), runs, lrs=lrs))
