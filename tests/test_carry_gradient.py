"""train.carry_gradient: exact RTRL equals BPTT across windows, SnAp-1 equals RTRL where it is
exact, "none" is truncated BPTT unchanged, and the influence is training state (reset,
checkpointed, resumed bit-for-bit)."""

import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recurrentlab.config import base_config, validate
from recurrentlab.errors import ConfigError
from recurrentlab.models import build_model, model_config, reset_carry
from recurrentlab.train.carry_gradient import (
    check_carry_gradient,
    influence_nbytes,
    rtrl_window,
    supported_models,
)
from recurrentlab.train.distributed import Placement
from recurrentlab.train.logging import read_metrics
from recurrentlab.train.step import window_loss
from recurrentlab.train.trainer import init_train_state, make_train_step, train_and_evaluate

ROOT = Path(__file__).resolve().parent.parent
VOCAB, B, S, K = 7, 2, 3, 2  # vocabulary, streams, segment length, segments per window
W = S * K  # window tokens
NO_DROPOUT = dict(dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0)


# --- the RTRL recursion itself, float64 ------------------------------------------------


def _elman(theta, others, s0, x, n, d):
    """A per-stream Elman RNN window: ``s_t = tanh(W s_{t-1} + U x_t + c)``, loss terms
    ``Σ_t (v·s_t - y_t)²`` and ``Σ_t s_t[0]``."""
    w = theta[: n * n].reshape(n, n)
    u = theta[n * n: n * n + n * d].reshape(n, d)
    c = theta[n * n + n * d:]
    xs, ys = x

    def step(s, inp):
        xt, yt = inp
        s = jnp.tanh(w @ s + u @ xt + c)
        return s, ((others["v"] @ s - yt) ** 2, s[0])

    s_end, (sq, first) = jax.lax.scan(step, s0, (xs, ys))
    return ({"sq": jnp.sum(sq), "first": jnp.sum(first)}, s_end), None


def test_rtrl_over_windows_equals_bptt_through_them_float64():
    with jax.enable_x64(True):
        n, d, b, t, windows = 4, 3, 3, 5, 3
        rng = np.random.default_rng(0)
        theta = jnp.asarray(rng.normal(0, 0.6, n * n + n * d + n))
        others = {"v": jnp.asarray(rng.normal(0, 1, n))}
        xs = jnp.asarray(rng.normal(0, 1, (windows, b, t, d)))
        ys = jnp.asarray(rng.normal(0, 1, (windows, b, t)))
        s_init = jnp.asarray(rng.normal(0, 0.5, (b, n)))
        weights = {"sq": jnp.asarray(0.7), "first": jnp.asarray(-0.3)}
        f = lambda th, ot, s, x: _elman(th, ot, s, x, n, d)

        def full_loss(theta, others):  # BPTT through every window, one graph
            s, total = s_init, 0.0
            for k in range(windows):
                for i in range(b):
                    (outs, s_i), _ = f(theta, others, s[i], (xs[k, i], ys[k, i]))
                    total = total + sum(weights[m] * outs[m] for m in outs)
                    s = s.at[i].set(s_i)
            return total, s

        (_, s_final), (want_theta, want_others) = jax.value_and_grad(
            full_loss, argnums=(0, 1), has_aux=True)(theta, others)

        s, j = s_init, jnp.zeros((b, n, theta.size))
        got_theta, got_others = jnp.zeros_like(theta), jnp.zeros(n)
        for k in range(windows):
            g_theta, g_others, _, s, j, _ = rtrl_window(f, theta, others, s, j,
                                                        (xs[k], ys[k]), weights)
            got_theta, got_others = got_theta + g_theta, got_others + g_others["v"]

        np.testing.assert_allclose(got_theta, want_theta, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(got_others, want_others["v"], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(s, s_final, rtol=1e-13)
        # the influence after the last window is the Jacobian of the final state
        jac = jax.jacobian(lambda th: full_loss(th, others)[1])(theta)
        np.testing.assert_allclose(j, jac, rtol=1e-11, atol=1e-13)
        # the control: with the influence dropped at every window (truncated BPTT) it differs
        s, truncated = s_init, jnp.zeros_like(theta)
        for k in range(windows):
            g_theta, _, _, s, _, _ = rtrl_window(f, theta, others, s, jnp.zeros_like(j),
                                                 (xs[k], ys[k]), weights)
            truncated = truncated + g_theta
        assert np.abs(np.asarray(truncated - want_theta)).max() > 1e-3


# --- the LSTM through the trainer's own train step -----------------------------------


def _recorder():
    """An 'optimiser' that keeps the parameters fixed and stores the last gradient."""
    return optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p),
                                        lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g))


