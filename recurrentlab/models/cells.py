"""The recurrent cells the models share: a PyTorch-layout LSTM and TensorFlow's BasicLSTMCell.

Shape legend: b batch, t time, d a layer's input size, h its hidden size, g = 4h gate
pre-activations.

PyTorch-layout LSTM (gate order i, f, g, o as ``torch.nn.LSTM``, two biases, so torch weights
copy over transposed), used by :mod:`~recurrentlab.models.lstm` (AWD-LSTM) and by every block
of :mod:`~recurrentlab.models.sha_rnn`::

    z_t = x_t W_ih + b_ih + b_hh + h_{t-1} W_hh          z_t: [b, 4h]
    i, f, o = σ(z_i), σ(z_f), σ(z_o);   g = tanh(z_g)
    c_t = f ∘ c_{t-1} + i ∘ g
    h_t = o ∘ tanh(c_t)

The input part ``x W_ih + b`` of a whole segment is one matmul before the time loop
(:func:`input_projection`); only ``h_{t-1} W_hh`` runs inside ``jax.lax.scan``
(:func:`lstm_recurrence`, step :func:`lstm_cell`). :func:`lstm_recurrence_fused` is the same
recurrence with a hand-written backward pass (the reverse loop runs only ``dz_t W_hhᵀ``; the
weight gradient is one large matmul after it). Matmuls run in the weights' dtype (float32 or
bfloat16) with float32 accumulation (:func:`dot_f32`); gates, cell state and the carry stay
float32. :class:`LSTMLayer` holds one layer's parameters, initialised as ``torch.nn.LSTM``
(all four uniform ±1/√h, optionally chrono-initialised gate biases).

TensorFlow ``BasicLSTMCell`` (:func:`basic_lstm_cell`), the NTM controller of Collier & Beel:
one kernel over ``[x, h]``, one bias, gate order i, j, f, o and a constant forget bias added
inside the cell::

    i, j, f, o = [x_t, h_{t-1}] W + b
    c_t = σ(f + forget_bias) ∘ c_{t-1} + σ(i) ∘ tanh(j)
    h_t = tanh(c_t) ∘ σ(o)

Both cells share the state :class:`LSTMState` ``(h, c)``, batch first.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float


class LSTMState(NamedTuple):
    """State of one LSTM layer, batch first."""

    h: Float[Array, "b h"]
    c: Float[Array, "b h"]


class LSTMWeights(NamedTuple):
    """One layer's weights in ``x @ W`` layout: ``w_ih = torch weight_ih_l0.T`` etc."""

    w_ih: Float[Array, "d g"]
    w_hh: Float[Array, "h g"]
    b_ih: Float[Array, " g"]
    b_hh: Float[Array, " g"]


