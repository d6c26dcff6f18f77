"""Fused NTM memory-step kernel (interpret mode on CPU) against the jnp reference.

Values and gradients w.r.t. every input (memory, previous weightings, every head output) over
small shapes: several read/write heads (write order matters), batch not a multiple of the
batch block, slots padded inside the kernel, a one-slot memory, a wide shift; NaN-safety with
an all-zero memory; the kernel inside ``lax.scan`` with gradients through the steps; real slot
counts (N = 1024 and 4096: the shift reads rolled copies, no [N, N] tile) and their lowering.
Accelerator tests run the NTM's full-size shapes compiled on a GPU/TPU and skip on CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from recurrentlab.kernels import ntm_memory as kn

from recurrentlab.ops import ntm_memory as nm

# Belt and braces beside the conftest hook: compiled Pallas needs a GPU or TPU.
ON_ACCELERATOR = pytest.mark.skipif(jax.default_backend() == "cpu", reason="needs a GPU or TPU")


def _heads(key, b, h, m, s, write):
    ks = jax.random.split(key, 7)
    fields = dict(
        key=jnp.tanh(jax.random.normal(ks[0], (b, h, m))),
        beta=jax.nn.softplus(2.0 * jax.random.normal(ks[1], (b, h))),
        gate=jax.nn.sigmoid(jax.random.normal(ks[2], (b, h))),
        shift=jax.nn.softmax(jax.random.normal(ks[3], (b, h, s))),
        gamma=1.0 + jax.nn.softplus(jax.random.normal(ks[4], (b, h))),
    )
    if not write:
        return nm.ReadHeads(**fields)
    erase = jax.nn.sigmoid(jax.random.normal(ks[5], (b, h, m)))
    add = jnp.tanh(jax.random.normal(ks[6], (b, h, m)))
    return nm.WriteHeads(**fields, erase=erase, add=add)


def _inputs(b, n, m, hr, hw, s, seed=0, zero_memory=False):
    ks = jax.random.split(jax.random.key(seed), 5)
    memory = jnp.zeros((b, n, m)) if zero_memory else jax.random.normal(ks[0], (b, n, m))
    prev_rw = jax.nn.softmax(jax.random.normal(ks[1], (b, hr, n)))
    prev_ww = jax.nn.softmax(jax.random.normal(ks[2], (b, hw, n)))
    return (memory, prev_rw, prev_ww, _heads(ks[3], b, hr, m, s, False),
            _heads(ks[4], b, hw, m, s, True))


def _value_and_grads(step, args, seed=1):
    """Outputs and the gradient of a random linear function of all four outputs."""
    outs = jax.eval_shape(step, *args)
    cts = [jax.random.normal(k, o.shape) for k, o in
           zip(jax.random.split(jax.random.key(seed), 4), outs, strict=True)]

    def loss(*a):
        outs = step(*a)
        return sum(jnp.sum(o * c) for o, c in zip(outs, cts, strict=True)), outs

    (_, outs), grads = jax.value_and_grad(loss, argnums=tuple(range(5)), has_aux=True)(*args)
    return outs, grads


def _check(got, want, tol=2e-5):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape
        assert np.all(np.isfinite(g))
        err = np.max(np.abs(g - w)) / (1.0 + np.max(np.abs(w)))
        assert err < tol, err


def _compare(shape, tol=2e-5, zero_memory=False, **kernel_args):
    args = _inputs(*shape, zero_memory=zero_memory)
    kernel = functools.partial(kn.memory_step, interpret=True, **kernel_args)
    want = jax.jit(functools.partial(_value_and_grads, nm.memory_step_reference))(args)
    got = jax.jit(functools.partial(_value_and_grads, kernel))(args)
    _check(got, want, tol)
    return got


# (b, n, m, hr, hw, s), kernel arguments
CASES = {
    # two heads of each kind (write order matters), wide shift, padded slots, batch blocks
    "multi_head_padded_blocks": ((3, 6, 4, 2, 2, 5), dict(pad_slots_to=8, block_b=2)),
    "one_slot_memory_padded_heads": ((2, 1, 3, 2, 1, 3), {}),  # h = 3 heads padded to 4
}


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_reference(name):
    shape, kernel_args = CASES[name]
    _compare(shape, **kernel_args)


def test_zero_memory_is_nan_free_and_matches():
    """All-zero memory: the cosine's eps and the floored norms keep values and grads finite."""
    (new_memory, read_w, _, reads), _ = _compare((3, 7, 5, 1, 1, 3), zero_memory=True)
    np.testing.assert_array_equal(np.asarray(reads), 0.0)
    np.testing.assert_allclose(np.asarray(read_w).sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(new_memory)))


