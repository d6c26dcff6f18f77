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
@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_kernels_lower_for_gpu_and_tpu(monkeypatch, platform, rate):
    """Without the hardware: forward and both backward kernels lower through Pallas' Triton
    (GPU) and Mosaic TPU rules with that platform's layout (block rules, power-of-two sizes),
    with and without the in-kernel dropout hash."""
    if platform == "cuda":
        pytest.importorskip("jax.experimental.pallas.triton")
    monkeypatch.setattr(ma, "_platform", lambda: "gpu" if platform == "cuda" else "tpu")
    spec = MaskSpec(prefix=3, suffix=2)
    q = jax.ShapeDtypeStruct((2, 2, 100, 40), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((2, 2, 300, 40), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2,), jnp.int32)

    def grads(q, k, v, kv_start):
        out = lambda q, k, v: ma.attention(q, k, v, spec=spec, kv_start=kv_start, dropout=rate,
                                           seed=jnp.uint32(5))
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
        pytest.param(  # SHA-RNN: segment 1024 over memory 4096
            (4, 1, 1024, 5120, 1024, 1024), MaskSpec(), marks=pytest.mark.xfail(
                jax.default_backend() == "gpu", strict=False,
                reason="on an H200 the backward at head width 1024 asks for 262 KB of shared "
                       "memory, over the per-block limit; auto takes the reference there")),
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


# ----------------------------------------------------------- dropout, refusals, fallbacks

import warnings  # noqa: E402

from recurrentlab.errors import ConfigError  # noqa: E402
from recurrentlab.ops import dispatch  # noqa: E402
from recurrentlab.ops.attention import dropout_keep, dropout_seed  # noqa: E402


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_in_kernel_matches_reference_with_the_same_mask(rate):
    """Probability dropout regenerated per tile (forward, dq, dk/dv) equals the reference."""
    q, k, v, w = _inputs(2, 2, 11, 27, 8, 4)
    seed = jnp.uint32(987654321)
    spec, kv = MaskSpec(prefix=2), jnp.array([0, 5], jnp.int32)
    ref = functools.partial(attention_reference, spec=spec, kv_start=kv, dropout=rate, seed=seed)
    ker = functools.partial(ma.attention, spec=spec, kv_start=kv, dropout=rate, seed=seed,
                            interpret=True, block_q=16, block_k=16)
    out_ref, g_ref = jax.jit(functools.partial(_value_and_grads, ref))(q, k, v, w)
    out_ker, g_ker = jax.jit(functools.partial(_value_and_grads, ker))(q, k, v, w)
    _check(out_ker, out_ref, 2e-5)
    for gk, gr in zip(g_ker, g_ref, strict=True):
        _check(gk, gr, 2e-5)
    plain = attention_reference(q, k, v, spec=spec, kv_start=kv)
    assert not np.allclose(out_ker, plain, atol=1e-3)  # the mask does something


def test_dropout_mask_rate_and_independence():
    """The hash mask keeps about 1 - p of the pairs, differs across seeds and heads."""
    keep = np.asarray(dropout_keep(jnp.uint32(7), (2, 3, 64, 64), 0.25))
    assert abs(keep.mean() - 0.75) < 0.01
    assert (keep[0, 0] != keep[0, 1]).mean() > 0.3 and (keep[0, 0] != keep[1, 0]).mean() > 0.3
    other = np.asarray(dropout_keep(jnp.uint32(8), (2, 3, 64, 64), 0.25))
    assert (keep != other).mean() > 0.3


def test_op_dropout_needs_a_key_and_agrees_across_impls():
    q, k, v, _ = _inputs(1, 2, 6, 14, 4, 4)
    key = jax.random.key(3)
    xla = attention(q, k, v, dropout=0.3, key=key, impl="xla")
    ker = attention(q, k, v, dropout=0.3, key=key, impl="interpret")
    np.testing.assert_allclose(ker, xla, atol=1e-5)
    want = attention_reference(q, k, v, dropout=0.3, seed=dropout_seed(key))
    np.testing.assert_allclose(xla, want, atol=1e-6)
    np.testing.assert_array_equal(attention(q, k, v, dropout=0.3, impl="xla"),
                                  attention_reference(q, k, v))  # no key: no dropout


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """Forget what dispatch has already said and compiled; returns a setter for the platform."""
    monkeypatch.setattr(dispatch, "_SAID", set())
    monkeypatch.setattr(dispatch, "_COMPILES", {})
    return lambda platform: monkeypatch.setattr(dispatch, "_platform", lambda: platform)


