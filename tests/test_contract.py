"""The carry contract (``models/base.py``), checked for every registered model.

A model gets these tests by registering: each is built from ``model_config(name,
**cls.tiny_config())`` (``SequenceModel.tiny_config``) and checked for

* one call over K segments equals K calls threading the carry, where ``segments_compose``
  says the math gives it (no dropout);
* the trainer's scan over K segments (``step.window_loss``, dropout on, segment k keyed by
  ``fold_in(key, k)``, the auxiliary-loss hook) equals K manual calls;
* causality: changing token t changes no logit before t (and does change logit t);
* batch-first carry: every carry leaf has the batch as its leading axis, and 3 streams run
  together equal each stream run alone;
* ``reset_carry`` restarts exactly the streams it is told to;
* ``impl="xla"`` equals ``impl="interpret"`` (loss and gradients) where the model has ``impl``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recurrentlab.models import model_class, model_config, registered_models, reset_carry
from recurrentlab.models.base import build_model
from recurrentlab.train.step import window_loss

VOCAB = 19
S, K = 4, 3  # segment length, segments per window
MODELS = registered_models()


def tiny(name, **fields):
    config = model_config(name, **{**model_class(name).tiny_config(), **fields})
    return build_model(config, vocab_size=VOCAB, seed=0)


def tokens(seed, batch, length=K * S):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, VOCAB)


def jitted(model):
    """``model(x, carry)`` without dropout, compiled once per shape."""
    graphdef, state = nnx.split(model)
    call = jax.jit(lambda state, x, carry: nnx.merge(graphdef, state)(x, carry))
    return lambda x, carry: call(state, x, carry)


def assert_trees_close(a, b, tol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32),
                                   rtol=tol, atol=tol)


def row(tree, i):
    return jax.tree.map(lambda x: x[i:i + 1], tree)


def test_every_model_is_covered():
    assert {"lstm", "sha_rnn", "ntm", "rmt", "transformer", "transformer_xl"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_one_call_equals_segments(name):
    if not model_class(name).segments_compose:
        pytest.skip(f"{name}: segmentation is part of the model (segments_compose=False)")
    model = tiny(name)
    call, x = jitted(model), tokens(0, 2)
    whole, whole_carry = call(x, model.init_carry(2))
    carry, parts = model.init_carry(2), []
    for k in range(K):
        logits, carry = call(x[:, k * S:(k + 1) * S], carry)
        parts.append(logits)
    assert_trees_close(jnp.concatenate(parts, axis=1), whole)
    assert_trees_close(carry, whole_carry)


@pytest.mark.parametrize("name", MODELS)
def test_trainer_scan_equals_manual_calls(name):
    model = tiny(name)
    x, y = tokens(1, 2), tokens(2, 2)
    batch = {"inputs": x, "targets": y, "mask": jnp.ones(x.shape, jnp.float32)}
    key = jax.random.key(7)
    graphdef, state = nnx.split(model)

    @jax.jit
    def scanned(state):
        m = nnx.merge(graphdef, state)
        loss, (carry, _) = window_loss(m, m.init_carry(2), batch, segment_len=S, train=True,
                                       key=key)
        return loss, carry

    @jax.jit
    def manual(state):
        m = nnx.merge(graphdef, state)
        carry, total = m.init_carry(2), 0.0
        for k in range(K):
            sl = slice(k * S, (k + 1) * S)
            logits, carry, penalty = m.call_with_penalty(
                x[:, sl], carry, train=True, key=jax.random.fold_in(key, k))
            logp = jax.nn.log_softmax(logits.astype(jnp.float32))
            nll = -jnp.take_along_axis(logp, y[:, sl, None], -1)[..., 0]
            total = total + jnp.mean(nll) / K + penalty / K
        return total, carry

    (loss, carry), (want, want_carry) = scanned(state), manual(state)
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
    assert_trees_close(carry, want_carry)
    no_dropout = jax.jit(lambda s: window_loss(nnx.merge(graphdef, s), model.init_carry(2), batch,
                                               segment_len=S, train=False, key=None)[0])(state)
    if name != "ntm":  # the NTM has no dropout; every other tiny model keeps its dropout on
        assert abs(float(no_dropout) - float(want)) > 1e-6, "the key drove no dropout"


@pytest.mark.parametrize("name", MODELS)
def test_causality(name):
    model = tiny(name)
    call = jitted(model)
    _, warm = call(tokens(3, 2, S), model.init_carry(2))
    x = tokens(4, 2, S)
    t = 2
    x2 = x.at[:, t].set((x[:, t] + 1) % VOCAB)
    a, _ = call(x, warm)
    b, _ = call(x2, warm)
    np.testing.assert_array_equal(np.asarray(a[:, :t]), np.asarray(b[:, :t]))
    assert not np.allclose(np.asarray(a[:, t]), np.asarray(b[:, t])), "token t is not read"


@pytest.mark.parametrize("name", MODELS)
def test_carry_is_batch_first_and_streams_are_independent(name):
    model = tiny(name)
    call, b = jitted(model), 3
    carry = model.init_carry(b)
    for leaf in jax.tree.leaves(carry):
        assert leaf.shape[:1] == (b,), leaf.shape
    x = tokens(5, b, 2 * S)
    together = []
    for k in range(2):
        logits, carry = call(x[:, k * S:(k + 1) * S], carry)
        together.append(logits)
    for leaf in jax.tree.leaves(carry):
        assert leaf.shape[:1] == (b,), leaf.shape
    for i in range(b):
        alone = model.init_carry(1)
        for k in range(2):
            logits, alone = call(x[i:i + 1, k * S:(k + 1) * S], alone)
            assert_trees_close(logits, together[k][i:i + 1])
        assert_trees_close(alone, row(carry, i))


@pytest.mark.parametrize("name", MODELS)
def test_reset_carry_restarts_one_stream(name):
    model = tiny(name)
    call = jitted(model)
    first, second = tokens(6, 2, S), tokens(7, 2, S)
    _, carry = call(first, model.init_carry(2))
    reset = reset_carry(carry, model.init_carry(2), jnp.array([True, False]))
    got, got_carry = call(second, reset)
    fresh, fresh_carry = call(second, model.init_carry(2))
    kept, kept_carry = call(second, carry)
    assert_trees_close(got[:1], fresh[:1])
    assert_trees_close(row(got_carry, 0), row(fresh_carry, 0))
    assert_trees_close(got[1:], kept[1:])
    assert_trees_close(row(got_carry, 1), row(kept_carry, 1))
    if jax.tree.leaves(carry):  # a stateful model: the reset stream really forgot its past
        assert not np.allclose(np.asarray(got[:1]), np.asarray(kept[:1]))


@pytest.mark.parametrize("name", MODELS)
def test_xla_equals_interpret(name):
    if "impl" not in model_class(name).default_config():
        pytest.skip(f"{name} has no impl field")
    x = np.random.default_rng(0).integers(0, VOCAB, size=(2, 9)).astype(np.int32)
    batch = {"inputs": x[:, :-1], "targets": x[:, 1:], "mask": np.ones((2, 8), np.float32)}

    def loss_and_grads(impl):
        model = tiny(name, impl=impl)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        carry = model.init_carry(2)

        def loss(p):
            m = nnx.merge(graphdef, p, rest)
            return window_loss(m, carry, batch, segment_len=S, train=False, key=None)[0]

        return jax.value_and_grad(loss)(params)

    loss_xla, grads_xla = loss_and_grads("xla")
    loss_kernel, grads_kernel = loss_and_grads("interpret")
    np.testing.assert_allclose(loss_xla, loss_kernel, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads_xla), jax.tree.leaves(grads_kernel), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
