"""Quick comparison: what does each model's state buy on a dependency longer than a segment?

    recurrentlab sweep experiments/sweeps/quick_comparison.py --workdir runs/compare --parallel 2
    recurrentlab sweep experiments/sweeps/quick_comparison.py:lr_grid --workdir runs/compare_lr

Task: delayed recall in stream mode, ``<mark> v d_1..d_D <query> [v]`` over 8 symbols (chance
accuracy 1/8), evaluated at D = 12. An episode's slot is 16 tokens and segments are 8, so at
D = 12 every episode spans exactly two segments: the value ``v`` is always in the first, the
query in the second, and the answer lies 14 tokens back — further than the segment, inside
the 32-token gradient horizon (4 segments) and inside every model's memory (Transformer-XL
cache and SHA-RNN attention memory 16 states, RMT 8 memory tokens, NTM 16 slots). Training
draws D uniformly from 0..12 (``data.min_distance = 0``), so short episodes that fit in one
segment teach the task's format before the carry has to hold ``v`` (a mixture curriculum:
without it RMT never discovers the memory write — measured at chance for 1,000 steps at
lr 1e-3 with D = 12 only, solved by step 500 with the mixture). The prediction of each
model's state is sharp:

* Transformer (carries nothing): chance, by construction — its context is the segment, which
  never holds ``v`` when the query comes;
* LSTM, SHA-RNN, Transformer-XL, RMT, NTM (their carry can hold ``v`` and the gradient
  reaches it): solve it, given a setup that trains them (``presets.SYNTHETIC_SETUP``).

The protocol ("capability before comparison", ``recurrentlab.sweep.protocol``): every model
gets 3 seeds at its own learning rate, a 1,500-step budget that ``train.stop_when =
accuracy>=0.99`` ends early, and a **control cell** (``protocol.control``): D = 4 (trained on
0..4), where an episode fits one segment, so every model — the Transformer too — can answer
from the segment alone. A model whose control fails is reported as "not trained to capability",
not as a result. The learning rates are the best of each model's grid (``presets.LR_GRID``) on
this task; the ``lr_grid`` sweep reruns that tuning (every model at every rate of its grid, 2
seeds) and ``recurrentlab results`` keeps the best rate per cell.

Output: ``runs/compare/results.md`` (the summary table: model, what it carries, horizon,
accuracy ± std over seeds, seeds solved, steps to solve, parameters, tokens/s, capability),
``results.csv``, and ``plots/learning_curves.png`` (validation accuracy against step, one line
per model, chance dashed). Stop it at any time and run the same command again: finished runs
are skipped and unfinished ones resume from their checkpoints.

Measured: see the README (table, curve and wall time on a 2-core CPU).
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.sweep import product, seeds, sweep
from recurrentlab.sweep.presets import MODELS, model_grid, scaled_model, tiny

SEGMENT = 8  # S: tokens per model call
DISTANCE = 12  # D: episodes of D + 4 = 16 tokens, two segments; the answer is D + 2 back
CONTROL_DISTANCE = SEGMENT - 4  # an episode of exactly one segment: no carry needed
HORIZON_SEGMENTS = 4  # K: gradient horizon K * S = 32 tokens

MEMORY = {"transformer_xl": 16, "sha_rnn": 16, "rmt": 8, "ntm": 16}  # cache/memory/tokens/slots
NTM_SIZE = dict(controller_size=32, memory_width=8)  # its step is sequential: keep it small
# Each model's best learning rate of its LR_GRID on this task (the lr_grid sweep).
LR = {"lstm": 3e-3, "sha_rnn": 3e-3, "transformer": 3e-3, "transformer_xl": 3e-3,
      "rmt": 1e-3, "ntm": 1e-2}


def get_config(arg: str | None = None):
    model = arg or "lstm"
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}'; use one of {', '.join(MODELS)}")
    c = base_config()
    c.seed = 0  # parameters and data (swept)
    c.model = scaled_model(model, "cpu", segment_len=SEGMENT, memory=MEMORY.get(model),
                           longest_lag=HORIZON_SEGMENTS * SEGMENT,
                           **(NTM_SIZE if model == "ntm" else {}))
    c.data = data_config(
        "synthetic",
        task="delayed_recall",  # <mark> v d_1..d_D <query> [v]
        distance=DISTANCE,  # D at evaluation; the longest D in training
        min_distance=0,  # training D uniform in 0..DISTANCE: short episodes first teach the task
        eval_overrides={"min_distance": DISTANCE},  # evaluation: exactly D
        num_symbols=8,  # chance accuracy 1/8
        mode="stream",  # episodes follow each other; the carry crosses segment edges
        eval_windows=16,  # 16 windows x 16 streams x 2 episodes = 512 answers per evaluation
    )
    t = c.train
    t.batch_size = 16  # streams
    t.segment_len = SEGMENT  # S
    t.bptt_segments = HORIZON_SEGMENTS  # K
    t.num_steps = 1500  # budget; solved runs stop earlier
    t.stop_when = "accuracy>=0.99"  # solved: steps to solve
    t.optimizer = "adam"  # Adam
    t.lr = LR[model]  # the model's tuned rate (swept by lr_grid)
    t.warmup_steps = 20  # short warmup
    t.clip_norm = 1.0  # global-norm clipping
    t.log_every = 50  # train records
    t.eval_every = 100  # validation accuracy: learning curves and the stop criterion
    t.checkpoint_every = 500  # resume points
    t.progress_bar = False  # sweeps log to files
    c.eval.batch_size = 16  # evaluation streams
    c.eval.final_splits = ("valid", "test")  # the table reports test accuracy
    c.mesh.data_axis = 1  # one device: the runs share the CPU
    return c


CONTROL = {"data.distance": CONTROL_DISTANCE, "data.eval_overrides.min_distance": CONTROL_DISTANCE,
           "protocol.control": True}
VARIANTS = ("lr_grid", "memory")  # the get_sweep arguments besides None


def get_sweep(arg: str | None = None):
    """``arg``: None (every model at its tuned lr: 3 seeds and 1 control seed each),
    ``"lr_grid"`` (every model at every lr of its grid, 2 seeds, the control at each lr) or
    ``"memory"`` (NTM, RMT and SHA-RNN for 4 steps on 2-segment windows, for the memory
    inspection notebook)."""
    if arg == "memory":  # 4 steps on windows of 2 segments: the pictures, not the learning
        return [{**run, "train.bptt_segments": 2, "train.num_steps": 4,
                 "train.checkpoint_every": 4, "train.log_every": 2, "train.stop_when": ""}
                for run in tiny(sweep("config_arg", ["ntm", "rmt", "sha_rnn"]))]
    if arg == "lr_grid":
        cells = [{}, CONTROL]
        return model_grid(MODELS, cells, seeds(2))
    if arg is not None:
        raise ValueError(f"unknown sweep '{arg}'; use lr_grid or memory")
    runs = []
    for model in MODELS:
        runs += product(sweep("config_arg", [model]), [{"protocol.control": False}], seeds(3))
        runs += product(sweep("config_arg", [model]), [CONTROL], seeds(1))
    return runs