def dot_f32(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` in ``w``'s dtype with float32 accumulation and result (float64 when ``w`` is
    float64, as in the float64 cross-checks against the reference code).

    Leading axes are flattened first so that the matmul, and both matmuls of its gradient,
    are plain 2-D products (XLA's CPU backend is markedly slower on batched contractions).
    """
    lead = x.shape[:-1]
    y = jnp.matmul(x.reshape(-1, x.shape[-1]).astype(w.dtype), w,
                   preferred_element_type=jnp.promote_types(jnp.float32, w.dtype))
    return y.reshape(*lead, w.shape[-1])


def gate_activations(z: Float[Array, "b g"]) -> Float[Array, "b g"]:
    """σ on the i, f, o blocks and tanh on the g block of ``z = [z_i, z_f, z_g, z_o]``."""
    zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
    return jnp.concatenate(
        [jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg), jax.nn.sigmoid(zo)], axis=-1
    )


def lstm_cell(
    w_hh: Float[Array, "h g"], state: LSTMState, x_proj_t: Float[Array, "b g"]
) -> LSTMState:
    """One LSTM step; ``x_proj_t = x_t W_ih + b_ih + b_hh`` is precomputed."""
    a = gate_activations(x_proj_t + dot_f32(state.h, w_hh))
    i, f, g, o = jnp.split(a, 4, axis=-1)
    c = f * state.c + i * g
    return LSTMState(o * jnp.tanh(c), c)


def input_projection(
    weights: LSTMWeights, xs: Float[Array, "... d"]
) -> Float[Array, "... g"]:
    """``x W_ih + b_ih + b_hh`` for every time step at once (one matmul), float32."""
    bias = weights.b_ih + weights.b_hh
    return dot_f32(xs, weights.w_ih) + bias.astype(jnp.promote_types(jnp.float32, bias.dtype))


def lstm_recurrence(
    w_hh: Float[Array, "h g"],
    state: LSTMState,
    x_proj: Float[Array, "t b g"],
    *,
    unroll: int = 1,
) -> tuple[Float[Array, "t b h"], LSTMState]:
    """Run :func:`lstm_cell` over time with ``jax.lax.scan`` (time-major); autodiff path."""

    def step(carry, xp):
        new = lstm_cell(w_hh, carry, xp)
        return new, new.h

    final, hs = jax.lax.scan(step, state, x_proj, unroll=unroll)
    return hs, final


# --- fused backward -------------------------------------------------------------------


def _fused_forward(w_hh, bias, h0, c0, x_proj, unroll):
    """The forward scan; besides the outputs it returns the backward's factors.

    The factors ``d_t = [g∘i(1-i), c_{t-1}∘f(1-f), i(1-g²), tanh c_t∘o(1-o)]`` go into the
    rows of ``x_proj`` as each row is read (its buffer is dead after that read, so XLA
    updates it in place instead of zero-filling a new [t, b, 4h] buffer); ``e_t =
    o∘(1-tanh²c_t)`` and ``f_t`` are stacked.

    Written for XLA:CPU, where each separately compiled elementwise op in the loop costs a
    few microseconds whatever its size: σ runs over all of ``z`` at once (the g block's σ is
    computed and not used) instead of over three [b, h] slices, and each block of ``d_t`` is
    written into its row by its own update (a concatenate would be one more op, and its
    operands four). Same functions on the same inputs as :func:`gate_activations`, so the
    values are the same.
    """
    h_dim = h0.shape[-1]

    def step(carry, _):
        t, h, c, rows = carry
        z = (jax.lax.dynamic_index_in_dim(rows, t, keepdims=False) + bias) + dot_f32(h, w_hh)
        s = jax.nn.sigmoid(z)
        i, f, o = s[:, :h_dim], s[:, h_dim:2 * h_dim], s[:, 3 * h_dim:]
        g = jnp.tanh(z[:, 2 * h_dim:3 * h_dim])
        c_new = f * c + i * g
        tanh_c = jnp.tanh(c_new)
        h_new = o * tanh_c
        blocks = (g * i * (1.0 - i), c * f * (1.0 - f), i * (1.0 - g * g),
                  tanh_c * o * (1.0 - o))
        for k, block in enumerate(blocks):
            rows = jax.lax.dynamic_update_slice(rows, block[None], (t, 0, k * h_dim))
        return (t + 1, h_new, c_new, rows), (h_new, o * (1.0 - tanh_c * tanh_c), f)

    (_, h_t, c_t, ds), (hs, es, fs) = jax.lax.scan(
        step, (0, h0, c0, x_proj), None, length=x_proj.shape[0], unroll=unroll)
    return hs, h_t, c_t, (ds, es, fs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _recurrence_fused(w_hh, bias, h0, c0, x_proj, unroll):
    hs, h_t, c_t, _ = _fused_forward(w_hh, bias, h0, c0, x_proj, unroll)
    return hs, h_t, c_t


def _recurrence_fused_fwd(w_hh, bias, h0, c0, x_proj, unroll):
    hs, h_t, c_t, factors = _fused_forward(w_hh, bias, h0, c0, x_proj, unroll)
    return (hs, h_t, c_t), (w_hh, bias, h0, hs, factors)


def _recurrence_fused_bwd(unroll, residuals, cotangents):
    w_hh, bias, h0, hs, (ds, es, fs) = residuals
    d_hs, d_ht, d_ct = cotangents
    w_hh_t = w_hh.T
    steps = hs.shape[0]

    def step(carry, _):  # t runs from the last step down; dz_t replaces d_t in its row
        t, dh_next, dc_next, rows = carry
        row = lambda x: jax.lax.dynamic_index_in_dim(x, t, keepdims=False)
        dh = row(d_hs) + dh_next
        dc = dc_next + dh * row(es)
        dz = jnp.concatenate([dc, dc, dc, dh], axis=-1) * row(rows)
        rows = jax.lax.dynamic_update_index_in_dim(rows, dz, t, 0)
        return (t - 1, dot_f32(dz, w_hh_t), dc * row(fs), rows), None

    (_, dh0, dc0, dz), _ = jax.lax.scan(
        step, (steps - 1, d_ht, d_ct, ds), None, length=steps, unroll=unroll)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    _, b, h = h_prev.shape
    dw_hh = jnp.matmul(
        h_prev.reshape(steps * b, h).T, dz.reshape(steps * b, 4 * h),
        preferred_element_type=jnp.promote_types(jnp.float32, dz.dtype)
    )
    d_bias = jnp.sum(dz, axis=(0, 1))
    # h0, c0, the bias and x_proj share one dtype (lstm_recurrence_fused casts them to it)
    return (dw_hh.astype(w_hh.dtype), d_bias.astype(bias.dtype), dh0.astype(h0.dtype),
            dc0.astype(h0.dtype), dz)


_recurrence_fused.defvjp(_recurrence_fused_fwd, _recurrence_fused_bwd)


def lstm_recurrence_fused(
    w_hh: Float[Array, "h g"],
    state: LSTMState,
    x_proj: Float[Array, "t b g"],
    *,
    bias: Float[Array, " g"] | None = None,
    unroll: int = 1,
) -> tuple[Float[Array, "t b h"], LSTMState]:
    """:func:`lstm_recurrence` with a hand-written backward pass (the same values; gradients
    equal to rounding).

    ``bias`` (optional, ``b_ih + b_hh``) is added inside the loop, ``z_t = (x_proj_t + b) +
    h_{t-1} W_hh``, the same sum in the same order as :func:`input_projection` followed by
    :func:`lstm_recurrence`, without a pass over ``[t, b, 4h]`` to add it beforehand.

    The forward pass keeps, per step, the factors of the gate derivatives (elementwise work
    done while the gates are at hand, so the backward loop has no transcendental and no
    gate arithmetic)::

        d_t = [g∘i(1-i), c_{t-1}∘f(1-f), i(1-g²), tanh c_t∘o(1-o)]     [b, 4h]
        e_t = o∘(1 - tanh²c_t),  f_t                                     [b, h] each

    Backward::

        dh_t = ∂L/∂h_t (output) + dz_{t+1} W_hhᵀ
        dc_t = dc_{t+1} ∘ f_{t+1} + dh_t ∘ e_t
        dz_t = [dc_t, dc_t, dc_t, dh_t] ∘ d_t
        dW_hh = Σ_t h_{t-1}ᵀ dz_t   (one [h, t·b] × [t·b, 4h] matmul after the loop)
        db = Σ_t Σ_b dz_t

    ``d`` is written into ``x_proj``'s rows as the forward loop reads them, and ``dz`` into
    ``d``'s rows as the backward loop reads them, so neither loop fills a fresh [t, b, 4h]
    buffer with zeros (XLA updates a dead buffer in place; where ``x_proj`` is still needed
    elsewhere, it copies it first). ``dz`` is also the gradient of ``x_proj``, so autodiff of
    the input projection turns it into ``dW_ih`` and ``dx`` as single matmuls too.
    """
    # One dtype for the loop: what `z = (x_proj_t + b) + h W_hh` computes in (float32, or
    # float64 in float64 checks). The casts are free where the dtypes already match, and their
    # transposes hand each cotangent back in its input's dtype.
    dtype = jnp.result_type(jnp.float32, x_proj.dtype, jnp.promote_types(jnp.float32, w_hh.dtype),
                            *([] if bias is None else [bias.dtype]))
    bias = jnp.zeros(x_proj.shape[-1], dtype) if bias is None else bias.astype(dtype)
    hs, h_t, c_t = _recurrence_fused(
        w_hh, bias, state.h.astype(dtype), state.c.astype(dtype), x_proj.astype(dtype), unroll
    )
    return hs, LSTMState(h_t, c_t)


def lstm_layer(
    weights: LSTMWeights,
    state: LSTMState,
    xs: Float[Array, "b t d"],
    *,
    time_major: bool = False,
    unroll: int = 1,
    custom_vjp: bool = False,
) -> tuple[Float[Array, "b t h"], LSTMState]:
    """One LSTM layer over a sequence: input projection, then the recurrence.

    ``xs`` is ``[b, t, d]`` (``[t, b, d]`` with ``time_major=True``); outputs follow the
    same layout. Returns all hidden states and the final state.
    """
    if not time_major:
        xs = jnp.swapaxes(xs, 0, 1)
    if custom_vjp:  # the bias is added inside the recurrence's loop
        hs, final = lstm_recurrence_fused(weights.w_hh, state, dot_f32(xs, weights.w_ih),
                                          bias=weights.b_ih + weights.b_hh, unroll=unroll)
    else:
        hs, final = lstm_recurrence(weights.w_hh, state, input_projection(weights, xs),
                                    unroll=unroll)
    if not time_major:
        hs = jnp.swapaxes(hs, 0, 1)
    return hs, final


# --- parameters of one PyTorch-layout layer ------------------------------------------


def uniform(rngs: nnx.Rngs, shape: tuple[int, ...], bound: float) -> jax.Array:
    """U(-bound, bound), float32, from the next ``rngs.params()`` key."""
    return jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)


def chrono_biases(
    key: jax.Array, hidden_dim: int, max_lag: int, b_ih: jax.Array, b_hh: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Chrono initialisation (Tallec & Ollivier 2018, "Can recurrent neural networks warp
    time?", eq. 16): forget-gate bias ``b_f ~ log(U[1, T_max - 1])`` and input-gate bias
    ``b_i = -b_f``, so unit i starts with a characteristic memory time between 1 and
    ``T_max`` steps. With torch's two bias vectors the whole value goes into ``b_ih`` and the
    ``b_hh`` entries of the i and f blocks are 0. ``max_lag`` must be >= 3.
    """
    h = hidden_dim
    b_f = jnp.log(jax.random.uniform(key, (h,), jnp.float32, 1.0, max_lag - 1.0))
    b_ih = b_ih.at[:h].set(-b_f).at[h:2 * h].set(b_f)
    b_hh = b_hh.at[:2 * h].set(0.0)
    return b_ih, b_hh


class LSTMLayer(nnx.Module):
    """Parameters of one single-layer LSTM, initialised as ``torch.nn.LSTM``."""

    def __init__(self, in_dim: int, hidden_dim: int, *, rngs: nnx.Rngs, chrono_init: int = 0):
        bound = 1.0 / math.sqrt(hidden_dim)
        g = 4 * hidden_dim
        self.hidden_dim = hidden_dim
        self.w_ih = nnx.Param(uniform(rngs, (in_dim, g), bound))
        self.w_hh = nnx.Param(uniform(rngs, (hidden_dim, g), bound))
        b_ih = uniform(rngs, (g,), bound)
        b_hh = uniform(rngs, (g,), bound)
        if chrono_init:
            b_ih, b_hh = chrono_biases(rngs.params(), hidden_dim, chrono_init, b_ih, b_hh)
        self.b_ih = nnx.Param(b_ih)
        self.b_hh = nnx.Param(b_hh)

    def weights(self, dtype=None) -> LSTMWeights:
        """The weights in ``dtype`` (the matmul dtype; None: the parameters' own dtype, float32
        in training, float64 in the float64 cross-checks); biases keep their dtype."""
        dtype = dtype or self.w_ih[...].dtype
        return LSTMWeights(
            self.w_ih[...].astype(dtype), self.w_hh[...].astype(dtype),
            self.b_ih[...], self.b_hh[...],
        )

    def __call__(
        self,
        state: LSTMState,
        xs: Float[Array, "b t d"],
        *,
        dtype=None,
        unroll: int = 1,
        custom_vjp: bool = True,
    ) -> tuple[Float[Array, "b t h"], LSTMState]:
        """:func:`lstm_layer` over a batch-first segment with these weights."""
        return lstm_layer(self.weights(dtype), state, xs, unroll=unroll, custom_vjp=custom_vjp)


# --- TensorFlow BasicLSTMCell (the NTM controller) ----------------------------------------


def basic_lstm_cell(
    kernel: Float[Array, "d+h g"],
    bias: Float[Array, " g"],
    x: Float[Array, "b d"],
    state: LSTMState,
    forget_bias: float = 1.0,
) -> LSTMState:
    """TensorFlow ``BasicLSTMCell``: ``i, j, f, o = [x, h] W + b``;
    ``c' = sigmoid(f + forget_bias) c + sigmoid(i) tanh(j)``, ``h' = tanh(c') sigmoid(o)``."""
    z = jnp.concatenate([x, state.h], axis=-1) @ kernel + bias
    *_, so, c, tanh_c = basic_lstm_gates(z, state.c, forget_bias)
    return LSTMState(h=tanh_c * so, c=c)


def basic_lstm_gates(
    z: Float[Array, "b g"], c_prev: Float[Array, "b h"], forget_bias: float = 1.0
) -> tuple[jax.Array, ...]:
    """:func:`basic_lstm_cell`'s gates from its pre-activations ``z = [x, h] W + b``:
    ``(σ(i), tanh(j), σ(f + forget_bias), σ(o), c', tanh(c'))``, with
    ``c' = σ(f + forget_bias) c + σ(i) tanh(j)`` (``h' = tanh(c') σ(o)``)."""
    zi, zj, zf, zo = jnp.split(z, 4, axis=-1)
    si, tj = jax.nn.sigmoid(zi), jnp.tanh(zj)
    sf, so = jax.nn.sigmoid(zf + forget_bias), jax.nn.sigmoid(zo)
    c = sf * c_prev + si * tj
    return si, tj, sf, so, c, jnp.tanh(c)
