"""Torch peers of the SHA-RNN and the NTM, written from the papers in the authors' style.

Each peer computes the same function as this library's model (same parameters, same loss), with
the structure and loops of the PyTorch code the papers' results come from, so that
``ours ÷ peer`` compares implementations, not models. Copy our weights in with
:func:`load_sha_rnn` / :func:`load_ntm` (the bench does, so both sides train the same network;
``tests/test_torch_peers.py`` checks the losses and gradients agree).

``TorchSHARNN`` -- Merity (2019), in the layout of Smerity/sha-rnn ``model.py``: sequence-first
tensors, one ``nn.LSTM`` per block, ``LayerNorm(eps=1e-12)``, single-headed ``Attention`` with
``Overparam`` value gate and ``nn.Dropout`` on q, v and the attention probabilities, the
additive ``-inf`` causal mask concatenated after a zero block for the memory, memories trimmed
with ``mem[-(m - s):]`` and kept as ``bigh[-m:]``, ``Boom(shortcut=True)``, the decoder tied to
the embedding. The published ``model.py`` defines ``checkpoint`` as the identity, so nothing is
recomputed in the backward pass (``checkpoint=True`` wraps attention and Boom in
``torch.utils.checkpoint`` as its commented-out line would). Memory trim ``"authors"`` only.

``TorchNTM`` -- Graves et al. (2014) in the layout of loudinthecloud/pytorch-ntm
(``ntm/ntm.py``, ``head.py``, ``memory.py``, ``controller.py``): a Python loop over time steps;
per step an ``nn.LSTM`` controller called on one time step, one ``nn.Linear`` per head, and
per head content addressing (``F.cosine_similarity``-style), interpolation, a circular shift
by ``F.conv1d`` on the wrapped weighting **one batch row at a time** (pytorch-ntm's
``_shift`` loop; ``batched_shift=True`` does all rows in one grouped ``conv1d``), sharpening,
read ``w M`` and the erase/add write. What it computes is ours (Collier & Beel's recipe, see
``recurrentlab/models/ntm.py``): ``tanh`` on key and add, clipping to ±clip, the TensorFlow
``BasicLSTMCell`` controller (forget bias +1, mapped onto ``nn.LSTM``'s gate order), all heads
addressing ``M_{t-1}``, learned initial state; loss the summed bitwise cross-entropy per token
(``input_mode="bits"``, no marker targets), which equals our token cross-entropy.

Both peers train with ``torch.optim.Adam`` (the entry's lr, betas, eps) and
``clip_grad_norm_`` when ``train.clip_norm > 0``, on CPU with ``torch.set_num_threads``.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections
import numpy as np

from recurrentlab.models.sha_rnn import resolve_attn_layers


def _torch():
    import torch

    return torch


# --- SHA-RNN ----------------------------------------------------------------------------------


def torch_sha_rnn(vocab_size: int, model: ml_collections.ConfigDict, *,
                  checkpoint: bool = False):
    """The SHA-RNN peer: ``forward(x Long[s, b], hidden, mems) -> (logits [s, b, v], hidden,
    mems)``; ``hidden`` a list of ``(h, c)`` [1, b, d] per block or None, ``mems`` a list of
    [L, b, d] per attention block or None (no memory yet)."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    d, d_ff, layers = model.d_model, model.d_ff, model.num_layers
    m = model.mem_len
    attn_at = resolve_attn_layers(model.attn_layers, layers)
    rate_h, rate_a = model.dropout_hidden, model.dropout_attn
    rate_p = model.dropout_attn_probs

    def call(f, *args):
        if checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(f, *args, use_reentrant=False)
        return f(*args)

    class Overparam(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(d, 2 * d)

        def forward(self, x):
            c, f = self.l1(x).split(d, dim=-1)
            return torch.sigmoid(f) * torch.tanh(c)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qs = nn.Parameter(torch.zeros(1, 1, d))
            self.ks = nn.Parameter(torch.zeros(1, 1, d))
            self.vs = nn.Parameter(torch.zeros(1, 1, d))
            self.q = nn.Linear(d, d)
            self.qln = nn.LayerNorm(d, eps=1e-12)
            self.vq = Overparam()
            self.drop = nn.Dropout(rate_a)
            self.drop_probs = nn.Dropout(rate_p)

        def forward(self, query, key, value, attn_mask):  # [s, b, d], [l, b, d] x2, [s, l]
            qs, ks = torch.sigmoid(self.qs), torch.sigmoid(self.ks)
            vs = self.vq(torch.sigmoid(self.vs))
            q, k, v = qs * self.qln(self.q(query)), ks * key, vs * value
            q, v = self.drop(q), self.drop(v)
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # batch first
            scores = torch.matmul(q, k.transpose(-1, -2).contiguous()) / math.sqrt(d)
            weights = self.drop_probs(F.softmax(scores + attn_mask, dim=-1))
            return torch.matmul(weights, v).transpose(0, 1)

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear1 = nn.Linear(d, d_ff)
            self.dropout = nn.Dropout(rate_h)

        def forward(self, x):
            u = self.linear1(x)
            u = self.dropout(u * torch.sigmoid(1.702 * u))
            return u.view(*u.shape[:-1], d_ff // d, d).sum(dim=-2)

    class Block(nn.Module):
        def __init__(self, use_attn: bool):
            super().__init__()
            self.lnstart = nn.LayerNorm(d, eps=1e-12)
            self.rnn = nn.LSTM(d, d)
            self.attn = Attention() if use_attn else None
            if use_attn:
                self.lnmem = nn.LayerNorm(d, eps=1e-12)
                self.lnmid = nn.LayerNorm(d, eps=1e-12)
            self.lnff = nn.LayerNorm(d, eps=1e-12)
            self.lnxff = nn.LayerNorm(d, eps=1e-12)
            self.ff = Boom()
            self.drop = nn.Dropout(rate_h)

        def forward(self, h, attn_mask, mem, hidden):
            h = self.lnstart(h)
            x, new_hidden = self.rnn(h, hidden)
            h = self.drop(x)
            new_mem = None
            if self.attn is not None:
                mh, h = self.lnmem(h), self.lnmid(h)
                bigh = mh if mem is None else torch.cat([mem, mh], dim=0)
                new_mem = bigh[-m:] if m else None
                x = call(self.attn, h, bigh, bigh, attn_mask)
                h = self.drop(x) + h
            h, x = self.lnff(h), self.lnxff(h)
            x = call(self.ff, x)
            return self.drop(x) + h, new_mem, new_hidden

    class TorchSHARNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(vocab_size, d)
            self.blocks = nn.ModuleList([Block(n in attn_at) for n in range(layers)])
            self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))
            self.idrop = nn.Dropout(model.dropout_input)
            self.drop = nn.Dropout(model.dropout_output)

        def forward(self, x, hidden=None, mems=None):
            s = x.shape[0]
            h = self.idrop(self.encoder(x))
            if mems is not None:
                mems = [mem[-(m - s):] for mem in mems]  # the authors' trim (Python slice)
            attn_mask = torch.triu(torch.full((s, s), -float("inf"), dtype=h.dtype), diagonal=1)
            if mems:
                happy = torch.zeros((s, max(len(mem) for mem in mems)), dtype=h.dtype)
                attn_mask = torch.cat([happy, attn_mask], dim=-1)
            new_hidden, new_mems, slot = [], [], 0
            for n, block in enumerate(self.blocks):
                mem = None
                if block.attn is not None:
                    mem = mems[slot] if mems else None
                    slot += 1
                h, new_mem, nh = block(h, attn_mask, mem, None if hidden is None else hidden[n])
                new_hidden.append(nh)
                if block.attn is not None:
                    new_mems.append(new_mem)
            h = self.drop(h)
            logits = h @ self.encoder.weight.T + self.decoder_bias
            return logits, new_hidden, (new_mems if m else None)

    return TorchSHARNN()


