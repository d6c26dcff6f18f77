"""Flash-style Pallas attention of a segment over [memory; segment] keys, forward and backward.

Matches ``recurrentlab.ops.attention.attention_reference`` (same mask, same "a row with no
visible key gives 0" rule) without materialising the [t, l] scores: the forward kernel keeps
a running max ``m``, a running sum ``s`` and an unnormalised accumulator per query row while
it walks over key blocks (online softmax), and saves only ``lse = m + log s`` per row.

Shape legend: b batch, h heads, t queries, l keys (= memory + segment), d key width,
e value width; bq / bk the query / key block sizes; offset = l - t.

Mask (the reference's, evaluated per (row, key) tile inside the kernels)::

    visible(i, j) = i < t and j < l and j >= kv_start[b] and (
        not causal
        or j <= i + offset
        or (i < prefix and j < prefix + offset)
        or i >= t - suffix)

Forward, per query block and key block (base-2 exponentials; c = scale · log2 e)::

    x   = c · q kᵀ  (masked entries dropped)
    m'  = max(m, rowmax x);  p = 2^(x − m');  s' = 2^(m − m') s + rowsum p
    acc' = 2^(m − m') acc + p v;                out = acc / s,  lse₂ = m + log2 s

Backward (FlashAttention-2), with δ_i = Σ_e dO_ie O_ie and P = 2^(x − lse₂)::

    dV = Pᵀ dO,   dS = P ∘ (dO Vᵀ − δ),   dQ = scale · dS K,   dK = scale · dSᵀ Q

Attention-probability dropout (rate p > 0, a uint32 seed): Z_ij = [keep_bits(stream(b, h), i,
j) >= p 2^32] from ``recurrentlab.ops.attention``'s counter hash, evaluated on each (row, key)
tile in all three kernels, so no mask is stored. The forward accumulates ``acc += (p ∘ Z) v /
(1 − p)`` while ``s`` sums the undropped p; the backward uses P̃ = P ∘ Z / (1 − p) in dV and
dP = Z ∘ (dO Vᵀ) / (1 − p) in dS = P ∘ (dP − δ) (δ = rowsum(dO ∘ O) still holds).

Two backward kernels: one over query blocks accumulating dQ (loop over key blocks), one over
key blocks accumulating dK, dV (loop over query blocks). Memory is O(t + l) per (b, h):
q, k, v, o, their gradients, lse and δ; no [t, l] array is ever written to HBM.
Loop bounds skip key blocks no row of a query block can see (and vice versa), so a causal
segment over a long memory costs about half the dense work of the segment part.

Backend. The kernels are written against the generic ``pl.pallas_call`` / ``pl.BlockSpec``
API with the whole K/V sequence of one (b, h) in a block and an in-kernel ``fori_loop`` over
key blocks: the layout Pallas' Triton lowering expects (like JAX's own fused-attention
example), so on GPU they lower through **Triton** and run on every CUDA GPU from Ampere on.
Mosaic GPU would be faster on H100 but is Hopper/Blackwell-only and needs a warp-specialised
rewrite (TMA, wgmma). The Triton backend is deprecated from jax 0.11 (still shipped, to be
removed later); where a jax has dropped it the kernels raise a clear error on GPU and the
reference (``impl="xla"``) is the path — the port to Mosaic GPU is the documented next step.
On TPU (Mosaic TPU) the same kernels are laid out by the (8, 128) rule (bq, bk multiples
of 128, d and e padded to multiples of 128, per-row statistics and the key-validity row as
2-D tiles) and assume K/V of one (b, h) fit in VMEM; they are not tuned for TPU. On CPU they
run only in interpret mode (``interpret=True``), which is how the tests check values and
gradients; the tests also lower all three kernels for CUDA (Triton) and TPU (Mosaic) through
``jax.export``, so the lowering rules are checked without the hardware — resource limits
(registers, shared memory, VMEM) only show on the device.

Padding. t is padded to a multiple of bq, l to a multiple of bk, d and e to a power of two
(at least 16, Triton's smallest dot) — or to a multiple of 128 on TPU. Padded keys are
masked through the per-batch key-validity row (which also carries ``kv_start``); padded
query rows are masked and sliced off, so any t, l work.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jaxtyping import Array, Float, Int

from recurrentlab.ops.attention import MaskSpec, dropout_threshold, head_seed, keep_bits

_MASK = -0.7 * float(np.finfo(np.float32).max)  # finite "-inf": keeps max/exp NaN-free
_LOG2E = math.log2(math.e)
_CAUSAL = MaskSpec()


def _platform() -> str:
    """The platform the kernels are laid out and compiled for (the tests lower for others)."""
    return jax.default_backend()


def _triton():
    """Pallas' Triton backend module, or a clear error where this jax no longer ships it."""
    try:
        from jax.experimental.pallas import triton
    except ImportError as err:  # removed after its deprecation in jax 0.11
        raise RuntimeError(
            f"jax {jax.__version__} has no Pallas Triton backend; these kernels need it on GPU "
            "(use impl='xla')"
        ) from err
    return triton


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything the kernels specialise on (hashable: a ``custom_vjp`` nondiff argument)."""

    t: int  # real queries
    lk: int  # real keys (l)
    heads: int
    spec: MaskSpec
    scale: float
    block_q: int
    block_k: int
    interpret: bool
    num_warps: int | None
    num_stages: int
    dropout: float = 0.0  # attention-probability dropout rate (0: none)
    rel: bool = False  # Transformer-XL's relative-position term (plain causal mask only)
    row_offset: int = 0  # absolute index of query row 0 in the dropout hash
    num_q_blocks: int = 0  # padded queries / block_q (the R band of a tile depends on it)


# ----------------------------------------------------------------------------- mask helpers


def _visible(rows, cols, kvalid, st: _Static):
    """Bool[bq, bk]: the module docstring's mask for absolute ``rows``, ``cols`` (int tiles)."""
    offset = st.lk - st.t
    vis = (rows < st.t) & (kvalid != 0)
    spec = st.spec
    if spec.causal:
        rule = cols <= rows + offset
        if spec.prefix:
            rule = rule | ((rows < spec.prefix) & (cols < spec.prefix + offset))
        if spec.suffix:
            rule = rule | (rows >= st.t - spec.suffix)
        vis = vis & rule
    return vis


