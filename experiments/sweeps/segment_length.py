"""Segment length: how much does each model lose when it sees the input in shorter pieces?

    recurrentlab sweep experiments/sweeps/segment_length.py --workdir runs/segment_len --parallel 4
    recurrentlab sweep experiments/sweeps/segment_length.py:full --workdir runs/segment_length_full
    recurrentlab results runs/segment_len

Models: Transformer, Transformer-XL, RMT and SHA-RNN, at several segment lengths S, on two
tasks (``get_config("<model>,<task>[,full]")``):

* ``retrieval``: associative retrieval (RMT paper), episodic: ``k_1 v_1 .. k_8 v_8 q <query>
  [v]`` (19 tokens), cut into segments of S; the gradient spans the whole episode (the
  window is the episode) and the carry is reset between episodes, so only what a model
  passes from segment to segment (XL cache of S states, RMT memory tokens, SHA-RNN LSTM
  state and attention memory of S states) lets it answer when S is shorter than the episode.
* ``text``: byte-level language modelling (CPU: the embedded licence corpus, about 100 KB;
  ``full``: enwik8), the window a single segment, carry across windows.

Expected pattern. Retrieval: the Transformer is at chance (1/10) once S is below the
episode length and near 1 above it; RMT and SHA-RNN keep most of their accuracy at short S
(their state carries the pairs), XL keeps what its cache covers (2S tokens). Text: bits per
byte fall as S grows for every model; the Transformer gains most, XL and RMT less (they see
the past through cache and memory), SHA-RNN least (its LSTM carries the context at any S);
per token, training is fastest at short S for the recurrent models.

Protocol (retrieval): each model at the 3 learning rates of its grid, ``train.stop_when =
accuracy>=0.99``; the segment that holds the whole episode (S = 32 on CPU) is each model's
control cell, so ``recurrentlab results`` marks a model that fails it as not trained to
capability and keeps the best learning rate per cell.

Scales: default (CPU) tiny models, S in {4, 8, 16, 32}, 300 steps, 2 seeds: 4 models x 4 S
x (3 learning rates for retrieval + 1 for text) x 2 seeds = 128 runs of 1-2 min on a laptop
core (estimated, not measured as a whole). ``full`` (one GPU): 1-5M-parameter models,
S in {32, 64, 128, 256, 512}, enwik8 (``data/enwik8``; see experiments/enwik8), 20,000 steps
for text and 5,000 for retrieval, 2 seeds: 80 runs, roughly a day on one GPU (not measured).
"""

from recurrentlab.config import base_config
from recurrentlab.data import build_dataset, data_config
from recurrentlab.sweep import product, seeds, sweep
from recurrentlab.sweep.presets import model_grid, scaled_model, tiny

MODELS = ("transformer", "transformer_xl", "rmt", "sha_rnn")
TASKS = ("retrieval", "text")
NUM_PAIRS = 8  # associative retrieval: key-value pairs per episode
EPISODE = 2 * NUM_PAIRS + 3  # its tokens; a window of EPISODE - 1 inputs holds it
SEGMENTS = {"cpu": (4, 8, 16, 32), "gpu": (32, 64, 128, 256, 512)}
STEPS = {("cpu", "retrieval"): 300, ("cpu", "text"): 300, ("gpu", "retrieval"): 5000,
         ("gpu", "text"): 20000}


def parse(arg: str | None) -> tuple[str, str, str]:
    parts = (arg or "transformer").split(",")
    model = parts[0]
    task = next((p for p in parts[1:] if p in TASKS), "retrieval")
    scale = "gpu" if any(p in ("full", "gpu") for p in parts[1:]) else "cpu"
    return model, task, scale