def _config(mode, **model):
    c = base_config()
    c.model = model_config("lstm", **{**dict(embed_dim=5, hidden_dim=3, num_layers=2,
                                             tie_weights=False), **NO_DROPOUT, **model})
    c.data.name = "synthetic"
    c.train.update(dict(batch_size=B, segment_len=S, bptt_segments=K, carry_gradient=mode))
    c.mesh.data_axis = 1
    return c


TOKENS = np.random.default_rng(0).integers(0, VOCAB, size=(B, 4 * W + 1))


def _window(i, reset=None):
    x = TOKENS[:, i * W:(i + 1) * W + 1]
    reset = np.full((B,), i == 0) if reset is None else np.asarray(reset)
    return {"inputs": jnp.asarray(x[:, :-1], jnp.int32),
            "targets": jnp.asarray(x[:, 1:], jnp.int32),
            "mask": jnp.ones((B, W), jnp.float32), "reset": jnp.asarray(reset)}


def _model(config, diagonal=False):
    model = build_model(config.model, vocab_size=VOCAB, seed=0)
    if diagonal:  # W_hh zero off each gate's diagonal: units do not interact
        for layer in model.layers:
            h = layer.hidden_dim
            keep = np.tile(np.eye(h), (1, 4))
            layer.w_hh[...] = layer.w_hh[...] * keep
    return model


def _setup(config, diagonal=False):
    model = _model(config, diagonal)
    tx = _recorder()
    graphdef, state, rest, fresh = init_train_state(model, config, tx,
                                                    Placement.from_config(config))
    return make_train_step(graphdef, config, tx), state, rest, fresh


def _named(tree):
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _summed_gradients(mode, windows, diagonal=False, **model):
    """Σ over ``windows`` consecutive windows of the train step's gradient, params fixed."""
    step, state, rest, fresh = _setup(_config(mode, **model), diagonal)
    total = None
    for i in range(windows):
        state, _ = step(state, rest, fresh, _window(i))
        grads = _named(state.opt_state)  # a host copy: the next step donates the state
        total = grads if total is None else {k: total[k] + grads[k] for k in total}
    return total


def _bptt_gradients(windows, diagonal=False, **model):
    """Gradient of the sum of the windows' losses, backpropagated through all of them."""
    config = _config("none", **model)
    graphdef, params, rest = nnx.split(_model(config, diagonal), nnx.Param, ...)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        carry, total = m.init_carry(B), 0.0
        for i in range(windows):
            objective, (carry, _) = window_loss(m, carry, _window(i), segment_len=S, train=True,
                                                key=None)
            total = total + objective
        return total

    return _named(jax.grad(loss)(params))


def _assert_close(got, want, names=None):
    for name in names or want:
        scale = np.abs(want[name]).max()
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6 * scale,
                                   err_msg=name)


def _max_relative_difference(a, b, names):
    return max(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max() for k in names)


def test_rtrl_train_steps_equal_bptt_through_both_windows():
    got = _summed_gradients("rtrl", 2)
    want = _bptt_gradients(2)
    _assert_close(got, want)
    truncated = _summed_gradients("none", 2)  # the control: truncation loses a visible part
    layers = [k for k in want if "layers" in k or "embedding" in k]
    assert _max_relative_difference(truncated, want, layers) > 1e-2