def _key_blocks_for(iq, st: _Static, num_k_blocks: int):
    """Number of key blocks the query block ``iq`` must visit (blocks past it see nothing)."""
    spec = st.spec
    if not spec.causal:
        return num_k_blocks
    offset = st.lk - st.t
    bq, bk = st.block_q, st.block_k
    last_row = iq * bq + (bq - 1)
    reach = jnp.maximum(last_row + offset + 1, 0)  # keys [0, reach) under the causal rule
    if spec.prefix:
        reach = jnp.where(iq * bq < spec.prefix, jnp.maximum(reach, spec.prefix + offset), reach)
    if spec.suffix:
        reach = jnp.where(last_row >= st.t - spec.suffix, st.lk, reach)
    return jnp.minimum(lax.div(reach + (bk - 1), bk), num_k_blocks)


def _first_query_block_for(ik, st: _Static):
    """First query block that can see any key of key block ``ik`` (suffix rows come last)."""
    spec = st.spec
    if not spec.causal:
        return 0
    offset = st.lk - st.t
    first_key = ik * st.block_k
    first = lax.div(jnp.maximum(first_key - offset, 0), st.block_q)
    if spec.prefix:
        first = jnp.where(first_key < spec.prefix + offset, 0, first)
    return first


def _stream(seed_ref):
    """[1, 1] uint32: the dropout stream of this program's (b, h) (grid axis 0 is b * h + h)."""
    return head_seed(seed_ref[...], pl.program_id(0).astype(jnp.uint32))


def _keep(stream, rows, cols, st: _Static):
    """Bool[bq, bk]: the dropout mask of this (b, h) tile, regenerated from the hash."""
    bits = keep_bits(stream, (rows + st.row_offset).astype(jnp.uint32), cols.astype(jnp.uint32))
    return bits >= jnp.uint32(dropout_threshold(st.dropout))


