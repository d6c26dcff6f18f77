"""Agreement with the authors' code outside the configurations the paper runs, in float64.

Each model runs segment by segment (with a carry reset of one stream part-way) and is compared
with a direct computation written here from the authors' code, one stream at a time:

* Transformer-XL and RMT (kimiyoung/transformer-xl, booydar/LM-RMT ``mem_transformer.py``):
  the cache as the reference holds it (a list of its actual rows, 0 .. mem_len), the mask as
  the reference builds it, and O(T²) attention with explicit relative distances, including
  the values the reference's rel-shift leaves past the causal limit (which RMT memory rows
  see): 0 one key past it, query i+1's term at distance ``2L + t + 1 + i - j`` further on.
  That rule is itself checked against the reference's pad-and-view shift, written in torch.
  Grid: memory tokens 0 (plain XL) and 1-4 x ``mem_len`` below, equal to and above the segment
  (and above the rows RMT caches per segment), so the cache is empty, filling and full.
* SHA-RNN (Smerity/sha-rnn ``model.py``): the memory as Python lists trimmed with the authors'
  ``mem[-(m - s):]`` and kept as ``bigh[-m:]``, ``mem_len`` below, equal to and above the
  segment length, fixed and varying segment lengths, and the ``"window"`` trim.

Parameters are perturbed (so zero-initialised gates and small positional weights hide
nothing) and cast to float64 under ``jax.enable_x64``; tolerances are float64-sized.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from recurrentlab.models import build_model, model_config, reset_carry

VOCAB = 11
ATOL = 1e-9


def perturbed(name: str, seed: int = 0, scale: float = 0.5, **fields):
    """A tiny model whose every parameter gets N(0, scale²) noise added."""
    model = build_model(model_config(name, **fields), vocab_size=VOCAB, seed=seed)
    state = nnx.state(model, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    noisy = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    nnx.update(model, jax.tree.unflatten(tree, noisy))
    return model


def float64(tree):
    """Every floating leaf as float64 (call under ``jax.enable_x64``)."""
    def cast(x):
        return x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


def run_model(model, segments, reset_before, batch):
    """The model in float64, segment by segment; stream 0 is reset before ``reset_before``.
    Returns per-segment logits and carries (numpy)."""
    for _, node in nnx.iter_graph(model):  # nnx.Embed computes in its stored dtype
        if isinstance(node, nnx.Module) and getattr(node, "dtype", None) == jnp.float32:
            node.dtype = jnp.float64
    graphdef, state = nnx.split(model)
    state = float64(state)
    call = jax.jit(lambda st, x, c: nnx.merge(graphdef, st)(x, c))
    fresh = float64(model.init_carry(batch))
    carry, logits, carries = fresh, [], []
    for n, x in enumerate(segments):
        if n == reset_before:
            carry = reset_carry(carry, fresh, jnp.array([True] + [False] * (batch - 1)))
        out, carry = call(state, jnp.asarray(x), carry)
        logits.append(np.asarray(out))
        carries.append(jax.tree.map(np.asarray, carry))
    return logits, carries


def p64(x) -> np.ndarray:
    return np.asarray(x[...], np.float64)


# ----------------------------------------------------------------------------- XL / RMT direct


def sinusoid(distance: float, d: int) -> np.ndarray:
    freq = 1.0 / 10000.0 ** (np.arange(0, d, 2) / d)
    return np.concatenate([np.sin(distance * freq), np.cos(distance * freq)])


def layer_norm(x, norm) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p64(norm.scale) + p64(norm.bias)


def positional_source(i: int, j: int, cache: int, t: int) -> tuple[int, float | None]:
    """Which query row and which distance the reference's shifted positional term holds at
    query i, key j (its own key index over [cache (``cache`` rows); t rows]); None = 0."""
    if j <= cache + i:
        return i, float(cache + i - j)
    if j == cache + i + 1:
        return i, None
    return i + 1, float(2 * cache + t + 1 + i - j)


def reference_visible(i: int, j: int, cache: int, t: int, m: int, read_cache: bool) -> bool:
    """LM-RMT's ``dec_attn_mask`` (``mem_at_end``), as visibility: causal; read-memory rows see
    the read block, write rows the write block; memory rows see the cache iff ``read_cache``."""
    if m and j < cache and (i < m or i >= t - m):
        return read_cache
    if m and i < m and cache <= j < cache + m:
        return True
    if m and i >= t - m and j >= cache + t - m:
        return True
    return j <= cache + i


def xl_stream_segment(xl, rows, caches, *, m, mem_len, clamp_len, read_cache):
    """One stream, one segment through the XL stack as the reference computes it.

    ``rows`` [t, d] (already embedded); ``caches``: per layer a [L, d] array of the rows the
    reference holds (L = 0 .. mem_len). Returns the last layer's output and the new caches.
    """
    t, d = rows.shape
    heads = xl.num_heads
    dh = xl.d_head
    u, v_r = p64(xl.u), p64(xl.v)
    h, new_caches = rows, []
    for layer, cache in zip(xl.layers, caches, strict=True):
        L = cache.shape[0]  # noqa: N806
        cat = np.concatenate([cache, h], axis=0)
        q, k, v = np.split(cat @ p64(layer.qkv.kernel), 3, axis=-1)
        q = q[-t:].reshape(t, heads, dh)
        k, v = k.reshape(L + t, heads, dh), v.reshape(L + t, heads, dh)
        w_r = p64(layer.r_net.kernel)
        out = np.zeros((t, heads, dh))
        for hd in range(heads):
            for i in range(t):
                scores = np.full(L + t, -np.inf)
                for j in range(L + t):
                    if not reference_visible(i, j, L, t, m, read_cache):
                        continue
                    row, dist = positional_source(i, j, L, t)
                    position = 0.0
                    if dist is not None:
                        dist = min(dist, clamp_len) if clamp_len else dist
                        r = (sinusoid(dist, d) @ w_r).reshape(heads, dh)[hd]
                        position = (q[row, hd] + v_r[hd]) @ r
                    scores[j] = ((q[i, hd] + u[hd]) @ k[j, hd] + position) / math.sqrt(dh)
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                out[i, hd] = weights @ v[:, hd]
        new_caches.append(cat[-mem_len:] if mem_len else cat[:0])
        h = layer_norm(h + out.reshape(t, heads * dh) @ p64(layer.out.kernel), layer.ln_attn)
        f = np.maximum(h @ p64(layer.fc1.kernel) + p64(layer.fc1.bias), 0.0)
        h = layer_norm(h + f @ p64(layer.fc2.kernel) + p64(layer.fc2.bias), layer.ln_ff)
    return h, new_caches


def direct_xl_run(model, segments, reset_before, *, m, read_cache=False):
    """The reference's forward for every segment and stream (RMT if ``m``, else plain XL)."""
    xl = model.backbone if m else model
    mem_len, clamp_len, d = xl.mem_len, xl.clamp_len, xl.d_model
    emb = p64(xl.embed.embedding)
    batch = segments[0].shape[0]
    init_memory = p64(model.memory_init) if m else None
    caches = [[np.zeros((0, d))] * xl.num_layers for _ in range(batch)]
    memory = [init_memory for _ in range(batch)]
    logits, lengths = [], []
    for n, x in enumerate(segments):
        if n == reset_before:
            caches[0] = [np.zeros((0, d))] * xl.num_layers
            memory[0] = init_memory
        s = x.shape[1]
        seg_logits, seg_lengths = [], []
        for b in range(batch):
            seg_lengths.append(caches[b][0].shape[0])
            e = emb[np.asarray(x[b])] * math.sqrt(d)
            rows = np.concatenate([memory[b], e, memory[b]]) if m else e
            h, caches[b] = xl_stream_segment(xl, rows, caches[b], m=m, mem_len=mem_len,
                                             clamp_len=clamp_len, read_cache=read_cache)
            if m:
                memory[b] = h[m + s:]
            seg_logits.append(h[m:m + s] @ emb.T + p64(xl.out_bias))
        logits.append(np.stack(seg_logits))
        lengths.append(seg_lengths)
    return logits, lengths, memory, caches


