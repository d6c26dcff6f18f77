"""Measurement primitives: compile a model's train step, time it, read its memory.

Everything measures the trainer's own step (``recurrentlab.train.trainer.make_train_step``):
the K-segment window loss under ``lax.scan``, gradients, the global norm, the optimiser update
and the finite-check, exactly as ``recurrentlab train`` runs it.

Shape legend: b streams (``train.batch_size``), w window tokens (``segment_len * bptt_segments``).

Peak memory has two sources, and every number says which one it is:

* ``"memory_analysis"``: XLA's static buffer assignment of the compiled executable,
  ``temp + argument + output`` bytes (``Compiled.memory_analysis()``). It needs no execution, so it
  works on CPU and for shapes that would not fit; it counts the step's arguments (parameters,
  optimiser state, carry, batch) and its outputs in full, even where XLA could alias them.
* ``"peak_bytes_in_use"``: the accelerator allocator's high-water mark
  (``device.memory_stats()``), where the backend reports one (GPU, TPU). It is a process-wide
  maximum that never goes down, so rows measured later include earlier peaks when larger.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from recurrentlab.config import base_config
from recurrentlab.models import build_model
from recurrentlab.models.layers import count_leaves
from recurrentlab.sample import Decoder, make_segment_fn
from recurrentlab.train.carry_gradient import init_influence, mode_of
from recurrentlab.train.distributed import Placement
from recurrentlab.train.optim import make_optimizer
from recurrentlab.train.state import TrainState
from recurrentlab.train.trainer import init_train_state, make_train_step


def run_config(model: ml_collections.ConfigDict, train: ml_collections.ConfigDict | dict,
               *, seed: int = 0) -> ml_collections.ConfigDict:
    """A full run config (``base_config()``) for ``model`` with ``train`` fields set on it."""
    c = base_config()
    c.seed = seed
    c.model = ml_collections.ConfigDict(model.to_dict() if hasattr(model, "to_dict") else model)
    train = train.to_dict() if hasattr(train, "to_dict") else dict(train)
    c.train.update(train)
    c.train.progress_bar = False
    c.eval.batch_size = c.train.batch_size
    c.mesh.data_axis = 1  # one device: a benchmark of the step, not of the mesh
    return c


def window_len(config: ml_collections.ConfigDict) -> int:
    return config.train.segment_len * config.train.bptt_segments


def tokens_per_step(config: ml_collections.ConfigDict) -> int:
    return config.train.batch_size * window_len(config)


@contextlib.contextmanager
def no_compilation_cache() -> Iterator[None]:
    """Compile for real: a persistent-cache hit would time a disk read, not the compiler."""
    try:
        previous = jax.config.jax_enable_compilation_cache
    except AttributeError:  # a jax without the switch
        yield
        return
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", previous)


def random_batch(config: ml_collections.ConfigDict, vocab_size: int, seed: int = 0
                 ) -> dict[str, np.ndarray]:
    """A window of uniform random tokens, every target counted, no stream reset."""
    b, w = config.train.batch_size, window_len(config)
    tokens = np.random.default_rng(seed).integers(0, vocab_size, size=(b, w + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
            "mask": np.ones((b, w), np.float32), "reset": np.zeros((b,), bool)}


def abstract_batch(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
    b, w = config.train.batch_size, window_len(config)
    return {"inputs": jax.ShapeDtypeStruct((b, w), jnp.int32),
            "targets": jax.ShapeDtypeStruct((b, w), jnp.int32),
            "mask": jax.ShapeDtypeStruct((b, w), jnp.float32),
            "reset": jax.ShapeDtypeStruct((b,), jnp.bool_)}


def abstract_train_inputs(config: ml_collections.ConfigDict, vocab_size: int):
    """``(graphdef, args)`` of the train step with every array a ``jax.ShapeDtypeStruct``.

    Nothing is allocated: the model is built under ``nnx.eval_shape`` and the optimiser state
    and carry come from ``jax.eval_shape``, so a 50M-parameter model costs no memory to lower.
    """
    abstract_model = nnx.eval_shape(
        lambda: build_model(config.model, vocab_size=vocab_size, seed=config.seed))
    graphdef, params, rest = nnx.split(abstract_model, nnx.Param, ...)
    tx = make_optimizer(config.train)
    opt_state = jax.eval_shape(tx.init, params)
    fresh_carry = jax.eval_shape(
        lambda p, r: nnx.merge(graphdef, p, r).init_carry(config.train.batch_size), params, rest)
    influence = jax.eval_shape(  # train.carry_gradient's influence (None for "none")
        lambda p, r: init_influence(nnx.merge(graphdef, p, r), mode_of(config),
                                    config.train.batch_size), params, rest)
    state = TrainState(params=params, opt_state=opt_state, carry=fresh_carry,
                       step=jax.ShapeDtypeStruct((), jnp.int32),
                       rng=jax.eval_shape(lambda: jax.random.PRNGKey(0)), influence=influence)
    return graphdef, tx, (state, rest, fresh_carry, abstract_batch(config))


def count_params(params: Any) -> int:
    """Scalars in a params pytree (``models.layers.count_leaves``)."""
    return count_leaves(params)


def nbytes(tree: Any) -> int:
    """Bytes of a pytree of arrays or ``ShapeDtypeStruct`` s."""
    return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def memory_analysis_bytes(compiled: Any) -> dict[str, int] | None:
    """``temp``, ``argument``, ``output``, ``alias`` and ``peak = temp + argument + output``."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - a backend without the analysis
        return None
    if stats is None:
        return None
    out = {name: int(getattr(stats, f"{name}_size_in_bytes", 0))
           for name in ("temp", "argument", "output", "alias", "generated_code")}
    out["peak"] = out["temp"] + out["argument"] + out["output"]
    return out


