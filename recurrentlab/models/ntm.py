"""Neural Turing Machine (Graves, Wayne & Danihelka 2014) with the stable recipe of Collier & Beel.

Follows Collier & Beel 2018, "Implementing Neural Turing Machines" (MarkPKCollier/
NeuralTuringMachine ``ntm.py``, ``run_tasks.py``); cross-checked with loudinthecloud/pytorch-ntm.

One step, for input ``x_t`` (shape legend: b batch, s segment length, n memory slots, m slot
width, hr/hw read/write heads, r shift radius, d controller units, V vocabulary)::

    (h_t, c_t) = LSTM([x_t, r_{t-1}], (h_{t-1}, c_{t-1}))          controller, d units
    p_t        = clip(W_p h_t + b_p, -clip, clip)                    all head parameters at once
    per head:  k = tanh(.)   beta = softplus(.)   g = sigmoid(.)   s = softmax(.) over 2r+1
               gamma = 1 + softplus(.)      write heads also  e = sigmoid(.)   a = tanh(.)
    w^r_t, w^w_t = address(M_{t-1}, w_{t-1}, head)                    (ops/ntm_memory.py)
    r_t        = w^r_t M_{t-1}                                       reads see M_{t-1}
    M_t        = M_{t-1} o (1 - w^w e^T) + w^w a^T                   write heads in order
    o_t        = clip(W_o [h_t, r_t] + b_o, -clip, clip)             output logits

The controller is TensorFlow's ``BasicLSTMCell``, :func:`recurrentlab.models.cells.basic_lstm_cell`.
The memory math lives in :mod:`recurrentlab.ops.ntm_memory` (``memory_step``, with a Pallas
kernel behind ``impl``); :func:`ntm_step` is the pure cell step, driven by ``jax.lax.scan``.
The backward pass is scheduled by hand (:func:`_scan_vjp`). With the jnp memory step (CPU,
``impl="xla"``) the segment is :func:`_fused_scan_vjp`: a scan of :func:`_fused_step_forward`
that keeps six arrays per step (:class:`_StepSaved`: the memory step's five and one row of
pre-activations) where autodiff keeping every intermediate kept ~45, the output layer applied
to all steps at once after the scan, and a reverse scan of :func:`_fused_step_backward`,
written out (the memory's in
:func:`recurrentlab.ops.ntm_memory.memory_step_backward`, the head activations' in
:func:`head_activations_backward`, the LSTM's by its equations): at batch 32 on CPU the train
step went from ~21.5 to ~16 ms. With the Pallas kernel the step is :func:`ntm_step` under
autodiff, rematerialised by size (the carry and the intermediates smaller than one sequence's
memory are kept, the rest recomputed). Either way the weight gradients are formed after the
reverse loop, one matmul per layer over all steps, instead of an outer product accumulated in
every step (same sums, another order). Inside the scan the memory is kept transposed,
``M^T`` [b, m, n] (transposed once per segment at the scan's ends; the carry holds M
[b, n, m]): with the n slots on the minor axis the weightings, slot norms and erase/add
products of a step need no transposes and run along the long axis (same values).

Head order: the read heads come first, then the write heads (Collier's ``w_list``). Each head's
block of ``p_t`` is ``[k (m), beta, g, s (2r+1), gamma]``; after all heads come ``[e (m), a (m)]``
per write head. All heads address ``M_{t-1}``.

Initial state (``init_carry``): controller ``(h, c) = 0``; read vectors ``tanh(u_r)`` and
weightings ``softmax(u_w)`` with learned ``u`` per head; memory by ``memory_init``:

* ``"constant"`` (default): every cell 1e-6 -- Collier & Beel's recommendation (about 2x faster
  convergence on copy than the alternatives);
* ``"random"``: ``tanh(U)``, ``U ~ N(0, 0.5^2)`` drawn at initialisation;
* ``"learned"``: ``tanh(U)``, ``U`` Glorot-uniform like Collier's ``learned_init``.

As in Collier's code (``tf.get_variable`` is trainable by default), the initial memory is a
parameter in all three modes, starting from the values above.

The carry's ``at_start`` flag makes the learned initial state learnable under any trainer: a
trainer may build ``init_carry`` once, outside its differentiated function, and splice it into
finished streams with ``reset_carry``; at the next call the model sees ``at_start = 1`` for those
rows and replaces their memory, weightings and read vectors by the initial values computed from
its *current* parameters, inside the call, so gradients reach them.

Token interface. The framework feeds tokens and scores logits over the vocabulary; ``input_mode``
decides how an NTM sees them:

* ``"bits"`` (the NTM tasks: copy, repeat copy, associative recall). Token ids ``0 .. 2^bits-1``
  are bit vectors (bit j of the id, little-endian, is channel j); ids ``2^bits .. V-1`` are
  markers (delimiter, blank, ...). The controller input is the token's bits (zeros for a marker)
  followed by a one-hot over the ``V - 2^bits`` marker channels -- no learned embedding, as the
  paper's ``bits + 1`` input channels. The output layer emits one Bernoulli logit ``o_j`` per bit
  and the token logits are the log-probabilities of the factorised distribution::

      logit(v) = sum_j [bit_j(v) log sigmoid(o_j) + (1 - bit_j(v)) log sigmoid(-o_j)]

  for every symbol v < 2^bits (they already sum to probability 1), and ``MARKER_LOGIT`` (-1e4,
  finite so that masked marker targets never produce ``0 * inf``) for every marker. So the token
  cross-entropy the trainer computes *is* the paper's summed bitwise sigmoid cross-entropy, the
  argmax token is the thresholded bit vector, and exact-token accuracy is "zero bit errors".
  ``bits = 0`` infers ``bits = floor(log2 V)``, which is right whenever there are fewer markers
  than symbols (8-bit copy: V = 256 + markers).

  ``predict_markers = True`` (repeat copy, whose ``<end>`` marker is an answer) adds one more
  Bernoulli unit u -- the paper's extra "end" output channel -- and a logit q_k per marker::

      logit(v)        = sum_j [bit terms as above] + log sigmoid(-u)      symbols
      logit(marker k) = log sigmoid(u) + log softmax(q)_k                 markers

  still exactly normalised. For a symbol target the loss is the paper's bit loss plus the end
  channel's ``-log sigmoid(-u)``, as in the paper; for the end marker it is ``-log sigmoid(u)``
  plus the (quickly vanishing) choice among markers, where the paper also asks for all-zero bits.

  Markers are inputs too: ``<blank>`` (fed while the model answers) gets its own one-hot
  channel, where the paper feeds all zeros -- a learned constant input on answer steps.
* ``"embed"`` (text and other token tasks): a learned ``embed_dim`` embedding in, a softmax over
  V out (logits ``W_o [h_t, r_t] + b_o``, clipped to +-clip as in the bits mode).

Deviations from Collier & Beel, all deliberate:

* shift weights are laid out as shifts ``-r .. r`` (Collier: ``0, 1 .. r, -r .. -1``) -- a fixed
  permutation of the head layer's output units, the same model family;
* the cosine similarity floors the norms at 1e-8 and sharpening runs in log space, so an
  all-zero memory or a huge gamma gives finite values and gradients (Collier: plain ``sqrt`` and
  ``pow``; equal values elsewhere);
* one controller LSTM layer (Collier's ``num_layers`` default; deeper controllers are not
  offered);
* ``clip <= 0`` switches clipping off (Collier always clips; default 20 as Collier);
* the token interface above (Collier feeds bit vectors and scores bits directly).

How this differs from loudinthecloud/pytorch-ntm (``ntm/head.py``, ``ntm/memory.py``,
``ntm/ntm.py``, ``ntm/aio.py``), where it differs from Collier & Beel; we follow Collier:

* the key ``k`` and the add vector ``a`` are squashed with ``tanh`` (Collier); loudinthecloud
  uses both unsquashed, straight from the head's linear layer. ``beta`` (softplus), ``g``
  (sigmoid), ``s`` (softmax), ``gamma`` (1 + softplus) and ``e`` (sigmoid) agree;
* all heads address ``M_{t-1}``, the reads read it, and the writes follow in order (Collier).
  loudinthecloud's ``EncapsulatedNTM`` interleaves the heads as read 1, write 1, read 2, write 2,
  ... and runs each on the memory as the previous heads left it, so with several heads read
  head 2 addresses and reads the memory after write head 1, and write head 2 addresses it too.
  With one read and one write head (the copy setup) the two orders compute the same step;
* loudinthecloud's initial memory is U(±1/√(n + m)) and its initial read vectors N(0, 0.01²),
  both buffers (not trained), with zero initial weightings; it clips nothing, shifts by at most
  one slot, and adds 1e-16 inside the cosine similarity and the sharpening's normaliser.

Initialisation as Collier: the head and output layers truncated-normal with std
``1/sqrt(fan_in)`` (Collier uses ``1/sqrt(d)`` for the head layer, ``1/sqrt(d + hr*m)`` for the
output), zero biases; the LSTM kernel Glorot-uniform, zero bias and forget bias +1 added in the
cell (TensorFlow ``BasicLSTMCell``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from recurrentlab.errors import ConfigError
from recurrentlab.models.base import SequenceModel, register_model, reset_carry
from recurrentlab.models.cells import LSTMState, basic_lstm_gates
from recurrentlab.models.cells import basic_lstm_cell as lstm_cell
from recurrentlab.ops import dispatch, ntm_memory
from recurrentlab.ops.dispatch import IMPLS
from recurrentlab.ops.ntm_memory import ReadHeads, WriteHeads

MARKER_LOGIT = -1e4  # bits mode: logit of every marker token (finite: never 0 * inf in a loss)
MEMORY_INITS = ("constant", "random", "learned")
INPUT_MODES = ("bits", "embed")


class NTMState(NamedTuple):
    """The NTM carry; every leaf batch-first."""

    controller: LSTMState  # h, c: [b, d]
    memory: Float[Array, "b n m"]  # M_t
    read_w: Float[Array, "b hr n"]  # read weightings of the last step
    write_w: Float[Array, "b hw n"]  # write weightings of the last step
    reads: Float[Array, "b hr m"]  # read vectors of the last step (fed to the next step)
    at_start: Float[Array, " b"]  # 1.0: fresh state, the learned initial values are (re)filled


class NTMWeights(NamedTuple):
    """The parameters one :func:`ntm_step` needs, as plain arrays."""

    lstm_kernel: Float[Array, "i+d 4d"]  # [x, r, h] -> gates (i, j, f, o)
    lstm_bias: Float[Array, "4d"]
    head_kernel: Float[Array, "d p"]  # controller -> all head parameters
    head_bias: Float[Array, " p"]
    out_kernel: Float[Array, "d+hr*m o"]  # [h, r] -> output units
    out_bias: Float[Array, " o"]


class NTMTrace(NamedTuple):
    """Per-step states of a segment (time axis after the batch axis), for inspection and plots."""

    tokens: Int[Array, "b s"]
    logits: Float[Array, "b s V"]
    memory: Float[Array, "b s n m"]  # M_t after each step's write
    read_w: Float[Array, "b s hr n"]
    write_w: Float[Array, "b s hw n"]
    reads: Float[Array, "b s hr m"]
    erase: Float[Array, "b s hw m"]
    add: Float[Array, "b s hw m"]


def head_param_count(num_read: int, num_write: int, width: int, radius: int) -> int:
    """Units of the head layer: ``(m + 1 + 1 + 2r+1 + 1)`` per head plus ``2m`` per write head."""
    return (width + 3 + 2 * radius + 1) * (num_read + num_write) + 2 * width * num_write


def head_activations(
    p: Float[Array, "b p"], num_read: int, num_write: int, width: int, radius: int
) -> tuple[jax.Array, ...]:
    """Activate the (clipped) head-layer outputs, all heads stacked (read heads first):
    ``(key [b, h, m], beta [b, h], g [b, h], shift [b, h, 2r+1], gamma [b, h],
    erase [b, hw, m], add [b, hw, m])`` (Collier's layout, shifts ordered -r..r)."""
    b = p.shape[0]
    heads = num_read + num_write
    per_head = width + 3 + 2 * radius + 1
    blocks = p[:, : per_head * heads].reshape(b, heads, per_head)
    key = jnp.tanh(blocks[..., :width])
    beta = jax.nn.softplus(blocks[..., width])
    gate = jax.nn.sigmoid(blocks[..., width + 1])
    shift = jax.nn.softmax(blocks[..., width + 2 : width + 3 + 2 * radius], axis=-1)
    gamma = 1.0 + jax.nn.softplus(blocks[..., -1])
    ea = p[:, per_head * heads :].reshape(b, num_write, 2, width)
    return key, beta, gate, shift, gamma, jax.nn.sigmoid(ea[:, :, 0]), jnp.tanh(ea[:, :, 1])


def head_activations_backward(
    heads: tuple[jax.Array, ...], cotangents: tuple[jax.Array, ...]
) -> Float[Array, "b p"]:
    """VJP of :func:`head_activations` from its outputs ``heads`` (no transcendental
    recomputed but ``sigma(a) = -expm1(-softplus(a))`` for beta and gamma; for gamma from
    ``gamma - 1``, so within float32's spacing at 1 of autodiff's value)::

        key, add = tanh(a):        da = d (1 - y^2)
        gate, erase = sigma(a):    da = d y (1 - y)
        beta = softplus(a):        da = d sigma(a)       gamma = 1 + softplus(a): the same
        shift = softmax(a):        da = s (d - sum s d)

    Returns the cotangent of the head layer's (clipped) outputs p, in its layout.
    """
    key, beta, gate, shift, gamma, erase, add = heads
    d_key, d_beta, d_gate, d_shift, d_gamma, d_erase, d_add = cotangents
    b, num_write = key.shape[0], erase.shape[1]
    blocks = jnp.concatenate([
        d_key * (1.0 - key * key),
        (d_beta * -jnp.expm1(-beta))[..., None],
        (d_gate * gate * (1.0 - gate))[..., None],
        shift * (d_shift - jnp.sum(shift * d_shift, axis=-1, keepdims=True)),
        (d_gamma * -jnp.expm1(1.0 - gamma))[..., None],
    ], axis=-1)
    ea = jnp.stack([d_erase * erase * (1.0 - erase), d_add * (1.0 - add * add)], axis=2)
    return jnp.concatenate([blocks.reshape(b, -1), ea.reshape(b, 2 * num_write * key.shape[-1])],
                           axis=-1)


def split_heads(
    p: Float[Array, "b p"], num_read: int, num_write: int, width: int, radius: int
) -> tuple[ReadHeads, WriteHeads]:
    """:func:`head_activations` split into read and write heads."""
    key, beta, gate, shift, gamma, erase, add = head_activations(
        p, num_read, num_write, width, radius)
    r, w = slice(0, num_read), slice(num_read, num_read + num_write)
    read_heads = ReadHeads(key[:, r], beta[:, r], gate[:, r], shift[:, r], gamma[:, r])
    write_heads = WriteHeads(key[:, w], beta[:, w], gate[:, w], shift[:, w], gamma[:, w],
                             erase=erase, add=add)
    return read_heads, write_heads


def _clip(x: jax.Array, clip: float) -> jax.Array:
    return jnp.clip(x, -clip, clip) if clip > 0 else x


def ntm_step(
    weights: NTMWeights,
    state: NTMState,
    x: Float[Array, "b i"],
    *,
    num_read: int,
    num_write: int,
    radius: int,
    clip: float,
    impl: str = "auto",
    transposed: bool = False,
    taps: tuple[jax.Array, jax.Array, jax.Array] | None = None,
) -> tuple[NTMState, Float[Array, "b o"], WriteHeads]:
    """One NTM step (pure): ``(state_{t-1}, x_t) -> (state_t, output logits o_t, write heads)``.

    ``transposed=True``: ``state.memory`` holds ``M^T`` [b, m, n] in and out (the scan's layout,
    see :func:`recurrentlab.ops.ntm_memory.memory_step_transposed`). ``taps``: zeros [b, 4d],
    [b, p], [b, o] added to the pre-activations of the LSTM, head and output layers; the
    cotangents they receive are those layers' bias gradients per step (see :func:`_scan_vjp`).
    """
    tap_c, tap_h, tap_o = taps if taps is not None else (0.0, 0.0, 0.0)
    b = state.memory.shape[0]
    width = state.memory.shape[1 if transposed else 2]
    ctrl_in = jnp.concatenate([x, state.reads.reshape(b, -1)], axis=-1)
    controller = lstm_cell(weights.lstm_kernel, weights.lstm_bias + tap_c, ctrl_in,
                           state.controller)
    p = _clip(controller.h @ weights.head_kernel + weights.head_bias + tap_h, clip)
    read_heads, write_heads = split_heads(p, num_read, num_write, width, radius)
    memory, read_w, write_w, reads = ntm_memory.memory_step(
        state.memory, state.read_w, state.write_w, read_heads, write_heads, impl=impl,
        transposed=transposed,
    )
    out_in = jnp.concatenate([controller.h, reads.reshape(b, -1)], axis=-1)
    out = _clip(out_in @ weights.out_kernel + weights.out_bias + tap_o, clip)
    new_state = NTMState(controller, memory, read_w, write_w, reads, state.at_start)
    return new_state, out, write_heads


class _StepConfig(NamedTuple):
    num_read: int
    num_write: int
    radius: int
    clip: float


class _StepSaved(NamedTuple):
    """What one fused step keeps for its backward pass (each leaf a buffer stacked over the
    steps of the scan)."""

    memory: ntm_memory.MemorySaved  # M_{t-1}^T, weightings, activated heads (ops/ntm_memory)
    rows: Float[Array, "b 5d+p"]  # [c_{t-1}, z_c (4d), z_h (p)]: the pre-activations


def _fused_step_forward(
    cfg: _StepConfig, weights: NTMWeights, state: NTMState, x: Float[Array, "b i"]
) -> tuple[NTMState, _StepSaved]:
    """:func:`ntm_step` on ``M^T`` with the jnp memory step, without its output layer (applied
    to all steps at once by :func:`_output_layer`); also returns what
    :func:`_fused_step_backward` needs. Same values as :func:`ntm_step`."""
    b, hr = x.shape[0], cfg.num_read
    width = state.reads.shape[-1]
    ctrl_in = jnp.concatenate([x, state.reads.reshape(b, -1), state.controller.h], axis=-1)
    z_c = ctrl_in @ weights.lstm_kernel + weights.lstm_bias  # as basic_lstm_cell
    *_, so, c, tanh_c = basic_lstm_gates(z_c, state.controller.c)
    h = tanh_c * so
    z_h = h @ weights.head_kernel + weights.head_bias
    heads = head_activations(_clip(z_h, cfg.clip), hr, cfg.num_write, width, cfg.radius)
    prev_w = jnp.concatenate([state.read_w, state.write_w], axis=1)
    (memory_t, w, reads), saved = ntm_memory.memory_step_forward(
        hr, ntm_memory.EPS, state.memory, prev_w, *heads)
    new_state = NTMState(LSTMState(h, c), memory_t, w[:, :hr], w[:, hr:], reads, state.at_start)
    rows = jnp.concatenate([state.controller.c, z_c, z_h], axis=-1)
    return new_state, _StepSaved(saved, rows)


def _fused_step_backward(
    cfg: _StepConfig, weights: NTMWeights, recurrent: Float[Array, "hr*m+d 4d"],
    saved: _StepSaved, d_state: NTMState,
) -> tuple[NTMState, tuple[Float[Array, "b 4d"], Float[Array, "b p"]]]:
    """Reverse of :func:`_fused_step_forward`: memory (:func:`ntm_memory.memory_step_backward`),
    head activations (:func:`head_activations_backward`, then the clip's), controller LSTM::

        dc  = dc' + dh o σ(o) (1 - tanh² c)
        dz  = [dc tanh(j) σ(i)(1-σ(i)), dc σ(i)(1-tanh² j), dc c_{t-1} σ(f+1)(1-σ(f+1)),
               dh tanh(c) σ(o)(1-σ(o))]
        d[r_{t-1}, h_{t-1}] = dz W_[r,h]^T,   dc_{t-1} = dc σ(f+1)

    ``d_state``: the cotangent of the step's new state, the output layer's share of ``h_t``
    and ``r_t`` included; ``recurrent``: the LSTM kernel's rows of ``[r_{t-1}, h_{t-1}]``
    (sliced once, outside the loop). Returns the cotangent of the previous state and the
    pre-activation cotangents ``(dz_c, dz_h)``, from which :func:`_fused_scan_vjp` forms the
    weight, bias and input gradients outside the time loop."""
    hr, d = cfg.num_read, weights.head_kernel.shape[0]
    b, width = d_state.reads.shape[0], d_state.reads.shape[-1]
    c_prev, z_c, z_h = jnp.split(saved.rows, [d, 5 * d], axis=-1)
    d_w = jnp.concatenate([d_state.read_w, d_state.write_w], axis=1)
    d_memory, d_prev_w, *d_heads = ntm_memory.memory_step_backward(
        hr, ntm_memory.EPS, saved.memory, (d_state.memory, d_w, d_state.reads))
    # head layer: heads = activations(clip(z_h)), z_h = h W_h + b_h
    d_p = head_activations_backward(ntm_memory.saved_heads(saved.memory), d_heads)
    d_zh = jax.vjp(lambda z: _clip(z, cfg.clip), z_h)[1](d_p)[0]
    d_h = d_state.controller.h + d_zh @ weights.head_kernel.T
    # controller (TensorFlow BasicLSTMCell)
    si, tj, sf, so, _, tanh_c = basic_lstm_gates(z_c, c_prev)
    d_c = d_state.controller.c + d_h * so * (1.0 - tanh_c * tanh_c)
    d_zc = jnp.concatenate([d_c * tj * si * (1.0 - si), d_c * si * (1.0 - tj * tj),
                            d_c * c_prev * sf * (1.0 - sf), d_h * tanh_c * so * (1.0 - so)],
                           axis=-1)
    d_in = d_zc @ recurrent.T
    d_prev = NTMState(
        LSTMState(d_in[:, hr * width:], d_c * sf), d_memory, d_prev_w[:, :hr],
        d_prev_w[:, hr:], d_in[:, : hr * width].reshape(b, hr, width), d_state.at_start)
    return d_prev, (d_zc, d_zh)


def _fused_scan(cfg: _StepConfig, weights: NTMWeights, carry: NTMState,
                features: Float[Array, "s b i"], keep: bool):
    """``lax.scan`` of :func:`_fused_step_forward`: ``(final, (h_t, r_t[, saved]))``."""

    def body(state, x):
        state, saved = _fused_step_forward(cfg, weights, state, x)
        ys = (state.controller.h, state.reads)
        return state, (*ys, saved) if keep else ys

    return jax.lax.scan(body, carry, features)


def _output_layer(clip: float, weights: NTMWeights, hs: Float[Array, "s b d"],
                  reads: Float[Array, "s b hr m"]):
    """``o_t = clip([h_t, r_t] W_o + b_o)`` for all steps at once: ``(o, [h, r], z_o)``."""
    out_in = jnp.concatenate([hs, reads.reshape(*reads.shape[:2], -1)], axis=-1)
    z_o = out_in @ weights.out_kernel + weights.out_bias
    return _clip(z_o, clip), out_in, z_o


def _outer(z: Float[Array, "s b i"], g: Float[Array, "s b j"]):
    """``(sum_t z_t^T g_t, sum_t g_t)``: a layer's weight and bias gradients over all steps."""
    return jnp.einsum("sbi,sbj->ij", z, g), jnp.sum(g, axis=(0, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused_scan_vjp(
    cfg: _StepConfig, weights: NTMWeights, carry: NTMState, features: Float[Array, "s b i"]
) -> tuple[NTMState, Float[Array, "s b o"]]:
    """The segment on the jnp memory step, with a hand-written backward pass.

    Forward: a scan of :func:`_fused_step_forward`, which keeps six arrays per step
    (:class:`_StepSaved`) where autodiff of :func:`ntm_step`, keeping every intermediate, kept
    ~45, each one written in every step of the scan and read back in the reverse loop; then the
    output layer on all steps at once. Backward: the output layer's cotangents for all steps,
    a reverse scan of :func:`_fused_step_backward`, then every weight and bias gradient (and the
    inputs') as one matmul per layer over all steps (``dW = sum_t z_t^T dz_t``). Same values as
    a scan of :func:`ntm_step`, same gradients up to float32 rounding.
    """
    final, (hs, reads) = _fused_scan(cfg, weights, carry, features, keep=False)
    return final, _output_layer(cfg.clip, weights, hs, reads)[0]


def _fused_scan_vjp_fwd(cfg, weights, carry, features):
    final, (hs, reads, saved) = _fused_scan(cfg, weights, carry, features, keep=True)
    outs, out_in, z_o = _output_layer(cfg.clip, weights, hs, reads)
    return (final, outs), (weights, saved, carry.controller.h, carry.reads, out_in, z_o,
                           features)


def _fused_scan_vjp_bwd(cfg, res, cts):
    weights, saved, h0, r0, out_in, z_o, features = res
    d_final, d_outs = cts
    _, b, i = features.shape
    d, hr, width = h0.shape[-1], r0.shape[1], r0.shape[2]
    g_o = jax.vjp(lambda z: _clip(z, cfg.clip), z_o)[1](d_outs)[0]
    d_out_in = g_o @ weights.out_kernel.T  # the output layer's share of every h_t and r_t
    recurrent = weights.lstm_kernel[i:]  # the rows of [r_{t-1}, h_{t-1}]

    def body(d_state, inputs):
        d_out_t, saved_t = inputs
        d_state = d_state._replace(
            controller=d_state.controller._replace(h=d_state.controller.h + d_out_t[:, :d]),
            reads=d_state.reads + d_out_t[:, d:].reshape(b, hr, width))
        return _fused_step_backward(cfg, weights, recurrent, saved_t, d_state)

    d_carry, (g_c, g_h) = jax.lax.scan(body, d_final, (d_out_in, saved), reverse=True)
    d_features = g_c @ weights.lstm_kernel[:i].T
    return _weight_gradients(h0, r0, features, out_in, (g_c, g_h, g_o)), d_carry, d_features


def _weight_gradients(
    h0: Float[Array, "b d"], r0: Float[Array, "b hr m"], features: Float[Array, "s b i"],
    out_in: Float[Array, "s b d+hr*m"], cotangents: tuple[jax.Array, jax.Array, jax.Array],
) -> NTMWeights:
    """Every layer's weight and bias gradients from the pre-activation cotangents
    ``(dz_c, dz_h, dz_o)`` of all steps, one matmul per layer: the layers' inputs are
    ``[x_t, r_{t-1}, h_{t-1}]`` (LSTM), ``h_t`` (heads) and ``out_in = [h_t, r_t]`` (output)."""
    g_c, g_h, g_o = cotangents
    d = h0.shape[-1]
    hs, r_after = out_in[..., :d], out_in[..., d:]
    h_before = jnp.concatenate([h0[None], hs[:-1]])
    r_before = jnp.concatenate([r0.reshape(1, r0.shape[0], -1), r_after[:-1]])
    z_c = jnp.concatenate([features, r_before, h_before], axis=-1)
    (dl_k, dl_b), (dh_k, dh_b), (do_k, do_b) = (
        _outer(z_c, g_c), _outer(hs, g_h), _outer(out_in, g_o))
    return NTMWeights(dl_k, dl_b, dh_k, dh_b, do_k, do_b)


_fused_scan_vjp.defvjp(_fused_scan_vjp_fwd, _fused_scan_vjp_bwd)


def _scan_vjp(
    cfg: tuple, weights: NTMWeights, carry: NTMState, features: Float[Array, "s b i"]
) -> tuple[NTMState, Float[Array, "s b o"]]:
    """A segment of :func:`ntm_step` on ``M^T`` with a scheduled backward pass: with the jnp
    memory step (``impl`` resolving to ``"xla"``), :func:`_fused_scan_vjp`; with the Pallas
    kernel, :func:`_remat_scan_vjp`. Either way the weight gradients are formed after the
    reverse loop, one matmul per layer over all steps.

    ``cfg``: :func:`ntm_step`'s keyword arguments as sorted ``(name, value)`` pairs
    (``transposed=True``). Reverse mode only, as a ``custom_vjp`` (``grad``, ``vjp`` and
    ``vmap`` of it work; ``jvp`` does not).
    """
    kw = dict(cfg)
    if kw["transposed"] and dispatch.choose("ntm_memory_step", kw["impl"]) == "xla":
        step_cfg = _StepConfig(kw["num_read"], kw["num_write"], kw["radius"], kw["clip"])
        return _fused_scan_vjp(step_cfg, weights, carry, features)
    return _remat_scan_vjp(cfg, weights, carry, features)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _remat_scan_vjp(
    cfg: tuple, weights: NTMWeights, carry: NTMState, features: Float[Array, "s b i"]
) -> tuple[NTMState, Float[Array, "s b o"]]:
    """``lax.scan`` of :func:`ntm_step` (the Pallas kernel path) with a scheduled backward pass.

    Same values and gradients as autodiff of the plain scan (up to float32 summation order):

    * the step's backward by autodiff, rematerialised by size: a step's carry is kept, and of
      its intermediates those with fewer elements than one sequence's memory (n m)
      (:func:`_smaller_than`, a ``jax.checkpoint`` policy), the rest recomputed in the
      backward pass;
    * weight gradients out of the time loop: inside the scan the weights are constants and
      zero ``taps`` are added to the three pre-activations; their cotangents ``dz_t`` come out
      of the reverse scan, and ``dW = sum_t z_t^T dz_t``, ``db = sum_t dz_t`` are one matmul per
      layer over all steps (``z_t``: [x_t, r_{t-1}, h_{t-1}], h_t and [h_t, r_t]) instead of a
      weight-sized outer product accumulated in every step.
    """
    return _scan_taps(cfg, weights, carry, features, _zero_taps(weights, features))[:2]


def _zero_taps(weights: NTMWeights, features: jax.Array) -> tuple[jax.Array, ...]:
    s, b = features.shape[:2]
    return tuple(jnp.zeros((s, b, bias.shape[0]), features.dtype)
                 for bias in (weights.lstm_bias, weights.head_bias, weights.out_bias))


def _smaller_than(size: int):
    """``jax.checkpoint`` policy: keep the outputs of an op when each has fewer than ``size``
    elements (unknown output shapes: recompute)."""

    def policy(prim, *avals, **params):
        try:
            out = prim.abstract_eval(*avals, **params)[0]
        except Exception:  # noqa: BLE001 -- any primitive without a plain abstract_eval
            return False
        outs = out if isinstance(out, (list, tuple)) else [out]
        return all(getattr(o, "size", size) < size for o in outs)

    return policy


def _scan_taps(cfg, weights, carry, features, taps):
    """The rematerialised scan with taps; also returns every step's h_t and r_t (the
    weight-gradient inputs)."""
    step = functools.partial(ntm_step, **dict(cfg))

    def body(state, inputs):
        x, t = inputs[0], inputs[1:]
        state, out, _ = step(weights, state, x, taps=t)
        return state, (out, state.controller.h, state.reads)

    policy = _smaller_than(math.prod(carry.memory.shape[1:]))
    final, (outs, hs, rs) = jax.lax.scan(
        jax.checkpoint(body, policy=policy), carry, (features, *taps))
    return final, outs, hs, rs


def _remat_scan_vjp_fwd(cfg, weights, carry, features):
    (final, outs, hs, rs), pullback = jax.vjp(
        functools.partial(_scan_taps, cfg, weights), carry, features,
        _zero_taps(weights, features))
    return (final, outs), (pullback, carry.controller.h, carry.reads, hs, rs, features)


def _remat_scan_vjp_bwd(cfg, res, cts):
    pullback, h0, r0, hs, rs, features = res
    d_final, d_outs = cts
    d_carry, d_features, cotangents = pullback(
        (d_final, d_outs, jnp.zeros_like(hs), jnp.zeros_like(rs)))
    out_in = jnp.concatenate([hs, rs.reshape(*rs.shape[:2], -1)], axis=-1)  # [h_t, r_t]
    return _weight_gradients(h0, r0, features, out_in, cotangents), d_carry, d_features


_remat_scan_vjp.defvjp(_remat_scan_vjp_fwd, _remat_scan_vjp_bwd)


def token_bits(tokens: Int[Array, "..."], bits: int) -> Float[Array, "... bits"]:
    """Little-endian bit vectors of ``tokens`` (bit j of the id is channel j)."""
    return ((tokens[..., None] >> jnp.arange(bits)) & 1).astype(jnp.float32)


def bit_logits_to_token_logits(
    o: Float[Array, "... o"], bits: int, num_markers: int, predict_markers: bool = False
) -> Float[Array, "... V"]:
    """Token log-probabilities of the factorised bit distribution (see the module docstring).

    ``o[..., :bits]`` are the per-bit logits; with ``predict_markers`` ``o[..., bits]`` is the
    marker gate u and ``o[..., bits + 1:]`` the marker logits q. Without it every marker gets
    ``MARKER_LOGIT``.
    """
    table = token_bits(jnp.arange(2**bits), bits)  # [2^bits, bits]
    ob = o[..., :bits]
    logits = jax.nn.log_sigmoid(ob) @ table.T + jax.nn.log_sigmoid(-ob) @ (1.0 - table).T
    if predict_markers:
        u = o[..., bits : bits + 1]
        logits = logits + jax.nn.log_sigmoid(-u)
        markers = jax.nn.log_sigmoid(u) + jax.nn.log_softmax(o[..., bits + 1 :], axis=-1)
        logits = jnp.concatenate([logits, markers], axis=-1)
    elif num_markers:
        markers = jnp.full(o.shape[:-1] + (num_markers,), MARKER_LOGIT, logits.dtype)
        logits = jnp.concatenate([logits, markers], axis=-1)
    return logits


@register_model("ntm")
class NTM(SequenceModel):
    """Neural Turing Machine language model; see the module docstring for equations and choices."""

    # train.carry_gradient: exact RTRL over the whole carry (controller state, memory, read
    # vectors, head weightings; all floating point, streams independent, no dropout)
    carry_gradient_modes = ("rtrl",)
    int_field_minimums = {"bits": 0, "shift_radius": 0}  # bits=0: embed mode

    @classmethod
    def tiny_config(cls) -> dict:
        return dict(controller_size=12, memory_slots=6, memory_width=4, embed_dim=8)

    def __init__(
        self,
        *,
        vocab_size: int,
        rngs: nnx.Rngs,
        controller_size: int = 100,  # LSTM controller units (Collier & Beel: 100)
        memory_slots: int = 128,  # N, memory rows (copy: 128)
        memory_width: int = 20,  # M, slot width (copy: 20)
        num_read_heads: int = 1,  # read heads (addressed first)
        num_write_heads: int = 1,  # write heads (applied in order after the reads)
        shift_radius: int = 1,  # r: shifts -r..r
        clip: float = 20.0,  # clip head parameters and output logits to +-clip; <= 0 disables
        memory_init: str = "constant",  # constant (1e-6) | random | learned
        input_mode: str = "embed",  # bits (NTM bit-vector tasks) | embed (text, other tokens)
        bits: int = 0,  # bits mode: bits per symbol; 0 = floor(log2(vocab_size))
        predict_markers: bool = False,  # bits mode: gate + logits for marker targets (repeat copy)
        embed_dim: int = 64,  # embed mode: embedding width
        impl: str = "auto",  # memory op: auto | xla | pallas | interpret
    ):
        positive = dict(vocab_size=vocab_size, controller_size=controller_size,
                        memory_slots=memory_slots, memory_width=memory_width,
                        num_read_heads=num_read_heads, num_write_heads=num_write_heads)
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"ntm: {name} must be a positive integer, got {value!r}")
        if shift_radius < 0 or 2 * shift_radius + 1 > memory_slots:
            raise ConfigError(f"ntm: shift_radius must be in 0..(memory_slots-1)/2, "
                              f"got {shift_radius} with {memory_slots} slots")
        if memory_init not in MEMORY_INITS:
            raise ConfigError(f"ntm: memory_init '{memory_init}' unknown; use "
                              f"{', '.join(MEMORY_INITS)}")
        if input_mode not in INPUT_MODES:
            raise ConfigError(f"ntm: input_mode '{input_mode}' unknown; use bits or embed")
        if impl not in IMPLS:
            raise ConfigError(f"ntm: impl '{impl}' unknown; use {', '.join(IMPLS)}")
        self.vocab_size = vocab_size
        self.controller_size = controller_size
        self.memory_slots = memory_slots
        self.memory_width = memory_width
        self.num_read_heads = num_read_heads
        self.num_write_heads = num_write_heads
        self.shift_radius = shift_radius
        self.clip = float(clip)
        self.memory_init = memory_init
        self.input_mode = input_mode
        self.impl = impl

        if input_mode == "bits":
            bits = bits or int(math.floor(math.log2(vocab_size)))
            if bits < 1 or 2**bits > vocab_size:
                raise ConfigError(f"ntm: bits={bits} needs vocab_size >= 2**bits, "
                                  f"got vocab_size={vocab_size}")
            self.bits = bits
            self.num_markers = vocab_size - 2**bits
            if predict_markers and not self.num_markers:
                raise ConfigError("ntm: predict_markers needs marker tokens (vocab > 2**bits)")
            self.predict_markers = bool(predict_markers)
            input_dim = bits + self.num_markers
            output_dim = bits + (1 + self.num_markers if predict_markers else 0)
        else:
            self.bits = 0
            self.num_markers = 0
            self.predict_markers = False
            self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
            input_dim, output_dim = embed_dim, vocab_size

        d, n, m = controller_size, memory_slots, memory_width
        hr, hw = num_read_heads, num_write_heads
        glorot = jax.nn.initializers.glorot_uniform()
        ctrl_in = input_dim + hr * m
        self.lstm_kernel = nnx.Param(glorot(rngs.params(), (ctrl_in + d, 4 * d)))
        self.lstm_bias = nnx.Param(jnp.zeros((4 * d,)))
        p = head_param_count(hr, hw, m, shift_radius)
        trunc = jax.nn.initializers.truncated_normal
        self.head_kernel = nnx.Param(trunc(1.0 / math.sqrt(d))(rngs.params(), (d, p)))
        self.head_bias = nnx.Param(jnp.zeros((p,)))
        fan_out = d + hr * m
        self.out_kernel = nnx.Param(trunc(1.0 / math.sqrt(fan_out))(rngs.params(),
                                                                    (fan_out, output_dim)))
        self.out_bias = nnx.Param(jnp.zeros((output_dim,)))
        # Learned initial state (Collier's learned_init: Glorot-uniform on a [1, units] kernel).
        self.init_reads = nnx.Param(glorot(rngs.params(), (1, hr * m)).reshape(hr, m))
        self.init_read_w = nnx.Param(glorot(rngs.params(), (1, hr * n)).reshape(hr, n))
        self.init_write_w = nnx.Param(glorot(rngs.params(), (1, hw * n)).reshape(hw, n))
        if memory_init == "constant":
            self.init_memory = nnx.Param(jnp.full((n, m), 1e-6, jnp.float32))
        elif memory_init == "random":
            self.init_memory = nnx.Param(0.5 * jax.random.normal(rngs.params(), (n, m)))
        else:
            self.init_memory = nnx.Param(glorot(rngs.params(), (1, n * m)).reshape(n, m))

    # -- state ------------------------------------------------------------------------------

    def init_carry(self, batch_size: int) -> NTMState:
        b, d = batch_size, self.controller_size
        memory = self.init_memory[...]
        if self.memory_init != "constant":
            memory = jnp.tanh(memory)

        def tile(x):
            return jnp.broadcast_to(x, (b,) + x.shape)

        return NTMState(
            controller=LSTMState(h=jnp.zeros((b, d)), c=jnp.zeros((b, d))),
            memory=tile(memory),
            read_w=tile(jax.nn.softmax(self.init_read_w[...], axis=-1)),
            write_w=tile(jax.nn.softmax(self.init_write_w[...], axis=-1)),
            reads=tile(jnp.tanh(self.init_reads[...])),
            at_start=jnp.ones((b,)),
        )

    def _refill_start(self, carry: NTMState) -> NTMState:
        """Rows with ``at_start`` get the initial state from the current parameters (so that it
        is differentiable wherever the carry was built); ``at_start`` is cleared."""
        fresh = self.init_carry(carry.at_start.shape[0])
        carry = reset_carry(carry, fresh, carry.at_start > 0)
        return carry._replace(at_start=jnp.zeros_like(carry.at_start))

    # -- forward ----------------------------------------------------------------------------

    def _weights(self) -> NTMWeights:
        return NTMWeights(self.lstm_kernel[...], self.lstm_bias[...], self.head_kernel[...],
                          self.head_bias[...], self.out_kernel[...], self.out_bias[...])

    def input_features(self, tokens: Int[Array, "b s"]) -> Float[Array, "b s i"]:
        """Controller inputs: bits + marker one-hots (bits mode) or the embedding (embed mode)."""
        if self.input_mode == "embed":
            return self.embed(tokens)
        is_symbol = (tokens < 2**self.bits)[..., None]
        features = token_bits(tokens, self.bits) * is_symbol
        if self.num_markers:
            markers = jax.nn.one_hot(tokens - 2**self.bits, self.num_markers)  # <0: all zeros
            features = jnp.concatenate([features, markers], axis=-1)
        return features

    def output_logits(self, out: Float[Array, "... o"]) -> Float[Array, "... V"]:
        if self.input_mode == "embed":
            return out
        return bit_logits_to_token_logits(out, self.bits, self.num_markers, self.predict_markers)

    def _scan(self, tokens: jax.Array, carry: NTMState, trace: bool):
        weights = self._weights()
        carry = self._refill_start(carry)
        features = jnp.swapaxes(self.input_features(tokens), 0, 1)  # [s, b, i]
        cfg = dict(num_read=self.num_read_heads, num_write=self.num_write_heads,
                   radius=self.shift_radius, clip=self.clip, impl=self.impl, transposed=True)
        # the scan keeps M^T [b, m, n] (slots on the minor axis; module doc), the carry M
        carry = carry._replace(memory=jnp.swapaxes(carry.memory, 1, 2))

        if trace:
            def body(state, x):
                state, out, write_heads = ntm_step(weights, state, x, **cfg)
                return state, (out, state.memory, state.read_w, state.write_w, state.reads,
                               write_heads.erase, write_heads.add)

            carry, ys = jax.lax.scan(body, carry, features)
        else:  # rematerialised, weight gradients outside the time loop (module doc)
            carry, ys = _scan_vjp(tuple(sorted(cfg.items())), weights, carry, features)
        carry = carry._replace(memory=jnp.swapaxes(carry.memory, 1, 2))
        ys = jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), ys)
        if trace:  # memory [b, s, m, n] -> [b, s, n, m]
            ys = ys[:1] + (jnp.swapaxes(ys[1], 2, 3),) + ys[2:]
        return carry, ys

    def __call__(
        self,
        tokens: Int[Array, "b s"],
        carry: NTMState,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[Float[Array, "b s V"], NTMState]:
        del train, key  # no dropout in the NTM
        carry, out = self._scan(tokens, carry, trace=False)
        return self.output_logits(out), carry

    # -- generation (recurrentlab.sample): one ntm_step per token -------------------------

    decode_supported = True

    def decode_init(self, carry: NTMState, batch_size: int, segment_len: int) -> NTMState:
        """The decode state is the carry itself."""
        del batch_size, segment_len
        return carry

    def decode_step(self, token: Int[Array, " b"], state: NTMState
                    ) -> tuple[Float[Array, "b V"], NTMState]:
        """One :func:`ntm_step` (a fresh row's initial state refilled first, as a call does)."""
        state = self._refill_start(state)
        state, out, _ = ntm_step(
            self._weights(), state, self.input_features(token[:, None])[:, 0],
            num_read=self.num_read_heads, num_write=self.num_write_heads,
            radius=self.shift_radius, clip=self.clip, impl=self.impl)
        return self.output_logits(out), state

    def decode_carry(self, state: NTMState) -> NTMState:
        return state

    def trace(self, tokens: Int[Array, "b s"], carry: NTMState) -> tuple[NTMTrace, NTMState]:
        """Run a segment and return every step's memory, weightings, reads, erase/add vectors."""
        carry, (out, memory, read_w, write_w, reads, erase, add) = self._scan(
            tokens, carry, trace=True)
        return NTMTrace(tokens, self.output_logits(out), memory, read_w, write_w, reads, erase,
                        add), carry
