"""Peer implementations of an LSTM language-model train step, for ratio columns.

Each peer trains the same function as a ``lstm`` entry of a bench config: embedding ``E`` ->
stacked LSTM layers (the entry's layer sizes) -> linear decoder over the vocabulary, mean
cross-entropy over the window, Adam with the entry's ``lr``/``b1``/``b2``/``eps``, the carry handed
(detached) to the next window. A window of ``W = segment_len * bptt_segments`` tokens is one
forward/backward (BPTT through the window), as the trainer does.

Peers:

* ``torch``: ``torch.nn.Embedding`` + ``torch.nn.LSTM(num_layers)`` + ``torch.nn.Linear``,
  ``torch.optim.Adam``; on CPU with ``torch.set_num_threads(threads)``, on a GPU with cuDNN.
  On CPU, torch's LSTM runs oneDNN's fused RNN primitive (``torch.backends.mkldnn``) for
  float32 whenever oneDNN is built in, as in the default wheels.
* ``torch_aten``: the same torch step with oneDNN switched off
  (``torch.backends.mkldnn.enabled = False`` during the step): torch's own ATen LSTM, which runs one
  ``addmm`` per step plus a fused cell kernel -- the algorithm this library's LSTM also runs.
  CPU only.
* ``flax``: ``nnx.RNN(nnx.OptimizedLSTMCell)`` per layer, ``nnx.Embed``, ``nnx.Linear``,
  ``optax.adam`` under one ``jax.jit``.
* ``lstm_scan``: this library's ``lstm`` model with ``custom_vjp=False`` (autodiff through
  ``lax.scan``, no hand-written backward), through the same trainer step.
* ``matmul_floor``: not a network but a bound: the step's matrix products alone, in jax, with
  the same shapes and the same sequential dependence -- per layer the input projection, T
  recurrent ``[b, h] x [h, 4h]`` products in a ``lax.scan``, and in the backward the two
  gradients of every product (data and weight) plus the reverse recurrent scan; the decoder
  and its two gradients. No gates, no loss, no optimiser. A float32 LSTM step cannot run
  faster than its products, so ``ours ÷ matmul_floor`` is the fraction of the bound reached,
  and ``matmul_floor ÷ torch`` the most any float32 implementation on this backend could gain.
  The bound is on the products, not on the work around them, and that work differs: the
  floor slices or tiles its carry and adds per step and stacks its outputs into zero-filled
  buffers (as any ``lax.scan`` does), where the fused LSTM writes its backward's ``dz`` in
  place; with runs varying by a few percent, a run can show a ratio at or slightly above 1.
* ``jax_rnn``: ``jax.experimental.rnn.lstm`` (cuDNN) inside the same kind of jitted step; GPU
  only.

For ``sha_rnn`` and ``ntm`` entries, ``torch`` is the authors'-style torch model of
:mod:`recurrentlab.bench.torch_peers` (Smerity/sha-rnn ``model.py``; loudinthecloud/pytorch-ntm's
per-step loop with its per-row circular shift), started from our model's initial weights and
computing the same loss, dropout included; ``torch_batched_shift`` (ntm only) is that NTM with
the shift of all rows in one grouped ``conv1d``. CPU only.

A peer that is not installed or does not run on this backend is reported as skipped with the
reason; a peer only applies to an ``lstm`` entry whose dropout rates are all zero (peers have
no dropout) and whose matmuls are float32.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from recurrentlab import xla_cpu
from recurrentlab.bench import measure

PEERS = ("lstm_scan", "flax", "torch", "torch_aten", "matmul_floor", "jax_rnn",
         "torch_batched_shift")
TORCH_MODELS = ("sha_rnn", "ntm")  # models with an authors'-style torch peer (torch_peers.py)
TORCH_PEERS = ("torch", "torch_aten", "torch_batched_shift")  # not XLA programs
_DROPOUTS = ("dropout", "dropouth", "dropouti", "dropoute", "wdrop")


def jax_threads() -> int:
    """CPUs XLA's CPU thread pool sizes itself to: the ones this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def lstm_shapes(model: ml_collections.ConfigDict) -> dict[str, Any]:
    """Embedding size, per-layer sizes and tying of an ``lstm`` model config."""
    sizes = [model.hidden_dim] * model.num_layers
    if model.tie_weights:
        sizes[-1] = model.embed_dim
    return {"embed_dim": model.embed_dim, "sizes": sizes, "tie": bool(model.tie_weights)}


