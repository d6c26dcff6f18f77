"""Quick comparison: the six models on one long-dependency task, on a CPU, in minutes.

    recurrentlab sweep experiments/sweeps/quick_comparison.py --workdir runs/compare --parallel 2

Question: which models can reproduce a sequence they saw further back than their segment?
The task is copy in stream mode (NTM paper): ``x_1..x_12 <sep> [x_1..x_12]`` over 8 symbols
(chance accuracy 1/8), episodes following each other in every stream. Each answer x_i comes
13 tokens after its input, further back than one segment (8 tokens), so a model can only
answer with what it carries from segment to segment: the LSTM/SHA-RNN/NTM state, the
Transformer-XL cache (16 states), SHA-RNN's attention memory (16 states), RMT's 8 memory
tokens. The gradient horizon is 4 segments (32 tokens) for every model, longer than an
episode (25 tokens), and every model gets the same 300 steps of 16 streams.

Expected pattern (tiny models and 300 steps: a smoke-sized comparison, not a benchmark):
the Transformer stays at chance (its context is the current segment); Transformer-XL
solves the task (its cache holds the inputs and attention copies them); the other stateful
models need more steps than this to learn to store 12 symbols in what they carry (the NTM
paper trains copy on ~100k sequences). Measured (seed 0, valid accuracy / exact match):
Transformer-XL 1.00 / 1.00, SHA-RNN 0.43 / 0, LSTM 0.126 / 0, Transformer 0.126 / 0, RMT
0.126 / 0, NTM 0.125 / 0. ``valid_accuracy`` is the per-symbol accuracy on held-out
episodes, ``valid_exact_match`` the fraction of episodes copied without an error.

Runtime: measured 4 min 49 s for the whole sweep (all six models registered; per run
30-93 s of training after start-up, the NTM slowest) with ``--parallel 2`` on a 2-core CPU
that other jobs were loading at the same time (load average 17-19), so expect less on an
idle laptop. On one GPU the sweep takes about a minute, mostly compilation (not measured).
The command prints the table when it finishes, writes
``runs/compare/results.md`` and ``results.csv`` and plots ``runs/compare/plots/*.png``;
``recurrentlab results runs/compare`` rebuilds them.

Sweep: ``config_arg`` picks the model (``get_config("ntm")`` trains just one).
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.sweep import sweep
from recurrentlab.sweep.presets import MODELS, scaled_model, tiny

SEGMENT = 8  # tokens per model call
LENGTH = 12  # symbols to copy: each answer lies LENGTH + 1 = 13 tokens after its input

MEMORY = {"transformer_xl": 16, "sha_rnn": 16, "rmt": 8, "ntm": 16}  # cache/memory/tokens/slots
NTM_SIZE = dict(controller_size=32, memory_width=8)  # its step is sequential: keep it small


def get_config(arg: str | None = None):
    model = arg or "lstm"
    c = base_config()
    c.seed = 0  # parameters and data
    c.model = scaled_model(model, "cpu", segment_len=SEGMENT,  # tiny sizes, no dropout
                           memory=MEMORY.get(model), **(NTM_SIZE if model == "ntm" else {}))
    c.data = data_config(
        "synthetic",
        task="copy",  # x_1..x_L <sep> [x_1..x_L]
        bits=3,  # 8 symbols: chance accuracy 1/8
        min_len=LENGTH,  # fixed length L
        max_len=LENGTH,  # episodes of 2L + 1 = 25 tokens
        mode="stream",  # episodes follow each other and span segments
        eval_windows=8,  # held-out windows per evaluation
    )
    t = c.train
    t.batch_size = 16  # streams
    t.segment_len = SEGMENT  # S
    t.bptt_segments = 4  # K: gradient horizon K*S = 32 tokens > an episode
    t.num_steps = 300  # the same step budget for every model
    t.optimizer = "adam"  # Adam
    t.lr = 3e-3  # high for tiny models and few steps
    t.warmup_steps = 20  # short warmup
    t.clip_norm = 1.0  # global-norm clipping
    t.log_every = 25  # train records
    t.eval_every = 100  # held-out accuracy along the way (best_* columns)
    t.checkpoint_every = 100  # resume points
    c.eval.batch_size = 16  # evaluation streams
    c.mesh.data_axis = 1  # one device: the runs share the CPU
    return c


def get_sweep(arg: str | None = None):
    """``arg``: None (all six models), or ``"memory"``: NTM, RMT and SHA-RNN for 4 steps on
    2-segment windows, for the memory inspection notebook."""
    if arg == "memory":  # 4 steps on windows of 2 segments: the pictures, not the learning
        return [{**run, "train.bptt_segments": 2, "train.num_steps": 4,
                 "train.checkpoint_every": 4, "train.log_every": 2}
                for run in tiny(sweep("config_arg", ["ntm", "rmt", "sha_rnn"]))]
    return sweep("config_arg", list(MODELS))
