"""Generation that carries state exactly as training does.

Tokens are produced one at a time. The model sees the current (partial) segment with the
carry from the end of the previous full segment, so every model — stateless Transformer,
recurrent LSTM, memory-writing RMT — generates under the same segmentation it was trained
with. Once a segment is full the carry advances past it.

Two paths compute the same tokens:

* one step per token (:func:`generate`, for models with ``decode_supported``): the model's
  ``decode_step`` advances a decode state by one token in one compiled call (the position is
  a traced index, so nothing recompiles) — a recurrent cell step, or one query against
  key/value caches preallocated to the segment. At a segment boundary the carry advances as
  below (or is read off the decode state, ``decode_carry``) and ``decode_init`` rebuilds the
  state from it.
* re-running the partial segment (:func:`generate_reference`, and :func:`generate` for the
  other models): every token runs the current segment, padded to ``segment_len``, from the
  carry of the last boundary, and reads the logits at its position.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recurrentlab.errors import ArgumentError
from recurrentlab.models.base import SequenceModel


def make_segment_fn(model: SequenceModel):
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, carry, segment):
        return nnx.merge(graphdef, state)(segment, carry, train=False, key=None)

    return lambda carry, segment: run(state, carry, segment)


def check_arguments(model: SequenceModel, prompt: np.ndarray, length: int, *, segment_len: int,
                    temperature: float, top_k: int) -> None:
    """The bounds of :func:`generate`'s arguments (the command line checks its flags first)."""
    vocab = getattr(model, "vocab_size", None)
    if len(prompt) < 1:
        raise ArgumentError("prompt is empty; give at least one token")
    if vocab and not all(0 <= int(t) < vocab for t in np.asarray(prompt).ravel()):
        raise ArgumentError(f"prompt holds a token outside the vocabulary 0..{vocab - 1}")
    if length < 0:
        raise ArgumentError(f"length must be >= 0, got {length}")
    if segment_len < 1:
        raise ArgumentError(f"segment_len must be >= 1, got {segment_len}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ArgumentError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k < 0 or (vocab and top_k > vocab):
        raise ArgumentError(f"top_k must be in 1..{vocab or 'V'} (or 0 for all), got {top_k}")


def choose_token(logits: np.ndarray, key: jax.Array, *, temperature: float,
                 top_k: int) -> tuple[int, jax.Array]:
    """The next token from one position's logits (Float[v]): argmax at temperature 0, else a
    sample among the ``top_k`` likeliest (0: all); returns it and the advanced key."""
    logits = np.asarray(logits, np.float64)
    if temperature <= 0:
        return int(np.argmax(logits)), key
    logits = logits / temperature
    if top_k:
        cutoff = np.sort(logits)[-top_k]
        logits = np.where(logits < cutoff, -np.inf, logits)
    key, sub = jax.random.split(key)
    return int(jax.random.categorical(sub, jnp.asarray(logits))), key


def generate_reference(
    model: SequenceModel,
    prompt: np.ndarray,
    length: int,
    *,
    segment_len: int,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """:func:`generate` by re-running the partial segment for every token (any model)."""
    check_arguments(model, prompt, length, segment_len=segment_len, temperature=temperature,
                    top_k=top_k)
    run = make_segment_fn(model)
    carry = model.init_carry(1)
    tokens = [int(x) for x in prompt]
    segment: list[int] = []
    key = jax.random.PRNGKey(seed)
    out: list[int] = []

    def push(token: int):
        nonlocal carry, segment
        segment.append(token)
        if len(segment) == segment_len:
            _, carry = run(carry, jnp.asarray([segment], jnp.int32))
            segment = []

    for token in tokens[:-1]:
        push(token)
    last = tokens[-1]
    for _ in range(length):
        current = segment + [last]
        padded = current + [0] * (segment_len - len(current))
        logits, _ = run(carry, jnp.asarray([padded], jnp.int32))
        nxt, key = choose_token(logits[0, len(current) - 1], key, temperature=temperature,
                                top_k=top_k)
        push(last)
        out.append(nxt)
        last = nxt
    return np.asarray(out, np.int32)


class Decoder:
    """One stream's per-token decoding: ``feed(token)`` returns the logits (Float[v]) at that
    token and advances the segment, the carry and the decode state (see the module doc)."""

    def __init__(self, model: SequenceModel, *, segment_len: int):
        graphdef, params = nnx.split(model)
        self.segment_len = segment_len
        self.params = params

        def bound(fn):
            return jax.jit(lambda params, *args: fn(nnx.merge(graphdef, params), *args))

        self._run = bound(lambda m, carry, segment: m(segment, carry, train=False, key=None))
        self._init = bound(lambda m, carry: m.decode_init(carry, 1, segment_len))
        self._step = bound(lambda m, token, state: m.decode_step(token, state))
        self._to_carry = bound(lambda m, state: m.decode_carry(state))
        carry = model.init_carry(1)
        self.reads_carry = jax.eval_shape(self._to_carry, params,
                                          jax.eval_shape(self._init, params, carry)) is not None
        self.reset(carry)

    def reset(self, carry) -> None:
        """Start a segment from ``carry``."""
        self.carry = carry
        self.segment: list[int] = []
        self.state = self._init(self.params, carry)

    def feed(self, token: int) -> jax.Array:
        logits, self.state = self._step(self.params, jnp.asarray([token], jnp.int32),
                                        self.state)
        self.segment.append(token)
        if len(self.segment) == self.segment_len:
            if self.reads_carry:
                carry = self._to_carry(self.params, self.state)
            else:
                _, carry = self._run(self.params, self.carry,
                                     jnp.asarray([self.segment], jnp.int32))
            self.reset(carry)
        return logits[0]


def generate(
    model: SequenceModel,
    prompt: np.ndarray,
    length: int,
    *,
    segment_len: int,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Continue ``prompt`` (Int[n], n >= 1) by ``length`` tokens; temperature 0 is greedy.

    ``top_k`` in 1..V samples among the K likeliest tokens (0: all V). An argument outside
    its range raises :class:`ArgumentError` (a ValueError) before anything runs. One step per
    token where the model supports it, else :func:`generate_reference`; the tokens are the
    same (tested).
    """
    if not model.decode_supported:
        return generate_reference(model, prompt, length, segment_len=segment_len,
                                  temperature=temperature, top_k=top_k, seed=seed)
    check_arguments(model, prompt, length, segment_len=segment_len, temperature=temperature,
                    top_k=top_k)
    decoder = Decoder(model, segment_len=segment_len)
    tokens = [int(x) for x in prompt]
    key = jax.random.PRNGKey(seed)
    out: list[int] = []
    for token in tokens[:-1]:
        decoder.feed(token)
    last = tokens[-1]
    for _ in range(length):
        logits = decoder.feed(last)
        nxt, key = choose_token(logits, key, temperature=temperature, top_k=top_k)
        out.append(nxt)
        last = nxt
    return np.asarray(out, np.int32)
