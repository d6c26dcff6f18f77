"""Transformer-XL (Dai et al. 2019): segment recurrence through a cache of past hidden states.

Follows kimiyoung/transformer-xl ``pytorch/mem_transformer.py`` (``MemTransformerLM`` with
``attn_type=0``: ``RelPartialLearnableMultiHeadAttn``, post-LN, ``_update_mems``).

Per layer l, with h^{l-1} the layer input on the segment [b, s, d] and m^{l-1} its cache:

    c      = [sg(m^{l-1}); h^{l-1}]                      [b, M + s, d]   (sg = stop_gradient)
    q      = h^{l-1} W_q,   k = c W_k,   v = c W_v       (queries from the segment only)
    A_ij   = (q_i + u)ᵀ k_j  +  (q_i + v_r)ᵀ W_r R_{i-j}   (i, j absolute positions)
    a      = softmax_j(A_ij / √d_h  [j visible]) v_j
    h'     = LN(h^{l-1} + drop(W_o a))
    h^l    = LN(h' + drop(W_2 drop(ReLU(W_1 h' + b_1)) + b_2))

    R_δ    = [sin(δ f), cos(δ f)],  f_k = 10000^(-2k/d),  δ = min(i - j, clamp_len)
    h^0    = drop(√d · E[x]);  logits = drop(h^L) Eᵀ + b   (tied; untied: a Linear)

u, v_r ([heads, d_h]) are shared by all layers; the sinusoid table R (dropped out once, as in
the reference) is shared too. The attention, positional term included, is one op,
``recurrentlab.ops.relative.relative_attention``, called with the model's ``impl``: its
reference forms the positional term with the reference's rel-shift trick (pad, reshape, drop a
row) and adds it to the scores; its Pallas path computes it per tile inside the attention
kernel from the rows of W_r R the tile needs (no [t, l] array). ``same_length`` runs the
reference (said once; ``impl="pallas"`` refuses it).

Cache update (``_update_mems``): the new cache of layer l is the last M rows of
[m^{l-1}; h^{l-1}], gradient-stopped. The carry also counts the valid cache rows per stream
(``length``, starting at 0): keys before ``M - length`` are masked (``kv_start``), so the first
segments of a stream and streams reset by the trainer never attend to an empty cache. The
reference starts with a zero-length cache instead; the two are equal (tested).

Beyond the causal limit. The rel-shift leaves, at key ``j > i + M``, a 0 (``j = i + M + 1``)
and query i+1's positional term at another distance (``j >= i + M + 2``). A causal mask hides
them, so plain Transformer-XL never reads them; RMT's memory rows see later memory rows and do.
In the reference the key axis is the *actual* cache length L plus the segment, so the distance
left there, ``2L + t + 1 + i - j_ref`` (t queries, ``j_ref`` its key index), depends on L,
which is below M in the first segments of a stream and after a reset. We reproduce the
reference there, from ``length`` per stream (``relative_position_bias(cache_len=)``), whenever
the mask lets rows see past the causal limit and ``mem_len > 0``; with a full cache, or
without a cache, the plain shift already gives the reference's values. Tested against a
direct O(T²) computation with explicit distances (``tests/test_reference_grid.py``).

Shape legend: b batch, s segment length, M mem_len, d d_model, h heads, v vocabulary.

Carry: ``XLCarry(cache=(Float[b, M, d],) * num_layers, length=Int[b])``.

``same_length`` (the reference's evaluation option): every query sees exactly ``mem_len`` keys,
itself included, i.e. key positions (p - mem_len, p] for a query at position p; in the fixed
[cache; segment] layout used here that is simply key index j > query index i, and it is the
reference's ``triu + tril`` mask also while the cache is still filling (derived in
``TransformerXL.core``; tested by its receptive field).

Parameters do not depend on ``mem_len``: evaluate with a longer memory by building the model
with a larger ``mem_len`` (``config.eval.model_overrides.mem_len``) and the same parameters.

Deviations, documented:
- Adaptive softmax/embedding, ``ext_len`` and sampled softmax are not implemented (the
  byte-level runs use none of them).
- LayerNorm scales start at 1 (the reference's train.py draws them from N(1, 0.02));
  weights, embeddings, u and v_r are N(0, 0.02) as in the reference; biases zero.
- The reference caches n_layer + 1 hidden states (the last one unused); we keep n_layer.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from recurrentlab.errors import ConfigError
from recurrentlab.models.base import SequenceModel, register_model
from recurrentlab.models.layers import (
    Keys,
    dropout,
    merge_heads,
    normal_init,
    sinusoid,
    split_heads,
)
from recurrentlab.ops import check_impl
from recurrentlab.ops.attention import MaskSpec, attention_reference
from recurrentlab.ops.relative import relative_attention, relative_position_bias

CAUSAL = MaskSpec(causal=True)


class XLDecodeState(NamedTuple):
    """Generation inside a segment: per-layer keys/values over ``[cache; segment]``
    (Float[b, h, M + s, d_h], the cache rows from the carry, the segment rows filled up to the
    current token), W_r R_δ per layer by distance δ = 0 .. M + s - 1 (Float[h, M + s, d_h]),
    the cache mask and the key row of the next token."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    r: tuple[jax.Array, ...]
    kv_start: jax.Array  # Int[b]
    row: jax.Array  # Int[]: M + (tokens of the segment fed so far)