def test_rtrl_serves_the_ntm_too():
    """The same recursion over the NTM's whole carry (controller, memory, reads, weightings):
    summed over two windows it is BPTT through both; truncation differs."""
    ntm = model_config("ntm", controller_size=5, memory_slots=4, memory_width=3, embed_dim=4)

    def config(mode):
        c = _config(mode)
        c.model = ntm
        return c

    def summed(mode):
        model = build_model(ntm, vocab_size=VOCAB, seed=0)
        tx = _recorder()
        c = config(mode)
        graphdef, state, rest, fresh = init_train_state(model, c, tx, Placement.from_config(c))
        step, total = make_train_step(graphdef, c, tx), None
        for i in range(2):
            state, _ = step(state, rest, fresh, _window(i))
            grads = _named(state.opt_state)
            total = grads if total is None else {k: total[k] + grads[k] for k in total}
        return total

    graphdef, params, rest = nnx.split(build_model(ntm, vocab_size=VOCAB, seed=0), nnx.Param, ...)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        carry, total = m.init_carry(B), 0.0
        for i in range(2):
            objective, (carry, _) = window_loss(m, carry, _window(i), segment_len=S, train=True,
                                                key=None)
            total = total + objective
        return total

    want, got = _named(jax.grad(loss)(params)), summed("rtrl")
    for name in want:  # float32 through more operations than the LSTM: 1e-4, not 1e-5
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4,
                                   atol=1e-5 * np.abs(want[name]).max(), err_msg=name)
    truncated = summed("none")
    controller = [k for k in want if "lstm" in k or "head_" in k]  # controller and heads
    assert controller and _max_relative_difference(truncated, want, controller) > 1e-2


def test_the_first_window_from_a_fresh_stream_is_truncated_bptt_in_every_mode():
    none = _summed_gradients("none", 1)
    for mode in ("rtrl", "snap1"):
        _assert_close(_summed_gradients(mode, 1), none)


LAYERS = [f"['layers'][0]['{w}'].value" for w in ("w_ih", "w_hh", "b_ih", "b_hh")]


@pytest.mark.parametrize("hidden, diagonal", [(1, False), (3, True)])
def test_snap1_equals_rtrl_where_units_do_not_interact(hidden, diagonal):
    fields = dict(num_layers=1, hidden_dim=hidden)
    snap1 = _summed_gradients("snap1", 3, diagonal, **fields)
    rtrl = _summed_gradients("rtrl", 3, diagonal, **fields)
    _assert_close(snap1, rtrl, LAYERS)
    # the embedding keeps no SnAp-1 traces: it gets the truncated gradient only
    none = _summed_gradients("none", 3, diagonal, **fields)
    embedding = "['embedding'].value"
    np.testing.assert_allclose(snap1[embedding], none[embedding], rtol=1e-5,
                               atol=1e-6 * np.abs(none[embedding]).max())
    assert _max_relative_difference(rtrl, none, [embedding]) > 1e-2


@pytest.mark.parametrize("fields", [dict(num_layers=1, hidden_dim=3),  # units interact
                                    dict(num_layers=2, hidden_dim=1)])  # layers interact
def test_snap1_differs_from_rtrl_where_it_approximates(fields):
    snap1 = _summed_gradients("snap1", 3, **fields)
    rtrl = _summed_gradients("rtrl", 3, **fields)
    names = [k for k in rtrl if "layers" in k]
    assert _max_relative_difference(snap1, rtrl, names) > 1e-3


# --- "none" is today's truncated BPTT ----------------------------------------------------


