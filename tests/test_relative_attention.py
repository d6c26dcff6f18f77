"""Transformer-XL's relative-position attention op (``recurrentlab.ops.relative``): the
Pallas path (positional term per tile inside the attention kernel; RMT memory rows on the
reference) equals the reference, values and gradients, with and without dropout; the
row-subset positional term equals the rel-shift one, leftovers included."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from recurrentlab.kernels import memory_attention as ma

from recurrentlab.errors import ConfigError
from recurrentlab.ops import MaskSpec, dispatch, record, relative_attention
from recurrentlab.ops.relative import rel_shift, relative_position_bias


def _inputs(b=2, h=2, t=13, m=7, d=8, seed=0):
    l = m + t  # noqa: E741
    ks = jax.random.split(jax.random.key(seed), 6)
    return (jax.random.normal(ks[0], (b, h, t, d)), jax.random.normal(ks[1], (b, h, l, d)),
            jax.random.normal(ks[2], (b, h, l, d)), jax.random.normal(ks[3], (h, l, d)),
            jax.random.normal(ks[4], (h, d)), jax.random.normal(ks[5], (h, d)))


@pytest.mark.parametrize("with_cache_len", [False, True])
def test_positional_rows_equal_the_rel_shift(with_cache_len):
    q, _, _, r, _, vb = _inputs(t=11, m=6)
    cache_len = jnp.array([0, 4]) if with_cache_len else None
    full = relative_position_bias(q, r, vb, cache_len)
    rows = np.array([0, 1, 2, 3, 7, 8, 9, 10])  # RMT memory rows: 4 read, 4 write
    got = relative_position_bias(q, r, vb, cache_len, rows=rows)
    np.testing.assert_allclose(np.asarray(got), np.asarray(full)[:, :, rows], atol=1e-5)
    if with_cache_len:  # the leftovers do depend on the cache length
        other = relative_position_bias(q, r, vb, jnp.array([6, 6]), rows=rows)
        assert not np.allclose(np.asarray(got), np.asarray(other))


def test_kernel_positional_term_matches_the_rel_shift():
    """The kernel's per-tile positional term (rel_q / rel_r) equals the rel-shifted bias;
    several query and key blocks, padded rows and keys, kv_start."""
    q, k, v, r, _, vb = _inputs(t=37, m=29)
    qr = q + vb[None, :, None, :]
    kv = jnp.array([5, 0])
    scale = q.shape[-1] ** -0.5
    w = jax.random.normal(jax.random.key(9), q.shape)

    def ref(q, k, v, qr, r):
        from recurrentlab.ops.attention import attention_reference
        bias = rel_shift(jnp.einsum("bhtd,hld->bhtl", qr, r)) * scale
        return attention_reference(q, k, v, scale=scale, kv_start=kv, bias=bias)

    ker = functools.partial(ma.attention, scale=scale, kv_start=kv, interpret=True,
                            block_q=16, block_k=16)
    rel = lambda q, k, v, qr, r: ker(q, k, v, rel_q=qr, rel_r=r)  # noqa: E731
    np.testing.assert_allclose(rel(q, k, v, qr, r), ref(q, k, v, qr, r), atol=2e-6)
    args = (q, k, v, qr, r)
    g_ref = jax.grad(lambda *a: jnp.sum(ref(*a) * w), argnums=range(5))(*args)
    g_ker = jax.grad(lambda *a: jnp.sum(rel(*a) * w), argnums=range(5))(*args)
    for a, b in zip(g_ref, g_ker, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="plain causal"):
        ma.attention(q, k, v, spec=MaskSpec(prefix=2), rel_q=qr, rel_r=r, interpret=True)


@pytest.mark.filterwarnings("ignore:.*taking the jnp reference:RuntimeWarning")
@pytest.mark.parametrize("case", ["xl", "rmt"])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_interpret_equals_xla(case, rate):
    """Values and gradients of the op: the kernel path (RMT: memory rows on the reference,
    leftovers past the causal limit from the per-stream cache length) equals the reference."""
    if case == "xl":
        q, k, v, r, u, vb = _inputs(t=13, m=7)
        kw = dict(spec=MaskSpec(), kv_start=jnp.array([3, 0]))
    else:  # 4 read rows, 5 segment rows, 4 write rows; cache 6 rows, 2 and 6 valid
        q, k, v, r, u, vb = _inputs(t=13, m=6)
        kw = dict(spec=MaskSpec(prefix=4, suffix=4), kv_start=jnp.array([4, 0]),
                  cache_len=jnp.array([2, 6]), memory_sees_cache=False)
    key = jax.random.key(3) if rate else None
    w = jax.random.normal(jax.random.key(4), q.shape)

    def loss(impl, *args):
        out = relative_attention(*args, attn_dropout=rate, key=key, impl=impl, **kw)
        return jnp.sum(out * w)

    args = (q, k, v, r, u, vb)
    with record() as routes:
        value_k, grads_k = jax.value_and_grad(functools.partial(loss, "interpret"),
                                              argnums=range(6))(*args)
    assert {(x.op, x.path) for x in routes} == {("relative_attention", "kernel")}
    value_x, grads_x = jax.value_and_grad(functools.partial(loss, "xla"), argnums=range(6))(*args)
    np.testing.assert_allclose(value_k, value_x, rtol=1e-5)
    for a, b in zip(grads_k, grads_x, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_same_length_takes_the_reference_and_pallas_refuses_it(monkeypatch):
    q, k, v, r, u, vb = _inputs()
    with record() as routes, pytest.warns(RuntimeWarning, match="same_length"):
        relative_attention(q, k, v, r, u, vb, same_length=True, impl="interpret")
    assert [x.path for x in routes] == ["reference"]
    monkeypatch.setattr(dispatch, "_platform", lambda: "gpu")  # refused before any lowering
    with pytest.raises(ConfigError, match="same_length"):
        relative_attention(q, k, v, r, u, vb, same_length=True, impl="pallas")


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_positional_kernels_lower_for_gpu_and_tpu(monkeypatch, platform):
    """Forward and both backward kernels with the positional term lower through Triton and
    Mosaic TPU (no hardware here: resource limits only show on the device)."""
    if platform == "cuda":
        pytest.importorskip("jax.experimental.pallas.triton")
    monkeypatch.setattr(ma, "_platform", lambda: "gpu" if platform == "cuda" else "tpu")
    q = jax.ShapeDtypeStruct((2, 2, 100, 40), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((2, 2, 300, 40), jnp.bfloat16)
    r = jax.ShapeDtypeStruct((2, 300, 40), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2,), jnp.int32)

    def grads(q, k, v, qr, r, kv_start):
        def out(q, k, v, qr, r):
            return ma.attention(q, k, v, kv_start=kv_start, dropout=0.1, seed=jnp.uint32(5),
                                rel_q=qr, rel_r=r, row_offset=3)
        return jax.grad(lambda *a: jnp.sum(out(*a).astype(jnp.float32)),
                        argnums=range(5))(q, k, v, qr, r)

    target = "__gpu$xla.gpu.triton" if platform == "cuda" else "tpu_custom_call"
    exported = export.export(
        jax.jit(grads), platforms=[platform],
        disabled_checks=[export.DisabledSafetyCheck.custom_call(target)],
    )(q, k, k, q, r, kv)
    assert exported.mlir_module().count(f"@{target}(") == 3  # forward, dq, dk/dv


def test_auto_takes_the_reference_on_a_gpu_after_any_refusal_of_its_own(monkeypatch):
    """On a GPU the positional kernel was measured slower (0.23x forward + backward on an H200):
    auto takes the reference, said once, before any lowering; a call the kernel cannot do at
    all (same_length) keeps its own reason."""
    monkeypatch.setattr(dispatch, "_SAID", set())
    monkeypatch.setattr(dispatch, "_COMPILES", {})
    monkeypatch.setattr(dispatch, "_platform", lambda: "gpu")
    args = _inputs()
    with record() as routes, pytest.warns(RuntimeWarning, match="measured slower"):
        got = relative_attention(*args, impl="auto")
    np.testing.assert_array_equal(got, relative_attention(*args, impl="xla"))
    assert [r.path for r in routes] == ["reference"] and not dispatch._COMPILES
    with record() as routes, pytest.warns(RuntimeWarning, match="same_length"):
        relative_attention(*args, same_length=True, impl="auto")
    assert "same_length" in routes[0].reason
