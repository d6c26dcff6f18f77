"""Attention of a segment's queries over [memory; segment] keys and values.

One function serves every attention model (Transformer, SHA-RNN, Transformer-XL's content
path, RMT) so a kernel can replace the reference in one place.

Shape legend: b batch, h heads, t queries (the segment, plus RMT memory rows),
l keys (= memory + segment), d key/query width, e value width.

Mask (``MaskSpec``), with ``offset = l - t`` keys before the first query::

    visible(i, j) = j >= kv_start[b] and (
        j <= i + offset                          # causal, memory prefix open
        or (i < prefix and j < prefix + offset)  # bidirectional prefix block (RMT read memory)
        or i >= t - suffix                       # rows that see every key (RMT write memory)
    )

    out_i = sum_j softmax_j(scale * q_i . k_j + bias_ij  [visible]) z_ij v_j / (1 - p)

Attention-probability dropout (rate p, ``dropout`` with a ``key``) keeps the pair (i, j) of
head ``hd`` of batch row ``bi`` when ``keep_bits(seed, bi * h + hd, i, j) >= p 2^32``, with
``seed`` 32 random bits drawn from ``key``: a counter-based hash (the murmur3 finaliser), so a
kernel regenerates the same mask tile by tile, in its forward and backward, without storing it;
the reference builds the same [b, h, t, l] mask. ``z_ij`` is 1 for a kept pair, 0 otherwise.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from recurrentlab.ops import dispatch


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Which keys each query sees; see the module docstring for the formula."""

    causal: bool = True
    prefix: int = 0  # query rows [0, prefix) see each other (and all memory before them)
    suffix: int = 0  # the last `suffix` query rows see every key


def attention_mask(
    t: int, num_keys: int, spec: MaskSpec, kv_start: Int[Array, " b"] | None = None
) -> jax.Array:
    """Bool[b or 1, t, l] of visible (query, key) pairs (``l = num_keys``)."""
    offset = num_keys - t
    i = jnp.arange(t)[:, None]
    j = jnp.arange(num_keys)[None, :]
    if spec.causal:
        visible = j <= i + offset
        if spec.prefix:
            visible |= (i < spec.prefix) & (j < spec.prefix + offset)
        if spec.suffix:
            visible |= i >= t - spec.suffix
    else:
        visible = jnp.ones((t, num_keys), bool)
    visible = visible[None]
    if kv_start is not None:
        visible = visible & (j[None] >= kv_start[:, None, None])
    return visible


