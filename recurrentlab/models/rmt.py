"""Recurrent Memory Transformer (Bulatov, Kuratov, Burtsev, NeurIPS 2022).

Follows booydar/LM-RMT ``pytorch/mem_transformer.py`` (``num_mem_tokens``, ``mem_at_end``,
``read_mem_from_cache``) and ``train.py``/``train_synthetic.py``. Per segment x (s tokens) with
incoming memory M (m vectors of width d):

    rows     = [M; E(x); M]                                  [b, m + s + m, d]
    H        = Decoder(rows)   with the mask below            (Transformer-XL or Transformer)
    M'       = H[:, m + s :]                                  new memory: write-row outputs
    logits   = Head(H[:, m : m + s])                          segment rows only, [b, s, v]

Mask (``MaskSpec(causal=True, prefix=m, suffix=m)``; row i, key j, both over ``rows``):
causal; the m read-memory rows see each other; the m write-memory rows see every row (so
everything before them and each other). No segment row sees a write row (causality), which is
tested. This is exactly the reference's ``dec_attn_mask`` with ``mem_at_end`` (the reference
is ``triu(1 + mlen)`` with ``[:m, mlen:mlen+m] = 0`` and ``[-m:, -m:] = 0``). With an XL cache
(``mem_len > 0``) the reference also hides the cache from both memory blocks unless
``read_mem_from_cache``; we follow it (an extra -inf on those entries of the score bias).

Backbones (``backbone``):
- ``"transformer_xl"`` (the reference): the Transformer-XL stack of ``transformer_xl.py``,
  post-LN, relative positions over the rows, ``mem_len`` > 0 adds the XL cache (which, as in the
  reference, caches the last ``mem_len`` *rows*, memory rows included). Memory vectors enter
  unscaled next to √d-scaled token embeddings and share the input dropout, as in the reference.
  The new memory is the last layer's output after the output dropout (the reference's
  ``hidden[-m:]`` after ``self.drop``).

  Relative positions past the causal limit. Memory rows see later memory rows (read row i sees
  read rows up to m-1, write rows see each other), where the relative distance is negative and
  the reference's rel-shift trick leaves other values: 0 one key past the limit, and two or more
  keys past it query i+1's positional term at distance ``2L + t + 1 + i - j`` (t = s + 2m rows,
  j the key index over [cache; rows], L the cache rows actually held). We reproduce these values
  exactly, as the reference computes them (so m >= 3 is affected; m <= 2 only meets the 0). L
  is the reference's own cache length: 0 at the start of a stream and after a carry reset, then
  growing by s + 2m per segment up to ``mem_len``; the carry counts it per stream
  (``XLCarry.length``) while the cache array is always ``mem_len`` rows, front-padded and masked
  (see ``recurrentlab.ops.relative.relative_position_bias``). Tested against a direct O(T²)
  computation with explicit distances, memory tokens 1–4, cache empty / filling / full,
  ``mem_len`` below, equal to and above the segment (``tests/test_reference_grid.py``).
- ``"transformer"``: the pre-LN decoder of ``transformer.py``; learned positions 0..s+2m-1
  (or rotary) over the rows; attention runs ``recurrentlab.ops.attention.attention`` with the
  mask above, so the attention kernel serves it. The new memory is the residual stream before the
  final LayerNorm (the same space the next segment's rows live in). ``mem_len`` must be 0.

Memory initialisation (``mem_init``):
- ``"shared_random"`` (paper and reference): m copies of one N(0, 1) vector, a trained parameter
  [m, d]. The reference's ``init_mem_tokens`` registers ``torch.cat([randn(1, d)] * m)`` as an
  ``nn.Parameter`` (``requires_grad=True``); ``train_synthetic.py`` feeds
  ``model.mem_tokens.repeat(1, B, 1)`` to each sample's first segment and the optimiser takes
  ``model.parameters()``, so it is trained and its m rows drift apart. (With
  ``mem_backprop_depth > 0`` the reference detaches the memory it replays, cutting that gradient;
  here the initial memory gets its gradient whenever its segment is in the window.)
- ``"learned"``: m independent trainable N(0, 1) vectors.
- ``"shared_fixed"``: m copies of one N(0, 1) vector kept fixed (state, not a parameter); a
  deviation from the reference, kept for runs made before the initial memory was trained.

Carry: ``RMTCarry(memory=Float[b, m, d], started=Bool[b], xl=XLCarry | ())``. A stream whose
``started`` is false reads the initial memory instead of ``memory``; the substitution happens
inside the call, so a learned initial memory gets its gradient, and the trainer's carry reset
(which swaps in ``init_carry``) restarts a stream from the initial memory.

Gradient through memory: within one window the trainer scans the K = ``train.bptt_segments``
segments with the carry and no ``stop_gradient``, and stops the gradient between windows.
That is the paper's memory BPTT depth: the reference's ``mem_backprop_depth`` d lets the
gradient pass through the memory into the d previous segments, i.e. ``bptt_segments = d + 1``
here (every segment of a window contributes its loss once, the window's first segment gets the
shallowest gradient). Synthetic tasks backpropagate through all segments of an example
(``bptt_segments`` = segments per example).

Shape legend: b batch, s segment length, m num_mem_tokens, d d_model, v vocabulary.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from recurrentlab.errors import ConfigError
from recurrentlab.models.base import SequenceModel, register_model
from recurrentlab.models.layers import Keys, dropout, sinusoid
from recurrentlab.models.transformer import Transformer
from recurrentlab.models.transformer_xl import TransformerXL, XLCarry, XLDecodeState
from recurrentlab.ops.attention import MaskSpec

MEM_INITS = ("shared_random", "learned", "shared_fixed")


class MemoryInit(nnx.Variable):
    """A fixed (untrained) initial memory: state of the model, not an optimiser target."""


class RMTCarry(NamedTuple):
    memory: jax.Array  # Float[b, m, d]: memory read at the start of the next segment
    started: jax.Array  # Bool[b]: false = use the initial memory
    xl: Any  # XLCarry of the backbone when mem_len > 0, else ()


@register_model("rmt")
class RMT(SequenceModel):
    """Recurrent Memory Transformer; see the module docstring."""

    segments_compose = False  # memory tokens are read and written once per segment
    int_field_minimums = {"clamp_len": 0, "d_head": 0, "mem_len": 0}  # 0: off / derived

    @classmethod
    def tiny_config(cls) -> dict:
        return dict(backbone="transformer", num_layers=1, d_model=16, num_heads=2, d_ff=32,
                    num_mem_tokens=2, max_len=16)

    def __init__(
        self,
        *,
        vocab_size: int,
        rngs: nnx.Rngs,
        num_mem_tokens: int = 10,  # m: memory vectors read and written per segment
        # shared_random (m copies of one trained vector, as the reference) | learned (m independent
        # vectors) | shared_fixed (untrained copies)
        mem_init: str = "shared_random",
        backbone: str = "transformer_xl",  # transformer_xl (reference) | transformer (pre-LN)
        mem_len: int = 0,  # XL cache rows per layer; 0 = no cache (transformer_xl backbone only)
        read_mem_from_cache: bool = False,  # memory rows may attend to the XL cache
        num_layers: int = 12,  # decoder layers
        d_model: int = 512,  # residual width
        num_heads: int = 8,  # attention heads
        d_head: int = 0,  # XL head width; 0 = d_model / num_heads
        d_ff: int = 2048,  # feed-forward hidden width
        dropout: float = 0.1,  # embedding, residual, FFN and output dropout
        attn_dropout: float = 0.0,  # dropout on attention probabilities
        clamp_len: int = 0,  # XL: clamp relative distances; 0 = off
        positions: str = "learned",  # transformer backbone: learned | rotary
        max_len: int = 1024,  # transformer backbone: position table size (>= s + 2m)
        tie_weights: bool = True,  # output projection = embedding transposed
        impl: str = "auto",  # attention op implementation (transformer backbone)
    ):
        if num_mem_tokens < 1:
            raise ConfigError("rmt needs num_mem_tokens >= 1 (use transformer or "
                              "transformer_xl for a model without memory tokens)")
        if mem_init not in MEM_INITS:
            raise ConfigError(f"mem_init '{mem_init}' unknown; use {', '.join(MEM_INITS)}")
        common = dict(vocab_size=vocab_size, rngs=rngs, num_layers=num_layers,
                      d_model=d_model, num_heads=num_heads, d_ff=d_ff, dropout=dropout,
                      attn_dropout=attn_dropout, tie_weights=tie_weights, impl=impl)
        if backbone == "transformer_xl":
            self.backbone = TransformerXL(d_head=d_head, mem_len=mem_len, clamp_len=clamp_len,
                                          **common)
        elif backbone == "transformer":
            if mem_len:
                raise ConfigError("rmt: mem_len > 0 (an XL cache) needs backbone "
                                  "'transformer_xl'")
            self.backbone = Transformer(positions=positions, max_len=max_len, **common)
        else:
            raise ConfigError(f"rmt backbone '{backbone}' unknown; use transformer_xl or "
                              "transformer")
        self.vocab_size = vocab_size
        self.kind = backbone
        self.num_mem_tokens, self.d_model, self.dropout = num_mem_tokens, d_model, dropout
        self.mem_len, self.read_mem_from_cache = mem_len, read_mem_from_cache
        if mem_init == "learned":
            self.memory_init = nnx.Param(jax.random.normal(rngs.params(),
                                                           (num_mem_tokens, d_model)))
        else:
            one = jax.random.normal(rngs.params(), (1, d_model))
            copies = jnp.repeat(one, num_mem_tokens, axis=0)
            kind = nnx.Param if mem_init == "shared_random" else MemoryInit
            self.memory_init = kind(copies)

    def init_carry(self, batch_size: int) -> RMTCarry:
        xl = self.backbone.init_carry(batch_size) if self.kind == "transformer_xl" else ()
        if self.kind == "transformer_xl" and self.mem_len == 0:
            xl = ()
        return RMTCarry(
            memory=jnp.zeros((batch_size, self.num_mem_tokens, self.d_model), jnp.float32),
            started=jnp.zeros((batch_size,), bool),
            xl=xl,
        )

    def initial_memory(self, batch_size: int) -> Float[Array, "b m d"]:
        init = self.memory_init[...]
        return jnp.broadcast_to(init[None], (batch_size,) + init.shape)

    def segment(
        self,
        tokens: Int[Array, "b s"],
        read_memory: Float[Array, "b m d"],
        write_memory: Float[Array, "b m d"],
        xl: Any,
        keys: Keys,
    ) -> tuple[Float[Array, "b s v"], Float[Array, "b m d"], Any]:
        """One segment over [read_memory; x; write_memory] (the model passes the same memory
        twice; tests pass different ones to check what each row can see)."""
        m, s = self.num_mem_tokens, tokens.shape[1]
        spec = MaskSpec(causal=True, prefix=m, suffix=m)
        bb = self.backbone
        if self.kind == "transformer_xl":
            e = bb.embed_tokens(tokens)
            rows = jnp.concatenate([read_memory.astype(e.dtype), e,
                                    write_memory.astype(e.dtype)], axis=1)
            carry = xl if self.mem_len else XLCarry(
                cache=tuple(jnp.zeros((rows.shape[0], 0, self.d_model), rows.dtype)
                            for _ in range(bb.num_layers)),
                length=jnp.zeros((rows.shape[0],), jnp.int32))
            # only segment rows read the XL cache, unless read_mem_from_cache
            h, carry = bb.core(rows, carry, keys=keys, spec=spec,
                               memory_sees_cache=self.read_mem_from_cache)
            h = dropout(h, self.dropout, keys())
            new_xl = carry if self.mem_len else ()
            return bb.head(h[:, m:m + s]), h[:, m + s:], new_xl
        e = bb.embed(tokens)
        rows = jnp.concatenate([read_memory.astype(e.dtype), e, write_memory.astype(e.dtype)],
                               axis=1)
        h = bb.stack(bb.input_rows(rows, keys), spec=spec, keys=keys)
        return bb.head(h[:, m:m + s]), h[:, m + s:], ()

    def __call__(
        self,
        tokens: Int[Array, "b s"],
        carry: RMTCarry,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[Float[Array, "b s v"], RMTCarry]:
        keys = Keys(key, train)
        b = tokens.shape[0]
        init = self.initial_memory(b).astype(carry.memory.dtype)
        memory = jnp.where(carry.started[:, None, None], carry.memory, init)
        logits, new_memory, xl = self.segment(tokens, memory, memory, carry.xl, keys)
        started = jnp.ones((b,), bool)
        return logits, RMTCarry(memory=new_memory.astype(carry.memory.dtype), started=started,
                                xl=xl)

    # --- generation (recurrentlab.sample): cached keys/values inside a segment ----------
    # A segment row sees the read-memory rows (and the XL cache) and the segment causally,
    # never the write rows, so a segment's keys are [cache; read memory; segment].

    decode_supported = True

    def decode_init(self, carry: RMTCarry, batch_size: int, segment_len: int) -> Any:
        """The backbone's decode state with the read-memory rows in its caches."""
        m, bb = self.num_mem_tokens, self.backbone
        init = self.initial_memory(batch_size).astype(carry.memory.dtype)
        memory = jnp.where(carry.started[:, None, None], carry.memory, init)
        if self.kind == "transformer":
            bb.check_rows(segment_len + 2 * m)
            cache = bb.empty_cache(batch_size, m + segment_len)
            return bb.decode_rows(memory, cache, causal=False)[1]  # read rows see each other
        xl = carry.xl if self.mem_len else bb.init_carry(batch_size)
        inputs = self._read_row_inputs(memory, xl, segment_len)
        pad = jnp.zeros((batch_size, bb.num_heads, segment_len, bb.d_head), jnp.float32)
        ks, vs = [], []
        for layer, cache, x in zip(bb.layers, xl.cache, inputs, strict=True):
            k, v = layer.cache_keys(jnp.concatenate([cache.astype(x.dtype), x], axis=1))
            ks.append(jnp.concatenate([k.astype(jnp.float32), pad], axis=2))
            vs.append(jnp.concatenate([v.astype(jnp.float32), pad], axis=2))
        rows = self.mem_len + m + segment_len
        return XLDecodeState(tuple(ks), tuple(vs), bb.relative_table(rows),
                             (self.mem_len - xl.length).astype(jnp.int32),
                             jnp.asarray(self.mem_len + m, jnp.int32))

    def _read_row_inputs(self, memory: Float[Array, "b m d"], xl: XLCarry,
                         segment_len: int) -> list[Float[Array, "b m d"]]:
        """Every layer's input on the read-memory rows, as ``TransformerXL.core`` computes
        them in :meth:`segment` (no dropout). Read rows see only the cache and each other,
        so the rows after them are zeros here; their number still matters (the positional
        term past the causal limit depends on it)."""
        bb, m = self.backbone, self.num_mem_tokens
        b, t = memory.shape[0], segment_len + 2 * m
        h = jnp.concatenate([memory, jnp.zeros((b, t - m, self.d_model), memory.dtype)],
                            axis=1)
        big_m = self.mem_len
        l = big_m + t  # noqa: E741
        distance = jnp.arange(l - 1, -1, -1, dtype=jnp.float32)
        if bb.clamp_len > 0:
            distance = jnp.minimum(distance, float(bb.clamp_len))
        pos = sinusoid(distance, self.d_model)
        inputs = []
        for n, (layer, cache) in enumerate(zip(bb.layers, xl.cache, strict=True)):
            inputs.append(h[:, :m])
            if n + 1 < len(bb.layers):
                h = layer(h, cache, pos, bb.u[...], bb.v[...],
                          spec=MaskSpec(causal=True, prefix=m, suffix=m),
                          kv_start=(big_m - xl.length).astype(jnp.int32),
                          memory_sees_cache=self.read_mem_from_cache,
                          cache_len=xl.length if big_m else None, dropout_rate=0.0,
                          attn_dropout=0.0, keys=Keys(None, False), impl=bb.impl)
        return inputs

    def decode_step(self, token: Int[Array, " b"], state: Any) -> tuple[Float[Array, "b v"], Any]:
        """One segment token through the backbone's step (its rows after the read memory)."""
        if self.kind == "transformer":
            h, state = self.backbone.decode_rows(self.backbone.embed(token[:, None]), state)
            return self.backbone.head(h)[:, 0], state
        return self.backbone.decode_step(token, state)


__all__ = ["MEM_INITS", "RMT", "RMTCarry", "MemoryInit"]
