"""SHA-RNN: the Single Headed Attention RNN of Merity (2019), "Stop Thinking With Your Head".

Follows the authors' ``model.py`` (Smerity/sha-rnn: ``SHARNN``, ``Block``, ``Attention``,
``Overparam``, ``Boom``). Shape legend: b batch, s segment tokens, m ``mem_len``,
l keys (m when s < m; m + s when s >= m, or s with ``mem_trim="window"``), d ``d_model``,
f ``d_ff``, v vocabulary.

Model, for a segment ``x`` Int[b, s] (all LayerNorms have eps 1e-12, their own scale/bias)::

    h = drop_in(E[x])                                     E: Float[v, d], tied to the decoder
    for each block n = 0 .. num_layers-1:
        h = drop_h(LSTM_n(LN_start(h)))                   no residual around the LSTM
        if n in attn_layers:
            mh = LN_mem(h); h = LN_mid(h)
            kv = [trim(memory_n) ; mh]                    carried states + segment, [b, l, d]
            q = σ(qs) ⊙ LN_q(W_q h + b_q)                 qs, ks, vs: Float[d], start at zero
            k = σ(ks) ⊙ kv
            [c, f] = W_o σ(vs) + b_o                      "Overparam": Linear(d -> 2d)
            v = σ(f) ⊙ tanh(c) ⊙ kv                       no K, V or output projections
            q, v = drop_a(q), drop_a(v)
            p_ij = drop_p(softmax_j(q_i · k_j / √d))      causal, memory open, empty slots shut
            h = drop_h(Σ_j p_ij v_j) + h
            memory_n = kv                                 (its last m rows; see below)
        u = GELU(W_1 LN_xff(h) + b_1)                     "Boom": Linear(d -> f), GELU = u·σ(1.702u)
        h = drop_h(Σ_{r<f/d} drop_h(u)[..., r·d:(r+1)·d]) + LN_ff(h)   f/d chunks, summed
    logits = drop_out(h) Eᵀ + b_dec

Memory (exactly the authors' ``num_max_positions`` logic, ``mem_trim = "authors"``): the carry
keeps the last ``m`` normalised states ``LN_mem(h)`` of each attention block, ``mem_count``
(Int[b]) of them filled. Before a segment of ``s`` tokens the authors trim the memory they hold
(L states) with ``mem[-(m - s):]`` and attend over ``[trimmed memory; segment]`` (causally in
the segment, open over the memory), then keep the last ``m`` of those states. Python's slice
makes three cases:

* ``s < m``: the newest ``min(L, m - s)`` states are kept, so a segment's last query sees
  exactly ``m`` keys; query ``i`` (absolute position p, segment start p0) sees keys
  ``p0 - (m - s) <= j <= p``. With one token per call that is a sliding window of ``m`` keys.
  In the paper ``m = 5000``, ``s = 1024``.
* ``s = m``: ``mem[-0:]`` is the whole memory: the segment reads all L carried states (the
  previous segment, once full), its last query ``2m`` keys.
* ``s > m``: ``mem[-(m - s):] = mem[s - m:]`` drops the *first* ``s - m`` states, keeping the
  newest ``max(L - (s - m), 0)``: ``2m - s`` once the memory is full (none for ``s >= 2m``).

``mem_trim = "window"`` is the rule the authors' ``maxmem = num_max_positions - len(e)``
intends (keep at most ``m - s`` states): the same for ``s < m``, and no memory read at ``s >= m`` (a
segment's last query sees ``max(m, s)`` keys). Both are reasonable; the default follows the code
the paper's numbers come from. Slots not filled yet (stream start, after a reset) are masked
through ``kv_start``; ``m = 0`` means no memory across calls (the authors' code, whose
``bigh[-0:]`` keeps everything, reads none either at a fixed segment length).

The LSTM of every block is the shared PyTorch-layout cell of :mod:`recurrentlab.models.cells`
(input projection as one matmul, the time loop under ``jax.lax.scan``, and with
``custom_vjp=True`` the hand-written backward pass of ``cells.lstm_recurrence_fused``).

Carry (``SHARNNCarry``): ``lstm`` per block ``LSTMState(h, c)`` Float[b, d] each; ``memory`` per
attention block (in ``attn_layers`` order) Float[b, m, d]; ``mem_count`` Int[b].

Initialisation as the authors': Embedding and every Linear N(0, (0.1/√d)²) with zero biases;
LSTM weights and both biases U(−1/√d, 1/√d) (PyTorch's ``nn.LSTM`` default, untouched by their
``init_weights``); LayerNorm scale 1, bias 0 (apex FusedLayerNorm is not an ``nn.LayerNorm``);
qs, ks, vs zero; decoder bias zero.

Attention goes through :func:`recurrentlab.ops.attention.attention` (head axis of 1,
``MaskSpec()`` causal with the memory prefix open, ``kv_start``, ``impl``) so a fused kernel can
serve it, with ``dropout_attn_probs`` as the op's attention-probability dropout (a hash mask
the kernel regenerates per tile; the authors draw it with ``nn.Dropout``, the same law).

Deliberate deviations from the authors' code (all other details match):

* Parameters the authors allocate but never read are not created: ``Attention.qkvs`` (3d) and
  ``Attention.r_gate`` (d), ``Block.lnout`` (2d), and ``lnmem``/``lnmid`` (4d) in blocks without
  attention. The parameter count (``base.config_params``) therefore differs from
  ``sum(p.numel())`` of their module by exactly that much (tested).
* The Overparam value gate is kept during evaluation too (the authors' ``vq_collapse`` folds it
  into ``vs`` after training; the function computed is the same).
* Training-loop details that live outside the model are not reproduced here: the authors draw
  each batch's length from N(bptt, 5) (bptt/2 with probability 0.05) and drop the LSTM state
  and the memory with probability 0.025 per batch; our trainer uses a fixed segment length
  and carries the state. They train under apex AMP O1 (fp16 matmuls); we compute in float32.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jaxtyping import Array, Float, Int

from recurrentlab.errors import ConfigError
from recurrentlab.models.base import SequenceModel, config_params, register_model
from recurrentlab.models.cells import (
    LSTMLayer,
    LSTMState,
    dot_f32,
    input_projection,
    lstm_cell,
)
from recurrentlab.models.layers import Keys, dropout
from recurrentlab.ops.attention import MaskSpec, attention, attention_reference
from recurrentlab.ops.dispatch import IMPLS

LN_EPS = 1e-12  # the authors' LayerNorm epsilon


class SHARNNDecodeState(NamedTuple):
    """Generation inside a segment: per-block LSTM states, per-attention-block key/value
    sources ``[trimmed memory; segment states]`` Float[b, l, d] (the segment rows filled up
    to the current token), their ``kv_start`` and ``row``, the key row of the next token."""

    lstm: tuple[LSTMState, ...]
    kv: tuple[jax.Array, ...]
    kv_start: jax.Array | None
    row: jax.Array  # Int[]: l - segment_len + (tokens of the segment fed so far)


class SHARNNCarry(NamedTuple):
    """Per-block LSTM states, per-attention-block memories [b, m, d], filled slots Int[b]."""

    lstm: tuple[LSTMState, ...]
    memory: tuple[jax.Array, ...]
    mem_count: jax.Array


# ----------------------------------------------------------------------------- pure functions


def gelu_sigmoid(x: jax.Array) -> jax.Array:
    """The authors' GELU approximation ``x σ(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


