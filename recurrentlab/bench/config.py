"""Bench configs: the fields every ``experiments/bench/*.py`` starts from.

A bench config is a ConfigDict with ``kind`` (which benchmark) and ``entries``: one
ConfigDict per measured row, ``{"model": model_config(...), "train": {...},
"steps_per_repeat": n}``, where ``train`` is a full ``base_config().train`` (so
``--config.entries.lstm.train.remat=True`` works) and ``n`` (0: the config's) the row's
consecutive train steps per timed repeat.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from recurrentlab.config import base_config

KINDS = ("throughput", "memory_vs_horizon", "compile_time", "profile")


def bench_config(kind: str = "throughput") -> ml_collections.ConfigDict:
    """The defaults of every bench config."""
    c = ml_collections.ConfigDict()
    c.kind = kind  # throughput | memory_vs_horizon | compile_time | profile
    c.seed = 0  # parameters and the random token windows
    c.vocab_size = 256  # byte-level vocabulary
    c.warmup = 2  # untimed repeats after compilation
    c.repeats = 5  # timed repeats (interleaved with the peers'); the median is reported
    c.steps_per_repeat = 2  # train steps per timed repeat (one block_until_ready at its end)
    c.min_repeat_s = 0.0  # > 0: each side's steps per repeat raised to last this long
    #                       (measure.calibrate_steps); 0: steps_per_repeat for every side
    c.generate_tokens = 16  # timed greedy tokens for generation latency; 0 skips it
    c.threads = 0  # torch CPU threads; 0 = the CPUs XLA's own pool uses (sched_getaffinity)
    c.peers = ("lstm_scan", "flax", "torch", "jax_rnn")  # peer columns for lstm entries
    c.entries = ml_collections.ConfigDict()  # label -> {model, train}

    # memory_vs_horizon
    c.horizon_segments = (1, 2, 4, 8)  # K values (horizon = K * segment_len tokens)
    c.remat = (False, True)  # train.remat values compared at each K

    # compile_time
    c.compile_segments = (1, 8, 64)  # K values whose compile times are compared
    c.unrolls = (1, 2, 4)  # train.scan_unroll values measured at K = unroll_segments
    c.unroll_segments = 8  # K for the unroll study
    c.unroll_entries = ()  # labels of the entries in the unroll study; () = every entry
    c.unroll_steps = True  # also run the step at each unroll (tokens/s), not only compile it
    c.run_configs = ()  # run config files compiled on abstract inputs (e.g. enwik8)
    c.compile_budget_s = 60.0  # the run configs' compile time target

    # profile (any config: --config.kind=profile; bench/profile.py)
    c.profile_steps = 2  # train steps traced with jax.profiler, after `warmup` runs of them
    c.profile_top = 25  # operations listed per program, slowest first
    return c


def entry(model: ml_collections.ConfigDict, *, steps_per_repeat: int = 0,
          **train: Any) -> ml_collections.ConfigDict:
    """One row: ``model`` and a full train section with ``train`` overrides set.

    ``steps_per_repeat``: consecutive train steps per timed repeat for this row (0: the
    config's ``steps_per_repeat``); a step of a few milliseconds needs several, or the first
    step after a peer's, slowed by the caches the peer left cold, dominates the repeat."""
    t = base_config().train
    t.update(train)
    t.progress_bar = False
    return ml_collections.ConfigDict({"model": model, "train": t,
                                      "steps_per_repeat": steps_per_repeat})