def device_peak_bytes() -> int | None:
    """The allocator's ``peak_bytes_in_use`` on the default device, where it is reported."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - CPU clients may raise instead of returning None
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


def compile_step(step: Callable, args: tuple) -> tuple[Any, dict[str, float]]:
    """Lower and compile the jitted ``step`` for ``args`` (arrays or abstract), timing both."""
    with no_compilation_cache():
        start = time.perf_counter()
        lowered = step.lower(*args)
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        done = time.perf_counter()
    return compiled, {"lower_s": lowered_at - start, "compile_s": done - lowered_at,
                      "total_s": done - start}


def compile_only(config: ml_collections.ConfigDict, vocab_size: int) -> dict[str, Any]:
    """Compile ``config``'s train step on abstract inputs: times, memory analysis, sizes."""
    graphdef, tx, args = abstract_train_inputs(config, vocab_size)
    step = make_train_step(graphdef, config, tx)
    compiled, times = compile_step(step, args)
    state, _, fresh_carry, _ = args
    return {"compile": times, "memory": memory_analysis_bytes(compiled),
            "params": count_params(state.params), "carry_bytes": nbytes(fresh_carry),
            "param_bytes": nbytes(state.params), "influence_bytes": nbytes(state.influence)}


def interleaved_times(runs: dict[str, Callable[[], Any]], *, warmup: int, repeats: int
                      ) -> dict[str, list[float]]:
    """Wall times of each of ``runs`` (callables that block until done), interleaved.

    After ``warmup`` untimed calls of each, repeat ``r`` times one call of every run, starting
    the round at a different run each time, so load from other processes on a shared machine
    falls on all of them alike and their ratios stay meaningful.
    """
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return times


def calibrate_steps(prepared: dict[str, Any], min_repeat_s: float) -> dict[str, int]:
    """Raise each prepared run's ``steps_per_repeat`` so that one repeat lasts at least
    ``min_repeat_s`` (as ``timeit``'s autorange sizes its loops); return the new counts.

    Timed interleaved, a fast step right after a slow peer's runs on the caches the peer left
    cold: the NTM's batch-32 step of ``experiments/bench/recurrent_vs_torch.py`` takes ~17 ms
    right after a torch step and ~14.7 ms from the second step on (one core, median of 6). A
    repeat of a few fast steps then times the switch between the two more than training, which
    runs step after step. Each run is called twice; the second call's time sets the count.
    """
    for run in prepared.values():
        run.run()
        start = time.perf_counter()
        run.run()
        per_step = max((time.perf_counter() - start) / run.steps_per_repeat, 1e-9)
        run.steps_per_repeat = max(run.steps_per_repeat, math.ceil(min_repeat_s / per_step))
    return {name: run.steps_per_repeat for name, run in prepared.items()}


def rate(times: list[float], *, tokens_per_run: int, steps_per_run: int) -> dict[str, Any]:
    """Tokens/s and ms per step from the median of ``times``."""
    seconds = statistics.median(times)
    return {"tokens_per_sec": tokens_per_run / seconds, "step_ms": 1e3 * seconds / steps_per_run,
            "repeat_seconds": list(times)}