MEM_TRIMS = ("authors", "window")


def memory_geometry(
    mem_len: int, seg_len: int, mem_count: Int[Array, " b"], trim: str = "authors"
) -> tuple[Int[Array, " b"] | None, Int[Array, " b"]]:
    """``kv_start`` for the keys of :func:`memory_keys` and the new filled-slot count.

    ``s < m``: keys ``[memory[:, s:]; segment]``, the first ``max(m - s - L, 0)`` empty.
    ``s >= m`` with ``trim="authors"``: keys ``[memory; segment]``; the authors keep the newest
    ``len(mem[-(m - s):])`` of the L held states, i.e. keys from ``min(s - L, m)`` on.
    ``s >= m`` with ``trim="window"``: keys = the segment alone (``None``).
    """
    if trim not in MEM_TRIMS:
        raise ConfigError(f"sha_rnn: mem_trim '{trim}' unknown; use {', '.join(MEM_TRIMS)}")
    if mem_len == 0:
        return None, mem_count
    full = jnp.full_like(mem_count, mem_len)
    if seg_len >= mem_len:
        if trim == "window":
            return None, full
        return jnp.minimum(seg_len - mem_count, mem_len).astype(jnp.int32), full
    kv_start = jnp.maximum(mem_len - seg_len - mem_count, 0).astype(jnp.int32)
    return kv_start, jnp.minimum(mem_count + seg_len, mem_len).astype(jnp.int32)