class XLCarry(NamedTuple):
    """Per-layer caches of past layer inputs and how many of their rows are valid."""

    cache: tuple[jax.Array, ...]  # num_layers x Float[b, mem_len, d], oldest row first
    length: jax.Array  # Int[b]: valid rows, counted from the end of each cache


class XLLayer(nnx.Module):
    """One post-LN Transformer-XL layer: relative multi-head attention, then a ReLU FFN."""

    def __init__(self, d_model: int, num_heads: int, d_head: int, d_ff: int, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        width = num_heads * d_head
        self.qkv = nnx.Linear(d_model, 3 * width, use_bias=False, kernel_init=normal_init,
                              rngs=rngs)
        self.r_net = nnx.Linear(d_model, width, use_bias=False, kernel_init=normal_init,
                                rngs=rngs)
        self.out = nnx.Linear(width, d_model, use_bias=False, kernel_init=normal_init, rngs=rngs)
        self.ln_attn = nnx.LayerNorm(d_model, epsilon=1e-5, rngs=rngs)
        self.fc1 = nnx.Linear(d_model, d_ff, kernel_init=normal_init, rngs=rngs)
        self.fc2 = nnx.Linear(d_ff, d_model, kernel_init=normal_init, rngs=rngs)
        self.ln_ff = nnx.LayerNorm(d_model, epsilon=1e-5, rngs=rngs)

    def __call__(
        self,
        h: Float[Array, "b t d"],
        cache: Float[Array, "b m d"],
        pos: Float[Array, "l d"],
        u: jax.Array,
        r_bias: jax.Array,
        *,
        spec: MaskSpec,
        kv_start: jax.Array,
        memory_sees_cache: bool = True,
        same_length: bool = False,
        cache_len: jax.Array | None = None,
        dropout_rate: float,
        attn_dropout: float,
        keys: Keys,
        impl: str = "auto",
    ) -> Float[Array, "b t d"]:
        t = h.shape[1]
        c = jnp.concatenate([jax.lax.stop_gradient(cache).astype(h.dtype), h], axis=1)
        q, k, v = jnp.split(self.qkv(c), 3, axis=-1)
        q, k, v = (split_heads(x, self.num_heads) for x in (q[:, -t:], k, v))
        r_head = split_heads(self.r_net(pos)[None], self.num_heads)[0]  # [h, l, d_head]
        att_key = keys() if attn_dropout > 0.0 else None
        a = relative_attention(q, k, v, r_head, u, r_bias, spec=spec, kv_start=kv_start,
                               memory_sees_cache=memory_sees_cache, same_length=same_length,
                               cache_len=cache_len, attn_dropout=attn_dropout, key=att_key,
                               impl=impl)
        h = self.ln_attn(h + dropout(self.out(merge_heads(a)), dropout_rate, keys()))
        f = dropout(jax.nn.relu(self.fc1(h)), dropout_rate, keys())
        return self.ln_ff(h + dropout(self.fc2(f), dropout_rate, keys()))

    def cache_keys(self, rows: Float[Array, "b l d"]) -> tuple[jax.Array, jax.Array]:
        """Keys and values Float[b, h, l, d_h] of layer-input rows."""
        _, k, v = jnp.split(self.qkv(rows), 3, axis=-1)
        return split_heads(k, self.num_heads), split_heads(v, self.num_heads)

    def decode(
        self,
        h: Float[Array, "b 1 d"],
        k_cache: jax.Array,
        v_cache: jax.Array,
        r_by_distance: Float[Array, "h l d"],
        u: jax.Array,
        r_bias: jax.Array,
        *,
        row: Int[Array, ""],
        visible: Bool[Array, " l"],
        kv_start: Int[Array, " b"],
    ) -> tuple[Float[Array, "b 1 d"], jax.Array, jax.Array]:
        """The layer on one row (key row ``row``, no dropout): its key and value written into
        the caches, its query over the keys where ``visible`` (and from ``kv_start``), with the
        positional term at distance ``row - j`` (what the rel-shift gives a causal entry)."""
        q, k, v = jnp.split(self.qkv(h), 3, axis=-1)
        q, k, v = (split_heads(x, self.num_heads) for x in (q, k, v))
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), row, 2)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), row, 2)
        scale = q.shape[-1] ** -0.5
        l = k_cache.shape[2]  # noqa: E741
        raw = jnp.einsum("bhtd,hld->bhtl", q + r_bias[None, :, None, :], r_by_distance,
                         preferred_element_type=jnp.promote_types(q.dtype, jnp.float32))
        distance = jnp.clip(row - jnp.arange(l), 0, l - 1)
        bias = jnp.where(visible, jnp.take(raw, distance, axis=-1) * scale, -jnp.inf)
        a = attention_reference(q + u[None, :, None, :], k_cache, v_cache,
                                spec=MaskSpec(causal=False), scale=scale, kv_start=kv_start,
                                bias=bias)
        h = self.ln_attn(h + self.out(merge_heads(a)))
        return self.ln_ff(h + self.fc2(jax.nn.relu(self.fc1(h)))), k_cache, v_cache


