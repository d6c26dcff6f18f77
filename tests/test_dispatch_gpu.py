"""``impl="auto"`` on a GPU takes a kernel only where it was measured on a par with the
reference or faster on the device (``dispatch.GPU_MEASURED``): attention up to head width 64;
wider attention, Transformer-XL's relative attention and the NTM memory step take the
reference, said once, before any kernel is lowered. ``impl="pallas"`` still runs the kernel.
A call the kernel cannot do at all is refused for that reason first. The GPU is faked on CPU,
where a compiled kernel cannot lower, so a call that reaches the kernel shows as a compile
failure (``test_kernels_attention``) and one that does not never tries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recurrentlab.ops import dispatch
from recurrentlab.ops.attention import attention, attention_reference
from recurrentlab.ops.ntm_memory import ReadHeads, WriteHeads, memory_step, memory_step_reference
from recurrentlab.ops.relative import relative_attention


@pytest.fixture
def platform(monkeypatch):
    monkeypatch.setattr(dispatch, "_SAID", set())
    monkeypatch.setattr(dispatch, "_COMPILES", {})
    return lambda name: monkeypatch.setattr(dispatch, "_platform", lambda: name)


def _qkv(width, value_width=None):
    ks = jax.random.split(jax.random.key(0), 3)
    return (jax.random.normal(ks[0], (1, 1, 4, width)), jax.random.normal(ks[1], (1, 1, 6, width)),
            jax.random.normal(ks[2], (1, 1, 6, value_width or width)))


def _routes(fn):
    with dispatch.record() as routes, pytest.warns(RuntimeWarning) as said:
        out = fn()
    return out, routes, [str(w.message) for w in said]


@pytest.mark.parametrize("width,value_width", [(128, None), (64, 256), (1024, None)])
def test_wide_attention_takes_the_reference_on_a_gpu(platform, width, value_width):
    platform("gpu")
    q, k, v = _qkv(width, value_width)
    got, routes, said = _routes(lambda: attention(q, k, v, impl="auto"))
    np.testing.assert_array_equal(got, attention_reference(q, k, v))
    assert [(r.path, "up to head width 64" in r.reason) for r in routes] == [("reference", True)]
    assert len(said) == 1 and f"this call's is {max(width, value_width or 0)}" in said[0]
    assert not dispatch._COMPILES  # refused before any lowering


def test_narrow_attention_goes_to_the_kernel_on_a_gpu_and_tpu(platform):
    """Width 64 on a GPU, and any width on a TPU, reach the kernel (which cannot lower on
    CPU, so auto falls back with the compile failure, not the measurement)."""
    for name, width in (("gpu", 64), ("tpu", 1024)):
        platform(name)
        q, k, v = _qkv(width)
        _, routes, said = _routes(lambda q=q, k=k, v=v: attention(q, k, v, impl="auto"))
        assert routes[-1].reason == "kernel failed to compile", name
        assert all("measured slower" not in line and "up to head width" not in line
                   for line in said)


def test_pallas_still_runs_the_wide_kernel_on_a_gpu(platform):
    platform("gpu")
    q, k, v = _qkv(128)
    with dispatch.record() as routes, pytest.raises(Exception):  # noqa: B017 -- no GPU here
        jax.block_until_ready(attention(q, k, v, impl="pallas"))
    assert [r.path for r in routes] == ["kernel"]


def test_relative_attention_takes_the_reference_on_a_gpu(platform):
    platform("gpu")
    ks = jax.random.split(jax.random.key(1), 6)
    q, k, v = (jax.random.normal(ks[i], (1, 2, n, 8)) for i, n in enumerate((4, 6, 6)))
    r, u, vb = (jax.random.normal(ks[3], (2, 6, 8)), jax.random.normal(ks[4], (2, 8)),
                jax.random.normal(ks[5], (2, 8)))
    auto, routes, said = _routes(lambda: relative_attention(q, k, v, r, u, vb, impl="auto"))
    np.testing.assert_array_equal(auto, relative_attention(q, k, v, r, u, vb, impl="xla"))
    assert [r.path for r in routes] == ["reference"] and "measured slower" in said[0]


def test_ntm_memory_step_takes_the_reference_on_a_gpu(platform):
    platform("gpu")
    b, n, m = 2, 8, 4
    ks = iter(jax.random.split(jax.random.key(2), 12))

    def fields():
        return dict(key=jax.random.normal(next(ks), (b, 1, m)), beta=jnp.ones((b, 1)),
                    gate=jnp.full((b, 1), 0.5), shift=jax.nn.softmax(
                        jax.random.normal(next(ks), (b, 1, 3))), gamma=jnp.full((b, 1), 2.0))

    memory = jax.random.normal(next(ks), (b, n, m))
    prev = jax.nn.softmax(jax.random.normal(next(ks), (b, 1, n)))
    read = ReadHeads(**fields())
    write = WriteHeads(**fields(), erase=jnp.full((b, 1, m), 0.5), add=jnp.ones((b, 1, m)))
    args = (memory, prev, prev, read, write)
    got, routes, said = _routes(lambda: memory_step(*args, impl="auto"))
    for a, w in zip(got, memory_step_reference(*args), strict=True):
        np.testing.assert_array_equal(a, w)
    assert [r.path for r in routes] == ["reference"] and "measured slower" in said[0]
    assert dispatch.choose("ntm_memory_step", "auto") == "xla"  # the NTM's fused scan path


def test_a_call_the_kernel_cannot_do_says_so_before_the_measurement(platform):
    platform("gpu")
    ks = jax.random.split(jax.random.key(3), 6)
    q, k, v = (jax.random.normal(ks[i], (1, 2, n, 8)) for i, n in enumerate((4, 6, 6)))
    r, u, vb = (jax.random.normal(ks[3], (2, 6, 8)), jax.random.normal(ks[4], (2, 8)),
                jax.random.normal(ks[5], (2, 8)))
    _, routes, said = _routes(lambda: relative_attention(q, k, v, r, u, vb, same_length=True,
                                                         impl="auto"))
    assert [r.path for r in routes] == ["reference"] and "same_length" in routes[0].reason
    assert all("measured" not in line for line in said)
