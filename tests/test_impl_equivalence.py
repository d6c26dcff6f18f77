"""Every model that routes through a kernel gives the same loss and gradients with the XLA
reference (``impl="xla"``) and the Pallas kernel in interpret mode (``impl="interpret"``)."""

import jax
import numpy as np
import pytest
from flax import nnx

from recurrentlab.models import build_model, model_config
from recurrentlab.train.step import window_loss

TINY = {
    "transformer": dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, max_len=16,
                        dropout=0.0),
    "rmt": dict(backbone="transformer", mem_len=0, num_layers=1, d_model=16, num_heads=2,
                d_ff=32, num_mem_tokens=2, dropout=0.0),
    "sha_rnn": dict(num_layers=2, d_model=16, d_ff=32, mem_len=12, attn_layers=(0,),
                    dropout_input=0.0, dropout_hidden=0.0, dropout_attn=0.0,
                    dropout_attn_probs=0.0, dropout_output=0.0),
    "ntm": dict(controller_size=16, memory_slots=6, memory_width=4, embed_dim=8),
}


def _loss_and_grads(name, impl, tokens):
    model = build_model(model_config(name, impl=impl, **TINY[name]), vocab_size=20, seed=3)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "mask": np.ones(tokens[:, 1:].shape, np.float32)}
    carry = model.init_carry(tokens.shape[0])

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        return window_loss(m, carry, batch, segment_len=4, train=False, key=None)[0]

    return jax.value_and_grad(loss)(params)


@pytest.mark.parametrize("name", sorted(TINY))
def test_xla_and_interpret_kernels_agree(name):
    tokens = np.random.default_rng(0).integers(0, 20, size=(2, 9)).astype(np.int32)
    loss_xla, grads_xla = _loss_and_grads(name, "xla", tokens)
    loss_kernel, grads_kernel = _loss_and_grads(name, "interpret", tokens)
    np.testing.assert_allclose(loss_xla, loss_kernel, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads_xla), jax.tree.leaves(grads_kernel), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
