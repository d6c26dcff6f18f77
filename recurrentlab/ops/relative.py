"""Transformer-XL's relative-position attention (Dai et al. 2019, eq. in section 3.3) as one op.

    A_ij = (q_i + u)ᵀ k_j  +  (q_i + v_r)ᵀ W_r R_{i-j}        a = softmax_j(A_ij / √d  [visible]) v

Shape legend: b batch, h heads, t query rows, M = l - t cache rows (keys before the first
query), l keys, d head width. ``r_head[:, j']`` is the head's W_r R at distance ``l - 1 - j'``
(distances descending, as the reference's ``pos_seq``).

The reference (``kimiyoung/transformer-xl``, ``RelPartialLearnableMultiHeadAttn``) forms the
positional term for every (query, key) pair with its rel-shift trick (:func:`rel_shift`,
:func:`relative_position_bias`) and adds it to the scores: O(t·l) memory per head. The Pallas
path (``recurrentlab.kernels.memory_attention`` with ``rel_q``/``rel_r``) computes it per
(query, key) tile from the ``bq + bk`` rows of R the tile's distances need, so no [t, l]
array is formed, forward or backward.

Rows that see past the causal limit (RMT's memory rows: the ``spec.prefix`` read rows and
``spec.suffix`` write rows) read the rel-shift's leftovers there, which depend on the cache
length actually held (``cache_len``; see :func:`relative_position_bias`). The kernel does
only plain causal rows, so on the kernel path those few rows (2m of s + 2m) run the reference
on their own and the segment rows run the kernel over the keys they can see: the softmax of a
row does not depend on the others, and the dropout hash uses the absolute row index, so the
two paths give the reference's values (tested, ``tests/test_impl_equivalence.py``).
``same_length`` (evaluation: every query sees exactly M keys) is not in the kernel; such
calls take the reference (said once; ``impl="pallas"`` refuses them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from recurrentlab.ops import dispatch
from recurrentlab.ops.attention import (
    MaskSpec,
    attention_mask,
    attention_reference,
    dropout_keep,
    dropout_seed,
    masked_softmax,
)

CAUSAL = MaskSpec(causal=True)


def rel_shift(x: Float[Array, "... t l"]) -> Float[Array, "... t l"]:
    """Transformer-XL's shift: column j' of row i (distance l-1-j') moves to key j.

    With ``x[i, j']`` the score of query i against relative distance ``l - 1 - j'``, the result
    holds ``x[i, j + t - 1 - i]`` at ``[i, j]``: the score for distance ``(l - t) + i - j``,
    i.e. query i at absolute position ``l - t + i`` against key j. Entries with ``j`` beyond the
    causal limit hold leftovers (see :func:`relative_position_bias`), which only rows that see
    past the causal limit (RMT memory) read. Done as in the reference: pad one zero column on
    the left, view as [l + 1, t], drop the first row, view back as [t, l].
    """
    *lead, t, l = x.shape  # noqa: E741
    padded = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
    padded = padded.reshape(*lead, l + 1, t)
    return padded[..., 1:, :].reshape(*lead, t, l)


def relative_position_bias(
    q: Float[Array, "b h t d"],
    r_head: Float[Array, "h l d"],
    r_bias: Float[Array, "h d"],
    cache_len: Int[Array, " b"] | None = None,
    rows: np.ndarray | None = None,
) -> Float[Array, "b h t l"]:
    """(q_i + v_r)ᵀ W_r R_{i-j} for every query i and key j, via the rel-shift trick.

    The queries are the last t of the l positions, so the first ``M = l - t`` keys are the
    (front-padded) cache.

    Beyond the causal limit (key ``j > i + M``) the shift leaves other entries: 0 at
    ``j = i + M + 1`` and, for ``j >= i + M + 2``, query i+1's term at column ``j - i - M - 2``.
    Only rows that see past the causal limit (RMT memory rows) read them. The reference's
    key axis is its *actual* cache length L plus t, so there those columns move with L: with
    ``cache_len`` (Int[b], the valid cache rows L per stream) the entries ``j >= i + M + 2``
    take the reference's values, query i+1's term at column ``j - i - L - 2`` (the distance
    ``2L + t + 1 + i - j_ref`` in the reference's own key index ``j_ref = j - M + L``).
    Without it they are the values for a full cache (L = M). Causal entries never depend on L.

    ``rows`` (optional, static ints): only these query rows, [b, h, len(rows), l], computed
    from those rows (and the next ones) alone, with the same values as the full result.
    """
    out_dtype = jnp.promote_types(q.dtype, jnp.float32)
    b, h, t, _ = q.shape
    l = r_head.shape[1]  # noqa: E741
    m = l - t
    if rows is None:
        raw = jnp.einsum("bhtd,hld->bhtl", q + r_bias[None, :, None, :], r_head,
                         preferred_element_type=out_dtype)
        shifted = rel_shift(raw)
        if cache_len is None:
            return shifted
        i = np.arange(t)
    else:  # explicit distances for the chosen rows: no [t, l] array
        i = np.asarray(rows, np.int64)
        needed = np.union1d(i, np.minimum(i + 1, t - 1))
        raw_rows = jnp.einsum("bhtd,hld->bhtl", q[:, :, needed] + r_bias[None, :, None, :],
                              r_head, preferred_element_type=out_dtype)
        where = {int(r): n for n, r in enumerate(needed)}
        own = raw_rows[:, :, [where[int(r)] for r in i]]
        j = np.arange(l)[None, :]
        col = np.clip(j + t - 1 - i[:, None], 0, l - 1)  # distance m + i - j
        causal = jnp.take_along_axis(own, jnp.asarray(np.broadcast_to(col, own.shape)), -1)
        shifted = jnp.where(jnp.asarray(j <= i[:, None] + m), causal, 0.0)
        raw = raw_rows.reshape(b, h, len(needed) * l)
        next_row = np.array([where[int(min(r + 1, t - 1))] for r in i])
    j = np.arange(l)[None, :]
    beyond = j >= i[:, None] + m + 2  # [rows, l]
    if not beyond.any():
        return shifted
    length = m if cache_len is None else cache_len[:, None, None].astype(jnp.int32)
    col = jnp.clip(j[None] - i[None, :, None] - length - 2, 0, l - 1)  # [b or 1, rows, l]
    if rows is None:
        row = np.minimum(i + 1, t - 1)  # query i+1 (clipped where the entry is not used)
        raw = raw.reshape(b, h, t * l)
    else:
        row = next_row
    index = jnp.broadcast_to(row[None, :, None] * l + col, (b, len(i), l)).reshape(b, 1, -1)
    leftover = jnp.take_along_axis(raw, index, axis=-1).reshape(b, h, len(i), l)
    return jnp.where(jnp.asarray(beyond)[None, None], leftover, shifted)


def _extra_visible(t: int, l: int, spec: MaskSpec, memory_sees_cache: bool,  # noqa: E741
                   same_length: bool):
    """Bool[t, l] hiding more pairs than ``spec``: the cache from RMT's memory rows, and
    ``same_length``'s window (key j > query i in the [cache; rows] layout); None if none."""
    i, j = np.arange(t)[:, None], np.arange(l)[None, :]
    extra = np.ones((t, l), bool)
    if not memory_sees_cache:
        memory_row = (i < spec.prefix) | (i >= t - spec.suffix)
        extra &= ~memory_row | (j >= l - t)
    if same_length:
        extra &= j > i
    return None if extra.all() else extra


def _rows_reference(q, k, v, r_head, u, r_bias, rows, *, spec, kv_start, cache_len, extra,
                    rate, seed):
    """The reference's output for query ``rows`` only (static ints), [b, h, len(rows), d]."""
    t, l = q.shape[2], k.shape[2]  # noqa: E741
    scale = q.shape[-1] ** -0.5
    acc = jnp.promote_types(q.dtype, jnp.float32)
    qs = q[:, :, rows]
    scores = jnp.einsum("bhtd,bhld->bhtl", qs + u[None, :, None, :], k,
                        preferred_element_type=acc) * scale
    scores = scores + relative_position_bias(q, r_head, r_bias, cache_len, rows=rows) * scale
    visible = attention_mask(t, l, spec, kv_start)[:, rows]
    if extra is not None:
        visible = visible & jnp.asarray(extra[rows])[None]
    probs = masked_softmax(scores, visible[:, None])
    if rate > 0.0:
        keep = dropout_keep(seed, (q.shape[0], q.shape[1], t, l), rate, rows=rows)
        probs = jnp.where(keep, probs / (1.0 - rate), 0.0)
    return jnp.einsum("bhtl,bhle->bhte", probs.astype(v.dtype), v)


def relative_attention(
    q: Float[Array, "b h t d"],
    k: Float[Array, "b h l d"],
    v: Float[Array, "b h l d"],
    r_head: Float[Array, "h l d"],
    u: Float[Array, "h d"],
    r_bias: Float[Array, "h d"],
    *,
    spec: MaskSpec = CAUSAL,
    kv_start: Int[Array, " b"] | None = None,
    cache_len: Int[Array, " b"] | None = None,
    memory_sees_cache: bool = True,
    same_length: bool = False,
    attn_dropout: float = 0.0,
    key: jax.Array | None = None,
    impl: str = "auto",
) -> Float[Array, "b h t d"]:
    """softmax_j(((q_i+u)ᵀk_j + (q_i+v_r)ᵀ W_r R_{i-j}) / √d) v_j over the visible keys.

    ``spec``/``kv_start``: the shared attention mask (``recurrentlab.ops.attention``).
    ``memory_sees_cache=False`` hides the M cache keys from the ``spec.prefix``/``suffix``
    rows (RMT's memory rows, unless ``read_mem_from_cache``); ``same_length``: every query
    sees exactly M keys (key j > query i). ``cache_len`` (optional): the valid cache rows per
    stream, for the reference's positional term beyond the causal limit (see
    :func:`relative_position_bias`). With ``attn_dropout`` and a ``key`` the probabilities are
    dropped out (``dropatt``) with the ops' hash mask. ``impl`` as in
    :mod:`recurrentlab.ops.dispatch`.
    """
    t, l = q.shape[2], k.shape[2]  # noqa: E741
    scale = q.shape[-1] ** -0.5
    seed = dropout_seed(key) if (attn_dropout > 0.0 and key is not None) else None
    rate = float(attn_dropout) if seed is not None else 0.0
    extra = _extra_visible(t, l, spec, memory_sees_cache, same_length)
    refusal = None
    if same_length:
        refusal = "same_length's window mask is not implemented in the attention kernel"
    elif not spec.causal:
        refusal = "the relative-position kernel needs a causal mask"

    def reference(q, k, v, r_head, u, r_bias, kv_start, cache_len, seed):
        bias = relative_position_bias(q, r_head, r_bias, cache_len) * scale
        if extra is not None:
            bias = jnp.where(jnp.asarray(extra)[None, None], bias, -jnp.inf)
        return attention_reference(q + u[None, :, None, :], k, v, spec=spec, scale=scale,
                                   kv_start=kv_start, bias=bias, dropout=rate, seed=seed)

    def kernel(q, k, v, r_head, u, r_bias, kv_start, cache_len, seed, *, interpret):
        first, stop = spec.prefix, t - spec.suffix  # segment rows: plain causal
        keys = l - spec.suffix  # the write rows' keys lie past every segment row's limit
        qs = q[:, :, first:stop]
        out = dispatch.kernel_module("relative_attention").attention(
            qs + u[None, :, None, :], k[:, :, :keys], v[:, :, :keys], scale=scale,
            kv_start=kv_start, dropout=rate, seed=seed, rel_q=qs + r_bias[None, :, None, :],
            rel_r=r_head[:, spec.suffix:], row_offset=first, interpret=interpret)
        memory = np.r_[0:first, stop:t]
        if not len(memory):
            return out
        mem = _rows_reference(q, k, v, r_head, u, r_bias, memory, spec=spec, kv_start=kv_start,
                              cache_len=cache_len, extra=extra, rate=rate, seed=seed)
        return jnp.concatenate([mem[:, :, :first], out, mem[:, :, first:]], axis=2)

    return dispatch.run("relative_attention", impl, kernel=kernel, reference=reference,
                        diff=(q, k, v, r_head, u, r_bias), rest=(kv_start, cache_len, seed),
                        static_key=(spec, rate, memory_sees_cache, same_length),
                        refusal=refusal)
