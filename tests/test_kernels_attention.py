"""Flash-style memory-attention kernel (interpret mode on CPU) against the jnp reference.

Values and gradients w.r.t. q, k, v over a grid of small shapes: sequence lengths that are not
multiples of the blocks, one key / one query, single- and multi-head, d != e, and every mask
variant (plain causal, memory prefix offset, RMT prefix + suffix, kv_start, non-causal).
Accelerator tests run full-size shapes compiled on a GPU/TPU and skip on CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from recurrentlab.kernels import memory_attention as ma

from recurrentlab.ops.attention import MaskSpec, attention, attention_mask, attention_reference

# Belt and braces beside the conftest hook: compiled Pallas needs a GPU or TPU.
ON_ACCELERATOR = pytest.mark.skipif(jax.default_backend() == "cpu", reason="needs a GPU or TPU")


def _inputs(b, h, t, lk, d, e, seed=0, dtype=jnp.float32):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (b, h, t, d), dtype)
    k = jax.random.normal(ks[1], (b, h, lk, d), dtype)
    v = jax.random.normal(ks[2], (b, h, lk, e), dtype)
    w = jax.random.normal(ks[3], (b, h, t, e), jnp.float32)  # cotangent weights
    return q, k, v, w


def _value_and_grads(fn, q, k, v, w):
    """(out, (dq, dk, dv)) of the scalar sum(out * w); one compiled function."""

    def loss(q, k, v):
        out = fn(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * w), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


def _check(got, want, tol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.all(np.isfinite(got))
    err = np.max(np.abs(got - want)) / (1.0 + np.max(np.abs(want)))
    assert err < tol, err


def _compare(shape, spec, kv_start=None, scale=None, tol=2e-5, **blocks):
    b, h, t, lk, d, e = shape
    q, k, v, w = _inputs(b, h, t, lk, d, e)
    kv = None if kv_start is None else jnp.asarray(kv_start, jnp.int32)
    ref = functools.partial(attention_reference, spec=spec, kv_start=kv, scale=scale)
    ker = functools.partial(
        ma.attention, spec=spec, kv_start=kv, scale=scale, interpret=True, **blocks
    )
    out_ref, g_ref = jax.jit(functools.partial(_value_and_grads, ref))(q, k, v, w)
    out_ker, g_ker = jax.jit(functools.partial(_value_and_grads, ker))(q, k, v, w)
    assert out_ker.shape == (b, h, t, e)
    _check(out_ker, out_ref, tol)
    for name, gk, gr in zip("qkv", g_ker, g_ref, strict=True):
        assert gk.shape == gr.shape, name
        _check(gk, gr, tol)
    return out_ker, g_ker


# (b, h, t, l, d, e), spec, kv_start, blocks — t and l mostly not multiples of the blocks
CASES = {
    "causal_no_memory_multihead": ((2, 2, 20, 20, 8, 12), MaskSpec(), None, {}),
    "memory_prefix_offset": ((1, 1, 12, 41, 8, 8), MaskSpec(), None, {}),
    "rmt_prefix_suffix_with_cache": ((1, 2, 19, 30, 4, 8), MaskSpec(prefix=3, suffix=3), None,
                                     {}),
    "kv_start_prefix": ((2, 1, 10, 25, 4, 4), MaskSpec(prefix=2), [4, 17], {}),
    "non_causal_kv_start": ((2, 1, 7, 13, 8, 4), MaskSpec(causal=False), [0, 5], {}),
    "one_key": ((2, 1, 1, 1, 4, 4), MaskSpec(), None, {}),
    "rectangular_blocks": ((1, 1, 37, 75, 8, 8), MaskSpec(prefix=5), None,
                           dict(block_q=16, block_k=32)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_reference(name):
    shape, spec, kv_start, blocks = CASES[name]
    _compare(shape, spec, kv_start, **dict(dict(block_q=16, block_k=16), **blocks))


def test_one_query_over_memory_default_blocks_explicit_scale():
    """The default (large) blocks shrink to short sequences; an explicit scale is honoured."""
    _compare((1, 1, 1, 70, 8, 8), MaskSpec(), scale=0.3)


def test_rows_without_visible_keys_are_zero_with_zero_gradient():
    """kv_start past the last key leaves every row of batch 1 empty: output 0, finite grads."""
    out, (dq, dk, dv) = _compare((2, 1, 6, 10, 4, 4), MaskSpec(), kv_start=[0, 10])
    mask = np.asarray(attention_mask(6, 10, MaskSpec(), jnp.array([0, 10])))
    assert not mask[1].any()
    np.testing.assert_array_equal(np.asarray(out[1]), 0.0)
    for g in (dq, dk, dv):
        np.testing.assert_array_equal(np.asarray(g[1]), 0.0)


def test_bfloat16_inputs():
    """bf16 q, k, v (f32 accumulation inside): output in v's dtype, close to the reference."""
    q, k, v, w = (x.astype(jnp.bfloat16) for x in _inputs(2, 1, 9, 21, 8, 8))
    spec = MaskSpec(prefix=2)
    ker = functools.partial(ma.attention, spec=spec, interpret=True, block_q=16, block_k=16)
    ref = functools.partial(attention_reference, spec=spec)
    out_ker, g_ker = jax.jit(functools.partial(_value_and_grads, ker))(q, k, v, w)
    out_ref, g_ref = jax.jit(functools.partial(_value_and_grads, ref))(q, k, v, w)
    assert out_ker.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in g_ker)
    _check(out_ker.astype(jnp.float32), out_ref.astype(jnp.float32), 3e-2)
    for gk, gr in zip(g_ker, g_ref, strict=True):
        _check(gk.astype(jnp.float32), gr.astype(jnp.float32), 5e-2)


