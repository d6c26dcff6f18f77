"""Every registered model gives the same training loss and gradients with the XLA reference
(``impl="xla"``) and the Pallas kernels in interpret mode (``impl="interpret"``) with dropout on
and the same key (attention-probability dropout is the ops' hash mask in both; without dropout
``tests/test_contract.py::test_xla_equals_interpret`` checks the same); and each model's ops
route where ``ROUTES`` says (a silent bypass of a kernel fails the test)."""

import jax
import numpy as np
import pytest
from flax import nnx

from recurrentlab.models import build_model, model_class, model_config, registered_models
from recurrentlab.ops import record
from recurrentlab.train.step import window_loss

TINY = {
    "lstm": dict(embed_dim=8, hidden_dim=12, num_layers=2),
    "transformer": dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, max_len=16),
    "transformer_xl": dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, mem_len=6),
    "rmt": dict(backbone="transformer", num_layers=1, d_model=16, num_heads=2, d_ff=32,
                num_mem_tokens=2, max_len=16),
    "rmt_xl": dict(backbone="transformer_xl", mem_len=4, num_layers=1, d_model=16,
                   num_heads=2, d_ff=32, num_mem_tokens=2),
    "sha_rnn": dict(num_layers=2, d_model=16, d_ff=32, mem_len=12, attn_layers=(0,)),
    "ntm": dict(controller_size=12, memory_slots=6, memory_width=4, embed_dim=8),
}
# Fields that turn attention-probability dropout on (other dropouts are on by default).
ATTN_DROPOUT = {"transformer": dict(attn_dropout=0.3), "transformer_xl": dict(attn_dropout=0.3),
                "rmt": dict(attn_dropout=0.3), "rmt_xl": dict(attn_dropout=0.3),
                "sha_rnn": dict(dropout_attn_probs=0.3)}
NO_DROPOUT = {
    "lstm": dict(dropout=0.0, dropoute=0.0, dropouth=0.0, dropouti=0.0, wdrop=0.0),
    "transformer": dict(dropout=0.0), "transformer_xl": dict(dropout=0.0),
    "rmt": dict(dropout=0.0), "rmt_xl": dict(dropout=0.0),
    "sha_rnn": dict(dropout_input=0.0, dropout_hidden=0.0, dropout_attn=0.0,
                    dropout_attn_probs=0.0, dropout_output=0.0),
    "ntm": {},  # the NTM has no dropout
}
# (op, path) of every op call a training step of the model makes with impl="interpret".
ROUTES = {
    "lstm": set(),
    "transformer": {("attention", "kernel")},
    "rmt": {("attention", "kernel")},
    "sha_rnn": {("attention", "kernel")},
    "ntm": {("ntm_memory_step", "kernel")},
    # Transformer-XL's attention, positional term included, is the relative_attention op
    # (RMT's memory rows take the reference inside it, its segment rows the kernel).
    "transformer_xl": {("relative_attention", "kernel")},
    "rmt_xl": {("relative_attention", "kernel")},
}


def _model_name(case):
    return case.removesuffix("_xl") if case == "rmt_xl" else case


def _config(case, impl, dropout):
    fields = {**TINY[case], **(ATTN_DROPOUT.get(case, {}) if dropout else NO_DROPOUT[case])}
    name = _model_name(case)
    if "impl" in model_class(name).default_config():  # the LSTM calls no op
        fields["impl"] = impl
    return model_config(name, **fields)


def _batch(tokens):
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
            "mask": np.ones(tokens[:, 1:].shape, np.float32)}


def _loss_fn(case, impl, dropout, tokens):
    model = build_model(_config(case, impl, dropout), vocab_size=20, seed=3)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    carry = model.init_carry(tokens.shape[0])
    key = jax.random.key(11) if dropout else None

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        return window_loss(m, carry, _batch(tokens), segment_len=4, train=dropout, key=key)[0]

    return loss, params


def test_every_registered_model_is_covered():
    assert {_model_name(c) for c in TINY} == set(registered_models())
    assert set(ROUTES) == set(TINY)


@pytest.mark.slow  # interpret-mode kernels: about 30 s per model on one CPU core
@pytest.mark.parametrize("case", sorted(TINY))
def test_xla_and_interpret_kernels_agree_with_dropout(case):
    dropout = True
    tokens = np.random.default_rng(0).integers(0, 20, size=(2, 9)).astype(np.int32)
    loss_x, params_x = _loss_fn(case, "xla", dropout, tokens)
    loss_k, params_k = _loss_fn(case, "interpret", dropout, tokens)
    value_x, grads_x = jax.jit(jax.value_and_grad(loss_x))(params_x)
    value_k, grads_k = jax.jit(jax.value_and_grad(loss_k))(params_k)
    np.testing.assert_allclose(value_x, value_k, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads_k), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    if NO_DROPOUT[case]:  # dropout really is on: the loss differs without it
        loss_0, params_0 = _loss_fn(case, "xla", False, tokens)
        assert not np.isclose(float(jax.jit(loss_0)(params_0)), float(value_x), rtol=1e-6)


@pytest.mark.filterwarnings("ignore:.*taking the jnp reference:RuntimeWarning")
@pytest.mark.parametrize("case", sorted(TINY))
def test_ops_route_through_kernels(case):
    """Which ops each model's training step (dropout on) routes through a kernel."""
    tokens = np.random.default_rng(0).integers(0, 20, size=(2, 9)).astype(np.int32)
    loss, params = _loss_fn(case, "interpret", True, tokens)
    with record() as routes:
        jax.eval_shape(jax.grad(loss), params)  # tracing decides the route of every call
    assert {(r.op, r.path) for r in routes} == ROUTES[case]
    with record() as routes:
        jax.eval_shape(jax.grad(_loss_fn(case, "xla", True, tokens)[0]), params)
    assert {r.path for r in routes} <= {"reference"}