def _fmix32(x):
    """murmur3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def head_seed(seed, head):
    """The per-(batch row, head) stream: ``head`` is ``batch_row * heads + head`` (uint32)."""
    return _fmix32(seed ^ (head * jnp.uint32(0x9E3779B1)))


def keep_bits(stream, rows, cols):
    """uint32 hash of (stream, row, key) -- all uint32, broadcast together.

    ``stream`` is :func:`head_seed`. Kernels evaluate it on (row, key) tiles; the reference
    on the whole [b, h, t, l] grid, so both draw the same dropout mask.
    """
    x = _fmix32(stream ^ (rows * jnp.uint32(0x85EBCA77)))
    return _fmix32(x ^ (cols * jnp.uint32(0xC2B2AE3D)))


def dropout_threshold(rate: float) -> int:
    """A pair is kept when its bits are >= this (``rate * 2^32``, clipped to uint32)."""
    return min(int(round(rate * 2.0**32)), 2**32 - 1)


def dropout_seed(key: jax.Array) -> jax.Array:
    """The uint32 seed of the mask, drawn from a JAX PRNG key."""
    return jax.random.bits(key, (), jnp.uint32)


def dropout_keep(seed: jax.Array, shape: tuple[int, int, int, int], rate: float,
                 rows=None) -> jax.Array:
    """Bool[b, h, t, l]: the pairs attention-probability dropout keeps (see module doc).

    ``rows`` (optional, Int[r]): only these query rows, Bool[b, h, r, l]."""
    b, h, t, l = shape  # noqa: E741
    head = (jnp.arange(b, dtype=jnp.uint32)[:, None] * jnp.uint32(h)
            + jnp.arange(h, dtype=jnp.uint32)[None, :])[:, :, None, None]
    rows = jnp.arange(t) if rows is None else jnp.asarray(rows)
    rows = rows.astype(jnp.uint32)[:, None]
    cols = jnp.arange(l, dtype=jnp.uint32)[None, :]
    bits = keep_bits(head_seed(jnp.asarray(seed, jnp.uint32), head), rows, cols)
    return bits >= jnp.uint32(dropout_threshold(rate))


def attention_reference(
    q: Float[Array, "b h t d"],
    k: Float[Array, "b h l d"],
    v: Float[Array, "b h l e"],
    *,
    spec: MaskSpec = MaskSpec(),
    scale: float | None = None,
    kv_start: Int[Array, " b"] | None = None,
    bias: Float[Array, "b h t l"] | None = None,
    dropout: float = 0.0,
    seed: jax.Array | None = None,
) -> Float[Array, "b h t e"]:
    """Plain-jnp attention; materialises the [t, l] scores. Rows with no visible key give 0.

    ``bias`` (broadcastable to [b, h, t, l]) is added to the scaled scores before the mask:
    Transformer-XL's positional term enters here; -inf entries hide keys beyond ``spec``.
    With ``dropout > 0`` and a uint32 ``seed`` the probabilities are dropped out with the
    hash mask of the module docstring and the kept ones scaled by ``1 / (1 - dropout)``.
    """
    probs = attention_probs(q, k, spec=spec, scale=scale, kv_start=kv_start, bias=bias)
    if dropout > 0.0 and seed is not None:
        keep = dropout_keep(seed, probs.shape, dropout)
        probs = jnp.where(keep, probs / (1.0 - dropout), 0.0)
    return jnp.einsum("bhtl,bhle->bhte", probs.astype(v.dtype), v)


def attention(
    q: Float[Array, "b h t d"],
    k: Float[Array, "b h l d"],
    v: Float[Array, "b h l e"],
    *,
    spec: MaskSpec = MaskSpec(),
    scale: float | None = None,
    kv_start: Int[Array, " b"] | None = None,
    bias: Float[Array, "b h t l"] | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    impl: str = "auto",
) -> Float[Array, "b h t e"]:
    """Masked attention of ``q`` over ``k, v`` with the implementation ``impl`` picks.

    ``bias``: an additive score term (see :func:`attention_reference`). ``dropout``: the rate
    of attention-probability dropout, applied when a PRNG ``key`` is given (training), with
    the hash mask of the module docstring in every implementation, so ``"xla"`` and the
    kernel agree for the same key. The kernel takes no ``bias``: such a call runs the
    reference (said once), and ``impl="pallas"`` refuses it.
    """
    seed = dropout_seed(key) if (dropout > 0.0 and key is not None) else None
    rate = float(dropout) if seed is not None else 0.0
    refusal = None
    if bias is not None:
        refusal = ("an additive score bias (Transformer-XL's relative-position term) is not "
                   "implemented in the attention kernel")

    def reference(q, k, v, kv_start, seed):
        return attention_reference(q, k, v, spec=spec, scale=scale, kv_start=kv_start,
                                   bias=bias, dropout=rate, seed=seed)

    def kernel(q, k, v, kv_start, seed, *, interpret):
        return dispatch.kernel_module("attention").attention(
            q, k, v, spec=spec, scale=scale, kv_start=kv_start, dropout=rate, seed=seed,
            interpret=interpret)

    return dispatch.run("attention", impl, kernel=kernel, reference=reference,
                        diff=(q, k, v), rest=(kv_start, seed), static_key=(spec, scale, rate),
                        refusal=refusal, head_width=max(q.shape[-1], v.shape[-1]))


def attention_probs(
    q: Float[Array, "b h t d"],
    k: Float[Array, "b h l d"],
    *,
    spec: MaskSpec = MaskSpec(),
    scale: float | None = None,
    kv_start: Int[Array, " b"] | None = None,
    bias: Float[Array, "b h t l"] | None = None,
) -> Float[Array, "b h t l"]:
    """The attention weights the reference computes; for pictures and for attention dropout.

    A softmax over the visible keys of each row; a row with no visible key is all zeros (and
    its gradient is zero, not NaN).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    acc = jnp.promote_types(q.dtype, jnp.float32)  # float32, or float64 under x64 checks
    scores = jnp.einsum("bhtd,bhld->bhtl", q, k, preferred_element_type=acc) * scale
    if bias is not None:
        scores = scores + bias
    visible = attention_mask(q.shape[2], k.shape[2], spec, kv_start)[:, None]
    return masked_softmax(scores, visible)


def masked_softmax(scores: jax.Array, visible: jax.Array) -> jax.Array:
    """softmax over the last axis of the ``visible`` entries; a row with none is all zeros
    (and its gradient is zero, not NaN)."""
    scores = jnp.where(visible, scores, -jnp.inf)
    peak = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    weights = jnp.where(visible, jnp.exp(jnp.where(visible, scores - peak, 0.0)), 0.0)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    return weights / jnp.where(total > 0, total, 1.0)
