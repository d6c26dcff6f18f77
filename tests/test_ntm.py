"""NTM model: carry invariance, causality, the bits token interface, learned initial state,
NaN-safety at model level, and a tiny copy run whose loss falls."""

from __future__ import annotations

import functools
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recurrentlab.errors import ConfigError
from recurrentlab.models import build_model, model_config
from recurrentlab.models import ntm as ntm_lib
from recurrentlab.ops import ntm_memory

TINY = dict(controller_size=16, memory_slots=8, memory_width=5)


def tiny_ntm(vocab_size=18, seed=0, **fields):
    return build_model(model_config("ntm", **{**TINY, **fields}), vocab_size=vocab_size, seed=seed)


@functools.cache
def shared_ntm(vocab_size=18, **fields):
    """One model per configuration for the read-only tests (building costs eager ops)."""
    return tiny_ntm(vocab_size, **fields)


@nnx.jit
def apply(model, tokens, carry):
    return model(tokens, carry)


@nnx.jit(static_argnums=1)
def fresh(model, batch_size):
    return model.init_carry(batch_size)


def random_tokens(seed, shape, vocab):
    return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


# -- construction ------------------------------------------------------------------------------


def test_registered_with_documented_defaults():
    config = model_config("ntm")
    assert config.controller_size == 100 and config.memory_slots == 128
    assert config.memory_width == 20 and config.memory_init == "constant" and config.clip == 20
    model = shared_ntm(input_mode="bits")
    assert (model.bits, model.num_markers) == (4, 2)  # floor(log2(18)) = 4


@pytest.mark.parametrize("field,value", [("memory_init", "zeros"), ("input_mode", "onehot"),
                                         ("shift_radius", 4), ("memory_slots", 0),
                                         ("impl", "cuda")])
def test_bad_fields_are_config_errors(field, value):
    with pytest.raises(ConfigError):
        tiny_ntm(**{field: value})


def test_bits_mode_needs_enough_vocabulary():
    with pytest.raises(ConfigError):
        tiny_ntm(vocab_size=10, input_mode="bits", bits=4)
    with pytest.raises(ConfigError):
        tiny_ntm(vocab_size=16, input_mode="bits", predict_markers=True)


# -- carry contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [dict(input_mode="bits"),
                                    dict(input_mode="embed", num_read_heads=2, shift_radius=2,
                                         memory_init="random"),
                                    dict(input_mode="bits", predict_markers=True,
                                         num_write_heads=2, memory_init="learned")])
def test_one_pass_equals_segments(fields):
    model = shared_ntm(**fields)
    tokens = random_tokens(1, (3, 12), 18)
    full, carry_full = apply(model, tokens, fresh(model, 3))
    carry = fresh(model, 3)
    parts = []
    for lo, hi in [(0, 5), (5, 6), (6, 12)]:
        logits, carry = apply(model, tokens[:, lo:hi], carry)
        parts.append(logits)
    np.testing.assert_allclose(jnp.concatenate(parts, 1), full, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(carry_full), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(carry))  # batch first


@pytest.mark.parametrize("mode", ["bits", "embed"])
def test_causality(mode):
    model = shared_ntm(input_mode=mode)
    tokens = random_tokens(2, (2, 10), 18)
    t = 6
    changed = tokens.at[:, t].set((tokens[:, t] + 5) % 18)
    base, _ = apply(model, tokens, fresh(model, 2))
    other, _ = apply(model, changed, fresh(model, 2))
    np.testing.assert_array_equal(base[:, :t], other[:, :t])
    assert not np.allclose(base[:, t], other[:, t])


# -- bits token interface ---------------------------------------------------------------------


def test_token_cross_entropy_is_bitwise_sigmoid_cross_entropy():
    bits, markers = 4, 3
    o = 6.0 * jax.random.normal(jax.random.key(0), (5, bits))
    logits = ntm_lib.bit_logits_to_token_logits(o, bits, markers)
    assert logits.shape == (5, 2**bits + markers)
    np.testing.assert_allclose(jax.nn.logsumexp(logits, -1), 0.0, atol=1e-5)  # normalised
    targets = np.array([0, 5, 9, 15, 12])
    token_ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(targets))
    target_bits = np.array([[(v >> j) & 1 for j in range(bits)] for v in targets], np.float32)
    bit_ce = optax.sigmoid_binary_cross_entropy(o, target_bits).sum(-1)
    np.testing.assert_allclose(token_ce, bit_ce, rtol=1e-5, atol=1e-5)
    thresholded = ((o > 0).astype(np.int32) * (2 ** np.arange(bits))).sum(-1)
    np.testing.assert_array_equal(jnp.argmax(logits, -1), thresholded)