def memory_keys(
    memory: Float[Array, "b m d"], states: Float[Array, "b s d"], trim: str = "authors"
) -> tuple[Float[Array, "b l d"], Float[Array, "b m d"]]:
    """Keys/values source and the memory to carry (the last m of memory and states).

    ``s < m``: ``[memory[:, s:]; states]`` (l = m). ``s >= m``: ``[memory; states]``
    (l = m + s) with ``trim="authors"``, ``states`` with ``trim="window"``; either way the
    carried memory is the segment's last m states. See :func:`memory_geometry` for the mask.
    """
    mem_len, seg_len = memory.shape[1], states.shape[1]
    if mem_len == 0:
        return states, memory
    if seg_len >= mem_len:
        kv = states if trim == "window" else jnp.concatenate([memory.astype(states.dtype),
                                                              states], axis=1)
        return kv, states[:, seg_len - mem_len:]
    kv = jnp.concatenate([memory[:, seg_len:].astype(states.dtype), states], axis=1)
    return kv, kv


# ----------------------------------------------------------------------------- modules


def _normal(std: float):
    return nnx.initializers.normal(stddev=std)


def linear(layer: nnx.Linear, x: Float[Array, "... i"]) -> Float[Array, "... o"]:
    """``layer(x)`` as one 2-D matmul (:func:`~recurrentlab.models.cells.dot_f32`): XLA's CPU
    backend runs the weight gradient of a 3-D ``nnx.Linear`` as a transposed copy and a slow
    contraction (the Boom's: 13-14 ms against 4.5 ms as a 2-D product, T 128, B 16, E 256)."""
    return dot_f32(x, layer.kernel[...]) + layer.bias[...]


