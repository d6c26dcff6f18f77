"""One truncated-BPTT window: K segments under ``jax.lax.scan`` with the carry passed along.

A window holds ``W = K * S`` tokens per stream (``S = train.segment_len``,
``K = train.bptt_segments``). The model is called once per segment; the gradient flows
through all K calls of the window and stops at its edges (the trainer passes the carry to
the next window under ``stop_gradient``), so the BPTT horizon is K*S tokens.

Shape legend: b streams (batch), w window tokens, k segments, s segment tokens, v vocabulary.

    loss = sum_{b,w} mask[b,w] * nll[b,w] / max(1, sum_{b,w} mask[b,w])
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from recurrentlab.models.base import Carry, SequenceModel


def to_segments(x: jax.Array, segment_len: int) -> jax.Array:
    """[b, k*s, ...] -> [k, b, s, ...]."""
    b, w = x.shape[:2]
    if w % segment_len:
        raise ValueError(f"window of {w} tokens is not a multiple of segment_len {segment_len}")
    x = x.reshape((b, w // segment_len, segment_len) + x.shape[2:])
    return jnp.swapaxes(x, 0, 1)


def from_segments(x: jax.Array) -> jax.Array:
    """[k, b, s, ...] -> [b, k*s, ...]."""
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape((x.shape[0], x.shape[1] * x.shape[2]) + x.shape[3:])


def token_nll(
    logits: Float[Array, "b s v"], targets: Int[Array, "b s"]
) -> tuple[Float[Array, "b s"], Int[Array, "b s"]]:
    """Per-token negative log-likelihood (nats) and the argmax prediction."""
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return logz - target_logit, first_argmax(logits)


def first_argmax(x: Float[Array, "... v"]) -> Int[Array, "..."]:
    """``jnp.argmax(x, axis=-1)`` (int32): the first index of the maximum, or of the first NaN.

    Computed as two plain reductions, ``max`` then ``min`` over the indices that hold it, which
    XLA's CPU backend vectorises; its (value, index) reduction for ``argmax`` is ~8x slower
    (1.5 against 0.19 ms for the NTM copy step's [32, 41, 256] logits).
    """
    top = jnp.max(x, axis=-1, keepdims=True)
    index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    hit = (x == top) | jnp.isnan(x)  # a NaN makes top NaN; argmax returns the first NaN
    return jnp.min(jnp.where(hit, index, x.shape[-1]), axis=-1)


def _segment_keys(key: jax.Array | None, num_segments: int):
    if key is None:
        return None
    return jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(num_segments))


def window_loss(
    model: SequenceModel,
    carry: Carry,
    batch: dict[str, jax.Array],
    *,
    segment_len: int,
    train: bool,
    key: jax.Array | None,
    remat: bool = False,
    unroll: int = 1,
) -> tuple[jax.Array, tuple[Carry, dict[str, Any]]]:
    """The training objective of a window, scanning its segments with the carry.

    Segment ``k`` is called with ``key = fold_in(key, k)``. With ``remat`` each segment is
    recomputed in the backward pass (``jax.checkpoint``): activation memory then grows with
    K*|carry| + S rather than K*S. Returns ``(objective, (carry_out, aux))`` with ``aux``
    holding ``nll_sum``, ``count``, ``correct`` (masked argmax hits) and ``penalty``. The
    objective is the mean masked cross-entropy ``nll_sum / count``, plus in training the mean
    per-segment penalty of the model's auxiliary-loss hook
    (:meth:`~recurrentlab.models.base.SequenceModel.call_with_penalty`; AWD-LSTM's AR/TAR,
    0 for most models). Report the cross-entropy from ``aux``, not the objective.
    """
    inputs = to_segments(batch["inputs"], segment_len)
    targets = to_segments(batch["targets"], segment_len)
    mask = to_segments(batch["mask"].astype(jnp.float32), segment_len)
    num_segments = inputs.shape[0]
    keys = _segment_keys(key, num_segments)

    def segment(carry, xs):
        x, y, m, k = xs
        if train:  # the auxiliary-loss hook: a training-only penalty such as AWD's AR/TAR
            logits, carry, penalty = model.call_with_penalty(x, carry, train=train, key=k)
        else:
            logits, carry = model(x, carry, train=train, key=k)
            penalty = jnp.zeros((), jnp.float32)
        nll, pred = token_nll(logits, y)
        stats = {
            "nll_sum": jnp.sum(nll * m),
            "count": jnp.sum(m),
            "correct": jnp.sum((pred == y) * m),
            "penalty": penalty,
        }
        return carry, stats

    if remat:
        segment = jax.checkpoint(segment)
    xs = (inputs, targets, mask, keys)
    carry, stats = jax.lax.scan(segment, carry, xs, unroll=unroll)
    totals = jax.tree.map(jnp.sum, stats)
    totals["penalty"] = totals["penalty"] / num_segments
    loss = totals["nll_sum"] / jnp.maximum(totals["count"], 1.0)
    return loss + totals["penalty"], (carry, totals)


def window_outputs(
    model: SequenceModel, carry: Carry, batch: dict[str, jax.Array], *, segment_len: int
) -> tuple[Carry, jax.Array, jax.Array]:
    """Evaluation: per-token nll [b, w] and argmax predictions [b, w], no dropout."""
    inputs = to_segments(batch["inputs"], segment_len)
    targets = to_segments(batch["targets"], segment_len)

    def segment(carry, xs):
        x, y = xs
        logits, carry = model(x, carry, train=False, key=None)
        nll, pred = token_nll(logits, y)
        return carry, (nll, pred)

    carry, (nll, pred) = jax.lax.scan(segment, carry, (inputs, targets))
    return carry, from_segments(nll), from_segments(pred)
