"""Recurrent Memory Transformer: trainer scan == manual calls, memory BPTT depth, the memory
mask (against the reference's mask and by perturbation), causality, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recurrentlab.models import build_model, model_config
from recurrentlab.models.layers import Keys
from recurrentlab.models.rmt import MemoryInit
from recurrentlab.ops.attention import MaskSpec, attention_mask
from recurrentlab.train.step import window_loss
from recurrentlab.train.trainer import carry_handoff

VOCAB = 17
M = 2  # memory tokens
S = 5  # segment length

BACKBONES = {
    "xl": dict(backbone="transformer_xl"),
    "xl_cache": dict(backbone="transformer_xl", mem_len=6),
    "transformer": dict(backbone="transformer", max_len=16),
}


def tiny(**fields):
    base = dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, num_mem_tokens=M, dropout=0.0)
    base.update(fields)
    return build_model(model_config("rmt", **base), vocab_size=VOCAB, seed=0)


def tokens(seed, shape, low=0, high=VOCAB):
    return jax.random.randint(jax.random.key(seed), shape, low, high)


def jitted(model):
    """``model(x, carry)`` (no dropout) compiled once per shape; eager op-by-op is slow."""
    graphdef, state = nnx.split(model)
    call = jax.jit(lambda state, x, carry: nnx.merge(graphdef, state)(x, carry))
    return lambda x, carry: call(state, x, carry)


def batch(x, y, mask=None):
    return {"inputs": x, "targets": y,
            "mask": jnp.ones(x.shape, jnp.float32) if mask is None else mask}


def nll(logits, y):
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1)[..., 0]


@pytest.mark.parametrize("name", ["xl_cache", "transformer"])
def test_window_loss_equals_manual_calls(name):
    """K segments through the trainer's scan == K manual calls passing the memory (dropout on)."""
    model = tiny(dropout=0.1, num_layers=2, **BACKBONES[name])
    k = 3
    x, y = tokens(0, (2, k * S)), tokens(1, (2, k * S))
    key = jax.random.key(5)
    graphdef, state = nnx.split(model)

    @jax.jit
    def scanned(state):
        m = nnx.merge(graphdef, state)
        return window_loss(m, m.init_carry(2), batch(x, y), segment_len=S, train=True, key=key)

    @jax.jit
    def manual(state):
        m = nnx.merge(graphdef, state)
        carry, losses = m.init_carry(2), []
        for i in range(k):
            sl = slice(i * S, (i + 1) * S)
            logits, carry = m(x[:, sl], carry, train=True, key=jax.random.fold_in(key, i))
            losses.append(nll(logits, y[:, sl]))
        return jnp.mean(jnp.stack(losses)), carry

    loss, (carry, _) = scanned(state)
    want_loss, want_carry = manual(state)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    assert bool(jnp.all(carry.started))


@pytest.mark.parametrize("name", ["xl"])
def test_memory_gradient_spans_bptt_segments(name):
    """Segment k+1's loss reaches segment k's tokens through the memory only inside a window."""
    model = tiny(tie_weights=False, **BACKBONES[name])
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    seg_k = tokens(2, (2, S), 0, 8)  # tokens 0..7 only in segment k
    seg_next = tokens(3, (2, S), 8, VOCAB)  # tokens 8..16 only in segment k+1
    y = tokens(4, (2, 2 * S))
    x = jnp.concatenate([seg_k, seg_next], axis=1)

    def depth1(p):  # bptt_segments = 1: two windows, the carry handed over without gradient
        m = nnx.merge(graphdef, p, rest)
        _, (carry, _) = window_loss(m, m.init_carry(2), batch(seg_k, y[:, :S]),
                                    segment_len=S, train=False, key=None)
        loss, _ = window_loss(m, carry_handoff(carry), batch(seg_next, y[:, S:]),
                              segment_len=S, train=False, key=None)
        return loss

    def depth2(p):  # bptt_segments = 2: one window; only segment k+1's targets count
        m = nnx.merge(graphdef, p, rest)
        mask = jnp.concatenate([jnp.zeros((2, S)), jnp.ones((2, S))], axis=1)
        loss, _ = window_loss(m, m.init_carry(2), batch(x, y, mask), segment_len=S,
                              train=False, key=None)
        return loss

    g1 = jax.jit(jax.grad(depth1))(params)["backbone"]["embed"]["embedding"][...]
    g2 = jax.jit(jax.grad(depth2))(params)["backbone"]["embed"]["embedding"][...]
    assert np.all(np.asarray(g1[:8]) == 0.0)
    assert np.any(np.asarray(g1[8:]) != 0.0)
    assert np.any(np.abs(np.asarray(g2[:8])) > 1e-8)