def test_positional_leftovers_follow_the_references_shift():
    """``positional_source`` (used by every direct computation here) is what the reference's
    ``_rel_shift`` (zero column on the left, view as [klen + 1, qlen], drop a row) leaves."""
    for t, cache in [(5, 0), (7, 3), (9, 9), (4, 12)]:
        klen = cache + t
        # column c of the raw term holds distance klen - 1 - c (the reference's pos_seq);
        # encode (row, distance) so the shifted entries say where they came from
        raw = torch.zeros(t, klen, dtype=torch.float64)
        for i in range(t):
            for c in range(klen):
                raw[i, c] = 1000.0 * (i + 1) + (klen - 1 - c)
        padded = torch.cat([torch.zeros(t, 1, dtype=torch.float64), raw], dim=1)
        shifted = padded.view(klen + 1, t)[1:].view(t, klen)
        for i in range(t):
            for j in range(klen):
                row, dist = positional_source(i, j, cache, t)
                want = 0.0 if dist is None else 1000.0 * (row + 1) + dist
                assert float(shifted[i, j]) == want, (t, cache, i, j)


def cache_states(lengths, mem_len):
    states = set()
    for seg in lengths:
        for length in seg:
            states.add("empty" if length == 0 else "full" if length == mem_len else "filling")
    return states


