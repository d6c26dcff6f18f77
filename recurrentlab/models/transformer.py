"""Decoder-only Transformer: causal self-attention within one segment, no state across segments.

The baseline every memory model is compared against (its carry is ``()``). GPT-2-style
pre-LN blocks (Radford et al. 2019; karpathy/nanoGPT ``model.py``):

    h_0   = drop(E[x] + P)                    (P learned positions; none when rotary)
    a_l   = h_{l-1} + drop(W_o · Attn(LN(h_{l-1})))
    h_l   = a_l + drop(W_2 · GELU(W_1 · LN(a_l) + b_1) + b_2)
    logits = LN_f(h_L) · Eᵀ                   (tied; an untied Linear otherwise)

    Attn: per head softmax(q_i·k_j / √d_h, causal) v_j, through recurrentlab.ops.attention
    (``impl`` picks reference or kernel). Rotary positions rotate q and k by position i.

Shape legend: b batch, s segment length, v vocabulary, d d_model, h heads.

Carry: ``()`` — the model sees the current segment only, so consecutive segments are
independent by construction (tested).

Deviations and choices, documented:
- Attention-probability dropout (``attn_dropout``) goes to ``recurrentlab.ops.attention``
  with the key; the op draws the mask from a counter hash, the same in the reference and in
  the kernel, so training keeps the kernel path.
- Weights N(0, 0.02), biases and LN offsets zero, LN scales one (GPT-2), no residual-scaled init.
- In the RMT paper the "Transformer" baseline is the Transformer-XL code with ``mem_len 0``
  (relative positions, post-LN). That exact baseline is ``transformer_xl`` with ``mem_len=0``;
  this module is the standard pre-LN GPT-style decoder.
"""

from __future__ import annotations

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
    rotary,
    split_heads,
)
from recurrentlab.ops.attention import MaskSpec, attention, attention_reference


class KVCache(NamedTuple):
    """Generation inside a segment: per-layer keys and values of the rows so far, preallocated
    to the rows of a segment, and the row of the next token."""

    k: tuple[jax.Array, ...]  # num_layers x Float[b, h, rows, d_h]
    v: tuple[jax.Array, ...]
    pos: jax.Array  # Int[]: row index of the next row