def test_inside_scan_with_gradients_and_dispatch():
    """Three steps in lax.scan through ops.memory_step(impl='interpret'), grads via the scan."""
    b, n, m, hr, hw, s, steps = 2, 5, 3, 1, 1, 3, 3
    memory, prev_rw, prev_ww, _, _ = _inputs(b, n, m, hr, hw, s)
    heads = [_inputs(b, n, m, hr, hw, s, seed=i)[3:] for i in range(steps)]
    xs = jax.tree.map(lambda *x: jnp.stack(x), *heads)

    def run(memory, impl):
        def body(carry, heads):
            memory, rw, ww = carry
            memory, rw, ww, reads = nm.memory_step(memory, rw, ww, *heads, impl=impl)
            return (memory, rw, ww), reads

        (memory, _, _), reads = jax.lax.scan(body, (memory, prev_rw, prev_ww), xs)
        return jnp.sum(reads**2) + jnp.sum(jnp.sin(memory)), reads

    want = jax.jit(jax.value_and_grad(functools.partial(run, impl="xla"), has_aux=True))(memory)
    got = jax.jit(jax.value_and_grad(functools.partial(run, impl="interpret"), has_aux=True))(
        memory
    )
    _check(got, want)


@pytest.mark.parametrize("n", [1024, 4096])
def test_kernel_at_real_slot_counts(n):
    """N >= 1024 in interpret mode: values and gradients equal the reference."""
    _compare((1, n, 4, 1, 1, 3), tol=5e-5)


def test_kernel_has_no_slot_by_slot_tile():
    """Memory per head is O(N M): no array in the kernels' jaxprs has two N-sized axes."""
    n = 1024
    args = _inputs(2, n, 4, 1, 1, 3)
    jaxpr = jax.make_jaxpr(jax.grad(lambda *a: sum(jnp.sum(o) for o in kn.memory_step(
        *a, interpret=True)), argnums=tuple(range(5))))(*args)
    text = str(jaxpr)
    assert f"{n},{n}]" not in text.replace(" ", "") and f"{n}, {n}]" not in text


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("n, m", [(128, 20), (1024, 64)])
def test_kernels_lower_for_gpu_and_tpu(monkeypatch, platform, n, m):
    """Without the hardware: forward and backward kernels lower through Pallas' Triton (GPU)
    and Mosaic TPU rules, at the NTM's full sizes, with that platform's layout."""
    if platform == "cuda":
        pytest.importorskip("jax.experimental.pallas.triton")
    monkeypatch.setattr(kn, "_platform", lambda: "gpu" if platform == "cuda" else "tpu")
    args = jax.eval_shape(lambda: _inputs(32, n, m, 2, 1, 3))

    def value_and_grads(*args):
        return jax.value_and_grad(
            lambda *a: sum(jnp.sum(o) for o in kn.memory_step(*a)), argnums=tuple(range(5))
        )(*args)

    target = "__gpu$xla.gpu.triton" if platform == "cuda" else "tpu_custom_call"
    exported = export.export(
        jax.jit(value_and_grads), platforms=[platform],
        disabled_checks=[export.DisabledSafetyCheck.custom_call(target)],
    )(*args)
    assert exported.mlir_module().count(f"@{target}(") == 2  # forward, backward


# ------------------------------------------------------------------------- accelerator tests


@pytest.mark.accelerator
@ON_ACCELERATOR
@pytest.mark.parametrize("shape", [
    (32, 128, 20, 1, 1, 3),
    pytest.param((32, 1024, 64, 1, 1, 3), marks=pytest.mark.skipif(
        jax.default_backend() == "gpu",
        reason="did not finish in 100 s on an H200 (a [bb * n, m] block per program); auto "
               "takes the reference on a GPU")),
    (16, 128, 20, 4, 2, 3),
])
def test_compiled_kernel_full_size(shape):
    args = _inputs(*shape)
    want = jax.jit(functools.partial(_value_and_grads, nm.memory_step_reference))(args)
    got = jax.jit(functools.partial(_value_and_grads, kn.memory_step))(args)
    _check(got, want, tol=2e-3)  # TF32 / MXU matmuls in the shift
