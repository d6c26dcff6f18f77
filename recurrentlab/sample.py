"""Generation that carries state exactly as training does.

Tokens are produced one at a time. The model sees the current (partial) segment with the
carry from the end of the previous full segment, so every model — stateless Transformer,
recurrent LSTM, memory-writing RMT — generates under the same segmentation it was trained
with. Once a segment is full the carry advances past it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recurrentlab.models.base import SequenceModel


def make_segment_fn(model: SequenceModel):
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, carry, segment):
        return nnx.merge(graphdef, state)(segment, carry, train=False, key=None)

    return lambda carry, segment: run(state, carry, segment)


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
    """Continue ``prompt`` (Int[n], n >= 1) by ``length`` tokens; temperature 0 is greedy."""
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