def load_sha_rnn(peer, ours) -> None:
    """Copy the parameters of our ``SHARNN`` into ``peer`` (in the peer's dtype)."""
    torch = _torch()
    dtype = next(peer.parameters()).dtype

    def put(dest, value, transpose=False):
        value = np.asarray(value[...], np.float64)
        dest.copy_(torch.from_numpy(value.T if transpose else value).to(dtype).reshape(dest.shape))

    def linear(dest, src):
        put(dest.weight, src.kernel, transpose=True)
        put(dest.bias, src.bias)

    def norm(dest, src):
        put(dest.weight, src.scale)
        put(dest.bias, src.bias)

    with torch.no_grad():
        put(peer.encoder.weight, ours.embed)
        put(peer.decoder_bias, ours.decoder_bias)
        for theirs, block in zip(peer.blocks, ours.blocks, strict=True):
            norm(theirs.lnstart, block.ln_start)
            put(theirs.rnn.weight_ih_l0, block.lstm.w_ih, transpose=True)
            put(theirs.rnn.weight_hh_l0, block.lstm.w_hh, transpose=True)
            put(theirs.rnn.bias_ih_l0, block.lstm.b_ih)
            put(theirs.rnn.bias_hh_l0, block.lstm.b_hh)
            if block.attn is not None:
                norm(theirs.lnmem, block.ln_mem)
                norm(theirs.lnmid, block.ln_mid)
                a = block.attn
                put(theirs.attn.qs, a.qs)
                put(theirs.attn.ks, a.ks)
                put(theirs.attn.vs, a.vs)
                linear(theirs.attn.q, a.q)
                norm(theirs.attn.qln, a.q_norm)
                linear(theirs.attn.vq.l1, a.overparam)
            norm(theirs.lnff, block.ln_ff)
            norm(theirs.lnxff, block.ln_xff)
            linear(theirs.ff.linear1, block.boom.linear)


