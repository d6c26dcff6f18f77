"""``train_and_evaluate(config, workdir)``: truncated-BPTT training of any registered model.

A step takes window ``t`` (``W = K*S`` tokens per stream, a pure function of ``t``), resets
the carry of streams that start afresh, scans the K segments (``step.window_loss``), applies
one optimiser update and hands the carry to the next step under ``stop_gradient`` (or resets
it when ``train.carry_across_windows`` is false). The train state
(:class:`~recurrentlab.train.state.TrainState`: params, optimiser state, carry, step, base
key, and with ``train.carry_gradient`` the influence) is checkpointed, so a resumed run
continues bit-for-bit. :class:`TrainLoop` is the run in named pieces (step, train record,
periodic evaluation, checkpoint, preemption, final evaluation and summary).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from recurrentlab import xla_cpu
from recurrentlab.config import (
    check_stop_when,
    config_hash,
    stop_condition_met,
    to_json,
    validate,
)
from recurrentlab.data import build_dataset
from recurrentlab.errors import ConfigError, NonFiniteError, WorkdirError
from recurrentlab.models import build_model, reset_carry
from recurrentlab.models.layers import count_leaves
from recurrentlab.train.carry_gradient import (
    check_carry_gradient,
    influence_gradients,
    reset_influence,
    with_influence,
)
from recurrentlab.train.checkpoint import Checkpoints
from recurrentlab.train.distributed import (
    Placement,
    Preempted,
    PreemptionGuard,
    initialize_distributed,
    main_process_first,
)
from recurrentlab.train.evaluate import EvalSettings, Evaluator, metric_names
from recurrentlab.train.logging import MetricWriter
from recurrentlab.train.optim import make_optimizer
from recurrentlab.train.state import TrainState
from recurrentlab.train.step import window_loss
from recurrentlab.train.workdir import (
    RESUMABLE_FIELDS,
    code_version,
    prepare_workdir,
    read_summary,
    write_summary,
)

CACHE_DIR_ENV = "RECURRENTLAB_CACHE_DIR"


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache; return its folder (None: off).

    The folder is ``$RECURRENTLAB_CACHE_DIR``, by default ``~/.cache/recurrentlab/jax``;
    ``RECURRENTLAB_CACHE_DIR=off`` leaves the cache off. A folder already given to JAX itself
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept. A run whose train step was
    compiled before (same model, shapes and jax version) loads it instead of compiling it.
    """
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    folder = os.environ.get(CACHE_DIR_ENV, "~/.cache/recurrentlab/jax").strip()
    if folder.lower() in ("", "off", "0", "none", "false"):
        return None
    folder = os.path.expanduser(folder)
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def build_model_jit(model_config: ml_collections.ConfigDict, *, vocab_size: int, seed: int):
    """``build_model`` traced and compiled as one program.

    Building eagerly runs every initialiser as its own small compiled op (14-17 compilations
    for the LSTM and NTM of ``experiments/sweeps/quick_comparison.py``); under ``nnx.jit``
    the whole initialisation is one. Same random streams; values may differ from an eager
    build in the last bit where XLA fuses the arithmetic of an initialiser."""
    def init_model():
        return build_model(model_config, vocab_size=vocab_size, seed=seed)

    return nnx.jit(init_model)()


def build_run(config: ml_collections.ConfigDict):
    """Validate ``config`` and build its dataset and model."""
    validate(config)
    dataset = build_dataset(config.data, seed=config.seed)
    t = config.train
    dataset.check_layout(t.batch_size, t.segment_len * t.bptt_segments)
    if t.stop_when:  # a metric this dataset's evaluation reports, before any workdir exists
        check_stop_when(t.stop_when, metric_names(dataset))
    evaluation = EvalSettings.from_config(config)
    for split in {config.eval.split, *config.eval.final_splits}:
        dataset.check_layout(evaluation.batch_size, evaluation.window_len, split=split)
    model = build_model_jit(config.model, vocab_size=dataset.vocab_size, seed=config.seed)
    check_carry_gradient(config, model)  # train.carry_gradient: supported, within budget
    check_model_calls(config, model, dataset.vocab_size)
    return dataset, model