def test_dispatch_through_ops_attention():
    q, k, v, _ = _inputs(1, 1, 6, 14, 4, 4)
    spec = MaskSpec(prefix=2)
    got = attention(q, k, v, spec=spec, impl="interpret")
    np.testing.assert_allclose(got, attention_reference(q, k, v, spec=spec), atol=1e-5)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_kernels_lower_for_gpu_and_tpu(monkeypatch, platform):
    """Without the hardware: forward and both backward kernels lower through Pallas' Triton
    (GPU) and Mosaic TPU rules with that platform's layout (block rules, power-of-two sizes)."""
    if platform == "cuda":
        pytest.importorskip("jax.experimental.pallas.triton")
    monkeypatch.setattr(ma, "_platform", lambda: "gpu" if platform == "cuda" else "tpu")
    spec = MaskSpec(prefix=3, suffix=2)
    q = jax.ShapeDtypeStruct((2, 2, 100, 40), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((2, 2, 300, 40), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2,), jnp.int32)

    def grads(q, k, v, kv_start):
        out = lambda q, k, v: ma.attention(q, k, v, spec=spec, kv_start=kv_start)
        return jax.grad(lambda *a: jnp.sum(out(*a).astype(jnp.float32)), (0, 1, 2))(q, k, v)

    target = "__gpu$xla.gpu.triton" if platform == "cuda" else "tpu_custom_call"
    exported = export.export(
        jax.jit(grads), platforms=[platform],
        disabled_checks=[export.DisabledSafetyCheck.custom_call(target)],
    )(q, k, k, kv)
    assert exported.mlir_module().count(f"@{target}(") == 3  # forward, dq, dk/dv


# ------------------------------------------------------------------------- accelerator tests


@pytest.mark.accelerator
@ON_ACCELERATOR
@pytest.mark.parametrize(
    "shape,spec",
    [
        ((4, 1, 1024, 5120, 1024, 1024), MaskSpec()),  # SHA-RNN: segment 1024 over memory 4096
        ((2, 8, 512, 1536, 64, 64), MaskSpec()),  # Transformer-XL-like multi-head
        ((2, 8, 544, 544, 64, 64), MaskSpec(prefix=16, suffix=16)),  # RMT read/write memory
    ],
)
def test_compiled_kernel_full_size(shape, spec):
    b, h, t, lk, d, e = shape
    q, k, v, w = _inputs(b, h, t, lk, d, e)
    kv = jnp.arange(b, dtype=jnp.int32) * 64
    ref = functools.partial(attention_reference, spec=spec, kv_start=kv)
    ker = functools.partial(ma.attention, spec=spec, kv_start=kv)
    out_ref, g_ref = jax.jit(functools.partial(_value_and_grads, ref))(q, k, v, w)
    out_ker, g_ker = jax.jit(functools.partial(_value_and_grads, ker))(q, k, v, w)
    _check(out_ker, out_ref, 2e-3)  # TF32 / MXU matmuls
    for gk, gr in zip(g_ker, g_ref, strict=True):
        _check(gk, gr, 2e-3)


@pytest.mark.accelerator
@ON_ACCELERATOR
def test_compiled_kernel_bfloat16():
    q, k, v, w = _inputs(2, 4, 256, 768, 64, 64, dtype=jnp.bfloat16)
    out_ref = attention_reference(q, k, v)
    out_ker = jax.jit(ma.attention)(q, k, v)
    _check(out_ker.astype(jnp.float32), out_ref.astype(jnp.float32), 3e-2)