def applies(peer: str, model: ml_collections.ConfigDict) -> str | None:
    """``None`` if ``peer`` can run the entry's model, else why not."""
    if model.name in TORCH_MODELS and peer in ("torch", "torch_batched_shift"):
        if peer == "torch_batched_shift" and model.name != "ntm":
            return "torch_batched_shift is a variant of the NTM peer"
        from recurrentlab.bench import torch_peers

        if jax.default_backend() != "cpu":
            return f"the torch {model.name} peer runs on CPU only (no GPU port written)"
        return torch_peers.applies(model)
    if peer == "torch_batched_shift":
        return "torch_batched_shift is a variant of the NTM peer"
    if model.name != "lstm":
        return "peers exist for the lstm model only"
    if any(float(model.get(k, 0.0)) > 0 for k in _DROPOUTS):
        return "peers run without dropout; set every dropout rate of the entry to 0"
    if model.get("dtype", "float32") != "float32":
        return "peers run in float32"
    if peer in ("torch", "torch_aten", "jax_rnn"):
        shapes = lstm_shapes(model)
        if len(set(shapes["sizes"])) != 1:
            return f"{peer} stacks equal layers; layer sizes are {shapes['sizes']}"
    return None


def available(peer: str) -> str | None:
    """``None`` if ``peer`` can run here, else why not."""
    if (peer in ("torch", "torch_aten", "torch_batched_shift")
            and importlib.util.find_spec("torch") is None):
        return "torch is not installed"
    if peer == "torch_aten" and jax.default_backend() != "cpu":
        return "torch_aten is the CPU path without oneDNN; on a GPU torch runs cuDNN"
    if peer == "jax_rnn":
        if jax.default_backend() != "gpu":
            return "jax.experimental.rnn needs a GPU (cuDNN)"
        if importlib.util.find_spec("jax.experimental.rnn") is None:
            return "jax.experimental.rnn is missing"
    if peer not in PEERS:
        return f"unknown peer '{peer}'; known: {', '.join(PEERS)}"
    return None


class PreparedPeer:
    """A peer's train step ready to time: ``run()`` does ``steps_per_repeat`` steps and waits
    for them; ``info`` holds what is known before timing; ``memory()`` what is known after."""

    def __init__(self, step_once, *, steps_per_repeat: int, tokens_per_step: int,
                 sync=lambda: None, info: dict[str, Any] | None = None, memory=dict):
        self._step_once, self._sync = step_once, sync
        self.steps_per_repeat, self.tokens_per_step = steps_per_repeat, tokens_per_step
        self.info = dict(info or {})
        self.memory = memory

    @property
    def tokens_per_run(self) -> int:
        return self.tokens_per_step * self.steps_per_repeat

    def run(self) -> None:
        for _ in range(self.steps_per_repeat):
            self._step_once()
        self._sync()


