"""AWD-LSTM regularisers as pure functions (Merity, Keskar & Socher 2017).

Each function takes an explicit PRNG key and returns a new array; nothing here owns state,
so a model calls them inside ``jax.lax.scan`` or ``jax.checkpoint`` freely. All masks are
inverted-dropout masks drawn by the one helper :func:`recurrentlab.models.layers.dropout`
(kept entries scaled by ``1 / (1 - rate)``, so expectations match evaluation, where no
regulariser is applied); these functions only choose the mask's shape.

Shape legend: b batch, t time, d features, v vocabulary, i/o a weight matrix's in/out sizes.

* :func:`embedding_dropout` — drop whole rows of the embedding table (every occurrence of a
  dropped token in the call becomes the zero vector): ``E' = diag(m) E / (1-p)``, ``m_v ~
  Bernoulli(1-p)``; reference ``embed_regularize.py``.
* :func:`locked_dropout` — variational dropout: one mask per sequence and feature, shared
  by every time step: ``y[b, t, d] = x[b, t, d] m[b, d] / (1-p)``; reference
  ``locked_dropout.py``.
* :func:`weight_drop` — DropConnect on a weight matrix (AWD applies it to the LSTM's
  hidden-to-hidden matrix): ``W' = W ∘ M / (1-p)``, one element-wise mask per call, so every
  time step of the call sees the same dropped weights; reference ``weight_drop.py``.
* :func:`ar_tar_penalty` — activation regularisation ``α mean(ĥ²)`` on the dropped output
  of the last layer and temporal activation regularisation ``β mean((h_t - h_{t-1})²)`` on
  its raw output; reference ``main.py``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from recurrentlab.models.layers import dropout


def embedding_dropout(
    key: PRNGKeyArray | None,
    table: Float[Array, "v d"],
    tokens: Int[Array, "*batch"],
    rate: float,
) -> Float[Array, "*batch d"]:
    """Look up ``tokens`` in ``table`` with whole vocabulary rows dropped (rate ``rate``).

    Equivalent to AWD's ``embedded_dropout`` (mask the table, then look up) but gathers the
    row mask with the tokens instead of materialising the masked ``[v, d]`` table.
    ``key=None`` or ``rate=0`` is a plain lookup.
    """
    rows = jnp.take(table, tokens, axis=0)
    if key is None or rate == 0.0:
        return dropout(rows, rate, None)  # no mask; checks the rate
    row_mask = dropout(jnp.ones((table.shape[0],), table.dtype), rate, key)  # 0 or 1/(1-p)
    return rows * jnp.take(row_mask, tokens, axis=0)[..., None]


def locked_dropout(
    key: PRNGKeyArray | None,
    x: Float[Array, "... d"],
    rate: float,
    *,
    time_axis: int,
) -> Float[Array, "... d"]:
    """Variational dropout: one mask per (batch, feature), broadcast over ``time_axis``.

    ``x`` is ``[b, t, d]`` (``time_axis=1``) or ``[t, b, d]`` (``time_axis=0``).
    """
    return dropout(x, rate, key, shared_axes=(time_axis,))


def weight_drop(
    key: PRNGKeyArray | None, weight: Float[Array, "i o"], rate: float
) -> Float[Array, "i o"]:
    """DropConnect: drop entries of ``weight`` independently, one mask per call."""
    return dropout(weight, rate, key)


def ar_tar_penalty(
    dropped_output: Float[Array, "b t d"],
    raw_output: Float[Array, "b t d"],
    *,
    alpha: float,
    beta: float,
) -> Float[Array, ""]:
    """``α · mean(dropped_output²) + β · mean((raw_output[:, 1:] - raw_output[:, :-1])²)``.

    As AWD's ``main.py``: AR on the last layer's output after the output dropout, TAR on the
    last layer's output before it, differences taken inside the segment only (no difference
    across the segment boundary). Terms with a zero coefficient are skipped; a segment of
    length 1 has no TAR term.
    """
    penalty = jnp.zeros((), jnp.float32)
    if alpha:
        penalty = penalty + alpha * jnp.mean(jnp.square(dropped_output.astype(jnp.float32)))
    if beta and raw_output.shape[1] > 1:
        diff = raw_output[:, 1:].astype(jnp.float32) - raw_output[:, :-1].astype(jnp.float32)
        penalty = penalty + beta * jnp.mean(jnp.square(diff))
    return penalty