def _dot_nt(a, b):
    """a [m, k] · b [n, k]ᵀ -> f32 [m, n]."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _dot_tn(a, b):
    """a [k, m]ᵀ · b [k, n] -> f32 [m, n]."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _dot(a, b):
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _tile_iota(st: _Static, dim: int):
    return lax.broadcasted_iota(jnp.int32, (st.block_q, st.block_k), dim)


def _band_start(iq, ik, num_q_blocks: int, st: _Static):
    """Row of the padded R table where tile (iq, ik)'s band of ``bq + bk`` distances starts."""
    return (num_q_blocks - 1 - iq) * st.block_q + ik * st.block_k


def _skew(part, m0: int, st: _Static):
    """Tile term from one part of the band: ``out[a, c] = part[a, c + bq - 1 - a - m0]``.

    ``part`` [bq, w] holds band columns ``m0 .. m0 + w``; entries whose band column falls
    outside it contribute 0. A broadcast compare and a sum: no gather, no reshape (both of
    which Triton cannot lower on register tiles)."""
    bq, bk, w = st.block_q, st.block_k, part.shape[1]
    a = lax.broadcasted_iota(jnp.int32, (bq, bk, w), 0)
    c = lax.broadcasted_iota(jnp.int32, (bq, bk, w), 1)
    m = lax.broadcasted_iota(jnp.int32, (bq, bk, w), 2) + m0
    return jnp.sum(jnp.where(m == c + (bq - 1) - a, part[:, None, :], 0.0), axis=2)


def _unskew(ds, m0: int, w: int, st: _Static):
    """The transpose of :func:`_skew`: ``[bq, w]`` band columns ``m0 .. m0 + w`` of ``ds``."""
    bq, bk = st.block_q, st.block_k
    a = lax.broadcasted_iota(jnp.int32, (bq, bk, w), 0)
    c = lax.broadcasted_iota(jnp.int32, (bq, bk, w), 1)
    m = lax.broadcasted_iota(jnp.int32, (bq, bk, w), 2) + m0
    return jnp.sum(jnp.where(m == c + (bq - 1) - a, ds[:, :, None], 0.0), axis=1)


def _band(r_ref, start, st: _Static):
    """The two halves of a tile's band: R rows ``start .. start + bk`` and the next ``bq``."""
    lo = r_ref[pl.ds(start, st.block_k), :]
    hi = r_ref[pl.ds(start + st.block_k, st.block_q), :]
    return lo, hi


def _positional(qr, lo, hi, st: _Static):
    """f32 [bq, bk]: (q_i + v_r)ᵀ W_r R_{i-j} on the tile, from its band of R rows."""
    return _skew(_dot_nt(qr, lo), 0, st) + _skew(_dot_nt(qr, hi), st.block_k, st)


# ---------------------------------------------------------------------------------- kernels


def _fwd_kernel(q_ref, k_ref, v_ref, kvalid_ref, seed_ref, *refs, st: _Static):
    qr_ref, r_ref, o_ref, lse_ref = refs if st.rel else (None, None, *refs)
    iq = pl.program_id(1)
    stream = _stream(seed_ref) if st.dropout else None
    bq, bk = st.block_q, st.block_k
    num_k_blocks = k_ref.shape[0] // bk
    c = st.scale * _LOG2E
    q = q_ref[...]
    qr = qr_ref[...] if st.rel else None
    rows = iq * bq + _tile_iota(st, 0)
    cols0 = _tile_iota(st, 1)

    def body(ik, carry):
        acc, m, s = carry
        start = pl.multiple_of(ik * bk, bk)
        k = k_ref[pl.ds(start, bk), :]
        v = v_ref[pl.ds(start, bk), :]
        vis = _visible(rows, cols0 + start, kvalid_ref[:, pl.ds(start, bk)], st)
        score = _dot_nt(q, k)
        if st.rel:
            band = _band(r_ref, _band_start(iq, ik, st.num_q_blocks, st), st)
            score = score + _positional(qr, *band, st)
        x = jnp.where(vis, score * c, _MASK)
        m_new = jnp.maximum(m, jnp.max(x, axis=1, keepdims=True))
        corr = jnp.exp2(m - m_new)
        p = jnp.where(vis, jnp.exp2(x - m_new), 0.0)
        s = s * corr + jnp.sum(p, axis=1, keepdims=True)
        if st.dropout:  # the normaliser s sums the kept and the dropped probabilities
            p = jnp.where(_keep(stream, rows, cols0 + start, st), p / (1.0 - st.dropout), 0.0)
        acc = acc * corr + _dot(p.astype(v.dtype), v)
        return acc, m_new, s

    init = (
        jnp.zeros((bq, v_ref.shape[1]), jnp.float32),
        jnp.full((bq, 1), _MASK, jnp.float32),
        jnp.zeros((bq, 1), jnp.float32),
    )
    acc, m, s = lax.fori_loop(0, _key_blocks_for(iq, st, num_k_blocks), body, init)
    seen = s > 0.0  # rows with no visible key give 0, as in the reference
    s_safe = jnp.where(seen, s, 1.0)
    o_ref[...] = jnp.where(seen, acc / s_safe, 0.0).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen, m + jnp.log2(s_safe), 0.0)