# --- NTM --------------------------------------------------------------------------------------


def torch_ntm(model, *, batched_shift: bool = False):
    """The NTM peer for our (bits-mode) ``NTM`` instance ``model``'s sizes.

    ``forward(x Float[s, b, i]) -> o Float[s, b, o]`` from the learned initial state, one
    Python iteration per step. ``bit_loss(o, targets Long[s, b])`` is the loss."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    if model.input_mode != "bits" or model.predict_markers:
        raise ValueError("the NTM peer runs input_mode='bits' without predict_markers")
    d, n, m = model.controller_size, model.memory_slots, model.memory_width
    hr, hw, r = model.num_read_heads, model.num_write_heads, model.shift_radius
    clip, bits = model.clip, model.bits
    input_dim = bits + model.num_markers
    per_head = m + 3 + 2 * r + 1
    eps = 1e-8

    def clamp(x):
        return x.clamp(-clip, clip) if clip > 0 else x

    def convolve(w, s):  # pytorch-ntm's _convolve for radius r: wrap, cross-correlate
        t = torch.cat([w[-r:], w, w[:r]]) if r else w
        return F.conv1d(t.view(1, 1, -1), s.flip(-1).view(1, 1, -1)).view(-1)

    def shift(wg, s):  # [b, n], [b, 2r+1]
        if batched_shift:
            b = wg.shape[0]
            t = torch.cat([wg[:, n - r:], wg, wg[:, :r]], dim=1) if r else wg
            return F.conv1d(t.view(1, b, -1), s.flip(-1).view(b, 1, -1), groups=b).view(b, n)
        return torch.stack([convolve(wg[i], s[i]) for i in range(wg.shape[0])])

    def address(memory, out, w_prev):  # one head's clipped outputs -> weighting [b, n]
        k = torch.tanh(out[:, :m])
        beta = F.softplus(out[:, m:m + 1])
        g = torch.sigmoid(out[:, m + 1:m + 2])
        s = F.softmax(out[:, m + 2:m + 3 + 2 * r], dim=1)
        gamma = 1 + F.softplus(out[:, m + 3 + 2 * r:per_head])
        dot = torch.matmul(memory, k.unsqueeze(-1)).squeeze(-1)  # [b, n]
        k_norm = torch.sqrt((k * k).sum(-1, keepdim=True).clamp_min(eps * eps))
        mem_norm = torch.sqrt((memory * memory).sum(-1).clamp_min(eps * eps))
        wc = F.softmax(beta * dot / (k_norm * mem_norm + eps), dim=1)
        wg = g * wc + (1 - g) * w_prev
        w = shift(wg, s) ** gamma
        return w / (w.sum(dim=1, keepdim=True) + 1e-16)

    class TorchNTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.controller = nn.LSTM(input_dim + hr * m, d)
            self.read_heads = nn.ModuleList([nn.Linear(d, per_head) for _ in range(hr)])
            self.write_heads = nn.ModuleList([nn.Linear(d, per_head + 2 * m)
                                              for _ in range(hw)])
            self.fc = nn.Linear(d + hr * m, bits)
            self.init_memory = nn.Parameter(torch.full((n, m), 1e-6))
            self.init_reads = nn.Parameter(torch.zeros(hr, m))
            self.init_read_w = nn.Parameter(torch.zeros(hr, n))
            self.init_write_w = nn.Parameter(torch.zeros(hw, n))
            self.squash_memory = model.memory_init != "constant"

        def features(self, tokens):  # Long[s, b] -> bits + marker one-hots
            bit = ((tokens.unsqueeze(-1) >> torch.arange(bits)) & 1).to(self.fc.weight.dtype)
            symbol = (tokens < 2 ** bits).unsqueeze(-1)
            x = bit * symbol
            if model.num_markers:
                marker = F.one_hot((tokens - 2 ** bits).clamp_min(0), model.num_markers)
                x = torch.cat([x, marker.to(x.dtype) * ~symbol], dim=-1)
            return x

        def forward(self, x):
            steps, b = x.shape[:2]
            memory = self.init_memory
            memory = (torch.tanh(memory) if self.squash_memory else memory).repeat(b, 1, 1)
            reads = list(torch.tanh(self.init_reads).repeat(b, 1, 1).unbind(1))
            read_w = list(F.softmax(self.init_read_w, -1).repeat(b, 1, 1).unbind(1))
            write_w = list(F.softmax(self.init_write_w, -1).repeat(b, 1, 1).unbind(1))
            state, outs = None, []
            for t in range(steps):
                inp = torch.cat([x[t]] + reads, dim=1)
                h, state = self.controller(inp.unsqueeze(0), state)
                h = h.squeeze(0)
                read_w = [address(memory, clamp(head(h)), w)
                          for head, w in zip(self.read_heads, read_w, strict=True)]
                writes = [clamp(head(h)) for head in self.write_heads]
                write_w = [address(memory, o, w) for o, w in zip(writes, write_w, strict=True)]
                reads = [torch.matmul(w.unsqueeze(1), memory).squeeze(1) for w in read_w]
                for o, w in zip(writes, write_w, strict=True):
                    e = torch.sigmoid(o[:, per_head:per_head + m])
                    a = torch.tanh(o[:, per_head + m:])
                    erase = torch.matmul(w.unsqueeze(-1), e.unsqueeze(1))
                    add = torch.matmul(w.unsqueeze(-1), a.unsqueeze(1))
                    memory = memory * (1 - erase) + add
                outs.append(clamp(self.fc(torch.cat([h] + reads, dim=1))))
            return torch.stack(outs)

        def bit_loss(self, o, targets):
            """Mean over tokens of the summed bitwise sigmoid cross-entropy (symbol targets)."""
            target_bits = ((targets.unsqueeze(-1) >> torch.arange(bits)) & 1).to(o.dtype)
            total = F.binary_cross_entropy_with_logits(o, target_bits, reduction="sum")
            return total / targets.numel()

    return TorchNTM()


def load_ntm(peer, ours) -> None:
    """Copy the parameters of our bits-mode ``NTM`` into ``peer``."""
    torch = _torch()
    dtype = next(peer.parameters()).dtype
    d, m, r = ours.controller_size, ours.memory_width, ours.shift_radius
    hr, hw = ours.num_read_heads, ours.num_write_heads
    per_head = m + 3 + 2 * r + 1
    get = lambda p: np.asarray(p[...], np.float64)  # noqa: E731

    def put(dest, value):
        dest.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(dtype).reshape(dest.shape))

    kernel, bias = get(ours.lstm_kernel), get(ours.lstm_bias)
    i, j, f, o = (slice(k * d, (k + 1) * d) for k in range(4))  # TF order -> torch (i, f, g, o)
    order = np.r_[np.arange(4 * d)[i], np.arange(4 * d)[f], np.arange(4 * d)[j],
                  np.arange(4 * d)[o]]
    n_in = kernel.shape[0] - d
    b_ih = bias[order].copy()
    b_ih[d:2 * d] += 1.0  # BasicLSTMCell's forget bias
    head_k, head_b = get(ours.head_kernel), get(ours.head_bias)
    with torch.no_grad():
        put(peer.controller.weight_ih_l0, kernel[:n_in, order].T)
        put(peer.controller.weight_hh_l0, kernel[n_in:, order].T)
        put(peer.controller.bias_ih_l0, b_ih)
        put(peer.controller.bias_hh_l0, np.zeros(4 * d))
        for h, head in enumerate(list(peer.read_heads) + list(peer.write_heads)):
            cols = list(range(h * per_head, (h + 1) * per_head))
            if h >= hr:  # write heads: their erase/add block follows all head blocks
                start = (hr + hw) * per_head + (h - hr) * 2 * m
                cols += list(range(start, start + 2 * m))
            put(head.weight, head_k[:, cols].T)
            put(head.bias, head_b[cols])
        put(peer.fc.weight, get(ours.out_kernel).T)
        put(peer.fc.bias, get(ours.out_bias))
        put(peer.init_memory, get(ours.init_memory))
        put(peer.init_reads, get(ours.init_reads))
        put(peer.init_read_w, get(ours.init_read_w))
        put(peer.init_write_w, get(ours.init_write_w))


# --- bench ------------------------------------------------------------------------------------


def applies(model: ml_collections.ConfigDict) -> str | None:
    """``None`` if the torch peer can run this sha_rnn or ntm model config, else why not."""
    if model.name == "sha_rnn":
        if model.get("mem_trim", "authors") != "authors":
            return "the torch SHA-RNN peer trims memory as the authors (mem_trim='authors')"
        return None
    if model.name == "ntm":
        if model.get("input_mode", "embed") != "bits" or model.get("predict_markers", False):
            return "the torch NTM peer runs input_mode='bits' without predict_markers"
        return None
    return "no torch peer for this model"


def prepare(config: ml_collections.ConfigDict, vocab_size: int, *, steps_per_repeat: int,
            threads: int, batched_shift: bool = False):
    """The torch train step of a sha_rnn or ntm entry, started from our model's initial
    weights, ready to time (a ``peers.PreparedPeer``), or why it cannot run."""
    import torch

    from recurrentlab.bench import measure
    from recurrentlab.bench.peers import PreparedPeer
    from recurrentlab.models import build_model

    ours = build_model(config.model, vocab_size=vocab_size, seed=config.seed)
    t = config.train
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    batch = measure.random_batch(config, vocab_size, seed=config.seed)
    x = torch.from_numpy(batch["inputs"].astype(np.int64)).T.contiguous()  # [w, b]
    y = torch.from_numpy(batch["targets"].astype(np.int64)).T.contiguous()
    if config.model.name == "sha_rnn":
        peer = torch_sha_rnn(vocab_size, config.model)
        load_sha_rnn(peer, ours)
        holder: dict[str, Any] = {"hidden": None, "mems": None}

        def loss_fn():
            logits, hidden, mems = peer(x, holder["hidden"], holder["mems"])
            holder["hidden"] = [(h.detach(), c.detach()) for h, c in hidden]
            holder["mems"] = None if mems is None else [mem.detach() for mem in mems]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size),
                                                     y.reshape(-1))
    else:
        if 2 ** ours.bits != vocab_size:
            return (f"the torch NTM peer scores bit targets only; the bench vocabulary "
                    f"{vocab_size} has {ours.num_markers} marker tokens")
        peer = torch_ntm(ours, batched_shift=batched_shift)
        load_ntm(peer, ours)
        features = peer.features(x)

        def loss_fn():
            return peer.bit_loss(peer(features), y)

    del ours
    peer.train()
    opt = torch.optim.Adam(peer.parameters(), lr=t.lr, betas=(t.b1, t.b2), eps=t.eps)

    def step_once():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        if t.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(peer.parameters(), t.clip_norm)
        opt.step()

    info = {"device": f"cpu, {threads} threads",
            "params": int(sum(p.numel() for p in peer.parameters()))}
    return PreparedPeer(step_once, steps_per_repeat=steps_per_repeat,
                        tokens_per_step=measure.tokens_per_step(config), info=info)
