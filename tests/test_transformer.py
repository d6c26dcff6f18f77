"""Decoder-only Transformer: causality, no state across segments, parameter count, learning."""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recurrentlab.errors import ConfigError
from recurrentlab.models import build_model, model_config
from recurrentlab.models.layers import count_params
from recurrentlab.models.transformer import expected_params

VOCAB = 13
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def tiny(**fields):
    base = dict(num_layers=2, d_model=32, num_heads=4, d_ff=64, max_len=16, dropout=0.0)
    base.update(fields)
    return build_model(model_config("transformer", **base), vocab_size=VOCAB, seed=0)


def jitted(model):
    """``model(x, carry, train=, key=)`` compiled once per shape (eager op-by-op is slow)."""
    graphdef, state = nnx.split(model)

    @functools.partial(jax.jit, static_argnames="train")
    def call(state, x, carry, key, train):
        return nnx.merge(graphdef, state)(x, carry, train=train, key=key)

    return lambda x, carry, train=False, key=None: call(state, x, carry, key, train)


def tokens(seed, shape):
    return jax.random.randint(jax.random.key(seed), shape, 0, VOCAB)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causality(positions):
    model = jitted(tiny(positions=positions))
    x = tokens(0, (2, 12))
    t = 7
    y = x.at[:, t].set((x[:, t] + 1) % VOCAB)
    lx, _ = model(x, ())
    ly, _ = model(y, ())
    np.testing.assert_array_equal(np.asarray(lx[:, :t]), np.asarray(ly[:, :t]))
    assert not np.allclose(lx[:, t:], ly[:, t:])


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_segments_are_independent(positions):
    model = tiny(positions=positions)
    x = tokens(1, (2, 16))
    carry = model.init_carry(2)
    assert carry == ()
    model = jitted(model)
    l1, carry = model(x[:, :8], carry)
    l2, carry = model(x[:, 8:], carry)
    l2_alone, _ = model(x[:, 8:], ())
    np.testing.assert_array_equal(np.asarray(l2), np.asarray(l2_alone))
    # Changing the first segment changes nothing in the second: there is no state.
    other = x.at[:, :8].set((x[:, :8] + 3) % VOCAB)
    _, c = model(other[:, :8], ())
    l2_other, _ = model(other[:, 8:], c)
    np.testing.assert_array_equal(np.asarray(l2), np.asarray(l2_other))
    # ...while one long pass over both segments does see the first one.
    full, _ = model(x, ())
    assert not np.allclose(full[:, 8:], l2, atol=1e-5)


def test_parameter_count_and_untied_head():
    for tie in (True, False):
        model = tiny(tie_weights=tie)
        assert count_params(model) == expected_params(VOCAB, 2, 32, 64, 16, tie_weights=tie)
    rot = tiny(positions="rotary")
    assert count_params(rot) == expected_params(VOCAB, 2, 32, 64, 16, positions="rotary")


def test_dropout_needs_train_and_key():
    model = jitted(tiny(dropout=0.3, attn_dropout=0.3))
    x = tokens(2, (2, 8))
    base, _ = model(x, ())
    same, _ = model(x, (), train=True, key=None)
    evald, _ = model(x, (), train=False, key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(base), np.asarray(same))
    np.testing.assert_array_equal(np.asarray(base), np.asarray(evald))
    d1, _ = model(x, (), train=True, key=jax.random.key(1))
    d1b, _ = model(x, (), train=True, key=jax.random.key(1))
    d2, _ = model(x, (), train=True, key=jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d1b))
    assert not np.allclose(d1, base) and not np.allclose(d1, d2)


def test_too_long_segment_is_a_config_error():
    model = tiny(max_len=8)
    with pytest.raises(ConfigError, match="max_len"):
        model(tokens(3, (1, 9)), ())


def test_tiny_train_reduces_loss():
    model = tiny(dropout=0.1)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = tokens(4, (4, 12))
    inputs, targets = x[:, :-1], x[:, 1:]
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    def loss_fn(p, key):
        m = nnx.merge(graphdef, p, rest)
        logits, _ = m(inputs, (), train=True, key=key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def step(p, s, key):
        loss, g = jax.value_and_grad(loss_fn)(p, key)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    first = float(loss_fn(params, None))
    for i in range(40):
        params, opt_state, _ = step(params, opt_state, jax.random.key(i))
    last = float(loss_fn(params, None))
    assert last < 0.5 * first, (first, last)
    assert jnp.isfinite(last)


def test_enwik8_config_size():
    from recurrentlab.config import load_config_file, validate

    config = load_config_file(EXPERIMENTS / "enwik8/transformer.py")
    validate(config)
    abstract = nnx.eval_shape(lambda: build_model(config.model, vocab_size=256, seed=0))
    n = count_params(abstract)
    assert n == expected_params(256, 12, 512, 2048, 128) == 38_026_240
    for task in ("copy", "reverse-1", "associative_retrieval-2"):
        validate(load_config_file(EXPERIMENTS / "synthetic/transformer.py", task))