def reference_mask(m, s, mlen, read_mem_from_cache):
    """LM-RMT's ``dec_attn_mask`` with ``mem_at_end`` (True = visible), written from its code."""
    q = m + s + m
    masked = np.triu(np.ones((q, mlen + q)), k=1 + mlen)
    masked[:m, mlen:mlen + m] = 0
    masked[:m, :mlen] = 1 - int(read_mem_from_cache)
    masked[-m:, -m:] = 0
    masked[-m:, :mlen] = 1 - int(read_mem_from_cache)
    return masked == 0


def test_mask_spec_matches_the_reference_mask():
    for m, s in [(1, 4), (2, 5), (3, 3)]:
        ours = attention_mask(m + s + m, m + s + m, MaskSpec(causal=True, prefix=m, suffix=m))
        np.testing.assert_array_equal(np.asarray(ours[0]), reference_mask(m, s, 0, False))
        # With an XL cache and read_mem_from_cache, MaskSpec is the reference mask as is.
        ours = attention_mask(m + s + m, 4 + m + s + m, MaskSpec(causal=True, prefix=m, suffix=m))
        np.testing.assert_array_equal(np.asarray(ours[0]), reference_mask(m, s, 4, True))


@pytest.mark.parametrize("read_from_cache", [False, True])
def test_memory_rows_and_the_xl_cache(read_from_cache):
    """One layer: write rows see layer inputs only, so the new memory depends on the cache
    exactly when ``read_mem_from_cache`` (the reference's default hides the cache)."""
    model = tiny(num_layers=1, backbone="transformer_xl", mem_len=6,
                 read_mem_from_cache=read_from_cache)
    carry = model.init_carry(2)
    model = jitted(model)
    _, carry = model(tokens(6, (2, S)), carry)
    other = carry._replace(xl=carry.xl._replace(
        cache=tuple(c + 1.0 for c in carry.xl.cache)))
    x = tokens(7, (2, S))
    la, ca = model(x, carry)
    lb, cb = model(x, other)
    assert not np.allclose(la, lb, atol=1e-5)  # segment rows read the cache
    same = np.allclose(ca.memory, cb.memory, atol=1e-6)
    assert same != read_from_cache


@pytest.mark.parametrize("name", list(BACKBONES))
def test_segment_rows_never_see_write_memory(name):
    model = tiny(**BACKBONES[name])
    carry = model.init_carry(2)
    _, carry = jitted(model)(tokens(8, (2, S)), carry)
    x = tokens(9, (2, S))
    mem = carry.memory
    other = mem + jax.random.normal(jax.random.key(0), mem.shape)

    graphdef, state = nnx.split(model)

    @jax.jit
    def run(read, write):
        return nnx.merge(graphdef, state).segment(x, read, write, carry.xl, Keys(None, False))

    base_logits, base_mem, _ = run(mem, mem)
    logits_w, mem_w, _ = run(mem, other)
    logits_r, _, _ = run(other, mem)
    np.testing.assert_array_equal(np.asarray(logits_w), np.asarray(base_logits))
    assert not np.allclose(mem_w, base_mem, atol=1e-5)  # write rows do use their input
    assert not np.allclose(logits_r, base_logits, atol=1e-5)  # segment rows read memory