def get_config(arg: str | None = None):
    """``arg``: ``"<model>,<retrieval|text>[,full]"``."""
    model, task, scale = parse(arg)
    segment = SEGMENTS[scale][1]  # swept with train.segment_len
    c = base_config()
    c.seed = 0  # parameters and data (swept)
    t = c.train
    if task == "retrieval":
        c.data = data_config(
            "synthetic",
            task="associative_retrieval",  # k_1 v_1 .. k_K v_K q <query> [v]
            num_pairs=NUM_PAIRS,  # K pairs: 19-token episodes
            mode="episodic",  # one episode per window, carry reset between episodes
            eval_windows=8,  # held-out windows
        )
        assert build_dataset(c.data, seed=0).max_episode_len() == EPISODE
        t.segment_len = segment  # S (swept)
        t.bptt_segments = -(-(EPISODE - 1) // segment)  # the window holds the whole episode
        t.carry_across_windows = False  # episodic
        t.batch_size = 32 if scale == "cpu" else 128  # episodes per step
    else:
        c.data = data_config("embedded") if scale == "cpu" else data_config("enwik8")  # bytes
        t.segment_len = segment  # S (swept)
        t.bptt_segments = 1  # one segment per window; the carry crosses windows
        t.carry_across_windows = True  # stateful
        t.batch_size = 16 if scale == "cpu" else 32  # streams
        c.eval.max_windows = 20 if scale == "cpu" else 200  # a fixed slice of the valid split
    c.model = scaled_model(model, scale, segment_len=segment)  # memory = one segment
    t.num_steps = STEPS[(scale, task)]  # optimiser steps
    t.lr = 3e-3 if scale == "cpu" else 5e-4  # Adam
    t.warmup_steps = 20 if scale == "cpu" else 500  # linear warmup
    t.schedule = "cosine"  # decay over the run
    t.final_lr_fraction = 0.1  # to 10% of lr
    t.clip_norm = 1.0  # global-norm clipping
    t.log_every = 50  # train records
    t.eval_every = t.num_steps // 3  # evaluations along the way
    if task == "retrieval":
        t.stop_when = "accuracy>=0.99"  # solved: steps to solve
    t.checkpoint_every = t.num_steps // 3  # resume points
    c.eval.batch_size = t.batch_size  # evaluation streams / episodes
    c.mesh.data_axis = 1 if scale == "cpu" else 0  # CPU: one device per run
    return c


def get_sweep(arg: str | None = None):
    """``arg``: None (CPU scale), ``"full"``, or ``"tiny"`` (Transformer and RMT on retrieval
    at S = 4 and 8, 12 steps: 4 runs of seconds, for the notebook). The model's memory
    follows S (swept with it: the XL cache and the SHA-RNN memory hold one segment)."""
    scale = "gpu" if arg in ("full", "gpu") else "cpu"
    suffix = ",full" if scale == "gpu" else ""
    runs = []
    if arg == "tiny":
        runs = tiny([{"config_arg": f"{m},retrieval", "train.segment_len": s,
                      "train.bptt_segments": -(-(EPISODE - 1) // s),
                      **({"model.max_len": s} if m == "transformer" else {})}
                     for m in ("transformer", "rmt") for s in (4, 8)])
        return [{**run, "train.eval_every": 6} for run in runs]  # stop_when is checked there
    for model in MODELS:
        memory = {"transformer_xl": "model.mem_len", "sha_rnn": "model.mem_len",
                  "transformer": "model.max_len"}.get(model)
        for task in TASKS:
            by_segment = [{"train.segment_len": s, **({memory: s} if memory else {})}
                          for s in SEGMENTS[scale]]
            if task == "text":  # language modelling: no control, the paper-scale lr
                runs += product(sweep("config_arg", [f"{model},{task}{suffix}"]), by_segment,
                                seeds(2))
                continue
            for run in by_segment:  # the window must still hold one whole episode
                run["train.bptt_segments"] = -(-(EPISODE - 1) // run["train.segment_len"])
                # a segment that holds the episode is the control: no carry needed
                run["protocol.control"] = run["train.segment_len"] >= EPISODE - 1
            runs += model_grid([f"{model},{task}{suffix}"], by_segment, seeds(2))
    return runs