S = 3  # tokens per segment
RMT_GRID = [(m, mem) for m in (1, 2, 3, 4) for mem in ("below", "equal", "rows", "above")]


def grid_mem_len(case: str, rows: int) -> int:
    """mem_len below / equal to the segment, equal to the rows cached per segment, or above
    them (the cache then fills over two segments)."""
    return {"below": S - 1, "equal": S, "rows": rows, "above": 2 * rows - 1}[case]


def check_xl_grid(model, m, mem_len, rows, *, read_cache=False, segments=4):
    batch = 2
    xs = [np.asarray(jax.random.randint(jax.random.key(10 + n), (batch, S), 0, VOCAB))
          for n in range(segments)]
    with jax.enable_x64(True):
        logits, carries = run_model(model, xs, reset_before=2, batch=batch)
    want, lengths, memory, caches = direct_xl_run(model, xs, 2, m=m, read_cache=read_cache)
    for n in range(segments):
        np.testing.assert_allclose(logits[n], want[n], atol=ATOL, rtol=ATOL,
                                   err_msg=f"segment {n}, cache rows {lengths[n]}")
    last = carries[-1]
    xl = last.xl if m else last
    np.testing.assert_array_equal(xl.length, [c[0].shape[0] for c in caches])
    for b in range(batch):
        for layer, cache in enumerate(caches[b]):
            held = xl.cache[layer][b, mem_len - cache.shape[0]:]
            np.testing.assert_allclose(held, cache, atol=ATOL, rtol=ATOL)
        if m:
            np.testing.assert_allclose(last.memory[b], memory[b], atol=ATOL, rtol=ATOL)
    states = cache_states(lengths, mem_len)
    assert {"empty", "full"} <= states
    assert ("filling" in states) == (mem_len > rows)


@pytest.mark.parametrize("m,mem", RMT_GRID)
def test_rmt_with_xl_cache_matches_the_reference(m, mem):
    rows = S + 2 * m
    mem_len = grid_mem_len(mem, rows)
    model = perturbed("rmt", num_mem_tokens=m, mem_len=mem_len, num_layers=1, d_model=8,
                      num_heads=2, d_ff=16, dropout=0.0, backbone="transformer_xl")
    check_xl_grid(model, m, mem_len, rows)


