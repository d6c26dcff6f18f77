"""One fused NTM memory step as a Pallas kernel: addressing of every head, read, erase/add write.

Matches ``recurrentlab.ops.ntm_memory.memory_step_reference`` (same arguments, same NaN
guards) in one kernel launch per step instead of a dozen XLA fusions, which is what an NTM
pays per step inside ``lax.scan``. Equations (per head; see the reference's docstring)::

    K_i  = k . M_i / (||k|| ||M_i|| + eps),  ||x|| = sqrt(max(sum x^2, eps^2))
    w^c  = softmax_i(beta K_i);  w^g = g w^c + (1 - g) w_{t-1}
    w~   = sum_{d=-r..r} s_d roll(w^g, d)               (roll(w, d)_i = w_{(i - d) mod n})
         = sum_d s_d (g softmax-numerator(beta K(k, roll(M, d))) / Z + (1 - g) roll(w_{t-1}, d))
    w    = softmax_i(gamma log max(w~_i, tiny))         (= w~^gamma / sum w~^gamma)
    r    = sum_i w_i M_i                                (reads use M_{t-1})
    M_t  = M_{t-1} o (1 - w e^T) + w a^T                (write heads in order)

Shape legend: b batch, n slots, m slot width, hr / hw read / write heads, s = 2r+1 shift
weights, bb the batch block one program handles.

Layout. The grid runs over batch blocks; a program holds its ``bb`` memories [bb, n, m] and
all heads, so memory is read from HBM once and written once per step. Read and write heads
share the addressing math, so the wrapper stacks them (h = hr + hw: read heads first) and the
kernel addresses all of them at once. Per-head scalars (beta, g, gamma) travel as [b, h, 1]
so every block's last two dimensions are whole array dimensions (legal under Mosaic TPU's
(8, 128) rule and Triton's). The circular shift reads shifted copies instead of moving the
weighting: value slicing / ``roll`` does not lower under Triton, so the wrapper passes the
memory and the previous weightings rolled by each shift d != 0 (``jnp.roll`` over the n real
slots, in XLA, before padding), and the kernel evaluates the shifted gated weighting directly,
``roll(w^g, d) = g exp(beta K(k, roll(M, d)) - mx) / Z + (1 - g) roll(w_{t-1}, d)``, with the
softmax's max ``mx`` and sum ``Z`` taken once from the unshifted scores (a shift permutes
the slots, so both are shift-invariant). Memory per head is O(n m) -- 2r+1 copies of the
block's slots, no [n, n] tile -- and the content dots cost 2r+1 times the unshifted ones
(3x for the usual r = 1). Gradients of the rolled copies flow back through the wrapper's
``jnp.roll``. The content dots k . M_i and the
reads sum_i w_i M_i are 2-D matmuls of the block's [bb*h, m] keys against its [bb*n, m] slots
(and of the block-diagonal [bb*h, bb*n] weightings against the slots), masked to same-batch
pairs: bb times the flops on tensor cores / MXU, instead of [bb, h, n, m] broadcast products.

Padding. Triton wants every in-kernel array size a power of two, so n, m, the head count, the
shift weights and bb are padded to powers of two on every backend (the CPU tests run the very
layout a GPU compiles). Padded slots are masked out of both softmaxes and of P_d; padded
columns are zero in memory and keys and change no norm or dot; padded heads have zero inputs
(finite, sliced off; padded write heads never write); padded shift weights are never read.
The batch is padded to a multiple of bb with zero memories (NaN-safe).

Backward. A second Pallas kernel recomputes the step for its batch block and applies
``jax.vjp`` of the same in-kernel math to the output cotangents, so the backward is one fused
launch that never stores the step's intermediates (w^c, w^g, w~, ...) in HBM. It is the exact
gradient of the kernel's forward math, which equals the reference's up to float rounding.

Backend. Written against the generic ``pl.pallas_call`` / ``pl.BlockSpec`` API with only
elementwise ops, last-axis reductions, iotas, reshapes and 2-D dots, which both the Triton
(GPU) and Mosaic TPU lowerings implement; Triton needs dot operands of at least 16 rows, so
on GPU the batch block is ``bb = max(1, 16 // (hr + hw))``. On CPU the tests run the kernels
in interpret mode (values, gradients) and lower both for CUDA (Triton) and TPU (Mosaic) through
``jax.export``, which checks the lowering rules without the hardware; register / shared-memory
pressure (the [bb, h, bb, n] block-diagonal tiles, the [n, n] permutations) only shows on the
device, where the accelerator tests in ``tests/test_kernels_ntm.py`` run the compiled kernel.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jaxtyping import Array, Float

from recurrentlab.ops.ntm_memory import EPS, ReadHeads, WriteHeads

_MASK = -0.7 * float(np.finfo(np.float32).max)


def _platform() -> str:
    """The platform the kernels are laid out and compiled for (the tests lower for others)."""
    return jax.default_backend()


@dataclasses.dataclass(frozen=True)
class _Static:
    n: int  # real slots
    n_pad: int  # slots as laid out in the kernel
    radius: int  # shift radius r (s = 2r + 1 real shift weights; more columns are padding)
    write_heads: int  # real hw (erase / add may carry zero padding heads after them)
    read_heads: int  # hr: heads [0, hr) read, [hr, hr + hw) write
    block_b: int
    interpret: bool


# ----------------------------------------------------------------------- the in-kernel math


def _masked_softmax(x, ok):
    x = jnp.where(ok, x, _MASK)
    e = jnp.where(ok, jnp.exp(x - jnp.max(x, axis=-1, keepdims=True)), 0.0)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _column(x, j):
    """x[..., j:j+1] as a masked last-axis reduction (no value slicing in the kernel)."""
    idx = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return jnp.sum(jnp.where(idx == j, x, 0.0), axis=-1, keepdims=True)


def _row(x, i):
    """x[:, i] of a [bb, h, k] array as a masked middle-axis reduction -> [bb, k]."""
    idx = lax.broadcasted_iota(jnp.int32, x.shape, 1)
    return jnp.sum(jnp.where(idx == i, x, 0.0), axis=1)


def _same_batch(bb: int, h: int, n: int):
    """Bool[bb, h, bb, n]: row block and column block belong to the same batch element."""
    shape = (bb, h, bb, n)
    return lax.broadcasted_iota(jnp.int32, shape, 0) == lax.broadcasted_iota(jnp.int32, shape, 2)


def _per_batch_dot_nt(x, y):
    """[bb, h, m] x [bb, n, m] -> [bb, h, n], sum over m within each batch element.

    One 2-D matmul of all rows against all slots of the block (the off-diagonal batch pairs
    are wasted flops on the tensor cores / MXU) and a mask: cheaper in registers than the
    [bb, h, n, m] broadcast product, and 2-D dots are all Triton lowers.
    """
    bb, h, m = x.shape
    n = y.shape[1]
    full = lax.dot_general(x.reshape(bb * h, m), y.reshape(bb * n, m),
                           (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    full = full.reshape(bb, h, bb, n)
    return jnp.sum(jnp.where(_same_batch(bb, h, n), full, 0.0), axis=2)


def _per_batch_dot(w, y):
    """[bb, h, n] x [bb, n, m] -> [bb, h, m], sum over n within each batch element."""
    bb, h, n = w.shape
    m = y.shape[2]
    block_diag = jnp.where(_same_batch(bb, h, n), w[:, :, None, :], 0.0)  # [bb, h, bb, n]
    return lax.dot_general(block_diag.reshape(bb * h, bb * n), y.reshape(bb * n, m),
                           (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32
                           ).reshape(bb, h, m)


def _scores(st: _Static, memory, key, beta, slot_ok):
    """beta K(k, M_i) [bb, h, n_pad] for every head and slot, padded slots masked."""
    bb = memory.shape[0]
    dot = _per_batch_dot_nt(key, memory)  # [bb, h, n]
    key_norm = jnp.sqrt(jnp.maximum(jnp.sum(key * key, axis=-1, keepdims=True), EPS * EPS))
    mem_norm = jnp.sqrt(jnp.maximum(jnp.sum(memory * memory, axis=-1), EPS * EPS))
    cosine = dot / (key_norm * mem_norm.reshape(bb, 1, st.n_pad) + EPS)
    return jnp.where(slot_ok, beta * cosine, _MASK)


def _address(st: _Static, memory, slot_ok, prev_w, key, beta, gate, shift, gamma, rolled):
    """Weightings [bb, h, n_pad] of every head (content, gate, shift, sharpen).

    ``rolled`` holds, for each shift d != 0 in -r..r order, the memory rolled by d, then the
    previous weightings rolled by d. The shifted gated weighting is evaluated from them (see
    the module docstring), so no weighting is ever moved inside the kernel.
    """
    shifts = [d for d in range(-st.radius, st.radius + 1) if d]
    mem_of = dict(zip(shifts, rolled[: len(shifts)], strict=True))
    prev_of = dict(zip(shifts, rolled[len(shifts):], strict=True))
    mem_of[0], prev_of[0] = memory, prev_w
    z = _scores(st, memory, key, beta, slot_ok)
    peak = jnp.max(z, axis=-1, keepdims=True)
    total = jnp.sum(jnp.where(slot_ok, jnp.exp(z - peak), 0.0), axis=-1, keepdims=True)
    w_s = jnp.zeros_like(prev_w)
    for j, d in enumerate(range(-st.radius, st.radius + 1)):
        z_d = z if d == 0 else _scores(st, mem_of[d], key, beta, slot_ok)
        w_c = jnp.where(slot_ok, jnp.exp(z_d - peak), 0.0) / total  # roll(w^c, d)
        w_s = w_s + _column(shift, j) * (gate * w_c + (1.0 - gate) * prev_of[d])
    tiny = float(jnp.finfo(jnp.float32).tiny)
    return _masked_softmax(gamma * jnp.log(jnp.maximum(w_s, tiny)), slot_ok)


def _step_math(st: _Static, memory, prev_w, key, beta, gate, shift, gamma, erase, add, *rolled):
    """The fused step on one batch block (batch axis first; heads = read heads, then write).

    Returns the new memory, the weightings of all heads and the reads of all heads (the
    write heads' rows of ``reads`` are not used; the wrapper slices them off).
    """
    bb = memory.shape[0]
    slot = lax.broadcasted_iota(jnp.int32, (bb, 1, st.n_pad), 2)
    slot_ok = slot < st.n
    w = _address(st, memory, slot_ok, prev_w, key, beta, gate, shift, gamma, rolled)
    reads = _per_batch_dot(w, memory)  # [bb, h, m]; reads see M_{t-1}
    new_memory = memory
    for i in range(st.write_heads):  # write heads in order
        w_i = _row(w, st.read_heads + i)[:, :, None]  # [bb, n, 1]
        e_i = _row(erase, i)[:, None, :]  # [bb, 1, m]
        a_i = _row(add, i)[:, None, :]
        new_memory = new_memory * (1.0 - w_i * e_i) + w_i * a_i
    return new_memory, w, reads


# ---------------------------------------------------------------------------------- kernels


def _num_inputs(st: _Static) -> int:
    return 9 + 4 * st.radius  # the step's inputs, then memory and weightings per shift d != 0


def _fwd_kernel(*refs, st: _Static):
    in_refs, out_refs = refs[:_num_inputs(st)], refs[_num_inputs(st):]
    outs = _step_math(st, *(r[...] for r in in_refs))
    for ref, val in zip(out_refs, outs, strict=True):
        ref[...] = val.astype(ref.dtype)


def _bwd_kernel(*refs, st: _Static):
    k = _num_inputs(st)
    in_refs, ct_refs, grad_refs = refs[:k], refs[k:k + 3], refs[k + 3:]
    _, vjp = jax.vjp(functools.partial(_step_math, st), *(r[...] for r in in_refs))
    grads = vjp(tuple(r[...] for r in ct_refs))
    for ref, val in zip(grad_refs, grads, strict=True):
        ref[...] = val.astype(ref.dtype)


def _block_spec(x, bb: int):
    """Batch block of ``bb`` rows, the rest of the array whole."""
    rest = x.shape[1:]
    return pl.BlockSpec((bb, *rest), lambda i: (i, *([0] * len(rest))))


def _compiler_params(st: _Static):
    if st.interpret:
        return None
    if _platform() == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=("parallel",))
    if _platform() == "gpu":
        try:
            from jax.experimental.pallas import triton as plgpu
        except ImportError as err:  # removed after its deprecation in jax 0.11
            raise RuntimeError(
                f"jax {jax.__version__} has no Pallas Triton backend; the NTM kernel needs it "
                "on GPU (use impl='xla')"
            ) from err
        return plgpu.CompilerParams(num_warps=4, num_stages=1)
    return None


def _call(kernel, st: _Static, inputs, out_like, name):
    bb = st.block_b
    return pl.pallas_call(
        functools.partial(kernel, st=st),
        grid=(inputs[0].shape[0] // bb,),
        in_specs=[_block_spec(x, bb) for x in inputs],
        out_specs=[_block_spec(x, bb) for x in out_like],
        out_shape=[jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in out_like],
        compiler_params=_compiler_params(st),
        interpret=st.interpret,
        name=name,
    )(*inputs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(st: _Static, *inputs):
    memory, prev_w, key = inputs[:3]
    out_like = (memory, prev_w, key)  # new memory, weightings, reads (all heads)
    return tuple(_call(_fwd_kernel, st, inputs, out_like, "ntm_memory_step_fwd"))


def _fused_fwd(st: _Static, *inputs):
    return _fused(st, *inputs), inputs


def _fused_bwd(st: _Static, inputs, cts):
    cts = tuple(jnp.asarray(c, jnp.float32) for c in cts)
    return tuple(_call(_bwd_kernel, st, (*inputs, *cts), inputs, "ntm_memory_step_bwd"))


_fused.defvjp(_fused_fwd, _fused_bwd)


# ------------------------------------------------------------------------------- public API


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def memory_step(
    memory: Float[Array, "b n m"],
    prev_read_w: Float[Array, "b hr n"],
    prev_write_w: Float[Array, "b hw n"],
    read_heads: ReadHeads,
    write_heads: WriteHeads,
    *,
    interpret: bool = False,
    block_b: int | None = None,
    pad_slots_to: int | None = None,
) -> tuple[
    Float[Array, "b n m"], Float[Array, "b hr n"], Float[Array, "b hw n"], Float[Array, "b hr m"]
]:
    """One fused NTM memory step; same contract as ``ops.ntm_memory.memory_step``.

    Returns ``(new_memory, read_w, write_w, reads)``, computed in float32 and returned in the
    dtypes of ``memory`` / ``prev_read_w`` / ``prev_write_w`` (so a scan carry keeps its
    type). ``block_b`` is the batch block per program (default: 8, or enough for 16 dot rows
    on GPU); ``pad_slots_to`` lays the n slots out padded to that many (default: a power of
    two on GPU, n elsewhere).
    Differentiable in every input through the fused backward kernel.
    """
    rh, wh = read_heads, write_heads
    b, n, m = memory.shape
    hr, hw = prev_read_w.shape[1], prev_write_w.shape[1]
    width = rh.shift.shape[-1]
    if width % 2 != 1 or wh.shift.shape[-1] != width:
        raise ValueError(f"shift needs the same odd 2r+1 weights for all heads, got {width}")
    gpu = _platform() == "gpu" and not interpret
    # Triton wants every in-kernel array size a power of two: pad slots, width, heads, shift
    # weights and the batch block to powers of two everywhere (the tests run this layout).
    n_pad = pad_slots_to or _next_pow2(n)
    m_pad = _next_pow2(m)
    if n_pad < n:
        raise ValueError(f"pad_slots_to={n_pad} is less than the {n} slots")
    if block_b is None:
        block_b = max(1, 16 // (hr + hw)) if gpu else 8
    bb = _next_pow2(min(block_b, b))
    b_pad = -(-b // bb) * bb
    st = _Static(n, n_pad, width // 2, hw, hr, bb, bool(interpret))
    h = _next_pow2(hr + hw)  # read heads, write heads, zero padding heads
    hw_pad, width_pad = _next_pow2(hw), _next_pow2(width)

    def pad(x, *sizes):
        x = jnp.asarray(x, jnp.float32)
        return jnp.pad(x, [(0, s - d) for s, d in zip(sizes, x.shape, strict=True)])

    def heads(read, write, *tail):  # read heads then write heads, padded
        x = jnp.concatenate([jnp.asarray(read, jnp.float32), jnp.asarray(write, jnp.float32)], 1)
        return pad(x, b_pad, h, *tail)

    inputs = (
        pad(memory, b_pad, n_pad, m_pad),
        heads(prev_read_w, prev_write_w, n_pad),
        heads(rh.key, wh.key, m_pad),
        heads(rh.beta[..., None], wh.beta[..., None], 1),
        heads(rh.gate[..., None], wh.gate[..., None], 1),
        heads(rh.shift, wh.shift, width_pad),
        heads(rh.gamma[..., None], wh.gamma[..., None], 1),
        pad(wh.erase, b_pad, hw_pad, m_pad),
        pad(wh.add, b_pad, hw_pad, m_pad),
    )
    # Shifted reads: the memory and the previous weightings rolled over the n real slots by
    # every shift d != 0 (before padding, so the roll is mod n), for the kernel's shift.
    prev_all = jnp.concatenate([jnp.asarray(prev_read_w, jnp.float32),
                                jnp.asarray(prev_write_w, jnp.float32)], 1)
    shifts = [d for d in range(-(width // 2), width // 2 + 1) if d]
    inputs = (
        *inputs,
        *(pad(jnp.roll(jnp.asarray(memory, jnp.float32), d, 1), b_pad, n_pad, m_pad)
          for d in shifts),
        *(pad(jnp.roll(prev_all, d, 2), b_pad, h, n_pad) for d in shifts),
    )
    new_memory, w, reads = _fused(st, *inputs)
    return (  # computed in float32, returned in the carry's dtypes
        new_memory[:b, :n, :m].astype(memory.dtype),
        w[:b, :hr, :n].astype(prev_read_w.dtype),
        w[:b, hr : hr + hw, :n].astype(prev_write_w.dtype),
        reads[:b, :hr, :m].astype(memory.dtype),
    )