def test_none_is_the_truncated_bptt_step_bit_for_bit():
    config = _config("none", wdrop=0.3, dropouth=0.2)  # dropout keys take the same path
    tx = optax.adam(1e-2)

    def reference(state, rest, fresh, batch):  # the train step before train.carry_gradient
        t = config.train
        reset = batch["reset"] | (not t.carry_across_windows)
        carry = reset_carry(state.carry, fresh, reset)
        key = jax.random.fold_in(jax.random.fold_in(state.rng, 1), state.step)

        def loss_fn(params):
            return window_loss(nnx.merge(graphdef, params, rest), carry, batch, segment_len=S,
                               train=True, key=key, remat=t.remat, unroll=t.scan_unroll)

        (_, (carry_out, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return optax.apply_updates(state.params, updates), opt_state, carry_out

    states = []
    for _ in range(2):
        model = _model(config)
        graphdef, state, rest, fresh = init_train_state(model, config, tx,
                                                        Placement.from_config(config))
        states.append(state)
    assert states[0].influence is None
    step, reference = make_train_step(graphdef, config, tx), jax.jit(reference)
    ours, theirs = states
    for i in range(3):
        ours, _ = step(ours, rest, fresh, _window(i))
        params, opt_state, carry = reference(theirs, rest, fresh, _window(i))
        theirs = theirs.replace(params=params, opt_state=opt_state, carry=carry,
                                step=theirs.step + 1)
        for name in ("params", "opt_state", "carry"):
            a, b = _named(getattr(ours, name)), _named(getattr(theirs, name))
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"step {i} {name} {k}")


# --- the influence is training state -----------------------------------------------------


@pytest.mark.parametrize("mode", ["rtrl", "snap1"])
def test_reset_streams_start_with_zero_influence(mode):
    """A stream that starts afresh ignores the influence it had; the others use theirs."""
    config = _config(mode)
    results = []
    for zero_first, reset in ((False, [True, False]), (True, [True, False]),
                              (True, [False, False])):
        step, state, rest, fresh = _setup(config)
        state, _ = step(state, rest, fresh, _window(0))
        state, _ = step(state, rest, fresh, _window(1))  # a non-zero influence and carry now
        influence = state.influence
        assert max(np.abs(np.asarray(x)).max() for x in jax.tree.leaves(influence)) > 0
        if zero_first:
            state = state.replace(
                influence=jax.tree.map(lambda x: x.at[0].set(0.0), influence))
        state, _ = step(state, rest, fresh, _window(2, reset=reset))
        results.append((_named(state.opt_state), _named(state.influence)))
    (grads_a, infl_a), (grads_b, infl_b), (grads_c, _) = results
    for k in grads_a:  # with stream 0 reset, its old influence makes no difference
        np.testing.assert_array_equal(grads_a[k], grads_b[k], err_msg=k)
    for k in infl_a:
        np.testing.assert_array_equal(infl_a[k], infl_b[k], err_msg=k)
    # control: without the reset, zeroing stream 0's influence changes the gradient
    assert any(not np.array_equal(grads_b[k], grads_c[k]) for k in grads_b)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["snap1", "rtrl"])
def test_influence_survives_checkpoint_and_resume_bit_for_bit(tmp_path, tiny_config, mode):
    config = tiny_config(carry_gradient=mode, num_steps=6, checkpoint_every=3)
    config.model.update(dict(embed_dim=8, hidden_dim=8))
    straight = tmp_path / "straight"
    train_and_evaluate(config, straight)

    def resume(name, zero_influence=False):  # the same run, stopped after its step-3 checkpoint
        run = tmp_path / name
        run.mkdir()
        shutil.copy(straight / "config.json", run / "config.json")
        shutil.copytree(straight / "checkpoints" / "3", run / "checkpoints" / "3")
        if zero_influence:
            _zero_influence_in_checkpoint(run / "checkpoints", 3, config)
        train_and_evaluate(config, run)
        return run

    keys = ("loss", "grad_norm", "accuracy")
    late = lambda run: [[r[k] for k in keys] for r in read_metrics(run, "train") if r["step"] > 3]
    assert late(resume("resumed")) == late(straight)
    # the control: a checkpoint whose influence is lost resumes onto another trajectory
    assert late(resume("lost", zero_influence=True)) != late(straight)


def _zero_influence_in_checkpoint(folder, step, config):
    from recurrentlab.train.checkpoint import Checkpoints
    from recurrentlab.train.optim import make_optimizer
    from recurrentlab.train.trainer import build_run

    _, model = build_run(config)
    tx = make_optimizer(config.train)
    _, template, _, _ = init_train_state(model, config, tx, Placement.from_config(config))
    checkpoints = Checkpoints(folder)
    try:
        state, meta = checkpoints.restore(step, template)
    finally:
        checkpoints.close()
    saved = jax.tree.leaves(state.influence)
    assert max(np.abs(np.asarray(x)).max() for x in saved) > 0  # the checkpoint held it
    state = state.replace(influence=jax.tree.map(jnp.zeros_like, state.influence))
    shutil.rmtree(folder / str(step))
    checkpoints = Checkpoints(folder)
    try:
        checkpoints.save(step, state, meta)
    finally:
        checkpoints.close()


# --- what is refused ---------------------------------------------------------------------


def test_which_models_support_which_mode():
    assert supported_models("rtrl") == ["lstm", "ntm"]
    assert supported_models("snap1") == ["lstm"]