@pytest.mark.parametrize("fields", [dict(read_mem_from_cache=True, num_layers=2),
                                    dict(clamp_len=2)])
def test_rmt_reference_grid_options(fields):
    """Two layers with memory rows reading the cache; clamped distances (leftovers too)."""
    m, rows = 3, S + 6
    mem_len = grid_mem_len("above", rows)
    base = dict(num_layers=1, d_model=8, num_heads=2, d_ff=16, dropout=0.0)
    model = perturbed("rmt", num_mem_tokens=m, mem_len=mem_len, **{**base, **fields})
    check_xl_grid(model, m, mem_len, rows, read_cache=fields.get("read_mem_from_cache", False))


@pytest.mark.parametrize("mem", ["below", "equal", "above"])
def test_transformer_xl_cache_states_match_the_reference(mem):
    mem_len = grid_mem_len(mem, S)
    model = perturbed("transformer_xl", mem_len=mem_len, num_layers=2, d_model=8, num_heads=2,
                      d_ff=16, dropout=0.0)
    check_xl_grid(model, 0, mem_len, S)


# ----------------------------------------------------------------------------- SHA-RNN direct


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def sha_layer_norm(x, norm):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * p64(norm.scale) + p64(norm.bias)


def trim(memory: list, m: int, s: int, rule: str) -> list:
    """The authors' ``mem[-(m - s):]`` (Python's slice: ``-0`` keeps all, a positive start
    drops the oldest), or the ``window`` rule (at most m - s states)."""
    if rule == "window" and m - s <= 0:
        return []
    return memory[-(m - s):]


def direct_sha_run(model, segments, reset_before, rule):
    """The authors' forward, one stream at a time, memories as Python lists of states."""
    d, m = model.d_model, model.mem_len
    emb = p64(model.embed)
    batch = segments[0].shape[0]
    zeros = [(np.zeros(d), np.zeros(d)) for _ in model.blocks]
    lstm = [list(zeros) for _ in range(batch)]
    memory = [{n: [] for n in model.attn_layers} for _ in range(batch)]
    logits = []
    for k, x in enumerate(segments):
        if k == reset_before:
            lstm[0], memory[0] = list(zeros), {n: [] for n in model.attn_layers}
        out = []
        for b in range(batch):
            h = emb[np.asarray(x[b])]
            s = h.shape[0]
            for n, block in enumerate(model.blocks):
                inp = sha_layer_norm(h, block.ln_start)
                w_ih, w_hh = p64(block.lstm.w_ih), p64(block.lstm.w_hh)
                bias = p64(block.lstm.b_ih) + p64(block.lstm.b_hh)
                hc, c = lstm[b][n]
                hs = []
                for i in range(s):
                    gi, gf, gg, go = np.split(inp[i] @ w_ih + bias + hc @ w_hh, 4)
                    c = sigmoid(gf) * c + sigmoid(gi) * np.tanh(gg)
                    hc = sigmoid(go) * np.tanh(c)
                    hs.append(hc)
                lstm[b][n] = (hc, c)
                h = np.stack(hs)
                if block.attn is not None:
                    at = block.attn
                    mh, hm = sha_layer_norm(h, block.ln_mem), sha_layer_norm(h, block.ln_mid)
                    kept = trim(memory[b][n], m, s, rule) if m else []
                    bigh = kept + list(mh)
                    memory[b][n] = bigh[-m:] if m else []
                    keys = np.stack(bigh)
                    over = sigmoid(p64(at.vs)) @ p64(at.overparam.kernel) + p64(at.overparam.bias)
                    v_gate = sigmoid(over[d:]) * np.tanh(over[:d])
                    q = sigmoid(p64(at.qs)) * sha_layer_norm(
                        hm @ p64(at.q.kernel) + p64(at.q.bias), at.q_norm)
                    att = np.zeros_like(hm)
                    for i in range(s):
                        visible = len(kept) + i + 1  # the memory, then causal
                        scores = keys[:visible] @ (sigmoid(p64(at.ks)) * q[i]) / math.sqrt(d)
                        w = np.exp(scores - scores.max())
                        att[i] = (w / w.sum()) @ (v_gate * keys[:visible])
                    h = att + hm
                u = sha_layer_norm(h, block.ln_xff) @ p64(block.boom.linear.kernel)
                u = u + p64(block.boom.linear.bias)
                u = u * sigmoid(1.702 * u)
                h = u.reshape(s, -1, d).sum(-2) + sha_layer_norm(h, block.ln_ff)
            out.append(h @ emb.T + p64(model.decoder_bias))
        logits.append(np.stack(out))
    return logits, memory


