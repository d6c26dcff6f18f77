"""Quick comparison: the six models on one long-dependency task, on a CPU, in minutes.

    recurrentlab sweep experiments/sweeps/quick_comparison.py --workdir runs/compare --parallel 2

Question: which models can carry one symbol across a gap longer than their segment? The task
is delayed recall in stream mode (``<mark> v d_1..d_24 <query> [v]``, 8 symbols: chance is
1/8): every episode (28 tokens) is longer than a segment (16 tokens), so the answer is never
in the same segment as the value. The gradient horizon is 2 segments (32 tokens) for every
model, long enough to cover an episode.

Expected pattern (tiny models, 300 steps, so read it as a smoke-sized comparison, not a
benchmark): the Transformer stays at chance (its context is the current segment only, it
has no state). Transformer-XL can look 16 cached tokens back (enough for the 28-token
episodes) and the recurrent models (LSTM, SHA-RNN, NTM) and RMT (memory tokens) carry state
across segments, so they can beat chance; which of them get there within 300 steps at this
size is what the table shows. ``valid_accuracy`` is the masked (answer-token) accuracy on
held-out episodes.

Runtime: measured 2026-11-26 on a shared 2-core CPU with ``--parallel 2`` (all six models
registered): MEASURED_TIME. On one GPU the whole sweep takes about a minute, mostly
compilation (not measured). The command prints the table when it finishes, writes
``runs/compare/results.md`` and ``results.csv``, and plots ``runs/compare/plots/*.png``;
``recurrentlab results runs/compare`` rebuilds them.

Sweep: ``config_arg`` picks the model (``get_config("ntm")`` trains just one).
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.sweep import sweep
from recurrentlab.sweep.presets import MODELS, scaled_model, tiny

SEGMENT = 16  # tokens per model call
DISTANCE = 24  # distractors between the value and the query: episodes of 28 tokens

NTM_SIZE = dict(controller_size=32, memory_width=8, memory_slots=16)  # its step is sequential


def get_config(arg: str | None = None):
    model = arg or "lstm"
    c = base_config()
    c.seed = 0  # parameters and data
    c.model = scaled_model(model, "cpu", segment_len=SEGMENT,  # tiny sizes, no dropout
                           **(NTM_SIZE if model == "ntm" else {}))
    c.data = data_config(
        "synthetic",
        task="delayed_recall",  # <mark> v d_1..d_D <query> [v]
        distance=DISTANCE,  # D: the gap to bridge
        num_symbols=8,  # values and distractors; chance accuracy 1/8
        mode="stream",  # episodes follow each other in a stream and span segments
        eval_windows=8,  # held-out windows per evaluation
    )
    t = c.train
    t.batch_size = 16  # streams
    t.segment_len = SEGMENT  # S
    t.bptt_segments = 2  # K: gradient horizon K*S = 32 tokens >= an episode
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
    """``arg``: None (all six models), or ``"memory"``: NTM, RMT and SHA-RNN at 12 steps, for
    the memory inspection notebook."""
    if arg == "memory":
        return tiny(sweep("config_arg", ["ntm", "rmt", "sha_rnn"]))
    return sweep("config_arg", list(MODELS))
