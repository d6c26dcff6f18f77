"""Compile time of every model's train step against K, ``train.scan_unroll``, enwik8 configs.

    recurrentlab bench --config experiments/bench/compile_time.py --out runs/bench/compile_time

* K = ``train.bptt_segments`` in (1, 8, 64) for every registered model at the shapes of
  ``experiments/bench/models.py`` ("small"): the K segments are a ``lax.scan``, so compile
  time should not grow with K.
* ``train.scan_unroll`` in (1, 2, 4) at K = 8 for lstm and sha_rnn: compile time and tokens/s.
* Every ``experiments/enwik8/*.py`` run config, compiled on abstract inputs
  (``jax.ShapeDtypeStruct`` / ``nnx.eval_shape``, no parameter allocated); target < 60 s on CPU.

Expected runtime: 20-40 minutes on a 2-core CPU (mostly compilation). Expected result:
max ÷ min compile time over K near 1 for every model; unroll > 1 compiles slower and may run
slightly faster; every enwik8 config compiles within the budget.
"""

from pathlib import Path

from recurrentlab.bench import bench_config
from recurrentlab.config import load_config_file


def get_config(arg: str | None = None):
    if arg not in (None, "tiny"):
        raise ValueError(f"unknown config argument '{arg}'; use tiny or nothing")
    tiny = arg == "tiny"
    models = load_config_file(Path(__file__).with_name("models.py"), "tiny" if tiny else "small")
    c = bench_config("compile_time")
    c.vocab_size = 256  # bytes (also the enwik8 configs' vocabulary)
    c.entries = models.entries  # every registered model, at the models.py shapes
    c.compile_segments = (1, 2) if tiny else (1, 8, 64)  # K values compared
    c.unrolls = (1, 2) if tiny else (1, 2, 4)  # train.scan_unroll values
    c.unroll_segments = 2 if tiny else 8  # K of the unroll study
    c.unroll_entries = ("lstm", "sha_rnn")  # the unroll study runs these two models
    c.unroll_steps = True  # run the step at each unroll too (tokens/s)
    c.warmup, c.repeats, c.steps_per_repeat = 1, 2, 1  # timing of the unroll study
    c.run_configs = () if tiny else ("experiments/enwik8/*.py",)  # compiled abstractly
    c.compile_budget_s = 60.0  # enwik8 compile-time target on CPU
    return c