# mem_len 1, 3, 4, 6 against segments of 4: s >= 2m, m < s < 2m, s = m, s < m; the varying
# schedule (2, 6, 2, 6) moves between s < m and s >= m with a partly filled memory.
SHA_GRID = [
    pytest.param(mem_len, lengths, rule, id=f"mem{mem_len}-seg{'.'.join(map(str, lengths))}-{rule}")
    for mem_len in (1, 3, 4, 6)
    for lengths in ((4, 4, 4, 4), (2, 6, 2, 6))
    for rule in ("authors", "window")
]


def tiny_sha(mem_len: int, rule: str):
    return perturbed("sha_rnn", d_model=8, d_ff=16, num_layers=2, mem_len=mem_len,
                     mem_trim=rule, dropout_input=0.0, dropout_hidden=0.0, dropout_attn=0.0,
                     dropout_attn_probs=0.0, dropout_output=0.0)


@pytest.mark.parametrize("mem_len,lengths,rule", SHA_GRID)
def test_sha_rnn_memory_matches_the_authors(mem_len, lengths, rule):
    model = tiny_sha(mem_len, rule)
    batch = 2
    xs = [np.asarray(jax.random.randint(jax.random.key(20 + n), (batch, s), 0, VOCAB))
          for n, s in enumerate(lengths)]
    with jax.enable_x64(True):
        logits, carries = run_model(model, xs, reset_before=2, batch=batch)
    want, memory = direct_sha_run(model, xs, 2, rule)
    for n in range(len(xs)):
        np.testing.assert_allclose(logits[n], want[n], atol=ATOL, rtol=ATOL,
                                   err_msg=f"segment {n} of {lengths}")
    last = carries[-1]
    for b in range(batch):
        (held,) = memory[b].values()
        assert int(last.mem_count[b]) == len(held)
        np.testing.assert_allclose(last.memory[0][b, mem_len - len(held):], np.stack(held),
                                   atol=ATOL, rtol=ATOL)


def test_sha_rnn_segment_equal_to_memory_reads_the_previous_segment():
    """At s = mem_len the authors' slice keeps the whole memory: the second segment's logits
    depend on the first segment's tokens even with the LSTM state cleared (no longer with the
    ``window`` trim, which reads no memory there)."""
    x = jax.random.randint(jax.random.key(3), (2, 8), 0, VOCAB)
    y = x.at[:, 1].set((x[:, 1] + 1) % VOCAB)
    for rule, reads in (("authors", True), ("window", False)):
        graphdef, state = nnx.split(tiny_sha(4, rule))
        a = np.asarray(_second_segment(graphdef, state, x))
        b = np.asarray(_second_segment(graphdef, state, y))
        assert (not np.allclose(a, b, atol=1e-6)) == reads, rule


@functools.partial(jax.jit, static_argnums=0)
def _second_segment(graphdef, state, tokens):
    """Logits of the second 4-token segment, carrying only the memory (LSTM state cleared)."""
    m = nnx.merge(graphdef, state)
    _, carry = m(tokens[:, :4], m.init_carry(2))
    carry = carry._replace(lstm=m.init_carry(2).lstm)
    return m(tokens[:, 4:], carry)[0]