def _dq_kernel(q_ref, k_ref, v_ref, kvalid_ref, seed_ref, do_ref, lse_ref, delta_ref, *refs, st):
    if st.rel:
        qr_ref, r_ref, dq_ref, dqr_ref, dr_ref = refs
    else:
        (dq_ref,) = refs
    iq = pl.program_id(1)
    stream = _stream(seed_ref) if st.dropout else None
    bq, bk = st.block_q, st.block_k
    num_k_blocks = k_ref.shape[0] // bk
    c = st.scale * _LOG2E
    q = q_ref[...]
    qr = qr_ref[...] if st.rel else None
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    rows = iq * bq + _tile_iota(st, 0)
    cols0 = _tile_iota(st, 1)

    def body(ik, carry):
        dq, dqr, tail = carry if st.rel else (*carry, None, None)
        start = pl.multiple_of(ik * bk, bk)
        k = k_ref[pl.ds(start, bk), :]
        v = v_ref[pl.ds(start, bk), :]
        vis = _visible(rows, cols0 + start, kvalid_ref[:, pl.ds(start, bk)], st)
        score = _dot_nt(q, k)
        if st.rel:
            lo, hi = _band(r_ref, _band_start(iq, ik, st.num_q_blocks, st), st)
            score = score + _positional(qr, lo, hi, st)
        p = jnp.where(vis, jnp.exp2(score * c - lse), 0.0)
        dp = _dot_nt(do, v)
        if st.dropout:
            keep = _keep(stream, rows, cols0 + start, st)
            dp = jnp.where(keep, dp / (1.0 - st.dropout), 0.0)
        ds = p * (dp - delta)
        dq = dq + _dot(ds.astype(k.dtype), k)
        if st.rel:  # the band's gradient: its first bk rows are final, the last bq carry on
            g_lo, g_hi = _unskew(ds, 0, bk, st), _unskew(ds, bk, bq, st)
            dqr = dqr + _dot(g_lo.astype(lo.dtype), lo) + _dot(g_hi.astype(hi.dtype), hi)
            dr_ref[pl.ds(start, bk), :] = ((_dot_tn(g_lo.astype(qr.dtype), qr) + tail)
                                           * st.scale).astype(dr_ref.dtype)
            tail = _dot_tn(g_hi.astype(qr.dtype), qr)
            return dq, dqr, tail
        return (dq,)

    width = q_ref.shape[1]
    init = (jnp.zeros(q_ref.shape, jnp.float32),)
    if st.rel:
        init += (jnp.zeros(q_ref.shape, jnp.float32), jnp.zeros((bq, width), jnp.float32))
    used = _key_blocks_for(iq, st, num_k_blocks)
    dq, dqr, tail = (*lax.fori_loop(0, used, body, init), None, None)[:3]
    dq_ref[...] = (dq * st.scale).astype(dq_ref.dtype)
    if st.rel:  # every row of this program's band gradient is written exactly once
        dqr_ref[...] = (dqr * st.scale).astype(dqr_ref.dtype)
        dr_ref[pl.ds(pl.multiple_of(used * bk, bk), bq), :] = (tail * st.scale).astype(
            dr_ref.dtype)

        def zero(ib, count):
            dr_ref[pl.ds(pl.multiple_of(ib * bk, bk), bk), :] = jnp.zeros((bk, width),
                                                                          dr_ref.dtype)
            return count + 1

        lax.fori_loop(used + 1, num_k_blocks + 1, zero, jnp.int32(0))


