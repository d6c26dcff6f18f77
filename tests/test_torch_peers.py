"""The bench's torch SHA-RNN and NTM peers compute our models' functions (copied weights).

Equal losses and gradients make ``ours ÷ peer`` in ``recurrentlab bench`` a comparison of
implementations of one network, not of two networks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recurrentlab.models import build_model, model_config
from recurrentlab.models.ntm import bit_logits_to_token_logits

torch = pytest.importorskip("torch")

from recurrentlab.bench import peers, torch_peers  # noqa: E402

NO_DROPOUT = dict(dropout_input=0.0, dropout_hidden=0.0, dropout_attn=0.0,
                  dropout_attn_probs=0.0, dropout_output=0.0)


def _tokens(b, s, vocab, seed):
    return np.random.default_rng(seed).integers(0, vocab, size=(b, s), dtype=np.int32)


def _xent(logits, targets):
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


@pytest.mark.parametrize("mem_len", [16, 6, 4])  # s < m, s = m, s > m (the authors' slice)
def test_torch_sha_rnn_equals_ours(mem_len):
    vocab, b, s = 11, 2, 6
    config = model_config("sha_rnn", num_layers=2, d_model=16, d_ff=32, mem_len=mem_len,
                          attn_layers=(0,), **NO_DROPOUT)
    ours = build_model(config, vocab_size=vocab, seed=1)
    # non-zero gates, so that a wrong q/k/v gate wiring shows
    for p in (ours.blocks[0].attn.qs, ours.blocks[0].attn.ks, ours.blocks[0].attn.vs):
        p[...] = jax.random.normal(jax.random.key(5), p[...].shape)
    peer = torch_peers.torch_sha_rnn(vocab, config).double()
    torch_peers.load_sha_rnn(peer, ours)
    x = _tokens(b, 3 * s + 1, vocab, seed=2)
    inputs, targets = x[:, :-1], x[:, 1:]

    carry, hidden, mems = ours.init_carry(b), None, None
    for k in range(2):  # two segments through the carry and memory, then a differentiated one
        seg = slice(k * s, (k + 1) * s)
        logits, carry = ours(jnp.asarray(inputs[:, seg]), carry)
        with torch.no_grad():
            theirs, hidden, mems = peer(torch.from_numpy(inputs[:, seg].T.astype(np.int64)),
                                        hidden, mems)
        np.testing.assert_allclose(np.asarray(logits), theirs.numpy().transpose(1, 0, 2),
                                   rtol=2e-4, atol=2e-5)

    seg = slice(2 * s, 3 * s)
    graphdef, params, rest = nnx.split(ours, nnx.Param, ...)

    def loss(p):
        logits, _ = nnx.merge(graphdef, p, rest)(jnp.asarray(inputs[:, seg]), carry)
        return _xent(logits, jnp.asarray(targets[:, seg]))

    value, grads = jax.value_and_grad(loss)(params)
    theirs, _, _ = peer(torch.from_numpy(inputs[:, seg].T.astype(np.int64)), hidden, mems)
    expected = torch.nn.functional.cross_entropy(
        theirs.reshape(-1, vocab), torch.from_numpy(targets[:, seg].T.astype(np.int64)).reshape(-1))
    expected.backward()
    np.testing.assert_allclose(float(value), expected.item(), rtol=1e-5)
    np.testing.assert_allclose(grads["embed"][...], peer.encoder.weight.grad.numpy(),
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grads["blocks"][0]["lstm"]["w_hh"][...],
                               peer.blocks[0].rnn.weight_hh_l0.grad.numpy().T,
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grads["blocks"][0]["attn"]["qs"][...],
                               peer.blocks[0].attn.qs.grad.numpy().reshape(-1),
                               rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("heads,radius,vocab,memory_init,batched_shift", [
    ((1, 1), 1, 16, "constant", False),  # the copy setup, pytorch-ntm's per-row shift
    ((1, 1), 1, 16, "constant", True),  # the same with the grouped-conv1d shift
    ((2, 2), 2, 18, "learned", False),  # head layout, wider shifts, marker input channels
])
def test_torch_ntm_equals_ours(heads, radius, vocab, memory_init, batched_shift):
    config = model_config("ntm", controller_size=12, memory_slots=7, memory_width=5,
                          num_read_heads=heads[0], num_write_heads=heads[1],
                          shift_radius=radius, memory_init=memory_init, input_mode="bits",
                          bits=4, clip=3.0)  # a small clip, so clipping happens
    ours = build_model(config, vocab_size=vocab, seed=3)
    peer = torch_peers.torch_ntm(ours, batched_shift=batched_shift).double()
    torch_peers.load_ntm(peer, ours)
    b, s = 3, 9
    inputs = _tokens(b, s, vocab, seed=4)  # markers included, as inputs
    targets = _tokens(b, s, 16, seed=5)  # symbols only: the peer scores bits

    graphdef, params, rest = nnx.split(ours, nnx.Param, ...)

    def loss(p):
        model = nnx.merge(graphdef, p, rest)
        logits, _ = model(jnp.asarray(inputs), model.init_carry(b))
        return _xent(logits, jnp.asarray(targets)), logits

    (value, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    x = torch.from_numpy(inputs.T.astype(np.int64))
    o = peer(peer.features(x))
    theirs = bit_logits_to_token_logits(jnp.asarray(o.detach().numpy().transpose(1, 0, 2)), 4,
                                        ours.num_markers)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(theirs), rtol=1e-4, atol=1e-4)
    expected = peer.bit_loss(o, torch.from_numpy(targets.T.astype(np.int64)))
    expected.backward()
    np.testing.assert_allclose(float(value), expected.item(), rtol=1e-5)
    np.testing.assert_allclose(grads["out_kernel"][...], peer.fc.weight.grad.numpy().T,
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grads["init_memory"][...], peer.init_memory.grad.numpy(),
                               rtol=1e-3, atol=1e-6)
    head = peer.read_heads[0].weight.grad.numpy().T  # the first read head's block of columns
    per_head = 5 + 3 + 2 * radius + 1
    np.testing.assert_allclose(grads["head_kernel"][...][:, :per_head], head,
                               rtol=1e-3, atol=1e-5)


def test_bench_prepares_the_torch_peers():
    """``prepare_peer('torch', ...)`` builds the sha_rnn/ntm peers and runs a step."""
    from recurrentlab.bench import measure

    sha = measure.run_config(model_config("sha_rnn", num_layers=2, d_model=16, d_ff=32,
                                          mem_len=8, attn_layers=(0,)),
                             {"batch_size": 2, "segment_len": 4, "bptt_segments": 1})
    ntm = measure.run_config(model_config("ntm", controller_size=8, memory_slots=6,
                                          memory_width=4, input_mode="bits"),
                             {"batch_size": 2, "segment_len": 4, "bptt_segments": 1})
    for config, peer in ((sha, "torch"), (ntm, "torch"), (ntm, "torch_batched_shift")):
        prepared = peers.prepare_peer(peer, config, 16, steps_per_repeat=2, threads=1)
        assert not isinstance(prepared, str), prepared
        prepared.run()
        assert prepared.info["params"] > 0
    assert "marker" in peers.prepare_peer("torch", ntm, 18, steps_per_repeat=1, threads=1)
    assert "variant" in peers.applies("torch_batched_shift", sha.model)
    assert "lstm" in peers.applies("torch", model_config("transformer"))