class Block(nnx.Module):
    """One pre-LN block: causal multi-head attention then a GELU MLP, each residual."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.ln_attn = nnx.LayerNorm(d_model, epsilon=1e-5, rngs=rngs)
        self.qkv = nnx.Linear(d_model, 3 * d_model, kernel_init=normal_init, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, kernel_init=normal_init, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(d_model, epsilon=1e-5, rngs=rngs)
        self.fc1 = nnx.Linear(d_model, d_ff, kernel_init=normal_init, rngs=rngs)
        self.fc2 = nnx.Linear(d_ff, d_model, kernel_init=normal_init, rngs=rngs)

    def __call__(
        self,
        h: Float[Array, "b t d"],
        *,
        spec: MaskSpec,
        rotary_positions: jax.Array | None,
        dropout_rate: float,
        attn_dropout: float,
        impl: str,
        keys: Keys,
    ) -> Float[Array, "b t d"]:
        q, k, v = jnp.split(self.qkv(self.ln_attn(h)), 3, axis=-1)
        q, k, v = (split_heads(x, self.num_heads) for x in (q, k, v))
        if rotary_positions is not None:
            q, k = rotary(q, rotary_positions), rotary(k, rotary_positions)
        att_key = keys() if attn_dropout > 0.0 else None
        o = attention(q, k, v, spec=spec, dropout=attn_dropout, key=att_key, impl=impl)
        h = h + dropout(self.out(merge_heads(o)), dropout_rate, keys())
        m = self.fc2(dropout(jax.nn.gelu(self.fc1(self.ln_mlp(h))), dropout_rate, keys()))
        return h + dropout(m, dropout_rate, keys())

    def decode(
        self,
        h: Float[Array, "b t d"],
        k_cache: Float[Array, "b h l d"],
        v_cache: Float[Array, "b h l d"],
        start: Int[Array, ""],
        *,
        visible: Bool[Array, "t l"],
        rotary_positions: jax.Array | None,
    ) -> tuple[Float[Array, "b t d"], jax.Array, jax.Array]:
        """The block on rows ``start .. start+t-1`` (no dropout): their keys and values are
        written into the caches, their queries see the cached keys where ``visible``."""
        q, k, v = jnp.split(self.qkv(self.ln_attn(h)), 3, axis=-1)
        q, k, v = (split_heads(x, self.num_heads) for x in (q, k, v))
        if rotary_positions is not None:
            q, k = rotary(q, rotary_positions), rotary(k, rotary_positions)
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), start, 2)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), start, 2)
        bias = jnp.where(visible, 0.0, -jnp.inf)[None, None]
        o = attention_reference(q, k_cache, v_cache, spec=MaskSpec(causal=False), bias=bias)
        h = h + self.out(merge_heads(o))
        return h + self.fc2(jax.nn.gelu(self.fc1(self.ln_mlp(h)))), k_cache, v_cache


@register_model("transformer")
class Transformer(SequenceModel):
    """Pre-LN causal decoder over one segment; carry ``()``. See the module docstring."""

    segments_compose = False  # sees one segment: a call over K segments sees across them

    @classmethod
    def tiny_config(cls) -> dict:
        return dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, max_len=16)

    def __init__(
        self,
        *,
        vocab_size: int,
        rngs: nnx.Rngs,
        num_layers: int = 12,  # decoder blocks
        d_model: int = 512,  # residual width
        num_heads: int = 8,  # attention heads (head width d_model / num_heads)
        d_ff: int = 2048,  # MLP hidden width
        dropout: float = 0.1,  # residual, MLP and embedding dropout
        attn_dropout: float = 0.0,  # dropout on attention probabilities (reference path when on)
        max_len: int = 1024,  # learned position table size: the longest segment (rows incl. memory)
        positions: str = "learned",  # learned | rotary
        tie_weights: bool = True,  # output projection = embedding transposed
        impl: str = "auto",  # attention op implementation: auto | xla | pallas | interpret
    ):
        if d_model % num_heads:
            raise ConfigError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        if positions not in ("learned", "rotary"):
            raise ConfigError(f"positions '{positions}' unknown; use learned or rotary")
        if positions == "rotary" and (d_model // num_heads) % 2:
            raise ConfigError("rotary positions need an even head width")
        self.vocab_size = vocab_size
        self.num_layers, self.d_model, self.num_heads = num_layers, d_model, num_heads
        self.dropout, self.attn_dropout = dropout, attn_dropout
        self.max_len, self.positions = max_len, positions
        self.tie_weights, self.impl = tie_weights, impl
        self.embed = nnx.Embed(vocab_size, d_model, embedding_init=normal_init, rngs=rngs)
        if positions == "learned":
            self.pos_embed = nnx.Param(normal_init(rngs.params(), (max_len, d_model)))
        self.blocks = nnx.List(
            [Block(d_model, num_heads, d_ff, rngs=rngs) for _ in range(num_layers)]
        )
        self.ln_final = nnx.LayerNorm(d_model, epsilon=1e-5, rngs=rngs)
        if not tie_weights:
            self.unembed = nnx.Linear(d_model, vocab_size, kernel_init=normal_init, rngs=rngs)

    def init_carry(self, batch_size: int) -> tuple:
        return ()

    # The three stages below are public so RMT can run this stack over [memory; x; memory].
    def input_rows(self, h: Float[Array, "b t d"], keys: Keys) -> Float[Array, "b t d"]:
        """Add learned positions 0..t-1 (none when rotary) and apply embedding dropout."""
        t = h.shape[1]
        if self.positions == "learned":
            if t > self.max_len:
                raise ConfigError(
                    f"sequence of {t} rows exceeds max_len {self.max_len}; raise model.max_len"
                )
            h = h + self.pos_embed[...][:t].astype(h.dtype)
        return dropout(h, self.dropout, keys())

    def stack(
        self, h: Float[Array, "b t d"], *, spec: MaskSpec, keys: Keys
    ) -> Float[Array, "b t d"]:
        """All blocks; returns the residual stream (before the final LayerNorm)."""
        rot = jnp.arange(h.shape[1]) if self.positions == "rotary" else None
        for block in self.blocks:
            h = block(h, spec=spec, rotary_positions=rot, dropout_rate=self.dropout,
                      attn_dropout=self.attn_dropout, impl=self.impl, keys=keys)
        return h

    def head(self, h: Float[Array, "b t d"]) -> Float[Array, "b t v"]:
        """Final LayerNorm and the (tied or untied) output projection."""
        h = self.ln_final(h)
        if self.tie_weights:
            return jnp.einsum("btd,vd->btv", h, self.embed.embedding[...])
        return self.unembed(h)

    def __call__(
        self,
        tokens: Int[Array, "b s"],
        carry: tuple,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[Float[Array, "b s v"], tuple]:
        keys = Keys(key, train)
        h = self.input_rows(self.embed(tokens), keys)
        h = self.stack(h, spec=MaskSpec(causal=True), keys=keys)
        return self.head(h), ()

    # --- generation (recurrentlab.sample): cached keys/values inside a segment ----------

    decode_supported = True

    def check_rows(self, rows: int) -> None:
        """The rows of one call fit the learned position table (as :meth:`input_rows`)."""
        if self.positions == "learned" and rows > self.max_len:
            raise ConfigError(
                f"sequence of {rows} rows exceeds max_len {self.max_len}; raise model.max_len"
            )

    def empty_cache(self, batch_size: int, rows: int) -> KVCache:
        """Zero key/value caches of ``rows`` rows per layer, next row 0."""
        d_h = self.d_model // self.num_heads
        zeros = jnp.zeros((batch_size, self.num_heads, rows, d_h), jnp.float32)
        return KVCache(tuple(zeros for _ in self.blocks), tuple(zeros for _ in self.blocks),
                       jnp.zeros((), jnp.int32))

    def decode_rows(
        self, x: Float[Array, "b t d"], cache: KVCache, *, causal: bool = True
    ) -> tuple[Float[Array, "b t d"], KVCache]:
        """:meth:`input_rows` and :meth:`stack` (no dropout) on the rows ``pos .. pos+t-1``,
        which see the cached rows and, ``causal``, each other causally (else all ``t``)."""
        t, rows = x.shape[1], cache.k[0].shape[2]
        index = cache.pos + jnp.arange(t)
        if self.positions == "learned":
            x = x + jax.lax.dynamic_slice_in_dim(self.pos_embed[...], cache.pos, t).astype(
                x.dtype)
        rot = index if self.positions == "rotary" else None
        j = jnp.arange(rows)[None, :]
        visible = j <= index[:, None] if causal else j < cache.pos + t
        ks, vs = [], []
        for block, k, v in zip(self.blocks, cache.k, cache.v, strict=True):
            x, k, v = block.decode(x, k, v, cache.pos, visible=visible, rotary_positions=rot)
            ks.append(k)
            vs.append(v)
        return x, KVCache(tuple(ks), tuple(vs), cache.pos + t)

    def decode_init(self, carry: tuple, batch_size: int, segment_len: int) -> KVCache:
        self.check_rows(segment_len)
        return self.empty_cache(batch_size, segment_len)

    def decode_step(self, token: Int[Array, " b"], state: KVCache
                    ) -> tuple[Float[Array, "b v"], KVCache]:
        h, state = self.decode_rows(self.embed(token[:, None]), state)
        return self.head(h)[:, 0], state


def expected_params(vocab_size: int, num_layers: int, d_model: int, d_ff: int,
                    max_len: int, positions: str = "learned", tie_weights: bool = True) -> int:
    """Closed-form parameter count (used by tests to pin the architecture)."""
    block = 4 * d_model + 3 * d_model * d_model + 3 * d_model + d_model * d_model + d_model
    block += d_model * d_ff + d_ff + d_ff * d_model + d_model
    total = vocab_size * d_model + num_layers * block + 2 * d_model
    total += max_len * d_model if positions == "learned" else 0
    total += 0 if tie_weights else d_model * vocab_size + vocab_size
    return total


__all__ = ["Block", "KVCache", "Transformer", "expected_params"]