def check_model_calls(config: ml_collections.ConfigDict, model: nnx.Module,
                      vocab_size: int) -> None:
    """Trace one training segment of ``model`` and one evaluation segment of its evaluated
    variant (``eval.model_overrides``, ``eval.segment_len``) abstractly: nothing is computed or
    compiled (a fraction of a second), but checks that run only inside a call (a sequence
    longer than ``max_len``, ...) stop the run now, before its workdir is written."""
    t = config.train
    calls = [(model, t.segment_len)]
    overrides = config.eval.model_overrides.to_dict()
    evaluated = model
    if overrides:
        model_config = ml_collections.ConfigDict(config.model.to_dict())
        model_config.update(overrides)
        evaluated = nnx.eval_shape(
            lambda: build_model(model_config, vocab_size=vocab_size, seed=config.seed))
    if overrides or config.eval.segment_len not in (0, t.segment_len):
        calls.append((evaluated, config.eval.segment_len or t.segment_len))
    for module, length in calls:
        graphdef, state = nnx.split(module)

        def call(state, tokens, graphdef=graphdef):
            m = nnx.merge(graphdef, state)
            return m(tokens, m.init_carry(tokens.shape[0]), train=False)

        jax.eval_shape(call, state, jax.ShapeDtypeStruct((1, length), jnp.int32))


def eval_model(model: nnx.Module, config: ml_collections.ConfigDict, vocab_size: int):
    """``model`` itself, or a copy built with ``config.eval.model_overrides`` sharing its params.

    Build it once per run: an :class:`Evaluator` of the copy takes the trained parameters as
    an argument at every evaluation."""
    overrides = config.eval.model_overrides.to_dict()
    if not overrides:
        return model
    model_config = ml_collections.ConfigDict(config.model.to_dict())
    model_config.update(overrides)
    evaluated = build_model_jit(model_config, vocab_size=vocab_size, seed=config.seed)
    nnx.update(evaluated, nnx.state(model, nnx.Param))
    return evaluated


def carry_handoff(carry: Any) -> Any:
    """The carry leaving a window enters the next one without a gradient path back."""
    return jax.lax.stop_gradient(carry)


def make_train_step(graphdef, config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
                    placement: Placement | None = None):
    t = config.train
    gradients = influence_gradients(graphdef, config)  # None: train.carry_gradient="none"

    def train_step(state: TrainState, rest: Any, fresh_carry: Any, batch: dict[str, Any]):
        reset = batch["reset"] | (not t.carry_across_windows)
        carry = reset_carry(state.carry, fresh_carry, reset)
        key = jax.random.fold_in(jax.random.fold_in(state.rng, 1), state.step)

        def loss_fn(params):
            model = nnx.merge(graphdef, params, rest)
            return window_loss(model, carry, batch, segment_len=t.segment_len, train=True,
                               key=key, remat=t.remat, unroll=t.scan_unroll)

        if gradients is None:  # truncated BPTT
            (loss, (carry_out, totals)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state.params)
            influence_out = None
        else:  # gradients through the carry; the influence resets with the carry
            loss, (carry_out, totals), grads, influence_out = gradients(
                state.params, rest, carry, reset_influence(state.influence, reset), batch, key)
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = TrainState(
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            carry=keep(carry_handoff(carry_out), state.carry),
            step=state.step + 1,
            rng=state.rng,
            influence=keep(influence_out, state.influence),  # None: truncated BPTT
        )
        if placement is not None:
            new_state = placement.constrain(new_state)
        # The logged loss is the cross-entropy alone; an auxiliary loss (AWD's AR/TAR) is
        # optimised with it and logged as its own metric.
        count = jnp.maximum(totals["count"], 1.0)
        metrics = {"loss": totals["nll_sum"] / count, "penalty": totals["penalty"],
                   "grad_norm": grad_norm, "finite": finite,
                   "accuracy": totals["correct"] / count, "scored_tokens": totals["count"]}
        return new_state, metrics

    # The state is donated: XLA updates params and optimiser state in place instead of
    # allocating and copying a second set (measured ~4% of an LSTM step on CPU; on an
    # accelerator it halves the state's memory). Callers must not reuse a state they passed in.
    # On CPU it compiles with recurrentlab.xla_cpu's options.
    return xla_cpu.jit(train_step, donate_argnums=0)


