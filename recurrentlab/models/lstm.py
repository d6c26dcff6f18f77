"""LSTM language model with AWD-LSTM regularisation (Merity, Keskar & Socher 2017).

Reference: salesforce/awd-lstm-lm ``model.py``, ``weight_drop.py``, ``locked_dropout.py``,
``embed_regularize.py``, ``main.py``.

Shape legend: b batch, t time (segment length S), v vocabulary, e embedding size, d a layer's
input size, h a layer's hidden size, g = 4h gate pre-activations.

Cell (gate order i, f, g, o as ``torch.nn.LSTM``, so torch weights copy over transposed)::

    z_t = x_t W_ih + b_ih + b_hh + h_{t-1} W_hh          z_t: [b, 4h]
    i, f, o = σ(z_i), σ(z_f), σ(z_o);   g = tanh(z_g)
    c_t = f ∘ c_{t-1} + i ∘ g
    h_t = o ∘ tanh(c_t)

The input part ``x W_ih + b`` of a whole segment is one matmul before the time loop; only
``h_{t-1} W_hh`` runs inside ``jax.lax.scan``. The cell, the recurrence (plain and with the
fused backward) and the layer's parameters live in :mod:`recurrentlab.models.cells`, shared
with SHA-RNN; this module re-exports them (``lstm_cell``, ``lstm_layer``, ``LSTMState``...).

Model (AWD ``RNNModel``)::

    x   = locked_dropout(embedding_dropout(E, tokens, dropoute), dropouti)
    for l in layers:  x = LSTM_l(x; W_hh dropped with rate wdrop)
                      x = locked_dropout(x, dropouth)        (all but the last layer)
    out = locked_dropout(x, dropout)
    logits = out E^T + b      (tied)   or   out W_dec + b   (untied)

Layer sizes: layer 0 reads ``embed_dim``; every layer has ``hidden_dim`` units except the
last, which has ``embed_dim`` units when ``tie_weights`` (as AWD does) so the decoder can
reuse the embedding table.

Init (as the reference): LSTM weights and both biases uniform ±1/√h (``torch.nn.LSTM``);
embedding uniform ±0.1; untied decoder weight uniform ±0.1; decoder bias 0.

Init for synthetic tasks (not in the reference; fields, defaults off): ``embed_init="normal"``
draws the embedding from N(0, 1) (``torch.nn.Embedding``'s default). With AWD's ±0.1 table
and a small vocabulary the inputs are tiny against the ±1/√h recurrent weights and a small
LSTM sits on the unigram plateau for hundreds of steps (measured: delayed recall D = 8 stays
at chance for 1,500 steps; with N(0, 1) it is solved by step ~1,000). ``chrono_init=T``
sets the forget/input gate biases by chrono initialisation (:func:`chrono_biases`), for
dependencies of up to ~T steps.

Randomness: every dropout mask is sampled **once per model call** from ``key`` and
broadcast over the call's time steps — embedding row mask, locked masks, DropConnect masks
on ``W_hh``. Site ``i`` draws from ``fold_in(key, i)`` (``layers.Keys``, the discipline
every model follows): embedding 0, input 1, output 2, layer l's ``W_hh`` ``3 + 2l`` and its
output ``4 + 2l``. A call is one segment, so with ``train.bptt_segments=1`` (one segment per
optimiser step) this is exactly AWD-LSTM's once per batch; with K > 1 segments per window
each segment draws fresh masks (the trainer folds the segment index into the key).
``train=False`` or ``key=None``: no dropout at all.

AR/TAR: ``__call__`` keeps the carry contract ``(logits, carry)``. AWD's activation
penalties come through every model's auxiliary-loss hook, :meth:`LSTM.call_with_penalty`,
which also returns ``ar_alpha · mean(out²) + tar_beta · mean((h_t - h_{t-1})²)`` over the
segment (:func:`recurrentlab.models.regularizers.ar_tar_penalty`); the trainer adds it to the
optimised loss and logs it as ``penalty``, apart from the cross-entropy ``loss``/``bits``.

Fast path (``custom_vjp=True``): :func:`~recurrentlab.models.cells.lstm_recurrence_fused` is
the same recurrence with a hand-written backward pass: the forward loop keeps the factors of
the gate derivatives, so the reverse time loop runs only multiply-adds and the recurrent
matmul ``dz_t W_hhᵀ``; the weight gradient ``Σ_t h_{t-1}ᵀ dz_t`` is one large matmul after
the loop. Tests check it equals autodiff of the plain path (float32, and float64 to rounding).

Gradients through the carry (``train.carry_gradient``; :mod:`recurrentlab.train.carry_gradient`
has the equations): the LSTM supports ``"rtrl"`` (exact; the influence covers the embedding
and every layer, not the decoder, which never reaches the carry) and ``"snap1"`` (SnAp-1,
Menick et al. 2021, :func:`snap1_traces`). SnAp-1 keeps, per stream and per parameter of a
layer, the influence on the one unit the parameter feeds in one step: a weight into column
``j`` of the gates (``u = j mod h``) keeps traces for ``c_u`` and ``h_u``. Two choices, both
deliberate: (1) layers are treated one by one: layer ``l``'s traces cover its own
parameters and its own units; the influence of layer ``l-1``'s parameters on layer ``l``'s
state (through its input, within the same step) is dropped, which is SnAp-1 applied to
each layer as an RNN whose input is the layer below; (2) the embedding (and the decoder)
keep no traces: an embedding entry moves every unit of layer 0 in one step (a dense
pattern, O(units x vocabulary x e) per stream), so in ``"snap1"`` it learns from the
window's truncated gradient only.

Deviations from the authors' code (documented, deliberate):

* AWD draws a random sequence length per batch (``bptt`` with p=0.95 else ``bptt/2``, plus
  N(0, 5) noise) and rescales the learning rate by ``seq_len / bptt``. Our trainer uses a
  fixed ``train.segment_len``; the stream offsets move by exactly one window per step.
* Masks are per model call (see above), which equals AWD's per batch only when
  ``bptt_segments=1``.
* ``dtype="bfloat16"`` (not in the reference) runs the matmuls in bfloat16 with float32
  accumulation; gates, cell state and the carry stay float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int, PRNGKeyArray

from recurrentlab.errors import ConfigError
from recurrentlab.models.base import SequenceModel, register_model
from recurrentlab.models.cells import (  # re-exported (see __all__)
    LSTMLayer,
    LSTMState,
    LSTMWeights,
    chrono_biases,
    dot_f32,
    gate_activations,
    input_projection,
    lstm_cell,
    lstm_layer,
    lstm_recurrence,
    lstm_recurrence_fused,
    uniform,
)
from recurrentlab.models.layers import Keys
from recurrentlab.models.regularizers import (
    ar_tar_penalty,
    embedding_dropout,
    locked_dropout,
    weight_drop,
)

# --- SnAp-1 traces (train.carry_gradient="snap1") ------------------------------------


class Snap1Traces(NamedTuple):
    """SnAp-1 influence of one layer's parameters on their own unit, per stream.

    ``c.w_ih[b, r, j] = ∂c_u/∂W_ih[r, j]`` and ``h.w_ih[b, r, j] = ∂h_u/∂W_ih[r, j]`` with
    ``u = j mod h`` (the unit whose gate column ``j`` is), likewise for ``w_hh``, ``b_ih``,
    ``b_hh``: every leaf is ``[b, *parameter shape]``, float32.
    """

    c: LSTMWeights
    h: LSTMWeights


def init_snap1_traces(in_dim: int, hidden_dim: int, batch_size: int) -> Snap1Traces:
    """Zero traces (a fresh stream) of a layer reading ``in_dim`` inputs."""
    g = 4 * hidden_dim
    zeros = lambda *shape: jnp.zeros((batch_size, *shape), jnp.float32)
    weights = lambda: LSTMWeights(zeros(in_dim, g), zeros(hidden_dim, g), zeros(g), zeros(g))
    return Snap1Traces(weights(), weights())


def _tile_units(x: Float[Array, "... h"]) -> Float[Array, "... g"]:
    """Unit values onto gate columns: column ``j = γh + u`` gets ``x[u]``."""
    return jnp.tile(x, (1,) * (x.ndim - 1) + (4,))


def snap1_traces(
    weights: LSTMWeights,
    traces: Snap1Traces,
    state: LSTMState,
    xs: Float[Array, "t b d"],
    hs: Float[Array, "t b h"],
    *,
    w_hh_scale: Float[Array, "h g"] | None = None,
    unroll: int = 1,
) -> Snap1Traces:
    """Advance one layer's SnAp-1 traces over a segment (time-major, no gradient).

    ``weights`` are the weights the layer ran with (``w_hh`` after DropConnect; then
    ``w_hh_scale = ∂W_hh,eff/∂W_hh``, the mask over keep-probability), ``state`` the layer's
    state before the segment, ``xs`` its inputs and ``hs`` its outputs. With
    ``z_t = x_t W_ih + b_ih + b_hh + h_{t-1} W_hh`` and the gates ``i, f, g, o`` of ``z_t``::

        κ_t = ∂c_t/∂z_t = [g·i(1-i), c_{t-1}·f(1-f), i(1-g²), 0]              [b, 4h]
        η_t = ∂h_t/∂z_t = o(1-tanh²c_t)·κ_t + [0, 0, 0, tanh c_t·o(1-o)]
        w_γ[u] = W_hh[u, γh + u]   (each gate's recurrent diagonal)
        the 2x2 one-step Jacobian of unit u's (c_u, h_u):
            ∂c/∂c = f          ∂c/∂h = Σ_γ κ_γ w_γ
            ∂h/∂c = o(1-tanh²c_t)·f    ∂h/∂h = Σ_γ η_γ w_γ
        for a parameter θ[r, j] of unit u = j mod h with input ξ_r
        (x_t[r] for W_ih, h_{t-1}[r]·scale[r, j] for W_hh, 1 for the biases):
            Jc_t = ∂c/∂c·Jc_{t-1} + ∂c/∂h·Jh_{t-1} + κ_t[j]·ξ_r
            Jh_t = ∂h/∂c·Jc_{t-1} + ∂h/∂h·Jh_{t-1} + η_t[j]·ξ_r

    This is exact RTRL restricted to the SnAp-1 pattern (Menick et al. 2021, eq. 5 with
    n = 1): exact when the units do not interact (one unit, or ``W_hh`` zero off each
    gate's diagonal). Cost per step: an outer product per weight matrix, O(params) per
    stream, and one recomputation of the gates (a matmul, as the forward pass).
    """
    xs, hs = jax.lax.stop_gradient(xs), jax.lax.stop_gradient(hs)
    h0 = jax.lax.stop_gradient(state.h).astype(jnp.float32)
    c0 = jax.lax.stop_gradient(state.c).astype(jnp.float32)
    weights = jax.lax.stop_gradient(weights)
    h_prev = jnp.concatenate([h0[None], hs[:-1].astype(jnp.float32)], axis=0)
    z = input_projection(weights, xs) + dot_f32(h_prev, weights.w_hh)  # [t, b, 4h], float32
    h = h0.shape[-1]
    w_hh = weights.w_hh.astype(jnp.float32)
    diag = jnp.stack([w_hh[jnp.arange(h), k * h + jnp.arange(h)] for k in range(4)])  # [4, h]
    scale = None if w_hh_scale is None else w_hh_scale.astype(jnp.float32)

    def step(carry, inputs):
        c_prev, tr = carry
        x, hp, zt = inputs
        i, f, g, o = jnp.split(gate_activations(zt), 4, axis=-1)
        c = f * c_prev + i * g
        tanh_c = jnp.tanh(c)
        dtanh = o * (1.0 - tanh_c * tanh_c)
        kappa = jnp.concatenate([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g),
                                 jnp.zeros_like(o)], axis=-1)
        eta = _tile_units(dtanh) * kappa + jnp.concatenate(
            [jnp.zeros_like(i), jnp.zeros_like(f), jnp.zeros_like(g), tanh_c * o * (1 - o)],
            axis=-1)
        k4, e4 = kappa.reshape(*kappa.shape[:-1], 4, h), eta.reshape(*eta.shape[:-1], 4, h)
        a_cc, a_ch = f, jnp.sum(k4 * diag, axis=-2)
        a_hc, a_hh = dtanh * f, jnp.sum(e4 * diag, axis=-2)
        a_cc, a_ch, a_hc, a_hh = map(_tile_units, (a_cc, a_ch, a_hc, a_hh))  # [b, 4h]
        hp_in = hp[:, :, None] if scale is None else hp[:, :, None] * scale

        def advance(jc, jh, xi):  # xi: [b, r, 4h] input factor, or None (a bias)
            expand = (lambda v: v[:, None, :]) if xi is not None else (lambda v: v)
            imm_c = kappa if xi is None else xi * kappa[:, None, :]
            imm_h = eta if xi is None else xi * eta[:, None, :]
            return (expand(a_cc) * jc + expand(a_ch) * jh + imm_c,
                    expand(a_hc) * jc + expand(a_hh) * jh + imm_h)

        new = [advance(jc, jh, xi) for jc, jh, xi in zip(
            tr.c, tr.h, (x.astype(jnp.float32)[:, :, None], hp_in, None, None), strict=True)]
        tr = Snap1Traces(LSTMWeights(*(n[0] for n in new)), LSTMWeights(*(n[1] for n in new)))
        return (c, tr), None

    (_, traces), _ = jax.lax.scan(step, (c0, traces), (xs, h_prev, z), unroll=unroll)
    return traces


def snap1_gradient(carry_grad: LSTMState, traces: Snap1Traces) -> LSTMWeights:
    """``Σ_b g0_b · J0_b`` on one layer's parameters: ``∂L/∂θ[r, j] += Σ_b ∂L/∂c0_u ·
    Jc[b, r, j] + ∂L/∂h0_u · Jh[b, r, j]`` with ``u = j mod h`` (the SnAp-1 carry term)."""
    gc = _tile_units(carry_grad.c.astype(jnp.float32))
    gh = _tile_units(carry_grad.h.astype(jnp.float32))

    def contract(jc, jh):
        spec = "bj,bj->j" if jc.ndim == 2 else "bj,brj->rj"
        return jnp.einsum(spec, gc, jc) + jnp.einsum(spec, gh, jh)

    return LSTMWeights(*(contract(jc, jh) for jc, jh in zip(traces.c, traces.h, strict=True)))


# --- Flax module ----------------------------------------------------------------------


class LSTMOutput(NamedTuple):
    logits: Float[Array, "b t v"]
    carry: tuple[LSTMState, ...]
    raw_output: Float[Array, "b t e"]  # last layer's output before the output dropout
    dropped_output: Float[Array, "b t e"]  # after it (what the decoder reads)


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_EMBED_INITS = {  # embedding table initialisers: name -> (rngs, shape) -> array
    "awd": lambda rngs, shape: uniform(rngs, shape, 0.1),
    "normal": lambda rngs, shape: jax.random.normal(rngs.params(), shape, jnp.float32),
}


@register_model("lstm")
class LSTM(SequenceModel):
    """Multi-layer LSTM language model with AWD-LSTM regularisation (see module docstring).

    Carry: a tuple with one :class:`LSTMState` ``(h [b, h_l], c [b, h_l])`` per layer.
    """

    carry_gradient_modes = ("rtrl", "snap1")  # train.carry_gradient (see the module docstring)
    int_field_minimums = {"chrono_init": 0}  # 0: chrono init off (else >= 3)

    @classmethod
    def tiny_config(cls) -> dict:
        return dict(embed_dim=8, hidden_dim=12, num_layers=2, ar_alpha=1.0, tar_beta=1.0)

    def __init__(
        self,
        *,
        vocab_size: int,
        rngs: nnx.Rngs,
        embed_dim: int = 400,  # e: embedding size (= last layer's size when tied)
        hidden_dim: int = 1840,  # units of every layer but the last (when tied)
        num_layers: int = 3,  # stacked single-layer LSTMs
        tie_weights: bool = True,  # decoder reuses the embedding table (AWD default)
        dropout: float = 0.4,  # locked dropout on the last layer's output
        dropouth: float = 0.1,  # locked dropout between LSTM layers
        dropouti: float = 0.1,  # locked dropout on the embeddings
        dropoute: float = 0.0,  # embedding dropout: whole vocabulary rows
        wdrop: float = 0.2,  # DropConnect on every layer's hidden-to-hidden matrix
        ar_alpha: float = 0.0,  # activation regularisation (call_with_penalty)
        tar_beta: float = 0.0,  # temporal activation regularisation (call_with_penalty)
        scan_unroll: int = 1,  # unroll of the time loop
        custom_vjp: bool = True,  # hand-written backward (False: autodiff through lax.scan)
        dtype: str = "float32",  # matmul dtype: float32 | bfloat16 (parameters stay float32)
        embed_init: str = "awd",  # awd: uniform ±0.1 (reference) | normal: N(0, 1) (torch default)
        chrono_init: int = 0,  # T_max of chrono init of gate biases (Tallec & Ollivier); 0: off
    ):
        if num_layers < 1:
            raise ConfigError(f"model.num_layers must be >= 1, got {num_layers}")
        for name, rate in (("dropout", dropout), ("dropouth", dropouth),
                           ("dropouti", dropouti), ("dropoute", dropoute), ("wdrop", wdrop)):
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {rate}")
        if dtype not in _DTYPES:
            raise ConfigError(f"model.dtype '{dtype}' unknown; use {' or '.join(_DTYPES)}")
        if scan_unroll < 1:
            raise ConfigError(f"model.scan_unroll must be >= 1, got {scan_unroll}")
        if embed_init not in _EMBED_INITS:
            raise ConfigError(f"model.embed_init '{embed_init}' unknown; use "
                              f"{' or '.join(_EMBED_INITS)}")
        if chrono_init and chrono_init < 3:
            raise ConfigError(f"model.chrono_init must be 0 (off) or >= 3, got {chrono_init}")
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.num_layers = num_layers
        self.tie_weights = tie_weights
        self.dropout, self.dropouth, self.dropouti = dropout, dropouth, dropouti
        self.dropoute, self.wdrop = dropoute, wdrop
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta
        self.scan_unroll = scan_unroll
        self.custom_vjp = custom_vjp
        self.dtype = dtype

        self.embedding = nnx.Param(_EMBED_INITS[embed_init](rngs, (vocab_size, embed_dim)))
        sizes = [
            hidden_dim if i != num_layers - 1 else (embed_dim if tie_weights else hidden_dim)
            for i in range(num_layers)
        ]
        self.layer_sizes = tuple(sizes)
        inputs = [embed_dim] + sizes[:-1]
        self.layers = nnx.List(
            [LSTMLayer(d, h, rngs=rngs, chrono_init=chrono_init)
             for d, h in zip(inputs, sizes, strict=True)]
        )
        if not tie_weights:
            self.decoder = nnx.Param(uniform(rngs, (sizes[-1], vocab_size), 0.1))
        self.decoder_bias = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))

    def init_carry(self, batch_size: int) -> tuple[LSTMState, ...]:
        return tuple(
            LSTMState(jnp.zeros((batch_size, h), jnp.float32), jnp.zeros((batch_size, h),
                                                                           jnp.float32))
            for h in self.layer_sizes
        )

    def forward(
        self,
        tokens: Int[Array, "b t"],
        carry: tuple[LSTMState, ...],
        *,
        train: bool = False,
        key: PRNGKeyArray | None = None,
    ) -> LSTMOutput:
        """The full forward pass, also returning the last layer's raw and dropped outputs."""
        return self._run(tokens, carry, train=train, key=key)[0]

    def _run(self, tokens, carry, *, train, key, traces=None):
        """``forward``, and with ``traces`` (SnAp-1) the traces advanced over the call."""
        if len(carry) != self.num_layers:
            raise ValueError(f"carry has {len(carry)} layers, model has {self.num_layers}")
        dtype = _DTYPES[self.dtype]
        drop = train and key is not None
        sites = Keys(key, train)  # site i draws from fold_in(key, i)
        keys = [sites.at(i) for i in range(3 + 2 * self.num_layers)]
        k_embed, k_in, k_out, k_layers = keys[0], keys[1], keys[2], keys[3:]

        table = self.embedding[...]
        # time-major inside: [t, b, e]
        x = embedding_dropout(k_embed, table, tokens.T, self.dropoute if drop else 0.0)
        x = locked_dropout(k_in, x, self.dropouti if drop else 0.0, time_axis=0)
        new_carry, new_traces = [], []
        for i, layer in enumerate(self.layers):
            weights = layer.weights(dtype)
            w_hh = weight_drop(k_layers[2 * i], weights.w_hh, self.wdrop if drop else 0.0)
            x_in = x
            x, state = lstm_layer(
                weights._replace(w_hh=w_hh), carry[i], x, time_major=True,
                unroll=self.scan_unroll, custom_vjp=self.custom_vjp,
            )
            if traces is not None:
                scale = (weight_drop(k_layers[2 * i], jnp.ones_like(weights.w_hh), self.wdrop)
                         if drop and self.wdrop else None)
                new_traces.append(snap1_traces(weights._replace(w_hh=w_hh), traces[i], carry[i],
                                               x_in, x, w_hh_scale=scale,
                                               unroll=self.scan_unroll))
            new_carry.append(state)
            if i != self.num_layers - 1:
                x = locked_dropout(k_layers[2 * i + 1], x, self.dropouth if drop else 0.0,
                                   time_axis=0)
        raw = jnp.swapaxes(x, 0, 1)
        out = locked_dropout(k_out, raw, self.dropout if drop else 0.0, time_axis=1)
        if self.tie_weights:
            logits = dot_f32(out, table.astype(dtype).T)
        else:
            logits = dot_f32(out, self.decoder[...].astype(dtype))
        logits = logits + self.decoder_bias[...]
        out = LSTMOutput(logits, tuple(new_carry), raw, out)
        return out, (tuple(new_traces) if traces is not None else None)

    def __call__(
        self,
        tokens: Int[Array, "b t"],
        carry: tuple[LSTMState, ...],
        *,
        train: bool = False,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, "b t v"], tuple[LSTMState, ...]]:
        out = self.forward(tokens, carry, train=train, key=key)
        return out.logits, out.carry

    def call_with_penalty(
        self,
        tokens: Int[Array, "b t"],
        carry: tuple[LSTMState, ...],
        *,
        train: bool = False,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, "b t v"], tuple[LSTMState, ...], Float[Array, ""]]:
        """``(logits, carry, penalty)``: ``penalty`` is AWD's AR + TAR term for this segment.

        Add it to the mean cross-entropy of the segment in training (AWD adds it to every
        batch's loss). It is 0 when ``ar_alpha == tar_beta == 0``.
        """
        out = self.forward(tokens, carry, train=train, key=key)
        penalty = ar_tar_penalty(out.dropped_output, out.raw_output,
                                 alpha=self.ar_alpha, beta=self.tar_beta)
        return out.logits, out.carry, penalty

    # --- generation (recurrentlab.sample): one cell step per token ----------------------

    decode_supported = True

    def decode_init(self, carry: tuple[LSTMState, ...], batch_size: int,
                    segment_len: int) -> tuple[LSTMState, ...]:
        """The decode state is the carry itself."""
        del batch_size, segment_len
        return carry

    def decode_step(
        self, token: Int[Array, " b"], state: tuple[LSTMState, ...]
    ) -> tuple[Float[Array, "b v"], tuple[LSTMState, ...]]:
        """One token through every layer (:func:`lstm_cell`) and the decoder, no dropout."""
        dtype = _DTYPES[self.dtype]
        table = self.embedding[...]
        x = jnp.take(table, token, axis=0)
        new_state = []
        for layer, layer_state in zip(self.layers, state, strict=True):
            weights = layer.weights(dtype)
            layer_state = lstm_cell(weights.w_hh, layer_state, input_projection(weights, x))
            new_state.append(layer_state)
            x = layer_state.h
        decoder = table.T if self.tie_weights else self.decoder[...]
        logits = dot_f32(x, decoder.astype(dtype)) + self.decoder_bias[...]
        return logits, tuple(new_state)

    def decode_carry(self, state: tuple[LSTMState, ...]) -> tuple[LSTMState, ...]:
        return state

    # --- train.carry_gradient ------------------------------------------------------------

    def influence_filter(self):
        """``"rtrl"``: the embedding and the layers move the carry; the decoder does not."""
        return (nnx.PathContains("embedding"), nnx.PathContains("layers"))

    def init_traces(self, batch_size: int) -> tuple[Snap1Traces, ...]:
        """``"snap1"``: zero :class:`Snap1Traces` per layer."""
        inputs = (self.embed_dim,) + self.layer_sizes[:-1]
        return tuple(init_snap1_traces(d, h, batch_size)
                     for d, h in zip(inputs, self.layer_sizes, strict=True))

    def call_with_traces(
        self,
        tokens: Int[Array, "b t"],
        carry: tuple[LSTMState, ...],
        traces: tuple[Snap1Traces, ...],
        *,
        train: bool = False,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, "b t v"], tuple[LSTMState, ...], tuple[Snap1Traces, ...],
               Float[Array, ""]]:
        """``(logits, carry, traces, penalty)``: :meth:`call_with_penalty` that also advances
        every layer's SnAp-1 traces (:func:`snap1_traces`) over the call."""
        out, traces = self._run(tokens, carry, train=train, key=key, traces=traces)
        penalty = ar_tar_penalty(out.dropped_output, out.raw_output,
                                 alpha=self.ar_alpha, beta=self.tar_beta)
        return out.logits, out.carry, traces, penalty

    def traces_gradient(
        self, carry_grad: tuple[LSTMState, ...], traces: tuple[Snap1Traces, ...]
    ) -> dict[tuple, jax.Array]:
        """``"snap1"``: the carry term ``Σ_b g0_b · J0_b`` of every layer's parameters."""
        out = {}
        for i, (g, tr) in enumerate(zip(carry_grad, traces, strict=True)):
            for name, value in snap1_gradient(g, tr)._asdict().items():
                out[("layers", i, name)] = value
        return out


__all__ = [  # this module's names, and the cell's names it has always exported
    "LSTM", "LSTMLayer", "LSTMOutput", "LSTMState", "LSTMWeights", "Snap1Traces",
    "chrono_biases", "init_snap1_traces", "input_projection", "lstm_cell", "lstm_layer",
    "lstm_recurrence", "lstm_recurrence_fused", "snap1_gradient", "snap1_traces",
]