def _adam(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.adam(train.lr, b1=train.b1, b2=train.b2, eps=train.eps)


# --- torch ------------------------------------------------------------------------------------


def torch_lm(vocab_size: int, model: ml_collections.ConfigDict):
    """The torch peer network: ``nn.Embedding`` -> ``nn.LSTM(num_layers)`` -> ``nn.Linear``.

    ``forward(tokens Long[b, w], (h0, c0) [layers, b, h]) -> (logits [b, w, v], (h, c))``.
    """
    import torch

    shapes = lstm_shapes(model)
    e, h, layers = shapes["embed_dim"], shapes["sizes"][0], len(shapes["sizes"])

    class TorchLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(vocab_size, e)
            self.lstm = torch.nn.LSTM(e, h, num_layers=layers, batch_first=True)
            self.decoder = torch.nn.Linear(h, vocab_size)
            if shapes["tie"]:
                self.decoder.weight = self.embedding.weight

        def forward(self, x, state):
            out, state = self.lstm(self.embedding(x), state)
            return self.decoder(out), state

    return TorchLM()


def prepare_torch(config: ml_collections.ConfigDict, vocab_size: int, *, steps_per_repeat: int,
                  threads: int, onednn: bool = True) -> PreparedPeer:
    """The torch step; ``onednn=False`` runs it with ``torch.backends.mkldnn`` disabled."""
    import contextlib

    import torch

    shapes = lstm_shapes(config.model)
    t = config.train
    device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    if device == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    h, layers = shapes["sizes"][0], len(shapes["sizes"])
    model = torch_lm(vocab_size, config.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.b1, t.b2), eps=t.eps)
    batch = measure.random_batch(config, vocab_size, seed=config.seed)
    x = torch.from_numpy(batch["inputs"].astype(np.int64)).to(device)
    y = torch.from_numpy(batch["targets"].astype(np.int64)).to(device)
    zeros = torch.zeros(layers, t.batch_size, h, device=device)
    holder = {"state": (zeros, zeros.clone())}

    @contextlib.contextmanager
    def backend():  # oneDNN on (torch's default) or off for the duration of a step
        previous = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = onednn
        try:
            yield
        finally:
            torch.backends.mkldnn.enabled = previous

    def step_once():
        with backend():
            opt.zero_grad(set_to_none=True)
            logits, state = model(x, holder["state"])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size),
                                                     y.reshape(-1))
            loss.backward()
            opt.step()
        holder["state"] = (state[0].detach(), state[1].detach())

    def memory():
        if device != "cuda":
            return {}
        return {"peak_bytes": int(torch.cuda.max_memory_allocated()),
                "peak_source": "torch.cuda.max_memory_allocated"}

    cpu = f"cpu, {threads} threads" + ("" if onednn else ", oneDNN off")
    info = {"device": "cuda (cuDNN)" if device == "cuda" else cpu,
            "params": int(sum(p.numel() for p in model.parameters()))}
    return PreparedPeer(step_once, steps_per_repeat=steps_per_repeat,
                        tokens_per_step=measure.tokens_per_step(config),
                        sync=torch.cuda.synchronize if device == "cuda" else (lambda: None),
                        info=info, memory=memory)


# --- jax peers --------------------------------------------------------------------------------