class PreparedTrain:
    """A compiled train step ready to time: ``run()`` does ``steps_per_repeat`` steps.

    Each ``run()`` feeds the state forward as training does and ends with
    ``jax.block_until_ready``. ``info`` holds compile times, parameters and peak memory;
    ``model()`` is the model with the current parameters.
    """

    def __init__(self, config: ml_collections.ConfigDict, vocab_size: int, *,
                 steps_per_repeat: int):
        placement = Placement.from_config(config)
        model = build_model(config.model, vocab_size=vocab_size, seed=config.seed)
        tx = make_optimizer(config.train)
        graphdef, state, rest, fresh_carry = init_train_state(model, config, tx, placement)
        batch = placement.batch(random_batch(config, vocab_size, seed=config.seed))
        step = make_train_step(graphdef, config, tx)
        self.compiled, times = compile_step(step, (state, rest, fresh_carry, batch))
        self._args = (rest, fresh_carry, batch)
        self._graphdef, self._state = graphdef, state
        self.steps_per_repeat, self.tokens_per_step = steps_per_repeat, tokens_per_step(config)
        self.info = {"compile_s": times["total_s"], "compile": times,
                     "params": count_params(state.params)}

    @property
    def tokens_per_run(self) -> int:
        return self.tokens_per_step * self.steps_per_repeat

    def run(self) -> None:
        s = self._state
        for _ in range(self.steps_per_repeat):
            s, metrics = self.compiled(s, *self._args)
        jax.block_until_ready((s, metrics))
        self._state = s

    def memory(self) -> dict[str, Any]:
        """Peak memory, after the runs (the device high-water mark includes them)."""
        memory = memory_analysis_bytes(self.compiled)
        device_peak = device_peak_bytes()
        out = {"memory_analysis": memory, "device_peak_bytes": device_peak}
        if device_peak is not None:
            out["peak_bytes"], out["peak_source"] = device_peak, "peak_bytes_in_use"
        elif memory is not None:
            out["peak_bytes"], out["peak_source"] = memory["peak"], "memory_analysis"
        else:
            out["peak_bytes"], out["peak_source"] = None, "unavailable"
        return out

    def model(self) -> nnx.Module:
        return nnx.merge(self._graphdef, self._state.params, self._args[0])


def measure_train(config: ml_collections.ConfigDict, vocab_size: int, *, warmup: int,
                  repeats: int, steps_per_repeat: int) -> tuple[dict[str, Any], nnx.Module]:
    """Compile and time ``config``'s train step alone: ``(measurement, trained model)``."""
    prepared = PreparedTrain(config, vocab_size, steps_per_repeat=steps_per_repeat)
    times = interleaved_times({"step": prepared.run}, warmup=warmup, repeats=repeats)
    result = {**rate(times["step"], tokens_per_run=prepared.tokens_per_run,
                     steps_per_run=steps_per_repeat), **prepared.info, **prepared.memory()}
    return result, prepared.model()


def generation_latency(model: nnx.Module, *, segment_len: int, tokens: int, vocab_size: int,
                       warmup: int = 2, seed: int = 0, path: str = "auto") -> dict[str, Any]:
    """Seconds per generated token of greedy decoding of one stream, on one of the two paths
    of :mod:`recurrentlab.sample`.

    ``path="step"``: one ``decode_step`` per token (``sample.Decoder``); ``"segment"``: each
    token re-runs the current partial segment (padded to ``segment_len``) from the carry at
    the last segment boundary; ``"auto"``: the path ``sample.generate`` takes (step where the
    model has ``decode_supported``). Either way the logits are read on the host and a full
    segment advances the carry inside the token that fills it. The first ``warmup`` tokens
    (compilation) are not timed; the result is the median over the next ``tokens``.
    """
    if path == "auto":
        path = "step" if model.decode_supported else "segment"
    if path not in ("step", "segment"):
        raise ValueError(f"generation path '{path}' unknown; use auto, step or segment")
    last = int(np.random.default_rng(seed).integers(0, vocab_size))
    times = []
    if path == "step":
        decoder = Decoder(model, segment_len=segment_len)
        for i in range(warmup + tokens):
            start = time.perf_counter()
            nxt = int(np.argmax(np.asarray(decoder.feed(last))))
            jax.block_until_ready(decoder.state)
            last = nxt
            if i >= warmup:
                times.append(time.perf_counter() - start)
        return {"ms_per_token": 1e3 * statistics.median(times), "tokens": tokens, "path": path}
    run = make_segment_fn(model)
    carry = model.init_carry(1)
    segment: list[int] = []
    for i in range(warmup + tokens):
        start = time.perf_counter()
        current = segment + [last]
        padded = current + [0] * (segment_len - len(current))
        logits, _ = run(carry, jnp.asarray([padded], jnp.int32))
        nxt = int(np.argmax(np.asarray(logits[0, len(current) - 1])))
        segment.append(last)
        if len(segment) == segment_len:
            _, carry = run(carry, jnp.asarray([segment], jnp.int32))
            jax.block_until_ready(carry)
            segment = []
        last = nxt
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"ms_per_token": 1e3 * statistics.median(times), "tokens": tokens, "path": path}