def _layer_norm(d: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(d, epsilon=LN_EPS, rngs=rngs)


class SingleHeadAttention(nnx.Module):
    """The authors' ``Attention(q=True, k=False, v=False, r=False, heads=1)`` with Overparam."""

    def __init__(self, d: int, *, init_std: float, rngs: nnx.Rngs):
        self.d = d
        self.qs = nnx.Param(jnp.zeros((d,)))
        self.ks = nnx.Param(jnp.zeros((d,)))
        self.vs = nnx.Param(jnp.zeros((d,)))
        self.q = nnx.Linear(d, d, kernel_init=_normal(init_std), rngs=rngs)
        self.q_norm = _layer_norm(d, rngs)
        self.overparam = nnx.Linear(d, 2 * d, kernel_init=_normal(init_std), rngs=rngs)

    def gates(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """σ(qs), σ(ks) and the value gate σ(f)·tanh(c), [c, f] = Overparam(σ(vs))."""
        c, f = jnp.split(self.overparam(jax.nn.sigmoid(self.vs[...])), 2, axis=-1)
        return (jax.nn.sigmoid(self.qs[...]), jax.nn.sigmoid(self.ks[...]),
                jax.nn.sigmoid(f) * jnp.tanh(c))

    def __call__(
        self,
        h: Float[Array, "b s d"],
        kv: Float[Array, "b l d"],
        kv_start: Int[Array, " b"] | None,
        *,
        drop_qv: float = 0.0,
        drop_probs: float = 0.0,
        key: jax.Array | None = None,
        impl: str = "auto",
    ) -> Float[Array, "b s d"]:
        """Attention of the segment's (mid-normalised) states ``h`` over ``kv`` (see module doc)."""
        q_gate, k_gate, v_gate = self.gates()
        q = q_gate * self.q_norm(linear(self.q, h))
        k = k_gate * kv
        v = v_gate * kv
        keys = (None,) * 3 if key is None else tuple(jax.random.split(key, 3))
        q = dropout(q, drop_qv, keys[0])
        v = dropout(v, drop_qv, keys[1])
        q, k, v = q[:, None], k[:, None], v[:, None]  # head axis of 1
        scale = 1.0 / math.sqrt(self.d)
        out = attention(q, k, v, spec=MaskSpec(), scale=scale, kv_start=kv_start,
                        dropout=drop_probs, key=keys[2], impl=impl)
        return out[:, 0]

    def decode(
        self,
        h: Float[Array, "b 1 d"],
        kv: Float[Array, "b l d"],
        kv_start: Int[Array, " b"] | None,
        row: Int[Array, ""],
    ) -> Float[Array, "b 1 d"]:
        """One query, at key row ``row`` of ``kv``, over the keys ``kv_start <= j <= row``
        (what :meth:`__call__` gives that query over the whole segment), no dropout."""
        q_gate, k_gate, v_gate = self.gates()
        q = q_gate * self.q_norm(linear(self.q, h))
        later = jnp.arange(kv.shape[1]) > row
        bias = jnp.where(later, -jnp.inf, 0.0)[None, None, None, :]
        out = attention_reference(q[:, None], (k_gate * kv)[:, None], (v_gate * kv)[:, None],
                                  spec=MaskSpec(causal=False), scale=1.0 / math.sqrt(self.d),
                                  kv_start=kv_start, bias=bias)
        return out[:, 0]


class Boom(nnx.Module):
    """``Boom(shortcut=True)``: Linear(d -> f), GELU, dropout, f/d chunks of width d summed."""

    def __init__(self, d: int, d_ff: int, *, init_std: float, rngs: nnx.Rngs):
        if d_ff % d:
            raise ConfigError(f"sha_rnn: d_ff ({d_ff}) must be a multiple of d_model ({d})")
        self.d = d
        self.linear = nnx.Linear(d, d_ff, kernel_init=_normal(init_std), rngs=rngs)

    def __call__(self, x: jax.Array, *, rate: float = 0.0, key: jax.Array | None = None):
        u = dropout(gelu_sigmoid(linear(self.linear, x)), rate, key)
        return u.reshape(u.shape[:-1] + (-1, self.d)).sum(axis=-2)


class Block(nnx.Module):
    """LN -> LSTM -> dropout -> [single-head attention] -> Boom, as the authors' ``Block``."""

    def __init__(self, d: int, d_ff: int, *, use_attn: bool, init_std: float, rngs: nnx.Rngs):
        self.ln_start = _layer_norm(d, rngs)
        self.lstm = LSTMLayer(d, d, rngs=rngs)
        if use_attn:
            self.ln_mem = _layer_norm(d, rngs)
            self.ln_mid = _layer_norm(d, rngs)
            self.attn = SingleHeadAttention(d, init_std=init_std, rngs=rngs)
        else:
            self.attn = None
        self.ln_ff = _layer_norm(d, rngs)
        self.ln_xff = _layer_norm(d, rngs)
        self.boom = Boom(d, d_ff, init_std=init_std, rngs=rngs)


@register_model("sha_rnn")
class SHARNN(SequenceModel):
    """Single Headed Attention RNN (Merity 2019); equations and deviations in the module doc."""

    int_field_minimums = {"mem_len": 0}  # 0: attention within the segment only

    @classmethod
    def tiny_config(cls) -> dict:
        return dict(num_layers=2, d_model=16, d_ff=32, mem_len=16, attn_layers=(0,))

    def __init__(
        self,
        *,
        vocab_size: int,
        rngs: nnx.Rngs,
        d_model: int = 1024,  # embedding = LSTM hidden = attention width (authors' emsize)
        d_ff: int = 4096,  # Boom width, a multiple of d_model (authors' nhid)
        num_layers: int = 4,  # blocks (authors' nlayers)
        # blocks with attention; negatives count from the end; () = none
        attn_layers: Sequence[int] = (-2,),
        mem_len: int = 5000,  # m: normalised states kept; the last query of a segment sees m keys
        mem_trim: str = "authors",  # s >= mem_len: authors (their mem[-(m - s):] slice) | window
        dropout_input: float = 0.1,  # on the embedding output (authors' dropouti)
        dropout_hidden: float = 0.1,  # after LSTM, attention, inside and after Boom (dropouth)
        dropout_attn: float = 0.1,  # on attention q and v (authors: dropouth)
        dropout_attn_probs: float = 0.1,  # on attention probabilities (in the kernel too)
        dropout_output: float = 0.1,  # on the last block's output, before the decoder (dropout)
        impl: str = "auto",  # attention implementation: auto | xla | pallas | interpret
        lstm_unroll: int = 1,  # jax.lax.scan unroll of the LSTM over time
        custom_vjp: bool = True,  # LSTM: hand-written backward (False: autodiff through lax.scan)
    ):
        if num_layers < 1:
            raise ConfigError(f"sha_rnn: num_layers must be >= 1, got {num_layers}")
        if mem_len < 0:
            raise ConfigError(f"sha_rnn: mem_len must be >= 0, got {mem_len}")
        if mem_trim not in MEM_TRIMS:
            raise ConfigError(f"sha_rnn: mem_trim '{mem_trim}' unknown; use "
                              f"{', '.join(MEM_TRIMS)}")
        if impl not in IMPLS:
            raise ConfigError(f"sha_rnn: unknown impl '{impl}'; use one of {', '.join(IMPLS)}")
        attn = resolve_attn_layers(attn_layers, num_layers)
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.num_layers = num_layers
        self.attn_layers = attn
        self.mem_len = mem_len
        self.mem_trim = mem_trim
        self.dropout_input = dropout_input
        self.dropout_hidden = dropout_hidden
        self.dropout_attn = dropout_attn
        self.dropout_attn_probs = dropout_attn_probs
        self.dropout_output = dropout_output
        self.impl = impl
        self.lstm_unroll = lstm_unroll
        self.custom_vjp = custom_vjp
        init_std = 0.1 / math.sqrt(d_model)
        self.embed = nnx.Param(_normal(init_std)(rngs.params(), (vocab_size, d_model)))
        self.blocks = nnx.List([
            Block(d_model, d_ff, use_attn=n in attn, init_std=init_std, rngs=rngs)
            for n in range(num_layers)
        ])
        self.decoder_bias = nnx.Param(jnp.zeros((vocab_size,)))

    def init_carry(self, batch_size: int) -> SHARNNCarry:
        d = self.d_model
        zeros = jnp.zeros((batch_size, d), jnp.float32)
        return SHARNNCarry(
            lstm=tuple(LSTMState(zeros, zeros) for _ in range(self.num_layers)),
            memory=tuple(jnp.zeros((batch_size, self.mem_len, d), jnp.float32)
                         for _ in self.attn_layers),
            mem_count=jnp.zeros((batch_size,), jnp.int32),
        )

    def __call__(
        self,
        tokens: Int[Array, "b s"],
        carry: SHARNNCarry,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[Float[Array, "b s v"], SHARNNCarry]:
        # one dropout key per site (layers.Keys): fold_in(key, i), i = 0, 1 model-level,
        # 8 n + j in block n
        site = Keys(key, train).at
        seg_len = tokens.shape[1]
        kv_start, new_count = memory_geometry(self.mem_len, seg_len, carry.mem_count,
                                              self.mem_trim)

        embed = self.embed[...]
        h = dropout(jnp.take(embed, tokens, axis=0), self.dropout_input, site(0))
        new_lstm, new_memory, slot = [], [], 0
        for n, block in enumerate(self.blocks):
            h, state = block.lstm(carry.lstm[n], block.ln_start(h), unroll=self.lstm_unroll,
                                  custom_vjp=self.custom_vjp)
            new_lstm.append(state)
            h = dropout(h, self.dropout_hidden, site(8 * n + 2))
            if block.attn is not None:
                mh, h = block.ln_mem(h), block.ln_mid(h)
                kv, memory = memory_keys(carry.memory[slot], mh, self.mem_trim)
                new_memory.append(memory)
                slot += 1
                a = block.attn(h, kv, kv_start, drop_qv=self.dropout_attn,
                               drop_probs=self.dropout_attn_probs, key=site(8 * n + 3),
                               impl=self.impl)
                h = dropout(a, self.dropout_hidden, site(8 * n + 4)) + h
            u = block.boom(block.ln_xff(h), rate=self.dropout_hidden, key=site(8 * n + 5))
            h = dropout(u, self.dropout_hidden, site(8 * n + 6)) + block.ln_ff(h)
        h = dropout(h, self.dropout_output, site(1))
        logits = dot_f32(h, embed.T) + self.decoder_bias[...]
        return logits, SHARNNCarry(tuple(new_lstm), tuple(new_memory), new_count)

    # --- generation (recurrentlab.sample): one token per step ---------------------------

    decode_supported = True

    def decode_init(self, carry: SHARNNCarry, batch_size: int,
                    segment_len: int) -> SHARNNDecodeState:
        """The key/value sources of a segment as :meth:`__call__` builds them
        (:func:`memory_keys`, :func:`memory_geometry` at ``segment_len``), segment rows empty."""
        b = batch_size
        kv_start, _ = memory_geometry(self.mem_len, segment_len, carry.mem_count,
                                      self.mem_trim)
        states = jnp.zeros((b, segment_len, self.d_model), jnp.float32)
        kv = tuple(memory_keys(memory, states, self.mem_trim)[0] for memory in carry.memory)
        rows = kv[0].shape[1] if kv else segment_len
        return SHARNNDecodeState(carry.lstm, kv, kv_start,
                                 jnp.asarray(rows - segment_len, jnp.int32))

    def decode_step(
        self, token: Int[Array, " b"], state: SHARNNDecodeState
    ) -> tuple[Float[Array, "b v"], SHARNNDecodeState]:
        """One token through every block: an LSTM cell step, its normalised state written at
        ``row`` of the block's keys, one query over the keys up to ``row``, the Boom."""
        embed = self.embed[...]
        h = jnp.take(embed, token, axis=0)[:, None]
        new_lstm, new_kv, slot = [], [], 0
        for n, block in enumerate(self.blocks):
            weights = block.lstm.weights()
            lstm = lstm_cell(weights.w_hh, state.lstm[n],
                             input_projection(weights, block.ln_start(h)[:, 0]))
            new_lstm.append(lstm)
            h = lstm.h[:, None]
            if block.attn is not None:
                mh, h = block.ln_mem(h), block.ln_mid(h)
                kv = jax.lax.dynamic_update_slice_in_dim(
                    state.kv[slot], mh.astype(state.kv[slot].dtype), state.row, axis=1)
                new_kv.append(kv)
                slot += 1
                h = block.attn.decode(h, kv, state.kv_start, state.row) + h
            h = block.boom(block.ln_xff(h)) + block.ln_ff(h)
        logits = h[:, 0] @ embed.T + self.decoder_bias[...]
        return logits, SHARNNDecodeState(tuple(new_lstm), tuple(new_kv), state.kv_start,
                                         state.row + 1)


def resolve_attn_layers(attn_layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Block indices with attention, negatives counted from the end, sorted and unique."""
    if isinstance(attn_layers, int):
        attn_layers = (attn_layers,)
    out = set()
    for n in attn_layers:
        if not -num_layers <= int(n) < num_layers:
            raise ConfigError(
                f"sha_rnn: attn_layers entry {n} is outside the {num_layers} blocks")
        out.add(int(n) % num_layers)
    return tuple(sorted(out))


# ----------------------------------------------------------------------------- parameter count


def paper_configs() -> dict[str, ml_collections.ConfigDict]:
    """The enwik8 model variants of the paper's table (no attention, single head, per layer)."""
    from recurrentlab.models.base import model_config

    return {
        "no_attention": model_config("sha_rnn", attn_layers=()),
        "single_head": model_config("sha_rnn"),
        "head_per_layer": model_config("sha_rnn", attn_layers=(0, 1, 2, 3)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recurrentlab.models.sha_rnn")
    parser.add_argument("--count", action="store_true",
                        help="print the parameter counts of the paper's enwik8 variants")
    parser.add_argument("--config", default=None,
                        help="an experiment file (path[:arg]) whose model to count instead")
    args = parser.parse_args(argv)
    if not (args.count or args.config):
        parser.print_help()
        return
    if args.config:
        from recurrentlab.config import load_config_file

        path, _, arg = args.config.partition(":")
        configs = {args.config: load_config_file(path, arg or None).model}
    else:
        configs = paper_configs()
    for name, model in configs.items():
        n = config_params(model, vocab_size=256)
        print(f"{name}: {n:,} parameters ({n / 1e6:.2f}M), vocab 256")


if __name__ == "__main__":
    main()