def _dkv_kernel(q_ref, k_ref, v_ref, kvalid_ref, seed_ref, do_ref, lse_ref, delta_ref, *refs, st):
    qr_ref, r_ref, dk_ref, dv_ref = refs if st.rel else (None, None, *refs)
    ik = pl.program_id(1)
    stream = _stream(seed_ref) if st.dropout else None
    bq, bk = st.block_q, st.block_k
    num_q_blocks = q_ref.shape[0] // bq
    c = st.scale * _LOG2E
    k = k_ref[...]
    v = v_ref[...]
    kvalid = kvalid_ref[...]
    cols = ik * bk + _tile_iota(st, 1)
    rows0 = _tile_iota(st, 0)

    def body(iq, carry):
        dk, dv = carry
        start = pl.multiple_of(iq * bq, bq)
        q = q_ref[pl.ds(start, bq), :]
        do = do_ref[pl.ds(start, bq), :]
        lse = lse_ref[pl.ds(start, bq), :]
        delta = delta_ref[pl.ds(start, bq), :]
        vis = _visible(rows0 + start, cols, kvalid, st)
        score = _dot_nt(q, k)
        if st.rel:
            band = _band(r_ref, _band_start(iq, ik, num_q_blocks, st), st)
            score = score + _positional(qr_ref[pl.ds(start, bq), :], *band, st)
        p = jnp.where(vis, jnp.exp2(score * c - lse), 0.0)
        dp = _dot_nt(do, v)
        if st.dropout:
            keep = _keep(stream, rows0 + start, cols, st)
            dv = dv + _dot_tn(jnp.where(keep, p / (1.0 - st.dropout), 0.0).astype(do.dtype), do)
            dp = jnp.where(keep, dp / (1.0 - st.dropout), 0.0)
        else:
            dv = dv + _dot_tn(p.astype(do.dtype), do)
        ds = p * (dp - delta)
        dk = dk + _dot_tn(ds.astype(q.dtype), q)
        return dk, dv

    init = (jnp.zeros(k_ref.shape, jnp.float32), jnp.zeros(v_ref.shape, jnp.float32))
    dk, dv = lax.fori_loop(_first_query_block_for(ik, st), num_q_blocks, body, init)
    dk_ref[...] = (dk * st.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


# ------------------------------------------------------------------------------ pallas calls


def _compiler_params(st: _Static):
    if st.interpret:
        return None
    backend = _platform()
    if backend == "gpu":
        plgpu = _triton()
        return plgpu.CompilerParams(num_warps=st.num_warps, num_stages=st.num_stages)
    if backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel"))
    return None


def _row_specs(st: _Static, tp: int, lp: int, d: int, e: int):
    """BlockSpecs of q / k / v / kvalid with the whole sequence of one (b, h) in the block."""
    h = st.heads
    full_q = pl.BlockSpec((None, tp, d), lambda bh, i: (bh, 0, 0))
    full_k = pl.BlockSpec((None, lp, d), lambda bh, i: (bh, 0, 0))
    full_v = pl.BlockSpec((None, lp, e), lambda bh, i: (bh, 0, 0))
    full_kvalid = pl.BlockSpec((None, 1, lp), lambda bh, i: (lax.div(bh, h), 0, 0))
    return full_q, full_k, full_v, full_kvalid


_SEED_SPEC = pl.BlockSpec((1, 1), lambda bh, i: (0, 0))  # uint32 [1, 1]: the dropout seed


def _rel_specs(st: _Static, tp: int, lp: int, d: int):
    """BlockSpecs of the positional query (a q block) and the padded R table of the head."""
    qr_block = pl.BlockSpec((None, st.block_q, d), lambda b, i: (b, i, 0))
    qr_full = pl.BlockSpec((None, tp, d), lambda b, i: (b, 0, 0))
    r_full = pl.BlockSpec((None, tp + lp, d), lambda bh, i: (lax.rem(bh, st.heads), 0, 0))
    return qr_block, qr_full, r_full


def _forward(st: _Static, q, k, v, kvalid, seed, rel=()):
    bh, tp, d = q.shape
    lp, e = k.shape[1], v.shape[2]
    _, full_k, full_v, full_kvalid = _row_specs(st, tp, lp, d, e)
    rel_specs = list(_rel_specs(st, tp, lp, d)[::2]) if st.rel else []
    return pl.pallas_call(
        functools.partial(_fwd_kernel, st=st),
        grid=(bh, tp // st.block_q),
        in_specs=[
            pl.BlockSpec((None, st.block_q, d), lambda b, i: (b, i, 0)),
            full_k,
            full_v,
            full_kvalid,
            _SEED_SPEC,
            *rel_specs,
        ],
        out_specs=[
            pl.BlockSpec((None, st.block_q, e), lambda b, i: (b, i, 0)),
            pl.BlockSpec((None, st.block_q, 1), lambda b, i: (b, i, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((bh, tp, e), v.dtype),
            jax.ShapeDtypeStruct((bh, tp, 1), jnp.float32),
        ],
        compiler_params=_compiler_params(st),
        interpret=st.interpret,
        name="memory_attention_fwd",
    )(q, k, v, kvalid, seed, *rel)


def _backward(st: _Static, q, k, v, kvalid, seed, o, lse, do, rel=()):
    bh, tp, d = q.shape
    lp, e = k.shape[1], v.shape[2]
    delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1, keepdims=True)
    full_q, full_k, full_v, full_kvalid = _row_specs(st, tp, lp, d, e)
    full_do = pl.BlockSpec((None, tp, e), lambda b, i: (b, 0, 0))
    full_row = pl.BlockSpec((None, tp, 1), lambda b, i: (b, 0, 0))
    q_block = pl.BlockSpec((None, st.block_q, d), lambda b, i: (b, i, 0))
    row_block = pl.BlockSpec((None, st.block_q, 1), lambda b, i: (b, i, 0))
    dq_out_specs, dq_out_shape = q_block, jax.ShapeDtypeStruct(q.shape, q.dtype)
    rel_in, rel_full = [], []
    if st.rel:
        qr_block, qr_full, r_full = _rel_specs(st, tp, lp, d)
        rel_in, rel_full = [qr_block, r_full], [qr_full, r_full]
        band_rows = lp + st.block_q  # this query block's band gradient, key blocks 0..nk
        dq_out_specs = [q_block, q_block,
                        pl.BlockSpec((None, None, band_rows, d), lambda b, i: (b, i, 0, 0))]
        dq_out_shape = [dq_out_shape, jax.ShapeDtypeStruct(q.shape, rel[0].dtype),
                        jax.ShapeDtypeStruct((bh, tp // st.block_q, band_rows, d),
                                             jnp.float32)]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, st=st),
        grid=(bh, tp // st.block_q),
        in_specs=[
            q_block,
            full_k,
            full_v,
            full_kvalid,
            _SEED_SPEC,
            pl.BlockSpec((None, st.block_q, e), lambda b, i: (b, i, 0)),
            row_block,
            row_block,
            *rel_in,
        ],
        out_specs=dq_out_specs,
        out_shape=dq_out_shape,
        compiler_params=_compiler_params(st),
        interpret=st.interpret,
        name="memory_attention_bwd_dq",
    )(q, k, v, kvalid, seed, do, lse, delta, *rel)
    k_block = pl.BlockSpec((None, st.block_k, d), lambda b, j: (b, j, 0))
    v_block = pl.BlockSpec((None, st.block_k, e), lambda b, j: (b, j, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, st=st),
        grid=(bh, lp // st.block_k),
        in_specs=[
            full_q,
            k_block,
            v_block,
            pl.BlockSpec((None, 1, st.block_k), lambda b, j: (lax.div(b, st.heads), 0, j)),
            _SEED_SPEC,
            full_do,
            full_row,
            full_row,
            *rel_full,
        ],
        out_specs=[k_block, v_block],
        out_shape=[
            jax.ShapeDtypeStruct(k.shape, k.dtype),
            jax.ShapeDtypeStruct(v.shape, v.dtype),
        ],
        compiler_params=_compiler_params(st),
        interpret=st.interpret,
        name="memory_attention_bwd_dkv",
    )(q, k, v, kvalid, seed, do, lse, delta, *rel)
    if not st.rel:
        return dq, dk, dv
    dq, dqr, band_grads = dq
    # Band gradients of query block iq start at R row (nq - 1 - iq) * bq; sum them over the
    # batch and the query blocks into the padded R table of each head.
    b = bh // st.heads
    nq, band_rows = band_grads.shape[1], band_grads.shape[2]
    per_head = band_grads.reshape(b, st.heads, nq, band_rows, d).sum(axis=0)
    index = (nq - 1 - jnp.arange(nq))[:, None] * st.block_q + jnp.arange(band_rows)[None, :]
    dr = jnp.zeros(rel[1].shape, jnp.float32).at[:, index, :].add(per_head)
    return dq, dk, dv, dqr, dr.astype(rel[1].dtype)


def _float0(x):
    return np.zeros(x.shape, jax.dtypes.float0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(st: _Static, q, k, v, kvalid, seed):
    return _forward(st, q, k, v, kvalid, seed)[0]


def _flash_fwd(st: _Static, q, k, v, kvalid, seed):
    o, lse = _forward(st, q, k, v, kvalid, seed)
    return o, (q, k, v, kvalid, seed, o, lse)


def _flash_bwd(st: _Static, res, do):
    q, k, v, kvalid, seed, o, lse = res
    dq, dk, dv = _backward(st, q, k, v, kvalid, seed, o, lse, do)
    return dq, dk, dv, _float0(kvalid), _float0(seed)


_flash.defvjp(_flash_fwd, _flash_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash_rel(st: _Static, q, k, v, kvalid, seed, qr, r):
    return _forward(st, q, k, v, kvalid, seed, (qr, r))[0]


def _flash_rel_fwd(st: _Static, q, k, v, kvalid, seed, qr, r):
    o, lse = _forward(st, q, k, v, kvalid, seed, (qr, r))
    return o, (q, k, v, kvalid, seed, qr, r, o, lse)


def _flash_rel_bwd(st: _Static, res, do):
    q, k, v, kvalid, seed, qr, r, o, lse = res
    dq, dk, dv, dqr, dr = _backward(st, q, k, v, kvalid, seed, o, lse, do, (qr, r))
    return dq, dk, dv, _float0(kvalid), _float0(seed), dqr, dr


_flash_rel.defvjp(_flash_rel_fwd, _flash_rel_bwd)


# ------------------------------------------------------------------------------- public API


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _feature_pad(n: int) -> int:
    if _platform() == "tpu":
        return _round_up(n, 128)
    return max(16, pl.next_power_of_2(n))


def _default_block(width: int) -> int:
    if _platform() == "tpu":
        return 128
    return 64 if width <= 128 else 32 if width <= 256 else 16


def _seq_block(block: int, n: int) -> int:
    """The block actually used: ``block``, or less when the sequence is shorter."""
    if _platform() == "tpu":
        return min(block, _round_up(n, 128))
    return min(pl.next_power_of_2(block), max(16, pl.next_power_of_2(n)))  # Triton: 2^k


def attention(
    q: Float[Array, "b h t d"],
    k: Float[Array, "b h l d"],
    v: Float[Array, "b h l e"],
    *,
    spec: MaskSpec = _CAUSAL,
    scale: float | None = None,
    kv_start: Int[Array, " b"] | None = None,
    dropout: float = 0.0,
    seed: jax.Array | None = None,
    rel_q: Float[Array, "b h t d"] | None = None,
    rel_r: Float[Array, "h l d"] | None = None,
    row_offset: int = 0,
    interpret: bool = False,
    block_q: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    num_stages: int = 2,
) -> Float[Array, "b h t e"]:
    """Masked attention of ``q`` over ``k, v``; same contract as ``attention_reference``.

    ``block_q`` / ``block_k`` are the query / key tile sizes (shrunk for short sequences;
    default 64 for feature widths up to 128, 32 up to 256, 16 beyond, so the q tile and the
    f32 accumulator of a wide single head, e.g. SHA-RNN's d = 1024, stay in registers /
    shared memory; 128 on TPU); ``num_warps`` / ``num_stages`` go to the Triton compiler.
    ``dropout`` with a uint32 ``seed``: attention-probability dropout with the hash mask of
    ``recurrentlab.ops.attention`` (the same mask as the reference for the same seed),
    regenerated per tile in the forward and both backward kernels.
    ``rel_q`` / ``rel_r`` (together; plain causal ``spec`` only): Transformer-XL's positional
    term, ``score_ij += rel_q_i · rel_r[t - 1 - i + j]`` (scaled with the content term), i.e.
    ``(q_i + v_r)ᵀ W_r R_{i-j}`` with ``rel_r[:, j']`` the head's W_r R at distance
    ``l - 1 - j'``; each tile reads the ``bq + bk`` rows of R its distances need (the
    reference's rel-shift, done per tile), so no [t, l] array is formed. ``row_offset``: the
    absolute index of query row 0 in the dropout hash (a block of rows of a larger call).
    Differentiable in q, k, v (and ``rel_q``, ``rel_r``) through a Pallas backward
    (``jax.custom_vjp``).
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"expected [b, h, t, d] arrays, got {q.shape}, {k.shape}, {v.shape}")
    b, h, t, d = q.shape
    lk, e = k.shape[2], v.shape[3]
    if k.shape != (b, h, lk, d) or v.shape[:3] != (b, h, lk):
        raise ValueError(f"q {q.shape}, k {k.shape}, v {v.shape} do not agree")
    scale = d**-0.5 if scale is None else float(scale)
    rel = rel_q is not None
    if rel != (rel_r is not None):
        raise ValueError("rel_q and rel_r go together")
    if rel and (spec.prefix or spec.suffix or not spec.causal):
        raise ValueError(f"the positional term needs a plain causal mask, got {spec}")
    if rel and (rel_q.shape != q.shape or rel_r.shape != (h, lk, d)):
        raise ValueError(f"rel_q {rel_q.shape} / rel_r {rel_r.shape} do not fit q {q.shape}, "
                         f"k {k.shape}")
    default_block = _default_block(max(d, e))
    if rel:  # the skew's [bq, bk, bk] compare tile; one block size (see _dq_kernel)
        default_block = default_block if _platform() == "tpu" else min(default_block, 32)
        block_q = block_k = min(block_q or default_block, block_k or default_block)
    block_q = block_q or default_block
    block_k = block_k or default_block
    bq, bk = _seq_block(block_q, t), _seq_block(block_k, lk)
    if rel:
        bq = bk = min(bq, bk)
    tp, lp = _round_up(t, bq), _round_up(lk, bk)
    dp, ep = _feature_pad(d), _feature_pad(e)
    if num_warps is None:
        num_warps = 4 if max(dp, ep) <= 64 else 8
    rate = float(dropout) if (seed is not None and dropout > 0.0) else 0.0
    st = _Static(t, lk, h, spec, scale, bq, bk, bool(interpret), num_warps, num_stages, rate,
                 rel, int(row_offset), tp // bq)
    seed = jnp.zeros((1, 1), jnp.uint32) if seed is None else (
        jnp.asarray(seed, jnp.uint32).reshape(1, 1))

    keys = jnp.arange(lp)
    kvalid = jnp.broadcast_to(keys < lk, (b, lp))
    if kv_start is not None:
        kvalid = kvalid & (keys[None, :] >= jnp.asarray(kv_start)[:, None])
    kvalid = kvalid.astype(jnp.int32)[:, None, :]  # [b, 1, lp]: 2-D tiles on every backend

    def prep(x, n, npad, f, fpad):
        x = jnp.pad(x, ((0, 0), (0, 0), (0, npad - n), (0, fpad - f)))
        return x.reshape(b * h, npad, fpad)

    args = (prep(q, t, tp, d, dp), prep(k, lk, lp, d, dp), prep(v, lk, lp, e, ep), kvalid, seed)
    if rel:  # R rows padded so that every tile's band is in range: row F + j' holds rel_r[j']
        front = tp - t
        table = jnp.pad(rel_r, ((0, 0), (front, tp + lp - front - lk), (0, dp - d)))
        out = _flash_rel(st, *args, prep(rel_q, t, tp, d, dp), table)
    else:
        out = _flash(st, *args)
    return out.reshape(b, h, tp, ep)[:, :, :t, :e]
