"""Gradients through the carry, past the BPTT horizon: ``train.carry_gradient``.

Truncated BPTT (``"none"``) computes, per window, the gradient of the window's loss L with
respect to the parameters θ with the carry ``s0`` that entered the window held fixed, and
drops the rest. Real-time recurrent learning (RTRL; Williams & Zipser 1989) keeps, per
stream b, the influence ``J = ∂s/∂θ`` of the parameters on the carry beside the carry and
recovers the dropped part. Shape legend: b streams, n the carry's size per stream (all
leaves of a stream's carry, raveled), p the parameters the influence covers.

    g0_b = ∂L/∂s0_b                               [b, n]   (the window's carry gradient)
    J0_b = ∂s0_b/∂θ                               [b, n, p] (carried from earlier windows)
    dL/dθ = ∂L/∂θ |_{s0 fixed} + Σ_b g0_b · J0_b  (the second term is what "none" drops)
    J_end,b = (∂s_end,b/∂s0_b) · J0_b + ∂s_end,b/∂θ             (then handed to the next window)

A stream that starts afresh (``reset``) has ``s0 = init_carry`` and ``J0 = 0``: the influence
resets with the carry. The influence is training state: it is saved in checkpoints beside
the carry (``TrainState.influence``) and a resumed run continues bit-for-bit. With the
parameters held fixed, the summed gradients of consecutive windows are exactly full BPTT
through all of them; with the parameters moving between windows, J mixes the Jacobians of
earlier parameters (as online RTRL always does).

Modes
-----
``"none"``: truncated BPTT; the train step is the plain one (no influence in the state).

``"rtrl"``: exact, for any model that declares it (``carry_gradient_modes``) — the window
function is the trainer's own :func:`~recurrentlab.train.step.window_loss`, run per stream.
The Jacobians are computed in **reverse mode, one backward pass per carry coordinate**, at
the end of each window: ``jax.vjp`` of the stream's window ``(θ, s0_b) -> (loss terms,
s_end,b)`` runs the forward pass once, then its pullback is ``vmap``-ed over the n unit
cotangents of ``s_end,b`` (giving ``∂s_end/∂θ`` [n, p] and ``∂s_end/∂s0`` [n, n]) and applied
once to the loss cotangent (giving ``∂L/∂θ`` and ``g0``). Why reverse: forward mode
(``jvp``/``jacfwd`` over θ) needs p tangent passes, each propagating ``J`` through every
step — O(n² p) per token, classic RTRL; reverse mode needs n backward passes per window,
O(n p) per token, plus one O(n² p) product per window, so it is cheaper by about the window
length W and by p/n (p ≫ n for every recurrent model). Memory: J itself, b·n·p floats,
which is why the mode refuses (``train.influence_budget_mb``) with the size it would need.
The window runs per stream (``vmap`` over b, batch 1 inside) because the parameters are
shared by all streams and each stream needs its own ``∂s_end,b/∂θ``; a model's streams must
therefore be independent, and its dropout masks are drawn per stream (key folded with b),
so with dropout on, ``"rtrl"`` samples different masks than ``"none"`` (same distribution).

``"snap1"``: SnAp-1 (Menick, Elsen, Evci, Osindero, Simonyan & Graves, "Practical Real Time
Recurrent Learning with a Sparse Approximation", ICLR 2021): J keeps only the entries
``(k, θ)`` where parameter θ moves state coordinate k within one step — for an LSTM, a weight
into unit u's gates keeps traces for ``c_u`` and ``h_u`` — and the update above is applied
restricted to that pattern, step by step inside the forward scan (the model's
:meth:`~recurrentlab.models.base.SequenceModel.call_with_traces`), at O(params) memory per
stream and about one extra matmul per step. It is exact where units do not interact (one
unit, or a recurrent matrix zero off each gate's diagonal) and biased otherwise. The
LSTM's choices — layer by layer, no embedding traces — are in
:mod:`recurrentlab.models.lstm`'s docstring.

Which models support which mode (a clear :class:`ConfigError` for the others):
:func:`supported_models`; today the LSTM supports ``"rtrl"`` and ``"snap1"``, the NTM
``"rtrl"`` (its whole carry: controller, memory, reads, weightings). What a model
must provide is in :mod:`recurrentlab.models.base`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from recurrentlab.config import CARRY_GRADIENT_MODES
from recurrentlab.errors import ConfigError
from recurrentlab.models.base import Carry, SequenceModel, registered_models, reset_carry
from recurrentlab.models.base import model_class as _model_class
from recurrentlab.train.state import TrainState
from recurrentlab.train.step import window_loss

__all__ = ["CARRY_GRADIENT_MODES", "check_carry_gradient", "influence_gradients",
           "init_influence", "influence_nbytes", "rtrl_window", "supported_models",
           "with_influence"]

MIB = 2**20


def mode_of(config: ml_collections.ConfigDict) -> str:
    """``train.carry_gradient``; "none" for a config saved before the field existed."""
    return config.train.get("carry_gradient", "none")


def supported_models(mode: str) -> list[str]:
    """Registered models that support ``mode``."""
    return [name for name in registered_models()
            if mode in getattr(_model_class(name), "carry_gradient_modes", ())]


# ----------------------------------------------------------------------------- the carry as vectors


def stream_vectors(carry: Carry) -> tuple[jax.Array, Callable[[jax.Array], Carry]]:
    """``(s [b, n], unvector)``: each stream's carry leaves raveled into one row.

    ``unvector(v [b', n])`` rebuilds a carry of ``b'`` streams (leaf dtypes kept)."""
    leaves, treedef = jax.tree.flatten(carry)
    b = leaves[0].shape[0]
    shapes = [x.shape[1:] for x in leaves]
    dtypes = [x.dtype for x in leaves]
    sizes = [int(np.prod(s)) for s in shapes]
    vector = jnp.concatenate([x.reshape(b, -1) for x in leaves], axis=1)

    def unvector(v: jax.Array) -> Carry:
        parts = jnp.split(v, np.cumsum(sizes)[:-1], axis=1)
        return treedef.unflatten([p.reshape((v.shape[0],) + s).astype(d)
                                  for p, s, d in zip(parts, shapes, dtypes, strict=True)])

    return vector, unvector


def _influence_params(model: SequenceModel, params: nnx.State) -> tuple[nnx.State, nnx.State]:
    """``(covered, others)``: the parameters the rtrl influence covers, and the rest."""
    return nnx.split_state(params, model.influence_filter(), ...)


# ----------------------------------------------------------------------------- sizes and checks


def _abstract_influence(model: SequenceModel, mode: str, batch_size: int):
    if mode == "snap1":
        return jax.eval_shape(lambda: model.init_traces(batch_size))
    carry = jax.eval_shape(lambda: model.init_carry(1))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(carry))
    covered, _ = _influence_params(model, nnx.state(model, nnx.Param))
    p = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(covered))
    dtype = jnp.result_type(*jax.tree.leaves(carry), *jax.tree.leaves(covered))
    return jax.ShapeDtypeStruct((batch_size, n, p), dtype)


def influence_nbytes(model: SequenceModel, mode: str, batch_size: int) -> int:
    """Bytes of the influence the train state holds for ``mode`` (0 for "none")."""
    if mode == "none":
        return 0
    return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(_abstract_influence(model, mode, batch_size))))


def check_carry_gradient(config: ml_collections.ConfigDict, model: SequenceModel) -> None:
    """Refuse, in one line, a mode the model does not support or an influence over budget."""
    mode = mode_of(config)
    if mode == "none":
        return
    if mode not in CARRY_GRADIENT_MODES:
        raise ConfigError(f"train.carry_gradient '{mode}' unknown; use "
                          f"{', '.join(CARRY_GRADIENT_MODES)}")
    name = config.model.name
    if mode not in type(model).carry_gradient_modes:
        raise ConfigError(f"model '{name}' does not support train.carry_gradient='{mode}'; "
                          f"models that do: {', '.join(supported_models(mode)) or 'none'}")
    carry = jax.eval_shape(lambda: model.init_carry(1))
    if not all(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(carry)):
        raise ConfigError(f"model '{name}' has a carry that is not all floating point; "
                          f"train.carry_gradient='{mode}' needs one")
    t = config.train
    needed = influence_nbytes(model, mode, t.batch_size)
    budget = t.get("influence_budget_mb", 1024) * MIB
    if needed > budget:
        shape = _abstract_influence(model, mode, t.batch_size)
        detail = (f" ({t.batch_size} streams x {shape.shape[1]:,} carry values x "
                  f"{shape.shape[2]:,} parameters, {jnp.dtype(shape.dtype).name})"
                  if mode == "rtrl" else "")
        raise ConfigError(
            f"train.carry_gradient='{mode}' needs an influence of {needed / MIB:,.0f} MiB"
            f"{detail}, over train.influence_budget_mb={t.get('influence_budget_mb', 1024)}; "
            f"raise the budget, use fewer streams or a smaller model"
            + (", or carry_gradient=snap1"
               if mode == "rtrl" and "snap1" in type(model).carry_gradient_modes else ""))


# ----------------------------------------------------------------------------- the influence


def init_influence(model: SequenceModel, mode: str, batch_size: int) -> Any:
    """The influence of fresh streams (zeros): ``[b, n, p]`` for rtrl, the model's traces
    for snap1, None for none."""
    if mode == "none":
        return None
    if mode == "snap1":
        return model.init_traces(batch_size)
    shape = _abstract_influence(model, mode, batch_size)
    return jnp.zeros(shape.shape, shape.dtype)


def reset_influence(influence: Any, reset: jax.Array) -> Any:
    """Zero the influence of the streams where ``reset`` (Bool[b]) is true."""
    return reset_carry(influence, jax.tree.map(jnp.zeros_like, influence), reset)


def with_influence(state: TrainState, model: SequenceModel,
                   config: ml_collections.ConfigDict, placement) -> TrainState:
    """``state`` with the zero influence of ``train.carry_gradient`` added (split over the
    streams like the carry); ``state`` itself when the mode is "none"."""
    mode = mode_of(config)
    if mode == "none":
        return state
    influence = init_influence(model, mode, config.train.batch_size)
    return state.replace(influence=placement.batch(influence))


# ----------------------------------------------------------------------------- rtrl


def rtrl_window(
    f: Callable, theta: jax.Array, others: Any, s0: jax.Array, j0: jax.Array, xs: Any,
    weights: Any,
) -> tuple[jax.Array, Any, jax.Array, jax.Array, jax.Array, Any]:
    """One window of exact RTRL for b independent streams (see the module docstring).

    ``f(theta [p], others, s0_b [n], x_b) -> ((outs_b, s_end_b [n]), aux_b)`` is one
    stream's window; the loss is ``L = Σ_b <weights, outs_b>`` (``outs_b`` a pytree of
    scalars, ``weights`` the same structure). ``theta`` are the parameters the influence
    ``j0 [b, n, p]`` covers, ``others`` the rest; ``xs`` a pytree of per-stream inputs,
    batch first. Returns ``(dL/dθ [p] including Σ_b g0_b·J0_b, dL/d others, g0 [b, n],
    s_end [b, n], j_end [b, n, p], aux)``.
    """

    def stream(s0_b, j0_b, x_b):
        (outs, s_end), pullback, aux = jax.vjp(
            lambda th, ot, s: f(th, ot, s, x_b), theta, others, s0_b, has_aux=True)
        zeros_out = jax.tree.map(jnp.zeros_like, outs)
        g_theta, g_others, g0 = pullback((weights, jnp.zeros_like(s_end)))
        basis = jnp.eye(s_end.shape[0], dtype=s_end.dtype)
        d_theta, _, d_s0 = jax.vmap(lambda e: pullback((zeros_out, e)))(basis)
        j_end = d_s0 @ j0_b + d_theta  # (∂s_end/∂s0) J0 + ∂s_end/∂θ
        return g_theta + g0 @ j0_b, g_others, g0, s_end, j_end, aux

    g_theta, g_others, g0, s_end, j_end, aux = jax.vmap(stream)(s0, j0, xs)
    g_others = jax.tree.map(lambda x: jnp.sum(x, axis=0), g_others)
    return jnp.sum(g_theta, axis=0), g_others, g0, s_end, j_end, aux


def _rtrl_gradients(graphdef, config, params, rest, carry, j0, batch, key):
    t = config.train
    model = nnx.merge(graphdef, params, rest)
    covered, others = _influence_params(model, params)
    theta, unravel = ravel_pytree(covered)
    s0, unvector = stream_vectors(carry)
    b = s0.shape[0]
    mask = batch["mask"].astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    keys = None if key is None else jax.vmap(lambda i: jax.random.fold_in(key, i))(
        jnp.arange(b))
    streams = {name: batch[name] for name in ("inputs", "targets", "mask")}

    def window(theta, others, s0_b, x_b):
        inputs, k = x_b
        m = nnx.merge(graphdef, nnx.merge_state(unravel(theta), others), rest)
        one = jax.tree.map(lambda x: x[None], inputs)
        _, (carry_out, totals) = window_loss(m, unvector(s0_b[None]), one,
                                             segment_len=t.segment_len, train=True, key=k,
                                             remat=t.remat, unroll=t.scan_unroll)
        outs = {"nll_sum": totals["nll_sum"], "penalty": totals["penalty"]}
        return (outs, stream_vectors(carry_out)[0][0]), totals

    # L = Σ_b nll_sum_b / count + mean_b penalty_b: the batch objective of window_loss
    weights = {"nll_sum": 1.0 / count, "penalty": jnp.asarray(1.0 / b, jnp.float32)}
    g_theta, g_others, _, s_end, j_end, totals = rtrl_window(
        window, theta, others, s0, j0, (streams, keys), weights)
    totals = {name: (jnp.mean(v) if name == "penalty" else jnp.sum(v))
              for name, v in totals.items()}
    loss = totals["nll_sum"] / count + totals["penalty"]
    grads = nnx.merge_state(unravel(g_theta), g_others)
    return loss, (unvector(s_end), totals), grads, j_end


# ----------------------------------------------------------------------------- snap1


class TracedModel:
    """A model seen by :func:`window_loss` with carry ``(carry, traces)``: every call also
    advances the SnAp-1 traces (``model.call_with_traces``)."""

    def __init__(self, model: SequenceModel):
        self.model = model

    def __call__(self, tokens, state, *, train=False, key=None):
        logits, carry, traces, _ = self.model.call_with_traces(tokens, *state, train=train,
                                                               key=key)
        return logits, (carry, traces)

    def call_with_penalty(self, tokens, state, *, train=False, key=None):
        logits, carry, traces, penalty = self.model.call_with_traces(tokens, *state, train=train,
                                                                     key=key)
        return logits, (carry, traces), penalty


def add_at_paths(grads: nnx.State, extra: dict[tuple, jax.Array]) -> nnx.State:
    """``grads`` plus ``extra[path]`` at each parameter path (e.g. ``("layers", 0, "w_hh")``)."""
    unused = set(extra)

    def add(path, leaf):
        names = tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", None)))
                      for k in path)
        names = names[:-1] if names and names[-1] == "value" else names
        if names in extra:
            unused.discard(names)
            return leaf + extra[names].astype(leaf.dtype)
        return leaf

    out = jax.tree_util.tree_map_with_path(add, grads)
    if unused:
        raise ValueError(f"traces_gradient names parameters the model does not have: {unused}")
    return out


def _snap1_gradients(graphdef, config, params, rest, carry, traces, batch, key):
    t = config.train

    def loss_fn(params, carry):
        model = nnx.merge(graphdef, params, rest)
        loss, ((carry_out, traces_out), totals) = window_loss(
            TracedModel(model), (carry, traces), batch, segment_len=t.segment_len, train=True,
            key=key, remat=t.remat, unroll=t.scan_unroll)
        return loss, (carry_out, traces_out, totals)

    (loss, (carry_out, traces_out, totals)), (grads, g0) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(params, carry)
    extra = nnx.merge(graphdef, params, rest).traces_gradient(g0, traces)
    return loss, (carry_out, totals), add_at_paths(grads, extra), traces_out


# ----------------------------------------------------------------------------- the train step


def influence_gradients(graphdef, config: ml_collections.ConfigDict):
    """The train step's gradient function for ``train.carry_gradient``; None for "none".

    ``fn(params, rest, carry, influence, batch, key) -> (loss, (carry_out, totals), grads,
    influence_out)``: ``carry`` and ``influence`` already reset for fresh streams, ``grads``
    the full dL/dθ (window term plus carry term), ``influence_out`` the influence at the
    window's end (before the trainer's stop-gradient hand-off).
    """
    mode = mode_of(config)
    if mode == "none":
        return None
    inner = {"rtrl": _rtrl_gradients, "snap1": _snap1_gradients}[mode]

    def gradients(params, rest, carry, influence, batch, key):
        loss, aux, grads, influence_out = inner(graphdef, config, params, rest, carry,
                                                influence, batch, key)
        return loss, aux, grads, jax.lax.stop_gradient(influence_out)

    return gradients
