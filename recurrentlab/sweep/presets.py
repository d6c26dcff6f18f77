"""Model sizes shared by the ablation sweeps in ``experiments/sweeps/``.

``scaled_model(name, scale, segment_len=..., memory=...)`` returns ``config.model`` for one of
the six models at one of two scales, so that every sweep compares the same models:

* ``"cpu"``: tiny (about 10-40k parameters; width 32-64), no dropout, trains a few hundred
  steps on a laptop CPU in a minute or two; for synthetic tasks with a small vocabulary.
* ``"gpu"``: small-but-real (about 1-5M parameters; width 256), for one GPU.

``memory`` is the model's memory knob, whatever its name: Transformer-XL and SHA-RNN
``mem_len`` (states kept), RMT ``num_mem_tokens``, NTM ``memory_slots``; it is ignored by the
LSTM and the Transformer, whose only state is the LSTM cell or nothing. ``memory_field(name)``
says which field it is, for sweeps over memory size.

The synthetic-task setup (the experiment protocol of ``protocol.py``: capability first)
---------------------------------------------------------------------------------------
The sweeps are synthetic tasks, so ``scaled_model`` gives each family the setup that lets it
learn them, not its paper's language-model recipe (the LM configs in ``experiments/text`` and
``experiments/enwik8`` keep the authors' init):

* LSTM: ``embed_init="normal"`` (N(0, 1) embeddings; AWD's uniform ±0.1 leaves a small LSTM
  on the unigram plateau — measured: delayed recall D = 8 at chance after 1,500 steps, solved
  by step 200 with N(0, 1)), and ``chrono_init=longest_lag`` (Tallec & Ollivier 2018) when the
  sweep passes the longest dependency it asks for (measured: D = 24 inside a 64-token horizon
  at chance after 2,000 steps without it, solved by step 300 with ``chrono_init=64``).
* NTM: Adam at up to 1e-2 (its lr grid is one step higher than the others'); everything
  else as the paper's copy setup.
* RMT: its grid is one step lower (3e-4..3e-3): at 3e-3 and above the tiny RMT never learns to
  write the value into its memory tokens (its write rows put 1-2 % of their attention on it),
  at 1e-3 it does (99.8 %; delayed recall across a segment solved in 500-700 steps, 3 seeds).
  The memory rows enter about 9x larger than the √d-scaled token rows at d = 32 (the
  reference has the same mismatch, 2.2x at its d = 512), which narrows the rates that work.
* SHA-RNN, Transformer, Transformer-XL, RMT: their own inits already learn the controls.

:data:`LR_GRID` is the per-model learning-rate grid every comparison sweeps
(:func:`model_grid`); ``recurrentlab results`` keeps the best learning rate of each cell by
validation accuracy. :data:`CARRIES` says in words what each model carries between segments
(a column of the results table).
"""

from __future__ import annotations

import ml_collections

from recurrentlab.models import model_config
from recurrentlab.sweep.spec import product, sweep

MODELS = ("lstm", "sha_rnn", "transformer", "transformer_xl", "rmt", "ntm")

MEMORY_FIELD = {"transformer_xl": "mem_len", "sha_rnn": "mem_len", "rmt": "num_mem_tokens",
                "ntm": "memory_slots"}

NO_DROPOUT = {
    "lstm": dict(dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0),
    "sha_rnn": dict(dropout_input=0.0, dropout_hidden=0.0, dropout_attn=0.0,
                    dropout_attn_probs=0.0, dropout_output=0.0),
    "transformer": dict(dropout=0.0, attn_dropout=0.0),
    "transformer_xl": dict(dropout=0.0, attn_dropout=0.0),
    "rmt": dict(dropout=0.0, attn_dropout=0.0),
    "ntm": {},
}

SIZES = {
    "cpu": {
        "lstm": dict(embed_dim=32, hidden_dim=64, num_layers=2),
        "sha_rnn": dict(d_model=32, d_ff=64, num_layers=2, attn_layers=(0,)),
        "transformer": dict(d_model=32, num_heads=2, d_ff=64, num_layers=2),
        "transformer_xl": dict(d_model=32, num_heads=2, d_ff=64, num_layers=2),
        "rmt": dict(d_model=32, num_heads=2, d_ff=64, num_layers=2),
        "ntm": dict(controller_size=64, embed_dim=16, memory_width=16, input_mode="embed"),
    },
    "gpu": {
        "lstm": dict(embed_dim=256, hidden_dim=512, num_layers=3),
        "sha_rnn": dict(d_model=256, d_ff=1024, num_layers=4, attn_layers=(-2,)),
        "transformer": dict(d_model=256, num_heads=4, d_ff=1024, num_layers=4),
        "transformer_xl": dict(d_model=256, num_heads=4, d_ff=1024, num_layers=4),
        "rmt": dict(d_model=256, num_heads=4, d_ff=1024, num_layers=4),
        "ntm": dict(controller_size=256, embed_dim=64, memory_width=32, input_mode="embed"),
    },
}


