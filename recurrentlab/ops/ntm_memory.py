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
"""

from __future__ import annotations

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
    width = shift.shape[-1]
    if width % 2 != 1:
        raise ValueError(f"shift needs 2r+1 weights, got {width}")
    radius = width // 2
    out = jnp.zeros_like(w)
    for j in range(width):
        out = out + shift[..., j : j + 1] * jnp.roll(w, j - radius, axis=-1)  # roll: w[i - d]
    return out


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
    """
    rh, wh = read_heads, write_heads
    hr = prev_read_w.shape[1]
    key, beta, gate, shift, gamma = (
        jnp.concatenate([r, w], axis=1) for r, w in zip(rh, wh[:5], strict=True))
    prev_w = jnp.concatenate([prev_read_w, prev_write_w], axis=1)
    # content (eqs. 5-6): k . M_i as a batched matmul over m, norms once per step
    dot = jnp.einsum("bhm,bmn->bhn", key, memory_t)
    key_norm = _safe_norm(key, -1, eps)[:, :, None]  # [b, h, 1]
    mem_norm = _safe_norm(memory_t, 1, eps)[:, None, :]  # [b, 1, n]
    scores = dot / (key_norm * mem_norm + eps)
    w_c = jax.nn.softmax(beta[..., None] * scores, axis=-1)
    weights = sharpen(circular_shift(interpolate(w_c, prev_w, gate), shift), gamma)
    read_w, write_w = weights[:, :hr], weights[:, hr:]
    reads = jnp.einsum("bhn,bmn->bhm", read_w, memory_t)  # reads see M_{t-1}
    for i in range(write_w.shape[1]):  # erase then add, head after head (eqs. 3-4)
        wi = write_w[:, i, None, :]  # [b, 1, n]
        memory_t = memory_t * (1.0 - wh.erase[:, i, :, None] * wi) + wh.add[:, i, :, None] * wi
    return memory_t, read_w, write_w, reads


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
