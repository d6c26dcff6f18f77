"""Generation one step per token (``SequenceModel.decode_step``) equals re-running the segment.

For every registered model at its tiny config (and the variants whose decoding differs:
SHA-RNN's memory trims and segment/memory lengths, Transformer-XL's ``same_length`` and
``clamp_len``, rotary positions, RMT's backbones):

* the logits of every position of a stream, over several segment boundaries, equal the
  logits the model gives at that position when it runs the partial segment with the carry
  of the last boundary (the reference path, ``sample.generate_reference``);
* greedy and sampled generation give the same tokens on both paths;
* the step compiles once for all positions (the position is a traced index).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recurrentlab.models import model_class, model_config, registered_models
from recurrentlab.models.base import build_model
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
    "rmt_xl": ("rmt", dict(backbone="transformer_xl", max_len=1024, num_layers=2)),
    "rmt_xl_cache": ("rmt", dict(backbone="transformer_xl", max_len=1024, mem_len=6,
                                 num_mem_tokens=3, num_layers=2, clamp_len=5)),
    "rmt_xl_cache_read": ("rmt", dict(backbone="transformer_xl", max_len=1024, mem_len=13,
                                      num_mem_tokens=3, num_layers=2,
                                      read_mem_from_cache=True)),
    "lstm_untied": ("lstm", dict(tie_weights=False)),
}


def tiny(variant):
    name, fields = VARIANTS[variant]
    config = model_config(name, **{**model_class(name).tiny_config(), **fields})
    return build_model(config, vocab_size=VOCAB, seed=0)


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