# The setup that lets each family learn small synthetic tasks (see the module docstring).
SYNTHETIC_SETUP = {
    "lstm": dict(embed_init="normal"),
    "sha_rnn": {},
    "transformer": {},
    "transformer_xl": {},
    "rmt": {},
    "ntm": {},
}

# Adam learning rates each model is tried at; the report keeps the best per cell.
LR_GRID = {
    "lstm": (1e-3, 3e-3, 1e-2),
    "sha_rnn": (1e-3, 3e-3, 1e-2),
    "transformer": (1e-3, 3e-3, 1e-2),
    "transformer_xl": (1e-3, 3e-3, 1e-2),
    "rmt": (3e-4, 1e-3, 3e-3),
    "ntm": (3e-3, 1e-2, 3e-2),
}

# What each model carries from one segment to the next (a results-table column).
CARRIES = {
    "lstm": "LSTM state (h, c)",
    "sha_rnn": "LSTM state + last m states (attention memory)",
    "transformer": "nothing",
    "transformer_xl": "last m states per layer (cache, no gradient)",
    "rmt": "m memory tokens",
    "ntm": "controller state + N x M memory",
}


# Constant overrides that turn a sweep into a seconds-long demonstration (notebooks, tests).
TINY = {"train.num_steps": 12, "train.batch_size": 8, "eval.batch_size": 8,
        "train.eval_every": 0, "train.checkpoint_every": 12, "train.log_every": 4,
        "train.warmup_steps": 0, "data.eval_windows": 2}


def tiny(runs: list[dict]) -> list[dict]:
    """``runs`` with the :data:`TINY` overrides added to each."""
    return [{**run, **TINY} for run in runs]


def memory_field(name: str) -> str | None:
    """The model field that sets its memory size (None for LSTM and Transformer)."""
    return MEMORY_FIELD.get(name)


def scaled_model(name: str, scale: str = "cpu", *, segment_len: int, memory: int | None = None,
                 longest_lag: int | None = None, **fields) -> ml_collections.ConfigDict:
    """``config.model`` for ``name`` at ``scale`` with its synthetic-task setup
    (:data:`SYNTHETIC_SETUP`); ``memory`` defaults to ``segment_len`` states (XL, SHA-RNN),
    8 memory tokens (RMT) or 32 slots (NTM). ``longest_lag``: the longest dependency (in
    tokens) the experiment asks for; it sets the LSTM's chrono initialisation. ``fields``
    override anything."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; use one of {', '.join(MODELS)}")
    if scale not in SIZES:
        raise ValueError(f"unknown scale '{scale}'; use cpu or gpu")
    values = {**SIZES[scale][name], **NO_DROPOUT[name], **SYNTHETIC_SETUP[name]}
    if name == "lstm" and longest_lag is not None:
        values["chrono_init"] = max(3, longest_lag)
    default_memory = {"transformer_xl": segment_len, "sha_rnn": segment_len, "rmt": 8,
                      "ntm": 32}
    if name in MEMORY_FIELD:
        values[MEMORY_FIELD[name]] = default_memory[name] if memory is None else memory
    if name == "transformer":
        values["max_len"] = segment_len  # learned positions for one segment
    if name == "rmt":
        values["backbone"] = "transformer_xl"  # the paper's backbone, without an XL cache
        values["mem_len"] = 0
    values.update(fields)
    return model_config(name, **values)


def model_grid(models, *axes: list[dict], lrs: int = 3) -> list[dict]:
    """Runs of each model in ``models`` at each learning rate of its :data:`LR_GRID` (the
    upper ``lrs`` of them), times ``axes`` (``product`` of sweep axes): the per-model tuning
    every comparison needs."""
    runs = []
    for model in models:
        grid = LR_GRID[model.partition(",")[0]][-lrs:]  # "<model>,full": the model's grid
        runs.extend(product(sweep("config_arg", [model]), sweep("train.lr", grid), *axes))
    return runs


def split_arg(arg: str | None, default_model: str = "lstm") -> tuple[str, str]:
    """``"lstm"`` -> ("lstm", "cpu"); ``"lstm,full"`` -> ("lstm", "gpu")."""
    model, _, scale = (arg or default_model).partition(",")
    return model, ("gpu" if scale in ("full", "gpu") else "cpu")
