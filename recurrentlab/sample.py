"""Generation that carries state exactly as training does.

Tokens are produced one at a time. The model sees the current (partial) segment with the
carry from the end of the previous full segment, so every model — stateless Transformer,
recurrent LSTM, memory-writing RMT — generates under the same segmentation it was trained
with. Once a segment is full the carry advances past it.
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
    its range raises :class:`ArgumentError` (a ValueError) before anything runs.
    """
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
        logits = np.asarray(logits[0, len(current) - 1], np.float64)
        if temperature <= 0:
            nxt = int(np.argmax(logits))
        else:
            logits = logits / temperature
            if top_k:
                cutoff = np.sort(logits)[-top_k]
                logits = np.where(logits < cutoff, -np.inf, logits)
            key, sub = jax.random.split(key)
            nxt = int(jax.random.categorical(sub, jnp.asarray(logits)))
        push(last)
        out.append(nxt)
        last = nxt
    return np.asarray(out, np.int32)
