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

    out_i = sum_j softmax_j(scale * q_i . k_j  [visible]) v_j
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from recurrentlab.ops.dispatch import resolve_impl


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


def attention_reference(
    q: Float[Array, "b h t d"],
    k: Float[Array, "b h l d"],
    v: Float[Array, "b h l e"],
    *,
    spec: MaskSpec = MaskSpec(),
    scale: float | None = None,
    kv_start: Int[Array, " b"] | None = None,
    bias: Float[Array, "b h t l"] | None = None,
) -> Float[Array, "b h t e"]:
    """Plain-jnp attention; materialises the [t, l] scores. Rows with no visible key give 0.

    ``bias`` (broadcastable to [b, h, t, l]) is added to the scaled scores before the mask:
    Transformer-XL's positional term enters here; -inf entries hide keys beyond ``spec``.
    """
    probs = attention_probs(q, k, spec=spec, scale=scale, kv_start=kv_start, bias=bias)
    return jnp.einsum("bhtl,bhle->bhte", probs.astype(v.dtype), v)


def attention(
    q: Float[Array, "b h t d"],
    k: Float[Array, "b h l d"],
    v: Float[Array, "b h l e"],
    *,
    spec: MaskSpec = MaskSpec(),
    scale: float | None = None,
    kv_start: Int[Array, " b"] | None = None,
    impl: str = "auto",
) -> Float[Array, "b h t e"]:
    """Masked attention of ``q`` over ``k, v`` with the implementation ``impl`` picks."""
    resolved = resolve_impl(impl)
    if resolved == "xla":
        return attention_reference(q, k, v, spec=spec, scale=scale, kv_start=kv_start)
    from recurrentlab.kernels import memory_attention  # imported lazily: Pallas is heavy

    return memory_attention.attention(
        q, k, v, spec=spec, scale=scale, kv_start=kv_start, interpret=resolved == "interpret"
    )


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
    scores = jnp.where(visible, scores, -jnp.inf)
    peak = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    weights = jnp.where(visible, jnp.exp(jnp.where(visible, scores - peak, 0.0)), 0.0)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    return weights / jnp.where(total > 0, total, 1.0)