def test_marker_head_is_normalised_and_scores_the_end_channel():
    bits, markers = 3, 2
    o = 4.0 * jax.random.normal(jax.random.key(1), (6, bits + 1 + markers))
    logits = ntm_lib.bit_logits_to_token_logits(o, bits, markers, predict_markers=True)
    np.testing.assert_allclose(jax.nn.logsumexp(logits, -1), 0.0, atol=1e-5)
    # a symbol target costs its bits plus "no marker" on the extra Bernoulli unit
    v = 5
    target_bits = np.array([(v >> j) & 1 for j in range(bits)], np.float32)
    want = (optax.sigmoid_binary_cross_entropy(o[:, :bits], target_bits).sum(-1)
            + optax.sigmoid_binary_cross_entropy(o[:, bits], 0.0))
    np.testing.assert_allclose(-logits[:, v], want, rtol=1e-5)
    want_marker = (optax.sigmoid_binary_cross_entropy(o[:, bits], 1.0)
                   - jax.nn.log_softmax(o[:, bits + 1:])[:, 1])
    np.testing.assert_allclose(-logits[:, 2**bits + 1], want_marker, rtol=1e-5)


def test_bits_input_features():
    model = shared_ntm(vocab_size=19, input_mode="bits")  # 16 symbols, 3 markers
    features = model.input_features(jnp.array([[0, 6, 15, 16, 18]]))
    want = np.array([[0, 0, 0, 0, 0, 0, 0],
                     [0, 1, 1, 0, 0, 0, 0],
                     [1, 1, 1, 1, 0, 0, 0],
                     [0, 0, 0, 0, 1, 0, 0],
                     [0, 0, 0, 0, 0, 0, 1]], np.float32)
    np.testing.assert_array_equal(features[0], want)


# -- state, trace, gradients ------------------------------------------------------------------


def test_trace_matches_call_and_reads_see_previous_memory():
    model = shared_ntm(input_mode="bits", num_read_heads=2)
    tokens = random_tokens(4, (2, 6), 18)
    carry0 = fresh(model, 2)
    logits, carry = apply(model, tokens, carry0)
    trace, carry_t = nnx.jit(lambda m, t, c: m.trace(t, c))(model, tokens, carry0)
    np.testing.assert_allclose(trace.logits, logits, rtol=1e-6)
    np.testing.assert_allclose(trace.memory[:, -1], carry.memory, rtol=1e-6)
    previous = jnp.concatenate([carry0.memory[:, None], trace.memory[:, :-1]], axis=1)
    for t in range(6):
        np.testing.assert_allclose(trace.reads[:, t],
                                   ntm_memory.read(previous[:, t], trace.read_w[:, t]),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trace.read_w.sum(-1), 1.0, rtol=1e-5)


def _loss_fn(graphdef, rest, carry, tokens, targets):
    def loss(params):
        model = nnx.merge(graphdef, params, rest)
        logits, _ = model(tokens, carry)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    return loss


def test_learned_initial_state_gets_gradients_through_a_prebuilt_carry():
    model = shared_ntm(input_mode="bits", memory_init="learned")
    carry = fresh(model, 2)  # built outside the differentiated function, as a trainer does
    tokens = random_tokens(5, (2, 6), 18)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.jit(jax.grad(_loss_fn(graphdef, rest, carry, tokens, tokens % 16)))(params)
    for name in ("init_memory", "init_read_w", "init_write_w", "init_reads"):
        assert float(jnp.abs(grads[name][...]).sum()) > 0, name
    # a carry that is not at a start does not touch the initial state
    _, later = apply(model, tokens, carry)
    grads = jax.jit(jax.grad(_loss_fn(graphdef, rest, later, tokens, tokens % 16)))(params)
    assert float(jnp.abs(grads["init_memory"][...]).sum()) == 0


def test_model_gradients_finite_with_zero_memory_and_saturated_heads():
    model = tiny_ntm(input_mode="bits", clip=0.0)  # no clipping: heads saturate freely
    model.init_memory[...] = jnp.zeros_like(model.init_memory[...])
    model.head_kernel[...] = 50.0 * model.head_kernel[...]  # huge beta, gamma; gates at 0/1
    tokens = random_tokens(6, (2, 8), 18)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss, grads = jax.jit(jax.value_and_grad(
        _loss_fn(graphdef, rest, model.init_carry(2), tokens, tokens % 16)))(params)
    assert np.isfinite(float(loss))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


