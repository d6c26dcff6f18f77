"""enwik8 at full scale: the papers' configs, trained on an equal token budget.

    recurrentlab sweep experiments/sweeps/enwik8_comparison.py --workdir runs/enwik8_comparison
    recurrentlab sweep experiments/sweeps/enwik8_comparison.py:paper --workdir runs/enwik8_paper
    recurrentlab results runs/enwik8_comparison

Question: at the sizes their papers used, what bits per byte does each model reach for the
same number of training bytes, and at what speed? Each run is the model's own enwik8 config
(``experiments/enwik8/<model>.py``: AWD-LSTM 47M, SHA-RNN 54M, Transformer and
Transformer-XL 41M, RMT 41M on the XL backbone) with only the number of steps changed so that
every run reads ``BUDGET_TOKENS`` training bytes (batch x segment x bptt_segments x steps);
learning-rate schedules stretch with it (cosine over the run; step boundaries scaled). The
NTM has no published enwik8 configuration and a sequential step per byte; it is left out.

``get_sweep(arg)``: default, one seed per model at a budget of 1.13e9 bytes (the
Transformer-XL/RMT papers' 400k steps x 22 x 128, about 12.5 epochs); ``"paper"``: each
config's own number of steps (unequal budgets, the published numbers).

Expected pattern: with equal bytes, Transformer-XL (1.14 bpc in the RMT paper at mem 200)
and RMT (1.13 with 10 memory tokens + cache) lead the 41M models; the plain Transformer
(segment 128, no cache) trails at about 1.40; SHA-RNN (1.07-1.10 in its paper after 32+ epochs,
~3.3e9 bytes) and AWD-LSTM (1.23 after 50 epochs) sit between or below depending on how much
of their published budget 1.1e9 bytes is (a third for SHA-RNN, a quarter for the LSTM).
``tokens_per_sec`` gives the cost side. Data: ``data/enwik8`` (see experiments/enwik8).

Runtime (not measured here): each run is 1.1e9 training bytes; on one H100 roughly 10-20 h
per model (the recurrent models are latency-bound), 2-4 days for the sweep on one GPU; a TPU
or several GPUs run the five in parallel (``--launcher`` of a cluster, one run per node).
"""

import math
from pathlib import Path

from recurrentlab.config import load_config_file
from recurrentlab.sweep import sweep

MODELS = ("lstm", "sha_rnn", "transformer", "transformer_xl", "rmt")
BUDGET_TOKENS = 400_000 * 22 * 128  # training bytes for every model: 1.13e9
CONFIGS = Path(__file__).resolve().parent.parent / "enwik8"  # experiments/enwik8/<model>.py


def get_config(arg: str | None = None):
    """``arg``: ``"<model>"`` (equal budget) or ``"<model>,paper"`` (the config as published)."""
    model, _, mode = (arg or "transformer_xl").partition(",")
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}'; use one of {', '.join(MODELS)}")
    if mode not in ("", "paper"):
        raise ValueError(f"unknown mode '{mode}'; use '{model}' or '{model},paper'")
    c = load_config_file(CONFIGS / f"{model}.py")  # the paper's config, unchanged
    if mode == "paper":
        return c
    t = c.train
    per_step = t.batch_size * t.segment_len * t.bptt_segments  # training bytes per step
    steps = math.ceil(BUDGET_TOKENS / per_step)  # equal budget in bytes
    scale = steps / t.num_steps
    t.decay_boundaries = tuple(round(b * scale) for b in t.decay_boundaries)  # stretch schedule
    t.warmup_steps = min(t.warmup_steps, steps // 10)  # warmup never dominates
    t.num_steps = steps  # 1.13e9 bytes whatever the model's batch and segment
    t.checkpoint_every = min(t.checkpoint_every, max(1, steps // 20))  # resumable
    t.eval_every = max(1, steps // 10) if t.eval_every else 0  # ten evaluations
    return c


def get_sweep(arg: str | None = None):
    """``arg``: None (equal budget) or ``"paper"`` (each paper's own budget)."""
    suffix = ",paper" if arg == "paper" else ""
    return sweep("config_arg", [m + suffix for m in MODELS])