@register_model("transformer_xl")
class TransformerXL(SequenceModel):
    """Transformer-XL language model; carry = per-layer caches. See the module docstring."""

    int_field_minimums = {"clamp_len": 0, "d_head": 0, "mem_len": 0}  # 0: off / derived

    @classmethod
    def tiny_config(cls) -> dict:
        return dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, mem_len=16)

    def __init__(
        self,
        *,
        vocab_size: int,
        rngs: nnx.Rngs,
        num_layers: int = 12,  # decoder layers
        d_model: int = 512,  # residual width
        num_heads: int = 8,  # attention heads
        d_head: int = 0,  # head width; 0 = d_model / num_heads
        d_ff: int = 2048,  # FFN hidden width (d_inner)
        dropout: float = 0.1,  # embedding, residual, FFN and output dropout
        attn_dropout: float = 0.0,  # dropatt: dropout on attention probabilities
        mem_len: int = 128,  # cached positions per layer (parameters do not depend on it)
        clamp_len: int = 0,  # relative distances beyond clamp_len use clamp_len; 0 = no clamp
        same_length: bool = False,  # every query sees exactly mem_len keys (reference eval option)
        tie_weights: bool = True,  # output projection = embedding transposed (plus a bias)
        impl: str = "auto",  # attention op implementation (see recurrentlab.ops.dispatch)
    ):
        d_head = d_head or d_model // num_heads
        if d_head * num_heads == 0:
            raise ConfigError(f"head width is 0 (d_model {d_model}, num_heads {num_heads})")
        if d_model % 2:
            raise ConfigError(f"d_model {d_model} must be even for the sinusoid table")
        if mem_len < 0 or clamp_len < 0:
            raise ConfigError("mem_len and clamp_len must be >= 0")
        if same_length and mem_len == 0:
            raise ConfigError("same_length needs mem_len > 0 (each query sees mem_len keys)")
        self.vocab_size = vocab_size
        self.num_layers, self.d_model, self.num_heads, self.d_head = (
            num_layers, d_model, num_heads, d_head)
        self.dropout, self.attn_dropout = dropout, attn_dropout
        self.mem_len, self.clamp_len, self.same_length = mem_len, clamp_len, same_length
        self.tie_weights, self.impl = tie_weights, check_impl(impl, "transformer_xl")
        self.embed = nnx.Embed(vocab_size, d_model, embedding_init=normal_init, rngs=rngs)
        self.u = nnx.Param(normal_init(rngs.params(), (num_heads, d_head)))  # r_w_bias
        self.v = nnx.Param(normal_init(rngs.params(), (num_heads, d_head)))  # r_r_bias
        self.layers = nnx.List(
            [XLLayer(d_model, num_heads, d_head, d_ff, rngs=rngs) for _ in range(num_layers)]
        )
        if tie_weights:
            self.out_bias = nnx.Param(jnp.zeros((vocab_size,)))
        else:
            self.unembed = nnx.Linear(d_model, vocab_size, kernel_init=normal_init, rngs=rngs)

    def init_carry(self, batch_size: int) -> XLCarry:
        zeros = jnp.zeros((batch_size, self.mem_len, self.d_model), jnp.float32)
        return XLCarry(cache=tuple(zeros for _ in range(self.num_layers)),
                       length=jnp.zeros((batch_size,), jnp.int32))

    # Public stages, reused by RMT over [memory; x; memory].
    def embed_tokens(self, tokens: Int[Array, "b s"]) -> Float[Array, "b s d"]:
        """√d · E[x] (before dropout)."""
        return self.embed(tokens) * math.sqrt(self.d_model)

    def core(
        self,
        h: Float[Array, "b t d"],
        carry: XLCarry,
        *,
        keys: Keys,
        spec: MaskSpec = CAUSAL,
        memory_sees_cache: bool = True,
    ) -> tuple[Float[Array, "b t d"], XLCarry]:
        """Dropout on the input rows, all layers over [cache; rows], the cache update.

        ``memory_sees_cache=False``: the ``spec.prefix``/``suffix`` rows (RMT's memory rows)
        do not attend to the cache (the reference, unless ``read_mem_from_cache``). Returns
        the last layer's output (before the output dropout) and the new carry.
        """
        b, t, _ = h.shape
        m = self.mem_len
        l = m + t  # noqa: E741
        distance = jnp.arange(l - 1, -1, -1, dtype=jnp.promote_types(h.dtype, jnp.float32))
        if self.clamp_len > 0:
            distance = jnp.minimum(distance, float(self.clamp_len))
        h = dropout(h, self.dropout, keys())
        pos = dropout(sinusoid(distance, self.d_model), self.dropout, keys())
        kv_start = (m - carry.length).astype(jnp.int32)
        # same_length, the reference: masked = triu(1 + mlen) + tril(-shift), shift = qlen -
        # (klen - mem_len) (or qlen when klen <= mem_len), with klen = mlen + qlen its own cache
        # length mlen. Visible: j_ref > i + mlen - mem_len. Our cache is front-padded to
        # mem_len rows, j = j_ref + mem_len - mlen, so the condition is j > i (the op's
        # ``same_length``), the padding being masked by kv_start; when klen <= mem_len no valid
        # key has j <= i, as in the reference.
        # Rows that see past the causal limit (RMT memory rows) read the positional term's
        # leftovers there, which in the reference depend on the actual cache length.
        cache_len = carry.length if (m > 0 and (spec.prefix or spec.suffix)) else None
        inputs = []
        for layer, cache in zip(self.layers, carry.cache, strict=True):
            inputs.append(h)
            h = layer(h, cache, pos, self.u[...], self.v[...], spec=spec, kv_start=kv_start,
                      memory_sees_cache=memory_sees_cache, same_length=self.same_length,
                      cache_len=cache_len, dropout_rate=self.dropout,
                      attn_dropout=self.attn_dropout, keys=keys, impl=self.impl)
        new_cache = tuple(
            jax.lax.stop_gradient(jnp.concatenate([c.astype(x.dtype), x], axis=1)[:, l - m:])
            for c, x in zip(carry.cache, inputs, strict=True)
        )
        length = jnp.minimum(carry.length + t, m).astype(jnp.int32)
        return h, XLCarry(cache=new_cache, length=length)

    def head(self, h: Float[Array, "b t d"]) -> Float[Array, "b t v"]:
        if self.tie_weights:
            return jnp.einsum("btd,vd->btv", h, self.embed.embedding[...]) + self.out_bias[...]
        return self.unembed(h)

    def __call__(
        self,
        tokens: Int[Array, "b s"],
        carry: XLCarry,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[Float[Array, "b s v"], XLCarry]:
        keys = Keys(key, train)
        h, carry = self.core(self.embed_tokens(tokens), carry, keys=keys)
        return self.head(dropout(h, self.dropout, keys())), carry

    # --- generation (recurrentlab.sample): cached keys/values inside a segment ----------

    decode_supported = True

    def relative_table(self, rows: int) -> tuple[jax.Array, ...]:
        """W_r R_δ per layer for δ = 0 .. rows - 1 (clamped at ``clamp_len``), [h, rows, d_h]."""
        distance = jnp.arange(rows, dtype=jnp.float32)
        if self.clamp_len > 0:
            distance = jnp.minimum(distance, float(self.clamp_len))
        pos = sinusoid(distance, self.d_model)
        return tuple(split_heads(layer.r_net(pos)[None], self.num_heads)[0]
                     for layer in self.layers)

    def decode_init(self, carry: XLCarry, batch_size: int, segment_len: int) -> XLDecodeState:
        """Keys/values of the carried caches (as :meth:`core` computes them), segment rows
        empty; the next row is the segment's first, ``M``."""
        m = self.mem_len
        rows = m + segment_len
        pad = jnp.zeros((batch_size, self.num_heads, segment_len, self.d_head), jnp.float32)
        ks, vs = [], []
        for layer, cache in zip(self.layers, carry.cache, strict=True):
            k, v = layer.cache_keys(cache)
            ks.append(jnp.concatenate([k.astype(jnp.float32), pad], axis=2))
            vs.append(jnp.concatenate([v.astype(jnp.float32), pad], axis=2))
        return XLDecodeState(tuple(ks), tuple(vs), self.relative_table(rows),
                             (m - carry.length).astype(jnp.int32),
                             jnp.asarray(m, jnp.int32))

    def decode_step(self, token: Int[Array, " b"], state: XLDecodeState
                    ) -> tuple[Float[Array, "b v"], XLDecodeState]:
        """One token through every layer (:meth:`XLLayer.decode`) and the head, no dropout."""
        h = self.embed_tokens(token[:, None])
        j = jnp.arange(state.k[0].shape[2])
        visible = j <= state.row
        if self.same_length:  # key index j > query index i (see core)
            visible &= j > state.row - self.mem_len
        ks, vs = [], []
        for layer, k, v, r in zip(self.layers, state.k, state.v, state.r, strict=True):
            h, k, v = layer.decode(h, k, v, r, self.u[...], self.v[...], row=state.row,
                                   visible=visible, kv_start=state.kv_start)
            ks.append(k)
            vs.append(v)
        state = state._replace(k=tuple(ks), v=tuple(vs), row=state.row + 1)
        return self.head(h)[:, 0], state


def expected_params(vocab_size: int, num_layers: int, d_model: int, num_heads: int,
                    d_head: int, d_ff: int, tie_weights: bool = True) -> int:
    """Closed-form parameter count of :class:`TransformerXL`."""
    width = num_heads * d_head
    layer = 3 * d_model * width + d_model * width + width * d_model + 2 * d_model
    layer += d_model * d_ff + d_ff + d_ff * d_model + d_model + 2 * d_model
    total = vocab_size * d_model + 2 * num_heads * d_head + num_layers * layer
    total += vocab_size if tie_weights else d_model * vocab_size + vocab_size
    return total


__all__ = ["TransformerXL", "XLCarry", "XLDecodeState", "XLLayer", "expected_params",
           "relative_attention", "relative_position_bias"]