def init_train_state(model: nnx.Module, config: ml_collections.ConfigDict,
                     tx: optax.GradientTransformation, placement: Placement):
    """``(graphdef, state, rest, fresh_carry)``: the state a run starts from (or restores into).

    Optimiser state, carry, step and key are made by one compiled program that places them
    where the train step wants them (not op by op, each op a compilation of its own)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = placement.params(params), placement.replicate(rest)
    batch_size, seed = config.train.batch_size, config.seed

    def init_state(params, rest):
        carry = lambda: nnx.merge(graphdef, params, rest).init_carry(batch_size)
        # the carry gets buffers of its own, apart from the fresh carry: the state is donated
        return TrainState(params=None, opt_state=tx.init(params), carry=carry(),
                          step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(seed)), carry()

    shapes, _ = jax.eval_shape(init_state, params, rest)
    shardings = placement.state_shardings(shapes)
    state, fresh_carry = jax.jit(init_state, out_shardings=(shardings, shardings.carry))(
        params, rest)
    state = with_influence(state.replace(params=params), model, config,
                           placement)  # train.carry_gradient
    return graphdef, state, rest, fresh_carry


# The config sections a trained run may change when it is evaluated or sampled (load_trained).
EVALUATION_SECTIONS = ("data", "eval")


def load_trained(workdir: str | Path, *, step: int | None = None,
                 overrides: list[str] | None = None):
    """``(config, dataset, model)`` of a run workdir with the parameters of its checkpoint.

    ``overrides`` (``--config.a.b=v`` strings) may change evaluation fields (data, eval) and
    the layout (``RESUMABLE_FIELDS``: mesh.*); any other is refused before the run is read.
    """
    from recurrentlab.config import apply_overrides, from_json, parse_overrides

    for key, value in parse_overrides(overrides or []):
        # where the run is laid out (mesh.*, the progress bar) may change too, as on resuming
        if key.split(".")[0] not in EVALUATION_SECTIONS and key not in RESUMABLE_FIELDS:
            raise ConfigError(f"--config.{key}={value} would change the trained run, whose "
                              f"checkpoint holds what it trained; a trained run takes only "
                              f"evaluation overrides (--config.data.*, --config.eval.*, e.g. "
                              f"--config.eval.model_overrides.<field>) and the mesh layout")
    workdir = Path(workdir)
    if not (workdir / "config.json").exists():
        raise WorkdirError(f"{workdir} holds no run (no config.json); train one with "
                           f"'recurrentlab train --config FILE --workdir {workdir}'")
    config = from_json((workdir / "config.json").read_text())
    apply_overrides(config, overrides or [])
    dataset, model = build_run(config)
    placement = Placement.from_config(config)
    tx = make_optimizer(config.train)
    graphdef, state, rest, _ = init_train_state(model, config, tx, placement)
    checkpoints = Checkpoints(workdir / "checkpoints", keep=config.train.keep_checkpoints)
    try:
        step = checkpoints.latest_step() if step is None else step
        if step is None:
            raise WorkdirError(f"{workdir} has no checkpoint yet; train it first")
        if step not in checkpoints.all_steps():
            raise WorkdirError(f"{workdir} has no checkpoint at step {step}; it has "
                               f"{checkpoints.all_steps()}")
        state, _ = checkpoints.restore(step, state)
    finally:
        checkpoints.close()
    return config, dataset, nnx.merge(graphdef, state.params, rest), step


class TrainClock:
    """Training time apart from what runs between steps.

    ``compile_seconds`` is the first step (tracing, compiling, running it). After it,
    ``tokens_per_sec`` counts the tokens of the steps since the last train record over the
    seconds since then, less the seconds spent :meth:`paused` (evaluations, checkpoint saves).
    """

    def __init__(self, step: int, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self.compile_seconds: float | None = None
        self.restart(step)

    def restart(self, step: int) -> None:
        """Start counting at ``step`` (now), nothing paused yet."""
        self.mark, self.mark_step, self.excluded = time.time(), step, 0.0

    def stepped(self, done: int, loss: jax.Array) -> None:
        """After step ``done``: the first one (waited for) is the compile time."""
        if self.compile_seconds is None:
            jax.block_until_ready(loss)
            self.compile_seconds = time.time() - self.mark
            self.mark, self.mark_step = time.time(), done

    @contextlib.contextmanager
    def paused(self):
        """Seconds inside this block are not training time."""
        paused = time.time()
        yield
        self.excluded += time.time() - paused

    def tokens_per_sec(self, done: int) -> float | None:
        """Training throughput since the last :meth:`restart`; None when no step ran since."""
        if done <= self.mark_step:
            return None
        seconds = time.time() - self.mark - self.excluded
        return (done - self.mark_step) * self.tokens_per_step / seconds


class TrainLoop:
    """One run of :func:`train_and_evaluate` in named pieces, each with one job.

    :meth:`run` is the whole run: :meth:`train` (the step loop, calling :meth:`step`,
    :meth:`log_train`, :meth:`evaluate`, :meth:`checkpoint` at their intervals), then
    :meth:`stop_preempted` after a SIGTERM, else :meth:`finish` (final evaluations and the
    summary). The state restored from the workdir's last checkpoint (if any) is where it starts.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, dataset: Any,
                 model: nnx.Module, placement: Placement, tx: optax.GradientTransformation):
        t = config.train
        self.config, self.workdir = config, workdir
        self.dataset, self.placement = dataset, placement
        self.window_len = t.segment_len * t.bptt_segments
        graphdef, state, self.rest, self.fresh_carry = init_train_state(model, config, tx,
                                                                        placement)
        self.checkpoints = Checkpoints(workdir / "checkpoints", keep=t.keep_checkpoints)
        start = self.checkpoints.latest_step()
        resumed_meta: dict[str, Any] = {}
        if start is not None:
            state, resumed_meta = self.checkpoints.restore(start, state)
        self.state: TrainState = state
        self.start = start = int(state.step)
        self.meta = {"config": to_json(config), "config_hash": config_hash(config),
                     "code_version": code_version()}
        self.writer = MetricWriter(workdir, total_steps=t.num_steps, start_step=start,
                                   progress_bar=t.progress_bar,
                                   is_main=jax.process_index() == 0)
        if start:
            self.writer.write("resume", start, {})
        self.train_step = make_train_step(graphdef, config, tx, placement)
        self.evaluator = Evaluator(eval_model(model, config, dataset.vocab_size), dataset,
                                   EvalSettings.from_config(config), placement=placement)
        self.pending: list[tuple[int, Any]] = []  # (step, finite flag) not checked yet
        self.last_good = start or None  # the last step checkpointed
        self.done = start
        self.stopped_at = start if resumed_meta.get("stop_when_met") else None  # stop_when
        self.guard = PreemptionGuard(placement)
        self.started = time.time()
        self.clock = TrainClock(start, t.batch_size * self.window_len)

    def run(self) -> dict[str, Any]:
        """Train, then finish (or checkpoint and raise :class:`Preempted` on SIGTERM)."""
        self.guard.install()  # SIGTERM: checkpoint this step, then stop
        try:
            self.train()
            if self.guard.stop_after_loop():
                self.stop_preempted()
            self.guard.uninstall()
            self.checkpoints.wait()
            return self.finish()
        finally:
            self.close()

    def close(self) -> None:
        self.guard.uninstall()
        self.checkpoints.close()
        self.writer.close()

    def run_eval(self, split: str) -> dict[str, float]:
        return self.evaluator(self.state.params, split)  # compiled at its first call

    # -- the step loop
    def train(self) -> None:
        """Steps from the restored one to ``train.num_steps``; stops early on ``stop_when`` or
        a SIGTERM."""
        t = self.config.train
        for step in range(self.start, self.start if self.stopped_at else t.num_steps):
            metrics = self.step(step)
            done = self.done
            self.writer.advance()
            if done % t.log_every == 0 or done == t.num_steps:
                self.log_train(done, metrics)
            if t.eval_every and done % t.eval_every == 0 and done < t.num_steps:
                self.evaluate(done, metrics)
            if done % t.checkpoint_every == 0 or done == t.num_steps or self.stopped_at:
                self.checkpoint(done)
            if self.guard.should_stop() or self.stopped_at:
                break

    def step(self, step: int) -> dict[str, jax.Array]:
        """One optimiser step on the window of ``step`` (dispatched, not waited for)."""
        t = self.config.train
        batch = self.placement.batch(
            self.dataset.train_window(step, t.batch_size, self.window_len))
        self.state, metrics = self.train_step(self.state, self.rest, self.fresh_carry, batch)
        self.done = step + 1
        self.pending.append((self.done, metrics["finite"]))
        self.clock.stepped(self.done, metrics["loss"])
        return metrics

    def check_finite(self) -> None:
        """Wait for the pending steps; raise :class:`NonFiniteError` at the first non-finite."""
        for step, finite in self.pending:
            if not bool(finite):
                last_good = self.last_good
                kept = f"checkpoint step {last_good} is kept" if last_good else "no checkpoint yet"
                raise NonFiniteError(
                    f"loss or gradients became NaN/Inf at step {step} ({kept}); lower train.lr, "
                    f"set train.clip_norm, or check the data"
                )
        self.pending.clear()

    # -- what happens between steps
    def log_train(self, done: int, metrics: dict[str, jax.Array]) -> None:
        """A ``train`` record: the step's metrics, bits, throughput and compile time."""
        self.check_finite()
        record = {k: float(v) for k, v in metrics.items() if k != "finite"}
        if record["scored_tokens"]:
            record["bits"] = record["loss"] / math.log(2)
        else:  # a window with no scored target (a short window of an episodic task): no
            del record["loss"], record["accuracy"]  # loss or accuracy to report, not 0
        tokens_per_sec = self.clock.tokens_per_sec(done)
        if tokens_per_sec is not None:
            record["tokens_per_sec"] = tokens_per_sec
        record["compile_seconds"] = self.clock.compile_seconds
        self.writer.write("train", done, record)
        self.clock.restart(done)

    def evaluate(self, done: int, metrics: dict[str, jax.Array]) -> None:
        """A periodic ``eval`` record on ``eval.split``; notes when ``stop_when`` is met."""
        t = self.config.train
        split = self.config.eval.split
        jax.block_until_ready(metrics["loss"])  # steps still running are training time
        with self.clock.paused():
            periodic = self.run_eval(split)
            self.writer.write("eval", done, {"split": split, **periodic})
            if t.stop_when and stop_condition_met(t.stop_when, periodic):
                self.stopped_at = done

    def checkpoint(self, done: int) -> None:
        """Save the state of step ``done`` (in the background) once its steps are finite."""
        self.check_finite()  # waits for the step
        with self.clock.paused():
            self.checkpoints.save(done, self.state, {**self.meta, "step": done,
                                                     "stop_when_met": bool(self.stopped_at)})
            self.last_good = done

    # -- how a run ends
    def stop_preempted(self) -> None:
        """After a SIGTERM: checkpoint the last step (unless saved), wait, raise Preempted."""
        done = self.done
        if self.last_good != done:
            self.check_finite()
            self.checkpoints.save(done, self.state, {**self.meta, "step": done})
        self.checkpoints.wait()
        raise Preempted(self.guard.message(done, self.workdir))

    def finish(self) -> dict[str, Any]:
        """Final evaluations on ``eval.final_splits``, then the summary (written by process 0)."""
        t = self.config.train
        final = {}
        last_step = self.stopped_at or t.num_steps
        for split in self.config.eval.final_splits:
            final[split] = self.run_eval(split)
            self.writer.write("eval", last_step, {"split": split, **final[split]})
        stopped_at = self.stopped_at
        summary = {
            "status": "finished",
            "step": last_step,
            "stopped_early": ({"step": stopped_at, "stop_when": t.stop_when}
                              if stopped_at else None),
            "final": final,
            "train_seconds": time.time() - self.started,
            "compile_seconds": self.clock.compile_seconds,
            "num_params": count_leaves(self.state.params),
            **self.meta,
        }
        if jax.process_index() == 0:
            write_summary(self.workdir, summary)
        return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming what is there) and return the summary."""
    enable_compilation_cache()
    initialize_distributed(config)
    dataset, model = build_run(config)
    # These check too (devices, batch division, optimiser) before the workdir is touched, so
    # a refused command leaves no trace.
    placement = Placement.from_config(config)
    tx = make_optimizer(config.train)
    workdir = main_process_first(prepare_workdir, workdir, config)
    finished = read_summary(workdir)
    if finished is not None:
        return finished
    return TrainLoop(config, workdir, dataset, model, placement, tx).run()