class FlaxLSTMStack(nnx.Module):
    """``nnx.Embed`` -> ``nnx.RNN(nnx.OptimizedLSTMCell)`` per layer -> ``nnx.Linear``."""

    def __init__(self, vocab_size: int, embed_dim: int, sizes: list[int], *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
        inputs = [embed_dim] + sizes[:-1]
        self.rnns = nnx.List([
            nnx.RNN(nnx.OptimizedLSTMCell(d, h, rngs=rngs), return_carry=True)
            for d, h in zip(inputs, sizes, strict=True)
        ])
        self.decoder = nnx.Linear(sizes[-1], vocab_size, rngs=rngs)

    def __call__(self, tokens, carries):
        x = self.embed(tokens)
        out = []
        for rnn, carry in zip(self.rnns, carries, strict=True):
            carry, x = rnn(x, initial_carry=carry)
            out.append(carry)
        return self.decoder(x), tuple(out)


def _mean_xent(logits, targets):
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def _jax_peer(loss_fn, params, carry, config, vocab_size, *, steps_per_repeat) -> PreparedPeer:
    """Jit ``loss_fn(params, carry, x, y) -> (loss, carry)`` into an Adam step and time it."""
    tx = _adam(config.train)

    def train_step(params, opt_state, carry, x, y):
        (loss, carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, carry, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, jax.lax.stop_gradient(carry), loss

    batch = measure.random_batch(config, vocab_size, seed=config.seed)
    x, y = jnp.asarray(batch["inputs"]), jnp.asarray(batch["targets"])
    holder = {"params": params, "opt_state": tx.init(params), "carry": carry}
    compiled, times = measure.compile_step(
        xla_cpu.jit(train_step), (holder["params"], holder["opt_state"], holder["carry"], x, y))

    def step_once():
        p, o, c, loss = compiled(holder["params"], holder["opt_state"], holder["carry"], x, y)
        holder.update(params=p, opt_state=o, carry=c, loss=loss)

    def memory():
        analysis = measure.memory_analysis_bytes(compiled)
        return {} if analysis is None else {"peak_bytes": analysis["peak"],
                                            "peak_source": "memory_analysis"}

    prepared = PreparedPeer(step_once, steps_per_repeat=steps_per_repeat,
                            tokens_per_step=measure.tokens_per_step(config),
                            sync=lambda: jax.block_until_ready(holder),
                            info={"compile_s": times["total_s"],
                                  "params": measure.count_params(params)}, memory=memory)
    prepared.compiled = compiled  # for the profile bench kind
    return prepared


def prepare_flax(config: ml_collections.ConfigDict, vocab_size: int, *,
                 steps_per_repeat: int) -> PreparedPeer:
    shapes = lstm_shapes(config.model)
    model = FlaxLSTMStack(vocab_size, shapes["embed_dim"], shapes["sizes"],
                          rngs=nnx.Rngs(config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    b = config.train.batch_size
    carry = tuple((jnp.zeros((b, h)), jnp.zeros((b, h))) for h in shapes["sizes"])

    def loss_fn(params, carry, x, y):
        logits, carry = nnx.merge(graphdef, params, rest)(x, carry)
        return _mean_xent(logits, y), carry

    return _jax_peer(loss_fn, params, carry, config, vocab_size,
                     steps_per_repeat=steps_per_repeat)


def prepare_jax_rnn(config: ml_collections.ConfigDict, vocab_size: int, *,
                    steps_per_repeat: int) -> PreparedPeer:
    from jax.experimental import rnn

    shapes = lstm_shapes(config.model)
    e, h, layers = shapes["embed_dim"], shapes["sizes"][0], len(shapes["sizes"])
    b = config.train.batch_size
    k_embed, k_lstm, k_dec = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    params = {
        "embedding": jax.random.uniform(k_embed, (vocab_size, e), minval=-0.1, maxval=0.1),
        "lstm": rnn.init_lstm_weight(k_lstm, e, h, layers, False),
        "decoder": jax.random.uniform(k_dec, (h, vocab_size), minval=-0.1, maxval=0.1),
        "bias": jnp.zeros((vocab_size,)),
    }
    carry = (jnp.zeros((layers, b, h)), jnp.zeros((layers, b, h)))
    lengths = jnp.full((b,), measure.window_len(config), jnp.int32)

    def loss_fn(params, carry, x, y):
        xs = params["embedding"][x]
        out, h_n, c_n = rnn.lstm(xs, carry[0], carry[1], params["lstm"], lengths,
                                 input_size=e, hidden_size=h, num_layers=layers, dropout=0.0,
                                 bidirectional=False)
        logits = out @ params["decoder"] + params["bias"]
        return _mean_xent(logits, y), (h_n, c_n)

    return _jax_peer(loss_fn, params, carry, config, vocab_size,
                     steps_per_repeat=steps_per_repeat)


def lstm_step_flops(model: ml_collections.ConfigDict, batch: int, window: int,
                    vocab_size: int) -> int:
    """Matrix-product FLOPs of one LSTM LM train step: 3x the forward's (each forward product
    has a data and a weight gradient of the same size)::

        forward = 2 b w (sum_l (d_l + h_l) 4 h_l + h_L V)
    """
    shapes = lstm_shapes(model)
    inputs = [shapes["embed_dim"]] + shapes["sizes"][:-1]
    per_token = sum((d + h) * 4 * h for d, h in zip(inputs, shapes["sizes"], strict=True))
    per_token += shapes["sizes"][-1] * vocab_size
    return 3 * 2 * batch * window * per_token


def prepare_matmul_floor(config: ml_collections.ConfigDict, vocab_size: int, *,
                         steps_per_repeat: int) -> PreparedPeer:
    """The float32 matrix products of one LSTM LM train step, nothing else (see the module)."""
    shapes = lstm_shapes(config.model)
    b, t = config.train.batch_size, measure.window_len(config)
    rng = np.random.default_rng(config.seed)
    array = lambda *shape: jnp.asarray(rng.uniform(-0.1, 0.1, shape).astype(np.float32))
    inputs = [shapes["embed_dim"]] + shapes["sizes"][:-1]
    weights = [(array(d, 4 * h), array(h, 4 * h)) for d, h in zip(inputs, shapes["sizes"],
                                                                   strict=True)]
    decoder = array(shapes["sizes"][-1], vocab_size)
    x0 = array(t * b, shapes["embed_dim"])

    def recurrent(w, addend):  # T dependent [b, r] x [r, c] products; the carries, stacked
        r, c = w.shape

        def step(carry, addend_t):
            out = carry @ w + addend_t
            carry = out[:, :r] if c >= r else jnp.tile(out, (1, r // c))
            return carry, carry

        carries = jax.lax.scan(step, jnp.zeros((b, r)), addend.reshape(t, b, c))[1]
        return carries.reshape(t * b, r)

    def products(weights, decoder, x):
        layer_inputs, layer_outputs = [], []
        for w_ih, w_hh in weights:  # forward: the projection, then the recurrence
            layer_inputs.append(x)
            x = recurrent(w_hh, x @ w_ih)  # h_t = (h_{t-1} W_hh + x_t W_ih)[:h]
            layer_outputs.append(x)
        logits = x @ decoder
        grads = [x.T @ logits]  # the decoder's weight gradient (logits stand for dlogits)
        d_x = logits @ decoder.T
        for (w_ih, w_hh), x_in, h_out in zip(reversed(weights), reversed(layer_inputs),
                                             reversed(layer_outputs), strict=True):
            d_z = recurrent(w_hh.T, d_x)  # dz_t = tile(dz_{t+1} W_hh^T + dh_t)
            grads += [h_out.T @ d_z, x_in.T @ d_z]  # dW_hh, dW_ih
            d_x = d_z @ w_ih.T
        return d_x, grads

    compiled, times = measure.compile_step(xla_cpu.jit(products), (weights, decoder, x0))
    holder = {}

    def step_once():
        holder["out"] = compiled(weights, decoder, x0)

    prepared = PreparedPeer(step_once, steps_per_repeat=steps_per_repeat,
                            tokens_per_step=measure.tokens_per_step(config),
                            sync=lambda: jax.block_until_ready(holder),
                            info={"compile_s": times["total_s"], "params": 0, "flops_per_step":
                                  lstm_step_flops(config.model, b, t, vocab_size)})
    prepared.compiled = compiled  # for the profile bench kind
    return prepared


def prepare_peer(peer: str, config: ml_collections.ConfigDict, vocab_size: int, *,
                 steps_per_repeat: int, threads: int):
    """``peer`` compiled/built on ``config``'s shapes and ready to time, or why it cannot run."""
    reason = available(peer) or applies(peer, config.model)
    if reason is not None:
        return reason
    if config.model.name in TORCH_MODELS:  # torch or torch_batched_shift (applies said so)
        from recurrentlab.bench import torch_peers

        return torch_peers.prepare(config, vocab_size, steps_per_repeat=steps_per_repeat,
                                   threads=threads,
                                   batched_shift=peer == "torch_batched_shift")
    if peer in ("torch", "torch_aten"):
        return prepare_torch(config, vocab_size, steps_per_repeat=steps_per_repeat,
                             threads=threads, onednn=peer == "torch")
    if peer == "flax":
        return prepare_flax(config, vocab_size, steps_per_repeat=steps_per_repeat)
    if peer == "matmul_floor":
        return prepare_matmul_floor(config, vocab_size, steps_per_repeat=steps_per_repeat)
    if peer == "jax_rnn":
        return prepare_jax_rnn(config, vocab_size, steps_per_repeat=steps_per_repeat)
    # lstm_scan: the same model and trainer step, autodiff through lax.scan
    scan_config = ml_collections.ConfigDict(config.to_dict())
    scan_config.model.custom_vjp = False
    return measure.PreparedTrain(scan_config, vocab_size, steps_per_repeat=steps_per_repeat)


def run_peer(peer: str, config: ml_collections.ConfigDict, vocab_size: int, *, warmup: int,
             repeats: int, steps_per_repeat: int, threads: int) -> dict[str, Any]:
    """Measure ``peer`` alone: ``{"tokens_per_sec", ...}`` or ``{"skipped": reason}``."""
    prepared = prepare_peer(peer, config, vocab_size, steps_per_repeat=steps_per_repeat,
                            threads=threads)
    if isinstance(prepared, str):
        return {"skipped": prepared}
    times = measure.interleaved_times({peer: prepared.run}, warmup=warmup, repeats=repeats)
    return {**measure.rate(times[peer], tokens_per_run=prepared.tokens_per_run,
                           steps_per_run=steps_per_repeat), **prepared.info, **prepared.memory()}
