"""Small pieces the models share: the dropout helper and its key discipline, positions, the
rel-shift, the parameter count.

Randomness, one discipline for every model: a call gets one ``key`` (the trainer passes
``fold_in(window key, segment index)``), and dropout site ``i`` of the call draws its mask
from ``fold_in(key, i)`` (:class:`Keys`). Sites are numbered in call order
(``keys()``: the attention models) or by a fixed number per site (``keys.at(i)``: the LSTM,
SHA-RNN), and every mask goes through :func:`dropout` (the AWD-LSTM's structured masks in
``regularizers.py`` too).

A mask is a counter-based hash of its key, not a ``jax.random.bernoulli`` draw: the site key
gives two 32-bit seeds ``s0, s1`` (``jax.random.bits``), and entry ``i`` of the mask (flat
index, row-major over the mask's shape) is kept when ``H(i) >= round(p 2^32)``, with
``H(i) = fmix32(fmix32(i φ ⊕ s0) ⊕ s1)``, ``fmix32`` murmur3's finaliser and ``φ = 0x9E3779B1``.
That is the law of ``bernoulli(1 - p)`` to 2^-32 and a few integer operations per entry (about a
quarter of threefry's; dropout took 16% of a SHA-RNN step with ``bernoulli``, under 8% now),
and deterministic in the key as before.

Shape legend: b batch, h heads, t queries, l keys (memory + segment), d width.
Everything here is a pure function of arrays (no Flax state), so it can be read and tested alone.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

# Initialisers of the reference implementations (GPT-2 and Transformer-XL both use N(0, 0.02)).
normal_init = nnx.initializers.normal(0.02)


class Keys:
    """The dropout keys of one model call: site ``i`` gets ``fold_in(key, i)``.

    ``keys()`` numbers the sites 1, 2, ... in call order; ``keys.at(i)`` names site ``i``
    directly. ``Keys(None)`` (or ``train=False``) yields ``None`` forever, which turns every
    dropout off. The counter lives in Python at trace time, so the stream is a pure function
    of ``key``.
    """

    def __init__(self, key: jax.Array | None, train: bool):
        self.key = key if train else None
        self.count = 0

    def __call__(self) -> jax.Array | None:
        if self.key is None:
            return None
        self.count += 1
        return jax.random.fold_in(self.key, self.count)

    def at(self, site: int) -> jax.Array | None:
        """The key of site ``site`` (``None`` when dropout is off)."""
        return None if self.key is None else jax.random.fold_in(self.key, site)


def dropout(
    x: jax.Array, rate: float, key: jax.Array | None, *, shared_axes: tuple[int, ...] = ()
) -> jax.Array:
    """Inverted dropout: zero with probability ``rate``, scale the rest by 1/(1-rate).

    ``shared_axes``: axes along which one mask entry is shared (size 1 in the mask, broadcast),
    e.g. the time axis for AWD's locked dropout. The identity when ``key`` is None or ``rate``
    is 0.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    if key is None or rate == 0.0:
        return x
    shared = {a % x.ndim for a in shared_axes}
    shape = tuple(1 if a in shared else n for a, n in enumerate(x.shape))
    keep = keep_mask(key, rate, shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _fmix32(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Bool mask of ``shape``, each entry kept with probability ``1 - rate`` (module doc):
    ``fmix32(fmix32(i φ ⊕ s0) ⊕ s1) >= round(rate 2^32)`` for flat index ``i``. Masks of more
    than 2^32 entries repeat their pattern."""
    s0, s1 = jax.random.bits(key, (2,), jnp.uint32)
    index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    bits = _fmix32(_fmix32(index * jnp.uint32(0x9E3779B1) ^ s0) ^ s1)
    return bits >= jnp.uint32(min(int(round(rate * 2.0**32)), 2**32 - 1))


def sinusoid(positions: Float[Array, " l"], dim: int) -> Float[Array, "l d"]:
    """Transformer-XL's sinusoid table: [sin(p·f), cos(p·f)], f_k = 10000^(-2k/dim).

    float32, or float64 when ``positions`` are float64 (exact cross-checks under x64)."""
    dtype = jnp.promote_types(positions.dtype, jnp.float32)
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, dim, 2, dtype=dtype) / dim))
    angles = positions.astype(dtype)[:, None] * inv_freq[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def rotary(x: Float[Array, "b h t d"], positions: Float[Array, " t"]) -> Float[Array, "b h t d"]:
    """Rotary position embedding (RoFormer), rotating the two halves of the head width."""
    d = x.shape[-1]
    half = d // 2
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, half, dtype=jnp.float32) / half))
    angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]  # [t, d/2]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def split_heads(x: Float[Array, "b t hd"], num_heads: int) -> Float[Array, "b h t d"]:
    b, t, hd = x.shape
    return x.reshape(b, t, num_heads, hd // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: Float[Array, "b h t d"]) -> Float[Array, "b t hd"]:
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def count_params(module: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param`` leaves) of ``module``; an abstract module
    (``nnx.eval_shape``) works too, so a model is counted without being built
    (:func:`recurrentlab.models.base.config_params`)."""
    return count_leaves(nnx.state(module, nnx.Param))


def count_leaves(tree) -> int:
    """Number of scalars in a pytree of arrays or ``jax.ShapeDtypeStruct`` s."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
