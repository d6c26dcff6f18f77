"""Generation one step per token (``SequenceModel.decode_step``) equals re-running the segment.

For every registered model at its tiny config (and the variants whose decoding differs:
SHA-RNN's memory trims and segment/memory lengths, Transformer-XL's ``same_length`` and
``clamp_len``, rotary positions, RMT's backbones):

* the logits of every position of a stream, over several segment boundaries, equal the
  logits the model gives at that position when it runs the partial segment with the carry
  of the last boundary (the reference path, ``sample.generate_reference``);
* greedy and sampled generation give the same tokens on both paths;
* the step compiles once for all positions (the position is a traced index).

RMT's decode state holds every layer's keys of the read-memory rows, recomputed at each
boundary (``RMT._read_row_inputs``). At the 0.02-std initialisation a wrong read-row
computation (memory rows seeing the cache, a wrong cache mask or cache length, rows in the
wrong order) moved the logits by ~1e-6, under the tolerance, and passed; and the
``shared_random`` initial memory makes the read rows identical, so whatever they attend to they
average the same values. The RMT variants therefore run with parameters scaled to a trained
model's size (``LOUD``) and independent initial memory vectors, and the read rows' keys are
also checked directly against the layer inputs the segment run stores in its XL cache.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recurrentlab.models import model_class, model_config, registered_models
from recurrentlab.models.base import build_model, reset_carry
from recurrentlab.sample import Decoder, generate, generate_reference, make_segment_fn

VOCAB = 19
S = 4  # segment length
MODELS = registered_models()

VARIANTS = {  # name -> (model, overrides of its tiny config)
    **{name: (name, {}) for name in MODELS},
    "sha_rnn_window": ("sha_rnn", dict(mem_trim="window")),
    "sha_rnn_mem_eq_seg": ("sha_rnn", dict(mem_len=S)),  # s = m: the whole memory is read
    "sha_rnn_short_mem": ("sha_rnn", dict(mem_len=3)),  # s > m, authors' slice
    "sha_rnn_short_mem_window": ("sha_rnn", dict(mem_len=3, mem_trim="window")),
    "sha_rnn_no_mem": ("sha_rnn", dict(mem_len=0, attn_layers=(0, 1))),
    "transformer_rotary": ("transformer", dict(positions="rotary", num_layers=2)),
    "transformer_xl_same_length": ("transformer_xl", dict(same_length=True, mem_len=6)),
    "transformer_xl_clamp": ("transformer_xl", dict(clamp_len=3, num_layers=2, mem_len=5)),
    "transformer_xl_no_mem": ("transformer_xl", dict(mem_len=0, tie_weights=False)),
    "rmt_two_layers": ("rmt", dict(num_layers=2, num_mem_tokens=3, positions="rotary")),
    "rmt_learned": ("rmt", dict(num_layers=2, num_mem_tokens=3, mem_init="learned")),
    # RMT on Transformer-XL (t = S + 2m rows per segment): mem_len 0, below S, between S and
    # t, >= t; memory rows reading the cache or not; m >= 3 (positional leftovers that
    # depend on the cache length); 2-3 layers (the read rows of every layer but the first
    # come from the layers below)
    "rmt_xl": ("rmt", dict(backbone="transformer_xl", max_len=1024, num_layers=2,
                           mem_init="learned", dropout=0.0)),
    "rmt_xl_shared_init": ("rmt", dict(backbone="transformer_xl", max_len=1024, mem_len=6,
                                       num_mem_tokens=3, num_layers=2)),
    "rmt_xl_cache": ("rmt", dict(backbone="transformer_xl", max_len=1024, mem_len=6,
                                 num_mem_tokens=3, num_layers=2, clamp_len=5,
                                 mem_init="learned")),
    "rmt_xl_cache_read": ("rmt", dict(backbone="transformer_xl", max_len=1024, mem_len=13,
                                      num_mem_tokens=3, num_layers=2, mem_init="learned",
                                      read_mem_from_cache=True)),
    "rmt_xl_short_cache_read": ("rmt", dict(backbone="transformer_xl", max_len=1024,
                                            mem_len=2, num_mem_tokens=4, num_layers=3,
                                            mem_init="learned", read_mem_from_cache=True,
                                            dropout=0.0)),
    "rmt_xl_short_cache": ("rmt", dict(backbone="transformer_xl", max_len=1024, mem_len=3,
                                       num_mem_tokens=3, num_layers=2, mem_init="learned")),
    "rmt_xl_long_cache": ("rmt", dict(backbone="transformer_xl", max_len=1024, mem_len=14,
                                      num_mem_tokens=4, num_layers=3, mem_init="learned",
                                      dropout=0.0)),
    "lstm_untied": ("lstm", dict(tie_weights=False)),
}


# Weight matrices and embeddings scaled x10 (std ~0.2, a trained model's size rather than the
# 0.02 init; LayerNorms, biases and the initial memory as built), so that what a row attends
# to moves the logits far above the tolerance (see the module doc).
LOUD = {name for name, (model, _) in VARIANTS.items()
        if model in ("rmt", "transformer", "transformer_xl")}


def louder(path, p):
    return p if p.ndim < 2 or "memory_init" in jax.tree_util.keystr(path) else 10.0 * p


def tiny(variant):
    name, fields = VARIANTS[variant]
    config = model_config(name, **{**model_class(name).tiny_config(), **fields})
    model = build_model(config, vocab_size=VOCAB, seed=0)
    if variant in LOUD:
        nnx.update(model, jax.tree_util.tree_map_with_path(louder,
                                                           nnx.state(model, nnx.Param)))
    return model


def test_every_model_decodes_per_token():
    """Every registered model at its tiny config has the per-token path."""
    assert {"lstm", "sha_rnn", "ntm", "rmt", "transformer", "transformer_xl"} <= set(MODELS)
    for name in MODELS:
        assert tiny(name).decode_supported, name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_step_logits_equal_partial_segment_logits(variant):
    model = tiny(variant)
    if not model.decode_supported:
        pytest.skip(f"{variant}: no per-token decoding (generation re-runs the segment)")
    stream = np.asarray(jax.random.randint(jax.random.key(1), (3 * S + 2,), 0, VOCAB))
    run = make_segment_fn(model)
    decoder = Decoder(model, segment_len=S)
    carry = model.init_carry(1)
    for start in range(0, len(stream), S):
        segment = stream[start:start + S]
        for t in range(len(segment)):
            padded = np.zeros((1, S), np.int32)
            padded[0, :t + 1] = segment[:t + 1]
            expected, _ = run(carry, jnp.asarray(padded))
            got = decoder.feed(int(segment[t]))
            np.testing.assert_allclose(np.asarray(got), np.asarray(expected[0, t]),
                                       rtol=2e-5, atol=2e-5, err_msg=f"position {start + t}")
        if len(segment) == S:
            _, carry = run(carry, jnp.asarray(segment[None], jnp.int32))
    # one compile of the step for all positions and segments
    assert decoder._step._cache_size() == 1


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("temperature, top_k", [(0.0, 0), (1.0, 0), (0.7, 5)])
def test_generate_equals_reference_token_for_token(variant, temperature, top_k):
    model = tiny(variant)
    prompt = np.asarray([3, 1, 4, 1, 5], np.int32)  # one full segment and a partial one
    args = dict(segment_len=S, temperature=temperature, top_k=top_k, seed=2)
    length = 3 * S + 1  # crosses three more segment boundaries
    new = generate(model, prompt, length, **args)
    old = generate_reference(model, prompt, length, **args)
    np.testing.assert_array_equal(new, old)
    assert new.shape == (length,)


RMT_XL = sorted(v for v, (name, fields) in VARIANTS.items()
                if name == "rmt" and fields.get("backbone") == "transformer_xl")


def rmt_xl_streams(model, segments=4):
    """Boundary carries of two streams, stream 1 reset (``reset_carry``) after the second
    segment, so the streams hold different cache lengths, and one started, one not; yields
    ``(carry, segment Int[2, S])`` at each boundary."""
    run = make_segment_fn(model)
    carry = model.init_carry(2)
    tokens = np.asarray(jax.random.randint(jax.random.key(3), (segments, 2, S), 0, VOCAB))
    for n, segment in enumerate(tokens):
        if n == 2:
            carry = reset_carry(carry, model.init_carry(2), jnp.asarray([False, True]))
        yield carry, jnp.asarray(segment, jnp.int32)
        _, carry = run(carry, jnp.asarray(segment, jnp.int32))


@pytest.mark.parametrize("variant", RMT_XL)
def test_rmt_xl_batch_with_reset_stream_steps_equal_segment(variant):
    """Two streams decoded together, one of them reset mid-stream: per-stream cache masks and
    cache lengths in the read-memory rows."""
    model = tiny(variant)
    graphdef, params = nnx.split(model)
    init = jax.jit(lambda p, c: nnx.merge(graphdef, p).decode_init(c, 2, S))
    step = jax.jit(lambda p, x, st: nnx.merge(graphdef, p).decode_step(x, st))
    run = make_segment_fn(model)
    for n, (carry, segment) in enumerate(rmt_xl_streams(model)):
        state = init(params, carry)
        for t in range(S):
            got, state = step(params, segment[:, t], state)
            padded = jnp.zeros((2, S), jnp.int32).at[:, :t + 1].set(segment[:, :t + 1])
            expected, _ = run(carry, padded)
            np.testing.assert_allclose(np.asarray(got), np.asarray(expected[:, t]), rtol=2e-5,
                                       atol=2e-5, err_msg=f"segment {n} position {t}")


def rmt_field(variant, field):
    return {**model_class("rmt").tiny_config(), **VARIANTS[variant][1]}.get(field, 0)


@pytest.mark.parametrize("variant", [v for v in RMT_XL if rmt_field(v, "mem_len")
                                     >= S + 2 * rmt_field(v, "num_mem_tokens")])
def test_rmt_xl_read_row_keys_equal_segment_layer_inputs(variant):
    """With ``mem_len`` >= the segment's s + 2m rows the XL cache after a segment holds every
    layer's input on all its rows: the decode state's keys and values of the read-memory
    rows (and of the cache) are those of the inputs the segment run computed."""
    model = tiny(variant)
    m, big_m, t = model.num_mem_tokens, model.mem_len, S + 2 * model.num_mem_tokens
    graphdef, params = nnx.split(model)
    init = jax.jit(lambda p, c: nnx.merge(graphdef, p).decode_init(c, 2, S))
    keys_of = jax.jit(lambda p, rows: [layer.cache_keys(x) for layer, x in zip(
        nnx.merge(graphdef, p).backbone.layers, rows, strict=True)])
    run = make_segment_fn(model)
    for n, (carry, segment) in enumerate(rmt_xl_streams(model)):
        state = init(params, carry)
        _, after = run(carry, segment)
        read = keys_of(params, [c[:, big_m - t:big_m - t + m] for c in after.xl.cache])
        cached = keys_of(params, carry.xl.cache)
        stream, row = (np.arange(big_m)[None, :] >= np.asarray(state.kv_start)[:, None]
                       ).nonzero()  # the valid cache rows
        for k, v, (read_k, read_v), (cache_k, _) in zip(state.k, state.v, read, cached,
                                                          strict=True):
            for got, want in ((k, read_k), (v, read_v)):
                np.testing.assert_allclose(np.asarray(got[:, :, big_m:big_m + m]),
                                           np.asarray(want), rtol=1e-5, atol=1e-5,
                                           err_msg=f"segment {n}: read rows")
            np.testing.assert_allclose(np.asarray(k)[stream, :, row],
                                       np.asarray(cache_k)[stream, :, row], rtol=1e-5,
                                       atol=1e-5, err_msg=f"segment {n}: cache")


def test_bench_generation_latency_times_both_paths():
    from recurrentlab.bench.measure import generation_latency

    model = tiny("lstm")
    args = dict(segment_len=S, tokens=3, vocab_size=VOCAB, warmup=1)
    step = generation_latency(model, **args)  # the path generate takes
    segment = generation_latency(model, path="segment", **args)
    assert step["path"] == "step" and segment["path"] == "segment"
    assert step["ms_per_token"] > 0 and segment["ms_per_token"] > 0
    with pytest.raises(ValueError, match="unknown"):
        generation_latency(model, path="beam", **args)