@pytest.mark.parametrize("mode, fields, message", [
    ("bptt", {}, "train.carry_gradient 'bptt' unknown; use none"),
    ("rtrl", {"carry_across_windows": False}, "needs train.carry_across_windows=True"),
    ("snap1", {"influence_budget_mb": -1}, "influence_budget_mb must be >= 0"),
])
def test_bad_fields_are_refused(mode, fields, message):
    config = _config(mode)
    config.train.update(fields)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_a_model_without_support_is_refused_naming_those_with():
    config = _config("rtrl")
    config.model = model_config("transformer", d_model=8, num_heads=2, num_layers=1, d_ff=8,
                                max_len=S)
    model = build_model(config.model, vocab_size=VOCAB, seed=0)
    with pytest.raises(ConfigError, match="model 'transformer' does not support "
                                          "train.carry_gradient='rtrl'; models that do: lstm, ntm"):
        check_carry_gradient(config, model)


def test_rtrl_over_budget_is_refused_with_the_size_it_needs():
    config = _config("rtrl", hidden_dim=64, num_layers=1, embed_dim=16)
    config.train.batch_size = 16
    config.train.influence_budget_mb = 100
    model = build_model(config.model, vocab_size=VOCAB, seed=0)
    n, p = 2 * 64, 4 * 64 * (16 + 64 + 2) + VOCAB * 16  # carry values, covered parameters
    assert influence_nbytes(model, "rtrl", 16) == 16 * n * p * 4
    with pytest.raises(ConfigError, match=rf"needs an influence of {16 * n * p * 4 / 2**20:,.0f} "
                                          rf"MiB \(16 streams x 128 carry values x {p:,} "
                                          r"parameters, float32\), over "
                                          r"train.influence_budget_mb=100"):
        check_carry_gradient(config, model)
    config.train.carry_gradient = "snap1"  # O(params) per stream: within the same budget
    check_carry_gradient(config, model)


@pytest.mark.parametrize("args, message", [
    (["--config.train.carry_gradient=bptt"], "train.carry_gradient 'bptt' unknown"),
    (["--config.train.carry_gradient=rtrl", "--config.train.influence_budget_mb=1"],
     "train.carry_gradient='rtrl' needs an influence of"),
])
def test_the_command_line_refuses_in_one_line_and_writes_nothing(tmp_path, args, message):
    workdir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "recurrentlab.cli", "train", "--config", "experiments/tiny/lstm.py",
         "--workdir", str(workdir), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not workdir.exists()


# --- the evidence sweep ------------------------------------------------------------------


def test_the_evidence_sweep_loads_and_its_tiny_variant_runs(tmp_path):
    """experiments/sweeps/carry_gradient.py: its cells are the control (full BPTT), truncated
    BPTT beyond the horizon (D + 2 >= 4H), snap1 and rtrl at that horizon; the tiny variant
    trains all four and ``recurrentlab results`` reads them as one protocol table."""
    from recurrentlab.sweep import expand
    from recurrentlab.sweep.protocol import OK, summary_table
    from recurrentlab.sweep.results import load_results, protocol_table
    from recurrentlab.sweep.runner import run_sweep

    path = ROOT / "experiments" / "sweeps" / "carry_gradient.py"
    runs = expand(str(path), tmp_path / "unused", check=False)
    assert len(runs) == 12  # 4 cells x 3 seeds
    horizon = {}
    for run in runs:
        config = run.load_config()
        validate(config)
        t = config.train
        horizon[t.carry_gradient, bool(run.overrides.get("protocol.control"))] = (
            t.bptt_segments * t.segment_len, config.data.distance)
    (h_control, d), = {v for (mode, control), v in horizon.items() if control}
    beyond = {mode: v for (mode, control), v in horizon.items() if not control}
    assert set(beyond) == {"none", "snap1", "rtrl"} and h_control >= d + 2
    assert all(d + 2 >= 4 * h for h, d in beyond.values())

    out = tmp_path / "tiny"
    manifest = run_sweep(f"{path}:tiny", out, launcher="inline", echo=lambda line: None)
    assert [r["status"] for r in manifest["runs"]] == ["finished"] * 4
    summary = summary_table(protocol_table(load_results(out)))
    marks = {(mode, int(h)): mark for mode, h, mark in
             zip(summary["carry_gradient"], summary["horizon"], summary["capability"],
                 strict=True)}
    assert sorted(marks) == [("none", 2), ("none", 16), ("rtrl", 2), ("snap1", 2)]
    # the control vouches for carry_gradient="none" only; 12 steps cannot solve it
    assert marks["none", 2] == marks["none", 16] != OK
    assert marks["rtrl", 2] == marks["snap1", 2] == ""