# -- a tiny copy run ---------------------------------------------------------------------------


def copy_batch(rng, batch, length, bits):
    """``x_1..x_L <sep> <blank>*L`` in, ``x_1..x_L`` scored on the L answer steps."""
    sep, blank = 2**bits, 2**bits + 1
    x = rng.integers(0, 2**bits, size=(batch, length))
    inputs = np.concatenate([x, np.full((batch, 1), sep), np.full((batch, length), blank)], 1)
    targets = np.concatenate([np.zeros((batch, length + 1), np.int64), x], 1)
    mask = np.concatenate([np.zeros((batch, length + 1)), np.ones((batch, length))], 1)
    return jnp.asarray(inputs), jnp.asarray(targets), jnp.asarray(mask, jnp.float32)


def test_tiny_copy_run_loss_falls():
    bits, length = 3, 4
    model = build_model(model_config("ntm", controller_size=32, memory_slots=8, memory_width=6,
                                     input_mode="bits"), vocab_size=2**bits + 2, seed=0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.chain(optax.clip_by_global_norm(50.0), optax.adam(3e-3))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, inputs, targets, mask):
        def loss_fn(params):
            m = nnx.merge(graphdef, params, rest)
            logits, _ = m(inputs, m.init_carry(inputs.shape[0]))
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            return jnp.sum(ce * mask) / jnp.sum(mask)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(0)
    losses = []
    for _ in range(300):
        params, opt_state, loss = step(params, opt_state, *copy_batch(rng, 16, length, bits))
        losses.append(float(loss))
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert np.isfinite(losses).all()
    assert first > 1.9  # ~ 3 bits * ln 2 per answer token at the start
    assert last < 0.7 * first, (first, last)


# -- pictures and the trainer -----------------------------------------------------------------


