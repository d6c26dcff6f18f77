"""Transformer-XL: segments with the cache == one long pass, stop-gradient cache, relative
attention against the direct formula, causality, longer evaluation memory, parameter count."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recurrentlab.models import build_model, model_config
from recurrentlab.models.layers import count_params, sinusoid
from recurrentlab.models.transformer_xl import expected_params, relative_attention
from recurrentlab.ops.attention import MaskSpec

VOCAB = 17


def tiny(**fields):
    base = dict(num_layers=2, d_model=16, num_heads=2, d_ff=32, mem_len=8, dropout=0.0)
    base.update(fields)
    return build_model(model_config("transformer_xl", **base), vocab_size=VOCAB, seed=0)


def jitted(model):
    """``model(x, carry, train=, key=)`` compiled once per shape (eager op-by-op is slow)."""
    graphdef, state = nnx.split(model)

    @functools.partial(jax.jit, static_argnames="train")
    def call(state, x, carry, key, train):
        return nnx.merge(graphdef, state)(x, carry, train=train, key=key)

    return lambda x, carry, train=False, key=None: call(state, x, carry, key, train)


def tokens(seed, shape, low=0, high=VOCAB):
    return jax.random.randint(jax.random.key(seed), shape, low, high)


def run_segments(model, x, seg):
    carry = model.init_carry(x.shape[0])
    f = jitted(model)
    out = []
    for start in range(0, x.shape[1], seg):
        logits, carry = f(x[:, start:start + seg], carry)
        out.append(logits)
    return jnp.concatenate(out, axis=1), carry


@pytest.mark.parametrize("clamp_len", [0, 5])
def test_segments_with_cache_equal_one_long_pass(clamp_len):
    model = tiny(clamp_len=clamp_len)  # mem_len 8 covers the past of every 4-token segment
    x = tokens(0, (2, 12))
    full, _ = jitted(model)(x, model.init_carry(2))
    seg, carry = run_segments(model, x, 4)
    np.testing.assert_allclose(np.asarray(seg), np.asarray(full), atol=2e-5, rtol=2e-5)
    assert carry.length.tolist() == [8, 8]
    # The masked empty cache is the reference's zero-length cache: mem_len 0 gives the same.
    nomem = tiny(clamp_len=clamp_len, mem_len=0)
    plain, _ = jitted(nomem)(x, nomem.init_carry(2))
    np.testing.assert_allclose(np.asarray(plain), np.asarray(full), atol=2e-5, rtol=2e-5)


def test_short_cache_forgets_and_longer_eval_memory_works():
    short = tiny(mem_len=4)
    x = tokens(1, (2, 16))
    full, _ = jitted(short)(x, short.init_carry(2))
    seg_short, _ = run_segments(short, x, 4)
    # The third segment's first query sees 4 cached tokens, not the 8 before it.
    assert not np.allclose(seg_short[:, 8:], full[:, 8:], atol=1e-4)
    # Evaluation with a longer memory: a model built with mem_len 12, given the same params.
    long = build_model(model_config("transformer_xl", num_layers=2, d_model=16, num_heads=2,
                                    d_ff=32, mem_len=12, dropout=0.0),
                       vocab_size=VOCAB, seed=123)
    nnx.update(long, nnx.state(short, nnx.Param))
    seg_long, carry = run_segments(long, x, 4)
    np.testing.assert_allclose(np.asarray(seg_long), np.asarray(full), atol=2e-5, rtol=2e-5)
    assert carry.cache[0].shape == (2, 12, 16)


def test_cache_is_gradient_stopped():
    model = tiny(tie_weights=False)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    seg1 = tokens(2, (2, 4), 0, 8)  # tokens 0..7 appear only in segment 1
    seg2 = tokens(3, (2, 4), 8, VOCAB)  # tokens 8..16 only in segment 2
    targets = tokens(4, (2, 4))

    def loss2(p):
        m = nnx.merge(graphdef, p, rest)
        _, carry = m(seg1, m.init_carry(2))
        logits, _ = m(seg2, carry)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))

    grads = jax.jit(jax.grad(loss2))(params)
    emb_grad = np.asarray(grads["embed"]["embedding"][...])
    assert np.all(emb_grad[:8] == 0.0)
    assert np.any(emb_grad[8:] != 0.0)
    # ... yet segment 2 does depend on segment 1 through the cache.
    m = jitted(model)
    _, c1 = m(seg1, model.init_carry(2))
    _, c1b = m((seg1 + 1) % 8, model.init_carry(2))
    assert not np.allclose(m(seg2, c1)[0], m(seg2, c1b)[0], atol=1e-5)


def test_causality_with_cache():
    model = tiny()
    x = tokens(5, (2, 8))
    carry = model.init_carry(2)
    model = jitted(model)
    _, carry = model(tokens(6, (2, 8)), carry)
    t = 3
    y = x.at[:, t].set((x[:, t] + 1) % VOCAB)
    lx, cx = model(x, carry)
    ly, cy = model(y, carry)
    np.testing.assert_array_equal(np.asarray(lx[:, :t]), np.asarray(ly[:, :t]))
    assert not np.allclose(lx[:, t:], ly[:, t:])


@pytest.mark.parametrize("clamp_len", [0, 3])
def test_relative_attention_matches_direct_formula(clamp_len):
    """A_ij = (q_i+u)·k_j + (q_i+v)·W_r R_{i-j}, computed per pair without the shift trick."""
    b, h, t, m, d, dm = 2, 2, 4, 3, 4, 6
    l = m + t  # noqa: E741
    ks = jax.random.split(jax.random.key(7), 6)
    q = jax.random.normal(ks[0], (b, h, t, d))
    k = jax.random.normal(ks[1], (b, h, l, d))
    v = jax.random.normal(ks[2], (b, h, l, d))
    w_r = jax.random.normal(ks[3], (dm, h * d))
    u = jax.random.normal(ks[4], (h, d))
    vb = jax.random.normal(ks[5], (h, d))
    kv_start = jnp.array([0, 2])

    def clamp(dist):
        return np.minimum(dist, clamp_len) if clamp_len else dist

    distances = clamp(np.arange(l - 1, -1, -1)).astype(np.float32)
    r_head = (sinusoid(jnp.asarray(distances), dm) @ w_r).reshape(l, h, d).transpose(1, 0, 2)
    got = relative_attention(q, k, v, r_head, u, vb, spec=MaskSpec(), kv_start=kv_start)

    qn, kn, vn = (np.asarray(a, np.float64) for a in (q, k, v))
    wn, un, vbn = (np.asarray(a, np.float64) for a in (w_r, u, vb))
    want = np.zeros((b, h, t, d))
    for bi in range(b):
        for hi in range(h):
            for i in range(t):
                scores = np.full(l, -np.inf)
                for j in range(l):
                    if j > m + i or j < int(kv_start[bi]):
                        continue
                    dist = float(clamp(m + i - j))
                    freqs = 1.0 / 10000.0 ** (np.arange(0, dm, 2) / dm)
                    r = np.concatenate([np.sin(dist * freqs), np.cos(dist * freqs)])
                    wr = (r @ wn).reshape(h, d)[hi]
                    scores[j] = ((qn[bi, hi, i] + un[hi]) @ kn[bi, hi, j]
                                 + (qn[bi, hi, i] + vbn[hi]) @ wr) / np.sqrt(d)
                p = np.exp(scores - scores.max())
                p /= p.sum()
                want[bi, hi, i] = p @ vn[bi, hi]
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)


def test_position_bias_is_the_references_shift_over_its_own_cache_length():
    """With ``cache_len`` L per stream, the bias over the L valid cache keys and the segment is
    the reference's ``_rel_shift`` (torch: zero column, view as [klen + 1, t], drop a row) of
    the raw term over its own klen = L + t keys, every entry included: also those past the
    causal limit, which RMT memory rows see. Without ``cache_len`` that holds for L = M only."""
    import torch

    from recurrentlab.models.transformer_xl import relative_position_bias

    b, h, t, m, d = 3, 2, 6, 5, 4
    l = m + t  # noqa: E741
    ks = jax.random.split(jax.random.key(11), 3)
    q = jax.random.normal(ks[0], (b, h, t, d))
    r_head = jax.random.normal(ks[1], (h, l, d))
    r_bias = jax.random.normal(ks[2], (h, d))
    cache_len = jnp.array([0, 2, m])
    got = np.asarray(relative_position_bias(q, r_head, r_bias, cache_len))
    plain = np.asarray(relative_position_bias(q, r_head, r_bias))
    raw = np.einsum("bhtd,hld->bhtl", np.asarray(q + r_bias[None, :, None]), np.asarray(r_head))
    for bi, cache in enumerate([0, 2, m]):
        klen = cache + t
        x = torch.tensor(raw[bi, :, :, m - cache:])  # the reference's pos_seq klen-1 .. 0
        padded = torch.cat([torch.zeros(h, t, 1, dtype=x.dtype), x], dim=-1)
        want = padded.view(h, klen + 1, t)[:, 1:].reshape(h, t, klen).numpy()
        np.testing.assert_allclose(got[bi, :, :, m - cache:], want, atol=1e-5, rtol=1e-5)
        same = np.allclose(plain[bi, :, :, m - cache:], want, atol=1e-5)
        assert same == (cache == m)


def test_dropout_is_explicit():
    model = tiny(dropout=0.2, attn_dropout=0.2)
    x = tokens(8, (2, 8))
    c = model.init_carry(2)
    model = jitted(model)
    base, _ = model(x, c)
    np.testing.assert_array_equal(np.asarray(model(x, c, train=True)[0]), np.asarray(base))
    a, _ = model(x, c, train=True, key=jax.random.key(0))
    a2, _ = model(x, c, train=True, key=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(a2))
    assert not np.allclose(a, base)


def test_parameter_count_does_not_depend_on_mem_len():
    for tie in (True, False):
        counts = {count_params(tiny(mem_len=mem, tie_weights=tie)) for mem in (0, 8, 32)}
        assert counts == {expected_params(VOCAB, 2, 16, 2, 8, 32, tie_weights=tie)}


def test_enwik8_size_is_41m():
    cfg = model_config("transformer_xl", num_layers=12, d_model=512, num_heads=8, d_ff=2048)
    abstract = nnx.eval_shape(lambda: build_model(cfg, vocab_size=204, seed=0))
    n = count_params(abstract)
    assert n == expected_params(204, 12, 512, 8, 64, 2048)
    assert 40.5e6 < n < 41.5e6


def test_configs():
    from pathlib import Path

    from recurrentlab.config import load_config_file, validate

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    for arg, mem in [("mem0", 0), ("mem10", 10), ("mem40", 40), ("mem100", 100), ("mem200", 200)]:
        config = load_config_file(experiments / "enwik8/transformer_xl.py", arg)
        validate(config)
        assert config.model.mem_len == mem and config.train.segment_len == 128
    paper = load_config_file(experiments / "enwik8/transformer_xl.py", "paper")
    assert paper.eval.model_overrides.to_dict() == dict(mem_len=2100, clamp_len=820,
                                                         same_length=True)
    for task in ("copy-6", "reverse-4-mem20", "associative_retrieval"):
        validate(load_config_file(experiments / "synthetic/transformer_xl.py", task))


def test_same_length_sees_exactly_mem_len_positions():
    """One layer: the output at position p depends on positions p-M+1..p only."""
    mem = 5
    model = tiny(num_layers=1, mem_len=mem, same_length=True)
    x = tokens(9, (2, 12))
    p = 10  # query position, in the third 4-token segment
    base, _ = run_segments(model, x, 4)
    outside = x.at[:, p - mem].set((x[:, p - mem] + 1) % VOCAB)
    inside = x.at[:, p - mem + 1].set((x[:, p - mem + 1] + 1) % VOCAB)
    out_logits, _ = run_segments(model, outside, 4)
    in_logits, _ = run_segments(model, inside, 4)
    np.testing.assert_allclose(np.asarray(out_logits[:, p]), np.asarray(base[:, p]), atol=1e-6)
    assert not np.allclose(in_logits[:, p], base[:, p], atol=1e-5)
    # Without same_length the same query also sees position p - M (it is still cached).
    free = tiny(num_layers=1, mem_len=mem)
    b2, _ = run_segments(free, x, 4)
    o2, _ = run_segments(free, outside, 4)
    assert not np.allclose(o2[:, p], b2[:, p], atol=1e-5)
    # While [cache; segment] holds at most mem_len keys, every query sees all of its past,
    # as in the reference (no extra mask when klen <= mem_len).
    np.testing.assert_allclose(np.asarray(b2[:, :4]), np.asarray(base[:, :4]), atol=1e-6)