@pytest.mark.parametrize("name", ["xl", "transformer"])
def test_causality(name):
    model = tiny(**BACKBONES[name])
    carry = model.init_carry(2)
    model = jitted(model)
    _, carry = model(tokens(10, (2, S)), carry)
    x = tokens(11, (2, S))
    t = 2
    y = x.at[:, t].set((x[:, t] + 1) % VOCAB)
    lx, cx = model(x, carry)
    ly, cy = model(y, carry)
    np.testing.assert_array_equal(np.asarray(lx[:, :t]), np.asarray(ly[:, :t]))
    assert not np.allclose(lx[:, t:], ly[:, t:])
    assert not np.allclose(cx.memory, cy.memory)  # the write rows see the whole segment


def test_memory_init_and_reset():
    model = tiny()
    assert model.memory_init.__class__ is nnx.Param  # shared_random: trained, as the reference
    init = np.asarray(model.memory_init[...])
    np.testing.assert_array_equal(init[0], init[1])  # m copies of one vector
    x = tokens(12, (2, S))
    f = jitted(model)
    fresh, _ = f(x, model.init_carry(2))
    c = model.init_carry(2)
    c = c._replace(memory=model.initial_memory(2), started=jnp.ones((2,), bool))
    explicit, _ = f(x, c)
    np.testing.assert_allclose(np.asarray(fresh), np.asarray(explicit), atol=1e-6)


@pytest.mark.parametrize("mem_init,trained", [("shared_random", True), ("learned", True),
                                              ("shared_fixed", False)])
def test_initial_memory_gradient(mem_init, trained):
    """The reference's ``mem_tokens`` is an nn.Parameter fed to the first segment: the loss of
    a later segment reaches it through the memory. ``shared_fixed`` keeps it out of the
    parameters (and so out of the optimiser)."""
    model = tiny(mem_init=mem_init)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    assert ("memory_init" in params) == trained
    if not trained:
        assert isinstance(model.memory_init, MemoryInit)
        return
    x = tokens(14, (2, 2 * S))
    mask = jnp.concatenate([jnp.zeros((2, S)), jnp.ones((2, S))], axis=1)  # segment 2 only

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        return window_loss(m, m.init_carry(2), batch(x, jnp.roll(x, -1, axis=1), mask),
                           segment_len=S, train=False, key=None)[0]

    grad = jax.jit(jax.grad(loss))(params)["memory_init"][...]
    assert grad.shape == (M, 16)
    assert np.all(np.abs(np.asarray(grad)).sum(axis=1) > 0)  # every slot gets a gradient


@pytest.mark.parametrize("name", ["xl"])
def test_tiny_train_reduces_loss(name):
    """Learning on a repeated batch; the learned initial memory receives gradient updates."""
    model = tiny(mem_init="learned", **BACKBONES[name])
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = tokens(13, (4, 2 * S))
    data = batch(x, jnp.roll(x, -1, axis=1))
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)

    def loss_fn(p):
        m = nnx.merge(graphdef, p, rest)
        return window_loss(m, m.init_carry(4), data, segment_len=S, train=False, key=None)[0]

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    first = float(jax.jit(loss_fn)(params))
    for _ in range(60):
        params, opt_state, _ = step(params, opt_state)
    last = float(jax.jit(loss_fn)(params))
    assert last < 0.6 * first, (first, last)
    before = nnx.state(model, nnx.Param)["memory_init"][...]
    assert params["memory_init"][...].shape == (M, 16)
    assert not np.allclose(params["memory_init"][...], before)


def test_configs():
    from pathlib import Path

    from recurrentlab.config import load_config_file, validate

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    for mem in (5, 10, 20):
        for depth in (0, 1, 2):
            config = load_config_file(experiments / "enwik8/rmt.py", f"mem{mem}_depth{depth}")
            validate(config)
            assert config.model.num_mem_tokens == mem
            assert config.train.bptt_segments == depth + 1
    with pytest.raises(ValueError, match="mem10_depth2"):
        load_config_file(experiments / "enwik8/rmt.py", "depth2")
    config = load_config_file(experiments / "synthetic/rmt.py", "reverse-4-mem5")
    validate(config)
    assert (config.train.bptt_segments, config.model.num_mem_tokens) == (4, 5)
    assert config.train.segment_len * 4 >= 48  # the 49-token episode fits the window