def test_bias_takes_the_reference_once_and_pallas_refuses(fresh_dispatch):
    q, k, v, _ = _inputs(1, 1, 5, 9, 4, 4)
    bias = jax.random.normal(jax.random.key(1), (1, 1, 5, 9))
    want = attention_reference(q, k, v, bias=bias)
    with pytest.warns(RuntimeWarning, match="bias") as said:
        for _ in range(3):
            with dispatch.record() as routes:
                got = attention(q, k, v, bias=bias, impl="interpret")
            np.testing.assert_allclose(got, want, atol=1e-6)
            assert [r.path for r in routes] == ["reference"]
    assert len([w for w in said if "attention" in str(w.message)]) == 1  # said once
    fresh_dispatch("gpu")
    with pytest.raises(ConfigError, match="impl='pallas' cannot run this call.*bias") as err:
        attention(q, k, v, bias=bias, impl="pallas")
    assert "\n" not in str(err.value)


def test_auto_falls_back_when_the_kernel_fails_to_compile(fresh_dispatch):
    """A platform where Pallas compiles (faked on CPU, where the compiled kernel does not
    lower): auto gives the reference's values with one warning naming op and shapes; pallas
    raises."""
    fresh_dispatch("gpu")
    q, k, v, _ = _inputs(1, 1, 5, 9, 4, 4)
    want = attention_reference(q, k, v)
    with pytest.warns(RuntimeWarning) as said:
        for _ in range(2):
            got = jax.jit(lambda q, k, v: attention(q, k, v, impl="auto"))(q, k, v)
            np.testing.assert_allclose(got, want, atol=1e-6)
    lines = [str(w.message) for w in said if "attention" in str(w.message)]
    assert len(lines) == 1 and "1x1x5x4" in lines[0] and "\n" not in lines[0]
    with pytest.raises(Exception):  # noqa: B017 -- whatever the platform's compiler raises
        jax.jit(lambda q, k, v: attention(q, k, v, impl="pallas"))(q, k, v).block_until_ready()


def test_auto_falls_back_when_the_kernel_raises_at_trace_time(fresh_dispatch, monkeypatch):
    fresh_dispatch("gpu")

    def broken(*args, **kwargs):
        raise RuntimeError("forced lowering error")

    monkeypatch.setattr(ma, "attention", broken)
    q, k, v, _ = _inputs(2, 1, 4, 6, 4, 4)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        got = jax.grad(lambda q: jnp.sum(attention(q, k, v, impl="auto")))(q)
    want = jax.grad(lambda q: jnp.sum(attention_reference(q, k, v)))(q)
    np.testing.assert_allclose(got, want, atol=1e-6)
    lines = [str(w.message) for w in said]
    assert len(lines) == 1 and "forced lowering error" in lines[0] and "2x1x4x4" in lines[0]
    with pytest.raises(RuntimeError, match="forced lowering error"):
        attention(q, k, v, impl="pallas")


# ------------------------------------------- auto on a GPU: the measured rule (GPU faked on CPU)


@pytest.mark.parametrize("d,e", [(128, 128), (64, 256), (1024, 1024)])
def test_wide_attention_takes_the_reference_on_a_gpu(fresh_dispatch, d, e):
    """Above ``dispatch.GPU_AUTO_MAX_HEAD_WIDTH`` auto takes the reference, said once, before
    any kernel is lowered (measured 0.18x forward + backward at 256 on an H200)."""
    fresh_dispatch("gpu")
    q, k, v, _ = _inputs(1, 1, 4, 6, d, e)
    with dispatch.record() as routes, pytest.warns(RuntimeWarning) as said:
        got = attention(q, k, v, impl="auto")
    np.testing.assert_array_equal(got, attention_reference(q, k, v))
    assert [(r.path, "up to head width 64" in r.reason) for r in routes] == [("reference", True)]
    assert len(said) == 1 and f"this call's is {max(d, e)}" in str(said[0].message)
    assert not dispatch._COMPILES  # refused before any lowering


def test_narrow_attention_on_a_gpu_and_any_on_a_tpu_reach_the_kernel(fresh_dispatch):
    """They reach the kernel, which cannot lower on CPU, so auto falls back for the compile
    failure, not for the measurement; pallas runs the wide kernel on a GPU too."""
    for platform, width in (("gpu", 64), ("tpu", 1024)):
        fresh_dispatch(platform)
        q, k, v, _ = _inputs(1, 1, 4, 6, width, width)
        with dispatch.record() as routes, pytest.warns(RuntimeWarning) as said:
            attention(q, k, v, impl="auto")
        assert routes[-1].reason == "kernel failed to compile", platform
        assert not any("head width" in str(w.message) for w in said)
    fresh_dispatch("gpu")
    q, k, v, _ = _inputs(1, 1, 4, 6, 128, 128)
    with dispatch.record() as routes, pytest.raises(Exception):  # noqa: B017 -- no GPU here
        jax.block_until_ready(attention(q, k, v, impl="pallas"))
    assert [r.path for r in routes] == ["kernel"]
