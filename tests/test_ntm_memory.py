"""NTM memory op: against a plain numpy loop, NaN-safety, numerical gradients, shift semantics."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recurrentlab.ops import ntm_memory as nm

# ---------------------------------------------------------------------------------------------
# A plain, loop-by-loop numpy implementation of Graves et al. (2014) eqs. 2-9, written from the
# paper and independent of the jnp code under test (direct powers, no log-space tricks).


def np_address(memory, prev_w, key, beta, gate, shift, gamma, eps=1e-8):
    n, _ = memory.shape
    radius = (len(shift) - 1) // 2
    sim = np.zeros(n)
    for i in range(n):
        dot = sum(key[j] * memory[i, j] for j in range(len(key)))
        sim[i] = dot / (np.sqrt(np.sum(key**2)) * np.sqrt(np.sum(memory[i] ** 2)) + eps)
    e = np.exp(beta * sim - np.max(beta * sim))
    w_c = e / e.sum()
    w_g = gate * w_c + (1 - gate) * prev_w
    w_s = np.zeros(n)
    for i in range(n):
        for d in range(-radius, radius + 1):
            w_s[i] += shift[d + radius] * w_g[(i - d) % n]
    p = w_s**gamma
    return p / p.sum()


def np_step(memory, prev_rw, prev_ww, rh, wh):
    """One step for one batch element; heads given as dicts of per-head arrays."""
    hr, hw = prev_rw.shape[0], prev_ww.shape[0]
    read_w = np.stack([np_address(memory, prev_rw[h], rh["key"][h], rh["beta"][h], rh["gate"][h],
                                  rh["shift"][h], rh["gamma"][h]) for h in range(hr)])
    write_w = np.stack([np_address(memory, prev_ww[h], wh["key"][h], wh["beta"][h], wh["gate"][h],
                                   wh["shift"][h], wh["gamma"][h]) for h in range(hw)])
    n, m = memory.shape
    reads = np.zeros((hr, m))
    for h in range(hr):
        for i in range(n):
            reads[h] += read_w[h, i] * memory[i]
    new = memory.copy()
    for h in range(hw):
        for i in range(n):
            for j in range(m):
                new[i, j] = (new[i, j] * (1 - write_w[h, i] * wh["erase"][h, j])
                             + write_w[h, i] * wh["add"][h, j])
    return new, read_w, write_w, reads


# ---------------------------------------------------------------------------------------------


def random_inputs(seed, b, n, m, hr, hw, radius, dtype=np.float32):
    rng = np.random.default_rng(seed)
    s = 2 * radius + 1

    def heads(h, write):
        fields = dict(
            key=np.tanh(rng.normal(size=(b, h, m))),
            beta=np.log1p(np.exp(rng.normal(size=(b, h)) * 2)),
            gate=1 / (1 + np.exp(-rng.normal(size=(b, h)))),
            shift=np.exp(x := rng.normal(size=(b, h, s))) / np.exp(x).sum(-1, keepdims=True),
            gamma=1 + np.log1p(np.exp(rng.normal(size=(b, h)))),
        )
        if write:
            fields["erase"] = 1 / (1 + np.exp(-rng.normal(size=(b, h, m))))
            fields["add"] = np.tanh(rng.normal(size=(b, h, m)))
        return {k: v.astype(dtype) for k, v in fields.items()}

    def weights(h):
        x = rng.normal(size=(b, h, n)) * 2
        return (np.exp(x) / np.exp(x).sum(-1, keepdims=True)).astype(dtype)

    memory = rng.normal(size=(b, n, m)).astype(dtype)
    return memory, weights(hr), weights(hw), heads(hr, False), heads(hw, True)


def to_jax(memory, prw, pww, rh, wh):
    return (jnp.asarray(memory), jnp.asarray(prw), jnp.asarray(pww),
            nm.ReadHeads(**{k: jnp.asarray(v) for k, v in rh.items()}),
            nm.WriteHeads(**{k: jnp.asarray(v) for k, v in wh.items()}))


@pytest.mark.parametrize(
    "n,m,hr,hw,radius", [(5, 3, 1, 1, 1), (8, 4, 2, 1, 1), (7, 2, 1, 2, 2), (16, 5, 2, 3, 1)]
)
def test_memory_step_matches_numpy_loop(n, m, hr, hw, radius):
    b = 3
    inputs = random_inputs(n * 100 + m, b, n, m, hr, hw, radius, dtype=np.float64)
    memory, prw, pww, rh, wh = inputs
    got = nm.memory_step(*to_jax(*[x for x in inputs]), impl="xla")
    for bi in range(b):
        want = np_step(memory[bi], prw[bi], pww[bi], {k: v[bi] for k, v in rh.items()},
                       {k: v[bi] for k, v in wh.items()})
        for g, w, name in zip(got, want, ["memory", "read_w", "write_w", "reads"], strict=True):
            np.testing.assert_allclose(np.asarray(g[bi]), w, rtol=2e-4, atol=2e-6, err_msg=name)


def test_address_pieces_match_numpy_loop():
    memory, prw, _, rh, _ = random_inputs(7, 2, 9, 4, 2, 1, 2, dtype=np.float64)
    got = nm.address(jnp.asarray(memory), jnp.asarray(prw),
                     *[jnp.asarray(rh[k]) for k in ("key", "beta", "gate", "shift", "gamma")])
    for bi, h in itertools.product(range(2), range(2)):
        want = np_address(memory[bi], prw[bi, h], *[rh[k][bi, h] for k in
                                                     ("key", "beta", "gate", "shift", "gamma")])
        np.testing.assert_allclose(np.asarray(got[bi, h]), want, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("radius", [1, 2])
def test_one_hot_shift_moves_focus(radius):
    n = 7
    w = jax.nn.one_hot(jnp.array([[2]]), n)  # focus on slot 2
    for d in range(-radius, radius + 1):
        s = jax.nn.one_hot(jnp.array([[d + radius]]), 2 * radius + 1)
        out = nm.circular_shift(w, s)
        np.testing.assert_allclose(out[0, 0], np.eye(n)[(2 + d) % n], atol=1e-7)


def test_reads_see_previous_memory_and_writes_apply_in_order():
    memory, prw, pww, rh, wh = random_inputs(3, 2, 6, 3, 1, 2, 1)
    args = to_jax(memory, prw, pww, rh, wh)
    new_memory, read_w, write_w, reads = nm.memory_step(*args, impl="xla")
    np.testing.assert_allclose(reads, nm.read(args[0], read_w), rtol=1e-6)
    m = args[0]
    for h in range(2):  # sequential erase/add, head 0 then head 1
        wi = write_w[:, h, :, None]
        m = m * (1 - wi * args[4].erase[:, h, None, :]) + wi * args[4].add[:, h, None, :]
    np.testing.assert_allclose(new_memory, m, rtol=1e-6)


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


def _extreme_loss(memory, prw, pww, rh, wh):
    out = memory
    for _ in range(3):  # a few steps so later steps see the written, non-zero memory too
        out, prw, pww, reads = nm.memory_step(out, prw, pww, rh, wh, impl="xla")
    n, m = memory.shape[1:]
    return jnp.sum(out**2) + jnp.sum(reads * jnp.arange(m)) + jnp.sum(prw * jnp.arange(n))


_extreme_step = jax.jit(nm.memory_step)
_extreme_grad = jax.jit(jax.grad(_extreme_loss, argnums=(0, 1, 2, 3, 4)))


@pytest.mark.parametrize("gate", [0.0, 1.0])
@pytest.mark.parametrize("beta,gamma", [(1e6, 1e3), (0.0, 1.0), (50.0, 200.0)])
def test_nan_free_with_zero_memory_and_extreme_heads(gate, beta, gamma):
    b, n, m, hr, hw = 2, 6, 4, 1, 1
    memory = jnp.zeros((b, n, m))
    one_hot_w = jax.nn.one_hot(jnp.zeros((b, 1), jnp.int32), n)  # prev weighting one-hot
    shift = jax.nn.one_hot(jnp.full((b, 1), 2), 3)  # one-hot shift +1
    full = lambda v, shape: jnp.full(shape, v, jnp.float32)
    rh = nm.ReadHeads(key=full(0.0, (b, hr, m)), beta=full(beta, (b, hr)),
                      gate=full(gate, (b, hr)), shift=shift, gamma=full(gamma, (b, hr)))
    wh = nm.WriteHeads(key=full(1.0, (b, hw, m)), beta=full(beta, (b, hw)),
                       gate=full(gate, (b, hw)), shift=shift, gamma=full(gamma, (b, hw)),
                       erase=full(1.0, (b, hw, m)), add=full(-1.0, (b, hw, m)))
    outs = _extreme_step(memory, one_hot_w, one_hot_w, rh, wh)
    assert _all_finite(outs)
    np.testing.assert_allclose(jnp.sum(outs[1], -1), 1.0, rtol=1e-5)
    grads = _extreme_grad(memory, one_hot_w, one_hot_w, rh, wh)
    assert _all_finite(grads)


def test_sharpen_survives_underflow_and_zeros():
    w = jnp.array([[[0.0, 1e-20, 0.3, 0.7 - 1e-20]]])
    out = nm.sharpen(w, jnp.array([[500.0]]))
    assert _all_finite(out)
    np.testing.assert_allclose(out[0, 0], [0, 0, 0, 1], atol=1e-6)
    g = jax.grad(lambda w, gm: jnp.sum(nm.sharpen(w, gm) * jnp.arange(4.0)), argnums=(0, 1))(
        w, jnp.array([[500.0]]))
    assert _all_finite(g)


def test_numerical_gradient_of_one_step_float64():
    with jax.enable_x64(True):
        memory, prw, pww, rh, wh = to_jax(*random_inputs(11, 2, 5, 3, 1, 1, 1, dtype=np.float64))
        assert memory.dtype == jnp.float64
        probe = jax.random.normal(jax.random.key(0), (2, 5, 3), jnp.float64)
        probe_r = jax.random.normal(jax.random.key(1), (2, 1, 3), jnp.float64)

        def loss(flat_args):
            new_memory, read_w, write_w, reads = nm.memory_step(*flat_args, impl="xla")
            return (jnp.sum(new_memory * probe) + jnp.sum(reads * probe_r)
                    + jnp.sum(read_w[..., 0]) - jnp.sum(write_w[..., 1] ** 2))

        loss = jax.jit(loss)
        args = (memory, prw, pww, rh, wh)
        grads = jax.jit(jax.grad(loss))(args)
        leaves, treedef = jax.tree.flatten(args)
        grad_leaves = jax.tree.leaves(grads)
        rng = np.random.default_rng(0)
        h = 1e-6
        for li, (leaf, g) in enumerate(zip(leaves, grad_leaves, strict=True)):
            flat = np.asarray(leaf).ravel()
            for idx in rng.choice(flat.size, size=min(4, flat.size), replace=False):
                def at(delta, li=li, idx=idx, flat=flat, leaf=leaf):
                    bumped = flat.copy()
                    bumped[idx] += delta
                    new = list(leaves)
                    new[li] = jnp.asarray(bumped.reshape(leaf.shape))
                    return float(loss(jax.tree.unflatten(treedef, new)))

                numeric = (at(h) - at(-h)) / (2 * h)
                analytic = float(np.asarray(g).ravel()[idx])
                assert abs(numeric - analytic) <= 1e-6 + 1e-5 * abs(numeric), (li, idx)


@pytest.mark.parametrize("n,radius", [(5, 1), (5, 2), (3, 2), (3, 4), (2, 5)])
def test_circular_shift_matches_numpy_loop_and_wraps(n, radius):
    """eq. 8 against a loop over slots and shifts, also with 2r+1 > n (shifts wrap, some more
    than once, and coinciding ones add up)."""
    rng = np.random.default_rng(n * 10 + radius)
    w = rng.random((2, 3, n)).astype(np.float32)
    s = rng.random((2, 3, 2 * radius + 1)).astype(np.float32)
    want = np.zeros_like(w)
    for i in range(n):
        for d in range(-radius, radius + 1):
            want[..., i] += s[..., d + radius] * w[..., (i - d) % n]
    np.testing.assert_allclose(nm.circular_shift(jnp.asarray(w), jnp.asarray(s)), want,
                               rtol=1e-6)


def _autodiff_step_t(memory_t, prev_rw, prev_ww, rh, wh):
    """The memory step on M^T composed from the public pieces, differentiated by autodiff."""
    memory = jnp.swapaxes(memory_t, 1, 2)
    read_w = nm.address(memory, prev_rw, *rh)
    write_w = nm.address(memory, prev_ww, *wh[:5])
    new = nm.write(memory, write_w, wh.erase, wh.add)
    return jnp.swapaxes(new, 1, 2), read_w, write_w, nm.read(memory, read_w)


@pytest.mark.parametrize("n,m,hr,hw,radius,zero", [
    (5, 3, 1, 1, 1, False), (8, 4, 2, 2, 2, False), (7, 2, 1, 3, 1, False),
    (3, 2, 1, 1, 2, False),  # 2r+1 > n: shifts wrap around and coincide
    (6, 4, 1, 2, 1, True),  # all-zero memory: the norm floors' zero-gradient branches
])
def test_hand_written_backward_equals_autodiff_float64(n, m, hr, hw, radius, zero):
    """``memory_step_transposed``'s hand-written VJP equals autodiff of ``address``, ``read``
    and ``write`` in float64: cotangents on all four outputs, gradients for every input."""
    with jax.enable_x64(True):
        memory, prw, pww, rh, wh = to_jax(*random_inputs(n * 7 + hw, 3, n, m, hr, hw, radius,
                                                        dtype=np.float64))
        memory_t = jnp.zeros_like(jnp.swapaxes(memory, 1, 2)) if zero else jnp.swapaxes(
            memory, 1, 2)
        args = (memory_t, prw, pww, rh, wh)
        outs = _autodiff_step_t(*args)
        probes = [jax.random.normal(jax.random.key(i), o.shape, jnp.float64)
                  for i, o in enumerate(outs)]

        def loss(step, *a):
            return sum(jnp.sum(o * p) for o, p in zip(step(*a), probes, strict=True))

        want = jax.grad(functools.partial(loss, _autodiff_step_t), argnums=range(5))(*args)
        got = jax.grad(functools.partial(loss, nm.memory_step_transposed), argnums=range(5))(
            *args)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        for a, b in zip(nm.memory_step_transposed(*args), outs, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_dispatch_auto_and_xla_agree_on_cpu():
    args = to_jax(*random_inputs(5, 2, 6, 3, 1, 1, 1))
    a = nm.memory_step(*args, impl="auto")
    x = nm.memory_step(*args, impl="xla")
    for p, q in zip(a, x, strict=True):
        np.testing.assert_array_equal(p, q)


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """Forget what dispatch has said and compiled; pretend the platform compiles Pallas (a TPU:
    on a GPU ``auto`` takes the NTM's reference before any compile, see
    ``dispatch.GPU_MEASURED``)."""
    from recurrentlab.ops import dispatch

    monkeypatch.setattr(dispatch, "_SAID", set())
    monkeypatch.setattr(dispatch, "_COMPILES", {})
    monkeypatch.setattr(dispatch, "_platform", lambda: "tpu")
    return dispatch


def test_auto_falls_back_when_the_kernel_fails_to_compile(fresh_dispatch):
    """On CPU the compiled (non-interpret) kernel cannot lower: with the platform faked to an
    accelerator, auto warns once (op and shapes) and gives the reference's values and
    gradients."""
    args = to_jax(*random_inputs(2, 2, 6, 3, 1, 1, 1))

    def loss(memory, impl):
        return sum(jnp.sum(o**2) for o in nm.memory_step(memory, *args[1:], impl=impl))

    with pytest.warns(RuntimeWarning) as said:
        got = jax.value_and_grad(loss)(args[0], "auto")
        jax.value_and_grad(loss)(args[0], "auto")
    lines = [str(w.message) for w in said if "ntm_memory_step" in str(w.message)]
    assert len(lines) == 1 and "2x6x3" in lines[0] and "failed to compile" in lines[0]
    want = jax.value_and_grad(loss)(args[0], "xla")
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(Exception):  # noqa: B017 -- whatever the platform's compiler raises
        jax.block_until_ready(nm.memory_step(*args, impl="pallas"))


def test_auto_takes_the_reference_on_a_gpu(fresh_dispatch, monkeypatch):
    """On a GPU the kernel was measured slower (its 128-step scan did not finish in 45 s on an
    H200): auto takes the reference before any lowering, and the NTM model's layout choice
    (``dispatch.choose``) says the same, so it takes its fused M^T scan."""
    monkeypatch.setattr(fresh_dispatch, "_platform", lambda: "gpu")
    args = to_jax(*random_inputs(4, 2, 6, 3, 1, 1, 1))
    with fresh_dispatch.record() as routes, pytest.warns(RuntimeWarning, match="measured slower"):
        got = nm.memory_step(*args, impl="auto")
    for a, b in zip(got, nm.memory_step_reference(*args), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r.path for r in routes] == ["reference"] and not fresh_dispatch._COMPILES
    assert fresh_dispatch.choose("ntm_memory_step", "auto") == "xla"


def test_missing_kernel_package_auto_falls_back_pallas_refuses(fresh_dispatch, monkeypatch):
    from recurrentlab.errors import ConfigError

    monkeypatch.setitem(fresh_dispatch.KERNEL_MODULES, "ntm_memory_step", "no_such_kernel")
    args = to_jax(*random_inputs(3, 2, 5, 3, 1, 1, 1))
    with pytest.warns(RuntimeWarning, match="not installed"):
        got = nm.memory_step(*args, impl="auto")
    for a, b in zip(got, nm.memory_step_reference(*args), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="impl='pallas' cannot run this call"):
        nm.memory_step(*args, impl="pallas")
