"""Neural Turing Machine memory: addressing, read and erase/add write as pure jnp functions.

Graves, Wayne & Danihelka 2014 (arXiv:1410.5401), sections 3.1-3.3, as implemented by
Collier & Beel 2018 (MarkPKCollier/NeuralTuringMachine ``ntm.py``). Every head addresses the
memory of the previous step; reads use the new read weightings on ``M_{t-1}``; writes are applied
after the reads, one write head after another in head order. All inputs are the *activated*
head outputs (k in [-1, 1], beta >= 0, g in [0, 1], s on the simplex, gamma >= 1, e in [0, 1],
a in [-1, 1]); producing them from a controller is the model's job (``models/ntm.py``).

Shape legend::

    b   batch                     n   memory slots (rows, N in the paper)
    h   heads (of one kind)       m   slot width (M in the paper)
    r   shift radius: shifts -r..r, 2r+1 shift weights

Equations (one head; ``w`` is a weighting over the n slots)::

    content    K_i   = k . M_i / (||k|| ||M_i|| + eps)                                 (6)
               w^c   = softmax_i(beta K_i)                                             (5)
    gate       w^g   = g w^c + (1 - g) w_{t-1}                                         (7)
    shift      w~_i  = sum_{d=-r..r} s_d w^g_{(i - d) mod n}                           (8)
    sharpen    w_i   = w~_i^gamma / sum_j w~_j^gamma                                   (9)
    read       r     = sum_i w_i M_i                                                   (2)
    write      M_t   = M_{t-1} o (1 - w e^T) + w a^T    (per write head, in order)     (3, 4)

Shift layout: ``shift[..., j]`` is the weight of a shift by ``d = j - r`` slots, so a one-hot
at ``j = r + 1`` moves the focus one slot forward (index i to i + 1). Collier stores the same
2r+1 weights in the order (0, 1, .., r, -r, .., -1); the two layouts differ by a fixed
permutation of the controller's output units, so they define the same model family.

NaN traps, all handled here so that values *and* gradients stay finite:

* all-zero memory (or key): the cosine denominator carries ``eps`` (1e-8, as Collier), and the
  norms are ``sqrt(max(sum x^2, eps^2))`` so that d||x||/dx is never ``0/0`` at x = 0;
* ``0^gamma`` and underflow in sharpening: ``w~^gamma / sum w~^gamma`` is evaluated as
  ``softmax(gamma * log(max(w~, tiny)))`` -- equal for every w~ >= tiny (the smallest normal
  float), finite for any gamma >= 1 even when every w~_i^gamma underflows to 0;
* huge beta: the content softmax subtracts its maximum (``jax.nn.softmax``).

``memory_step`` is the fused step the model calls; ``impl`` picks the plain-jnp reference
(``"xla"``) or the Pallas kernel ``recurrentlab.kernels.ntm_memory.memory_step``
(``"pallas"`` / ``"interpret"``), chosen by :func:`recurrentlab.ops.dispatch.run` (which also
falls back to the reference where ``"auto"`` finds the kernel missing or failing to compile).
The kernel has the same signature minus ``impl`` plus ``interpret: bool`` and must match this
reference in values and gradients. ``memory_step(..., transposed=True)`` takes and returns the
transposed memory ``M^T`` [b, m, n], the layout the NTM keeps inside its scan; its reference
is :func:`memory_step_transposed` (which :func:`memory_step_reference` wraps in two
transposes), and the kernel is called on the transpose.

:func:`memory_step_transposed` has a hand-written backward pass (:func:`memory_step_backward`,
its equations in the docstring; :func:`memory_step_forward` returns what it keeps): on CPU,
41 steps forward and backward at batch 32 take 8.5 ms against 17 ms by autodiff. The
functions :func:`address`, :func:`read` and :func:`write` stay plain jnp, and the tests check
the hand-written gradients against autodiff of them in float64.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from recurrentlab.ops import dispatch

EPS = 1e-8  # cosine-similarity denominator (Collier & Beel use 1e-8)


class ReadHeads(NamedTuple):
    """Activated outputs of the h read heads of one step."""

    key: Float[Array, "b h m"]  # k, tanh-activated
    beta: Float[Array, "b h"]  # key strength, >= 0
    gate: Float[Array, "b h"]  # interpolation gate g in [0, 1]
    shift: Float[Array, "b h s"]  # shift weights over d = -r..r (s = 2r+1), on the simplex
    gamma: Float[Array, "b h"]  # sharpening exponent, >= 1


class WriteHeads(NamedTuple):
    """Activated outputs of the h write heads of one step (addressing plus erase and add)."""

    key: Float[Array, "b h m"]
    beta: Float[Array, "b h"]
    gate: Float[Array, "b h"]
    shift: Float[Array, "b h s"]
    gamma: Float[Array, "b h"]
    erase: Float[Array, "b h m"]  # e in [0, 1]
    add: Float[Array, "b h m"]  # a in [-1, 1]


def _safe_norm(x: jax.Array, axis: int, eps: float) -> jax.Array:
    """``||x||`` along ``axis`` with a finite gradient at x = 0 (floored at ``eps``)."""
    return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=axis), eps * eps))


def cosine_similarity(
    memory: Float[Array, "b n m"], key: Float[Array, "b h m"], eps: float = EPS
) -> Float[Array, "b h n"]:
    """``K_i = k . M_i / (||k|| ||M_i|| + eps)`` for every head and slot (eq. 6)."""
    dot = jnp.einsum("bhm,bnm->bhn", key, memory)
    key_norm = _safe_norm(key, -1, eps)[:, :, None]  # [b, h, 1]
    mem_norm = _safe_norm(memory, -1, eps)[:, None, :]  # [b, 1, n]
    return dot / (key_norm * mem_norm + eps)


def content_weights(
    memory: Float[Array, "b n m"],
    key: Float[Array, "b h m"],
    beta: Float[Array, "b h"],
    eps: float = EPS,
) -> Float[Array, "b h n"]:
    """Content addressing ``w^c = softmax_i(beta K(k, M_i))`` (eqs. 5-6)."""
    return jax.nn.softmax(beta[..., None] * cosine_similarity(memory, key, eps), axis=-1)


def interpolate(
    content_w: Float[Array, "b h n"], prev_w: Float[Array, "b h n"], gate: Float[Array, "b h"]
) -> Float[Array, "b h n"]:
    """Interpolation gate ``w^g = g w^c + (1 - g) w_{t-1}`` (eq. 7)."""
    g = gate[..., None]
    return g * content_w + (1.0 - g) * prev_w


def circular_shift(w: Float[Array, "b h n"], shift: Float[Array, "b h s"]) -> Float[Array, "b h n"]:
    """Circular convolution ``w~_i = sum_{d=-r..r} s_d w_{(i - d) mod n}`` (eq. 8).

    ``shift[..., j]`` weighs the shift ``d = j - r``. Needs ``2r + 1 <= n`` for distinct
    shifts; with more shift weights than slots, shifts that coincide mod n add up.
    """
    if shift.shape[-1] % 2 != 1:
        raise ValueError(f"shift needs 2r+1 weights, got {shift.shape[-1]}")
    return _shift(w, shift, 1)


def sharpen(w: Float[Array, "b h n"], gamma: Float[Array, "b h"]) -> Float[Array, "b h n"]:
    """Sharpening ``w_i = w_i^gamma / sum_j w_j^gamma`` (eq. 9), as a log-space softmax.

    ``softmax(gamma * log(max(w, tiny)))`` equals eq. 9 wherever ``w >= tiny`` and stays finite
    (values and gradients) for zero entries and for gamma large enough that every ``w^gamma``
    underflows.
    """
    tiny = jnp.finfo(w.dtype).tiny
    return jax.nn.softmax(gamma[..., None] * jnp.log(jnp.maximum(w, tiny)), axis=-1)


def address(
    memory: Float[Array, "b n m"],
    prev_w: Float[Array, "b h n"],
    key: Float[Array, "b h m"],
    beta: Float[Array, "b h"],
    gate: Float[Array, "b h"],
    shift: Float[Array, "b h s"],
    gamma: Float[Array, "b h"],
) -> Float[Array, "b h n"]:
    """Full NTM addressing: content, interpolation, shift, sharpening (eqs. 5-9)."""
    w_c = content_weights(memory, key, beta)
    w_g = interpolate(w_c, prev_w, gate)
    return sharpen(circular_shift(w_g, shift), gamma)


def read(memory: Float[Array, "b n m"], w: Float[Array, "b h n"]) -> Float[Array, "b h m"]:
    """Read vectors ``r = sum_i w_i M_i`` (eq. 2), one per head."""
    return jnp.einsum("bhn,bnm->bhm", w, memory)


def write(
    memory: Float[Array, "b n m"],
    w: Float[Array, "b h n"],
    erase: Float[Array, "b h m"],
    add: Float[Array, "b h m"],
) -> Float[Array, "b n m"]:
    """Erase then add, ``M <- M o (1 - w e^T) + w a^T`` (eqs. 3-4), head after head in order."""
    for i in range(w.shape[1]):
        wi = w[:, i, :, None]  # [b, n, 1]
        memory = memory * (1.0 - wi * erase[:, i, None, :]) + wi * add[:, i, None, :]
    return memory


def memory_step_reference(
    memory: Float[Array, "b n m"],
    prev_read_w: Float[Array, "b hr n"],
    prev_write_w: Float[Array, "b hw n"],
    read_heads: ReadHeads,
    write_heads: WriteHeads,
) -> tuple[
    Float[Array, "b n m"], Float[Array, "b hr n"], Float[Array, "b hw n"], Float[Array, "b hr m"]
]:
    """The plain-jnp memory step; see :func:`memory_step`.

    Computed by :func:`memory_step_transposed` on ``M^T`` (the same equations).
    """
    new_memory_t, read_w, write_w, reads = memory_step_transposed(
        jnp.swapaxes(memory, 1, 2), prev_read_w, prev_write_w, read_heads, write_heads)
    return jnp.swapaxes(new_memory_t, 1, 2), read_w, write_w, reads


def memory_step_transposed(
    memory_t: Float[Array, "b m n"],
    prev_read_w: Float[Array, "b hr n"],
    prev_write_w: Float[Array, "b hw n"],
    read_heads: ReadHeads,
    write_heads: WriteHeads,
    eps: float = EPS,
) -> tuple[
    Float[Array, "b m n"], Float[Array, "b hr n"], Float[Array, "b hw n"], Float[Array, "b hr m"]
]:
    """The memory step on the transposed memory ``M^T`` [b, m, n]: slot i is column i.

    The same equations as :func:`memory_step_reference`, laid out for speed inside a scan:
    with the n slots on the minor axis every [b, ., n] array (weightings, slot norms, the
    erase/add outer products) is contiguous along n, so the step needs no transposes and its
    elementwise and reduction fusions run along the long axis (n = 128 against m = 20 for
    copy). Read and write heads are addressed in one stacked call (the equations act on each
    head alone; one set of batched ops instead of two is ~1.3x faster on CPU at batch 32).
    The slot norms ``||M_i||`` are computed once for all heads.

    Differentiated by a hand-written backward pass (:func:`memory_step_backward`), checked
    against autodiff of :func:`address`, :func:`read` and :func:`write` in the tests.
    """
    hr = prev_read_w.shape[1]
    stacked = _stack_heads(prev_read_w, prev_write_w, read_heads, write_heads)
    new_memory_t, weights, reads = _memory_step_t(hr, eps, memory_t, *stacked)
    return new_memory_t, weights[:, :hr], weights[:, hr:], reads


def _stack_heads(prev_read_w, prev_write_w, read_heads: ReadHeads, write_heads: WriteHeads):
    """``(prev_w, key, beta, gate, shift, gamma, erase, add)``, read heads before write heads."""
    rh, wh = read_heads, write_heads
    key, beta, gate, shift, gamma = (
        jnp.concatenate([r, w], axis=1) for r, w in zip(rh, wh[:5], strict=True))
    prev_w = jnp.concatenate([prev_read_w, prev_write_w], axis=1)
    return prev_w, key, beta, gate, shift, gamma, wh.erase, wh.add


class MemorySaved(NamedTuple):
    """What the backward pass of one memory step keeps, packed into few arrays (each one a
    buffer stacked over the steps of a scan).

    ``per_slot`` stacks ``[w_{t-1}, w, K, w^c]`` on axis 1 (the backward recomputes w^g, w~
    and log w~ from them: three elementwise passes instead of three more saved buffers),
    ``per_width`` is ``[keys, erase, add]`` along the head axis, ``per_head`` is
    ``[beta, g, gamma, ||k||, s_{-r} .. s_r]`` along the last axis.
    """

    memory_t: Float[Array, "b m n"]  # M_{t-1}^T
    per_slot: Float[Array, "b 4 h n"]
    per_width: Float[Array, "b h+2hw m"]
    per_head: Float[Array, "b h 4+s"]
    slot_norm: Float[Array, "b n"]  # ||M_i||, floored


def _rolls(w: jax.Array, radius: int) -> list[jax.Array]:
    """``[roll(w, d) for d = -r..r]`` over the n slots (last axis), as slices of one padded
    copy (one concatenate, the slices fuse into their consumers)."""
    n = w.shape[-1]
    if radius == 0:
        return [w]
    reps = -(-radius // n)  # shifts beyond n slots wrap around more than once
    padded = jnp.concatenate([w] * (2 * reps + 1), axis=-1)  # w at offset reps * n
    return [padded[..., reps * n - d : reps * n - d + n] for d in range(-radius, radius + 1)]


def _shift(w: jax.Array, shift: jax.Array, sign: int) -> jax.Array:
    """``sum_j s_j roll(w, sign (j - r))`` over the n slots (sign -1: the transpose, eq. 8)."""
    rolled = _rolls(w, shift.shape[-1] // 2)
    if sign < 0:
        rolled = rolled[::-1]
    out = 0.0
    for j, wj in enumerate(rolled):
        out = out + shift[..., j : j + 1] * wj
    return out


def _write_t(memory_t, write_w, erase, add):
    """Erase/add of every write head in order on ``M^T``; also the memory before each head."""
    before = []
    for i in range(write_w.shape[1]):
        before.append(memory_t)
        wi = write_w[:, i, None, :]  # [b, 1, n]
        memory_t = memory_t * (1.0 - erase[:, i, :, None] * wi) + add[:, i, :, None] * wi
    return memory_t, before


def memory_step_forward(hr: int, eps: float, memory_t, prev_w, key, beta, gate, shift, gamma,
                        erase, add):
    """:func:`memory_step_transposed` on stacked heads (h = hr + hw, read heads first):
    ``((M_t^T, w [b, h, n], reads [b, hr, m]), MemorySaved)``."""
    dot = jnp.einsum("bhm,bmn->bhn", key, memory_t)  # k . M_i, a batched matmul over m
    key_norm = _safe_norm(key, -1, eps)  # [b, h]
    slot_norm = _safe_norm(memory_t, 1, eps)  # [b, n], once for all heads
    scores = dot / (key_norm[:, :, None] * slot_norm[:, None, :] + eps)  # K (eq. 6)
    w_c = jax.nn.softmax(beta[..., None] * scores, axis=-1)  # eq. 5
    w_g = interpolate(w_c, prev_w, gate)  # eq. 7
    w = sharpen(circular_shift(w_g, shift), gamma)  # eqs. 8-9
    reads = jnp.einsum("bhn,bmn->bhm", w[:, :hr], memory_t)  # reads see M_{t-1} (eq. 2)
    new_memory_t, _ = _write_t(memory_t, w[:, hr:], erase, add)  # eqs. 3-4
    saved = MemorySaved(
        memory_t, jnp.stack([prev_w, w, scores, w_c], axis=1),
        jnp.concatenate([key, erase, add], axis=1),
        jnp.concatenate([jnp.stack([beta, gate, gamma, key_norm], axis=-1), shift], axis=-1),
        slot_norm)
    return (new_memory_t, w, reads), saved


def saved_heads(saved: MemorySaved) -> tuple[jax.Array, ...]:
    """The activated heads a step kept: ``(key, beta, gate, shift, gamma, erase, add)``, all
    heads stacked (read heads first; erase and add of the write heads)."""
    heads = saved.per_slot.shape[2]
    hw = (saved.per_width.shape[1] - heads) // 2
    p, s = saved.per_width, saved.per_head
    return (p[:, :heads], s[..., 0], s[..., 1], s[..., 4:], s[..., 2], p[:, heads : heads + hw],
            p[:, heads + hw :])


def memory_step_backward(hr: int, eps: float, saved: MemorySaved, cotangents):
    """Hand-written VJP of :func:`memory_step_forward`.

    ``cotangents = (dM_t^T, dw [b, h, n], d reads [b, hr, m])``; returns the cotangents of
    ``(memory_t, prev_w, key, beta, gate, shift, gamma, erase, add)``. With ``dM`` the
    cotangent of the memory after write head i (last head first)::

        dw_i   += sum_m dM (a_i - e_i M_i)     de_i = -sum_n dM M_i w_i     da_i = sum_n dM w_i
        dM     <- dM o (1 - e_i w_i^T)                                      (eqs. 3-4)
        dw_r   += sum_m dr M                   dM += dr w_r^T               (eq. 2)
        sharpen, shift, gate, content softmax: the chain rule on [b, h, n]  (eqs. 5-9)
        dk     = sum_n dD M + (dk_norm / ||k||) k       dM += k dD^T + (dM_norm / ||M_i||) M_i

    (``dD`` the cotangent of the dots ``k . M_i``). The matrix products are batched matmuls
    (the outer products of all heads in one), the rest elementwise on [b, h, n].
    """
    memory_t, per_slot, _, per_head, slot_norm = saved
    prev_w, w, scores, w_c = (per_slot[:, i] for i in range(4))
    key, beta, gate, shift, gamma, erase, add = saved_heads(saved)
    w_g = interpolate(w_c, prev_w, gate)  # recomputed as in the forward pass
    w_s = circular_shift(w_g, shift)
    log_w = jnp.log(jnp.maximum(w_s, jnp.finfo(w_s.dtype).tiny))  # sharpen's log-space input
    hw = erase.shape[1]
    key_norm = per_head[..., 3]
    d_memory, d_w, d_reads = cotangents
    write_w = w[:, hr:]
    _, before = _write_t(memory_t, write_w, erase, add)
    d_write_w, d_erase, d_add = [], [], []
    for i in reversed(range(hw)):  # eqs. 3-4, last write head first
        d_before = d_memory * before[i]
        d_write_w.append(jnp.einsum("bm,bmn->bn", add[:, i], d_memory)
                         - jnp.einsum("bm,bmn->bn", erase[:, i], d_before))
        d_erase.append(-jnp.einsum("bmn,bn->bm", d_before, write_w[:, i]))
        d_add.append(jnp.einsum("bmn,bn->bm", d_memory, write_w[:, i]))
        d_memory = d_memory * (1.0 - erase[:, i, :, None] * write_w[:, i, None, :])
    d_write_w, d_erase, d_add = (jnp.stack(x[::-1], axis=1) for x in (d_write_w, d_erase, d_add))
    d_read_w = jnp.einsum("bhm,bmn->bhn", d_reads, memory_t)  # eq. 2
    d_w = d_w + jnp.concatenate([d_read_w, d_write_w], axis=1)
    # sharpening (eq. 9): w = softmax(gamma log w~)
    d_logits = w * (d_w - jnp.sum(w * d_w, axis=-1, keepdims=True))
    d_gamma = jnp.sum(d_logits * log_w, axis=-1)
    d_ws = jnp.where(w_s > jnp.finfo(w_s.dtype).tiny, d_logits * gamma[..., None] / w_s, 0.0)
    # shift (eq. 8) and gate (eq. 7)
    radius = shift.shape[-1] // 2
    d_wg = _shift(d_ws, shift, -1)
    d_shift = jnp.stack([jnp.sum(d_ws * w_gj, axis=-1) for w_gj in _rolls(w_g, radius)],
                        axis=-1)
    g = gate[..., None]
    d_wc = g * d_wg
    d_prev_w = (1.0 - g) * d_wg
    d_gate = jnp.sum(d_wg * (w_c - prev_w), axis=-1)
    # content addressing (eqs. 5-6)
    d_u = w_c * (d_wc - jnp.sum(w_c * d_wc, axis=-1, keepdims=True))
    d_beta = jnp.sum(d_u * scores, axis=-1)
    denom = key_norm[:, :, None] * slot_norm[:, None, :] + eps
    d_dot = d_u * beta[..., None] / denom
    d_denom = -d_dot * scores
    d_key_norm = jnp.sum(d_denom * slot_norm[:, None, :], axis=-1)
    d_slot_norm = jnp.sum(d_denom * key_norm[:, :, None], axis=1)
    key_sq = jnp.sum(key * key, axis=-1)
    d_key = (jnp.einsum("bhn,bmn->bhm", d_dot, memory_t)
             + jnp.where(key_sq > eps * eps, d_key_norm / key_norm, 0.0)[..., None] * key)
    slot_scale = jnp.where(slot_norm * slot_norm > eps * eps, d_slot_norm / slot_norm, 0.0)
    d_memory = (d_memory
                + jnp.einsum("bhm,bhn->bmn", jnp.concatenate([d_reads, key], axis=1),
                             jnp.concatenate([w[:, :hr], d_dot], axis=1))
                + slot_scale[:, None, :] * memory_t)
    return d_memory, d_prev_w, d_key, d_beta, d_gate, d_shift, d_gamma, d_erase, d_add


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _memory_step_t(hr, eps, memory_t, prev_w, key, beta, gate, shift, gamma, erase, add):
    return memory_step_forward(hr, eps, memory_t, prev_w, key, beta, gate, shift, gamma,
                               erase, add)[0]


def _memory_step_t_fwd(hr, eps, *args):
    return memory_step_forward(hr, eps, *args)


_memory_step_t.defvjp(_memory_step_t_fwd, memory_step_backward)


def memory_step(
    memory: Float[Array, "b n m"] | Float[Array, "b m n"],
    prev_read_w: Float[Array, "b hr n"],
    prev_write_w: Float[Array, "b hw n"],
    read_heads: ReadHeads,
    write_heads: WriteHeads,
    *,
    impl: str = "auto",
    transposed: bool = False,
) -> tuple[
    Float[Array, "b n m"], Float[Array, "b hr n"], Float[Array, "b hw n"], Float[Array, "b hr m"]
]:
    """One NTM memory step: address all heads on ``M_{t-1}``, read, then write.

    Returns ``(new_memory M_t, read_w, write_w, reads)`` where ``reads = read(M_{t-1}, read_w)``
    and ``M_t`` applies the write heads in order. ``impl``: ``"auto" | "xla" | "pallas" |
    "interpret"`` (see :mod:`recurrentlab.ops.dispatch`). ``transposed=True``: ``memory`` and
    the returned memory are ``M^T`` [b, m, n] (the layout the NTM keeps inside its scan; the
    kernel, which takes [b, n, m], is called on the transpose).
    """

    def kernel(*args, interpret):
        step = dispatch.kernel_module("ntm_memory_step").memory_step
        if not transposed:
            return step(*args, interpret=interpret)
        memory_t, *rest = args
        out = step(jnp.swapaxes(memory_t, 1, 2), *rest, interpret=interpret)
        return (jnp.swapaxes(out[0], 1, 2), *out[1:])

    return dispatch.run(
        "ntm_memory_step", impl, kernel=kernel,
        reference=memory_step_transposed if transposed else memory_step_reference,
        diff=(memory, prev_read_w, prev_write_w, read_heads, write_heads),
        static_key=transposed,
    )