def test_plot_ntm_trace_writes_a_png(tmp_path):
    from recurrentlab.viz_ntm import plot_ntm_trace, trace_panels

    model = shared_ntm(input_mode="bits")
    tokens = random_tokens(7, (2, 9), 18)
    trace, _ = nnx.jit(lambda m, t, c: m.trace(t, c))(model, tokens, fresh(model, 2))
    panels = dict(trace_panels(trace, example=1, bits=4))
    assert panels["input bits"].shape == (4, 9)
    np.testing.assert_array_equal(panels["input bits"][:, 0],
                                  [(int(tokens[1, 0]) >> j) & 1 if tokens[1, 0] < 16 else 0
                                   for j in range(4)])
    assert panels["write weighting, head 0"].shape == (8, 9)
    out = plot_ntm_trace(trace, tmp_path / "trace.png", example=1, bits=4, title="tiny")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_copy_config_trains_through_the_trainer(tmp_path):
    from recurrentlab.config import load_config_file
    from recurrentlab.data import build_dataset
    from recurrentlab.train.trainer import train_and_evaluate

    config = load_config_file("experiments/ntm/copy.py")
    config.data.update(dict(bits=3, max_len=3, eval_windows=1))
    config.data.eval_overrides.update(dict(min_len=4, max_len=5))
    config.model.update(dict(bits=3, controller_size=16, memory_slots=8, memory_width=4))
    dataset = build_dataset(config.data, seed=0)
    config.train.update(dict(batch_size=4, segment_len=dataset.max_episode_len() - 1,
                             num_steps=3, log_every=1, checkpoint_every=3, progress_bar=False,
                             eval_every=2, stop_when="bit_errors<1e9"))  # met at step 2
    config.eval.update(dict(batch_size=4, segment_len=dataset.max_episode_len("valid") - 1,
                            final_splits=("valid",)))
    config.mesh.data_axis = 1
    summary = train_and_evaluate(config, tmp_path / "tiny_copy")
    final = summary["final"]["valid"]
    assert np.isfinite(final["loss"]) and final["loss"] > 0
    assert "bit_errors" in final and final["episodes"] == 4
    assert summary["stopped_early"]["step"] == 2

    # the copy report: steps to converge and errors at fixed longer lengths
    spec = importlib.util.spec_from_file_location("ntm_copy_report",
                                                  "experiments/reports/ntm_copy.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    table = report.report(tmp_path, [2, 6])
    (row,) = [line for line in table.splitlines() if line.startswith("| tiny_copy |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "2" and len(cells) == 6  # run, params, steps, minutes, L=2, L=6
    lengths = json.loads((tmp_path / "tiny_copy" / "copy_lengths.json").read_text())
    assert set(lengths) == {"2", "6"} and lengths["6"]["episodes"] == 4
    assert 0 <= lengths["6"]["bit_errors"] <= 3 * 6 and 0 <= lengths["6"]["exact_match"] <= 1


@pytest.mark.slow
def test_kernel_path_matches_reference_in_the_model():
    """The model through the Pallas memory kernel (interpret mode) equals the jnp reference,
    values and parameter gradients."""
    # random memory: the 1e-6 constant init makes d cos / dM ~ 1/||M|| ill-conditioned in float32
    fields = dict(input_mode="bits", num_read_heads=2, memory_init="random")
    tokens = random_tokens(8, (2, 4), 18)

    def loss(model):
        logits, carry = model(tokens, model.init_carry(2))
        return jnp.sum(jax.nn.log_softmax(logits)[..., 3]) + jnp.sum(carry.memory**2)

    results = []
    for impl in ("xla", "interpret"):
        model = tiny_ntm(impl=impl, **fields)
        results.append(nnx.jit(nnx.value_and_grad(loss))(model))
    (loss_x, grads_x), (loss_i, grads_i) = results
    np.testing.assert_allclose(loss_i, loss_x, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(nnx.state(grads_i)), jax.tree.leaves(nnx.state(grads_x)),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("clip", [20.0, 0.3, 0.0])  # default; most units clipped; no clip
def test_scan_vjp_equals_autodiff_of_the_plain_scan(clip):
    """The hand-scheduled backward (the fused step's hand-written VJP, weight gradients out of
    the time loop, memory kept as M^T inside the scan) equals autodiff of a plain ``lax.scan``
    of ``ntm_step`` on M [b, n, m]: gradients for the weights, every carry leaf and the inputs,
    with two read and two write heads and cotangents on both the outputs and the final carry."""
    model = tiny_ntm(input_mode="bits", num_read_heads=2, num_write_heads=2,
                     memory_init="random", clip=clip)
    weights = model._weights()
    carry = model._refill_start(model.init_carry(3))
    features = jax.random.normal(jax.random.key(3), (5, 3, 4 + 2))  # [s, b, bits + markers]
    cfg = dict(num_read=2, num_write=2, radius=1, clip=model.clip, impl="xla")
    probe = jax.random.normal(jax.random.key(4), (5, 3, 4))

    def loss(outs, final):
        return jnp.sum(outs * probe) + jnp.sum(jnp.sin(final.memory)) + jnp.sum(
            final.controller.c * final.reads.sum(axis=(1, 2))[:, None])

    def plain(weights, carry, features):
        def body(state, x):
            state, out, _ = ntm_lib.ntm_step(weights, state, x, **cfg)
            return state, out
        final, outs = jax.lax.scan(body, carry, features)
        return loss(outs, final)

    def hoisted(weights, carry, features):
        carry = carry._replace(memory=jnp.swapaxes(carry.memory, 1, 2))
        final, outs = ntm_lib._scan_vjp(tuple(sorted({**cfg, "transposed": True}.items())),
                                        weights, carry, features)
        return loss(outs, final._replace(memory=jnp.swapaxes(final.memory, 1, 2)))

    want = jax.jit(jax.value_and_grad(plain, argnums=(0, 1, 2)))(weights, carry, features)
    got = jax.jit(jax.value_and_grad(hoisted, argnums=(0, 1, 2)))(weights, carry, features)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1]), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(got[1][0].lstm_kernel).sum()) > 0


@pytest.mark.parametrize("num_read,num_write,radius", [(1, 1, 1), (2, 3, 2)])
def test_head_activations_backward_equals_autodiff(num_read, num_write, radius):
    """The hand-written VJP of the head activations (from their outputs) equals autodiff of
    ``head_activations`` in float64, with pre-activations from -20 to 20 (the clip range)."""
    width = 3
    units = ntm_lib.head_param_count(num_read, num_write, width, radius)
    with jax.enable_x64(True):
        p = jnp.linspace(-20.0, 20.0, 4 * units, dtype=jnp.float64).reshape(4, units)
        p = p[:, jax.random.permutation(jax.random.key(0), units)]
        activate = functools.partial(ntm_lib.head_activations, num_read=num_read,
                                     num_write=num_write, width=width, radius=radius)
        heads, pullback = jax.vjp(activate, p)
        cotangents = tuple(jax.random.normal(jax.random.key(i + 1), h.shape, jnp.float64)
                           for i, h in enumerate(heads))
        want = pullback(cotangents)[0]
        got = ntm_lib.head_activations_backward(heads, cotangents)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
