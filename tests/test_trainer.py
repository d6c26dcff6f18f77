"""The trainer: truncated BPTT semantics, remat, resume bit-for-bit, and what it refuses."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recurrentlab.errors import ConfigError, DataError, NonFiniteError, WorkdirError
from recurrentlab.models import model_config
from recurrentlab.train.logging import read_metrics
from recurrentlab.train.step import window_loss
from recurrentlab.train.trainer import build_run, carry_handoff, train_and_evaluate


def _lstm(seed=0):
    from recurrentlab.models import build_model

    cfg = model_config("lstm", embed_dim=8, hidden_dim=12, num_layers=2, tie_weights=False,
                       dropout=0.0, dropouth=0.0, dropouti=0.0, wdrop=0.0)
    return build_model(cfg, vocab_size=40, seed=seed)


def _batch(tokens, mask=None):
    tokens = jnp.asarray(tokens, jnp.int32)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    mask = jnp.ones(inputs.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    return {"inputs": inputs, "targets": targets, "mask": mask}


def _embedding_grad(model, loss_of_model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.grad(lambda p: loss_of_model(nnx.merge(graphdef, p, rest)))(params)
    leaves = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(grads)}
    (name,) = [k for k in leaves if "embed" in k.lower()]
    return np.asarray(leaves[name])


def test_gradient_stops_at_the_window_edge_and_flows_inside_it():
    model = _lstm()
    rng = np.random.default_rng(0)
    early = rng.integers(1, 10, size=(2, 9))  # tokens only the earlier part uses
    late = rng.integers(20, 30, size=(2, 9))  # tokens only the later part uses
    carry0 = model.init_carry(2)

    def across_windows(m):  # window 1, trainer hand-off, window 2: loss of window 2 only
        _, (carry, _) = window_loss(m, carry0, _batch(early), segment_len=4, train=False,
                                    key=None)
        carry = carry_handoff(carry)
        loss, _ = window_loss(m, carry, _batch(late), segment_len=4, train=False, key=None)
        return loss

    def inside_window(m):  # one window of two segments; the loss counts segment 2 only
        tokens = np.concatenate([early[:, :8], late[:, :9]], axis=1)
        mask = np.concatenate([np.zeros((2, 8)), np.ones((2, 8))], axis=1)
        loss, _ = window_loss(m, carry0, _batch(tokens, mask), segment_len=8, train=False,
                              key=None)
        return loss

    beyond = _embedding_grad(model, across_windows)[1:10]
    within = _embedding_grad(model, inside_window)[1:10]
    assert np.all(beyond == 0.0)
    assert np.abs(within).max() > 1e-6


def test_remat_gives_the_same_loss_and_gradients():
    from recurrentlab.models import build_model

    cfg = model_config("lstm", embed_dim=8, hidden_dim=12, num_layers=2, wdrop=0.3)
    model = build_model(cfg, vocab_size=40, seed=1)
    tokens = np.random.default_rng(1).integers(0, 40, size=(3, 13))
    carry = model.init_carry(3)
    key = jax.random.PRNGKey(3)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, remat):
        m = nnx.merge(graphdef, p, rest)
        return window_loss(m, carry, _batch(tokens), segment_len=4, train=True, key=key,
                           remat=remat)[0]

    plain, g_plain = jax.value_and_grad(loss)(params, False)
    remat, g_remat = jax.value_and_grad(loss)(params, True)
    np.testing.assert_allclose(plain, remat, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _params(workdir):
    from recurrentlab.train.trainer import load_trained

    *_, model, _ = load_trained(workdir)
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def test_resume_continues_bit_for_bit(tmp_path, tiny_config):
    config = tiny_config(num_steps=6, checkpoint_every=3)
    config.model.wdrop = 0.2  # dropout keys must resume too
    straight = tmp_path / "straight"
    train_and_evaluate(config, straight)

    resumed = tmp_path / "resumed"  # the same run, stopped after its step-3 checkpoint
    resumed.mkdir()
    shutil.copy(straight / "config.json", resumed / "config.json")
    shutil.copytree(straight / "checkpoints" / "3", resumed / "checkpoints" / "3")
    train_and_evaluate(config, resumed)

    for a, b in zip(_params(straight), _params(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    keys = ("loss", "grad_norm", "accuracy")
    late = lambda run: [[r[k] for k in keys] for r in read_metrics(run, "train") if r["step"] > 3]
    assert late(straight) == late(resumed)
    assert json.loads((straight / "summary.json").read_text())["final"] == json.loads(
        (resumed / "summary.json").read_text())["final"]


def test_finished_run_is_left_untouched(tmp_path, tiny_config):
    config = tiny_config(num_steps=2, checkpoint_every=2)
    summary = train_and_evaluate(config, tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert train_and_evaluate(config, tmp_path / "run") == summary
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert before == after


def test_loss_decreases_and_outputs_are_written(tmp_path, tiny_config):
    config = tiny_config(num_steps=30, lr=1e-2, log_every=5, checkpoint_every=30)
    summary = train_and_evaluate(config, tmp_path / "run")
    train = read_metrics(tmp_path / "run", "train")
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    assert summary["final"]["valid"]["bits_per_byte"] < 8.0
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert summary["config_hash"] and summary["code_version"].startswith("0.")


def test_a_different_config_in_the_same_workdir_is_refused(tmp_path, tiny_config):
    train_and_evaluate(tiny_config(num_steps=1, checkpoint_every=1), tmp_path / "run")
    with pytest.raises(WorkdirError, match=r"different config \(train.lr"):
        train_and_evaluate(tiny_config(num_steps=1, checkpoint_every=1, lr=0.5), tmp_path / "run")


def test_corrupted_checkpoint_is_a_clear_error_and_is_kept(tmp_path, tiny_config):
    config = tiny_config(num_steps=4, checkpoint_every=2)
    run = tmp_path / "run"
    train_and_evaluate(config, run)
    (run / "summary.json").unlink()
    damaged = 0
    for path in (run / "checkpoints" / "4").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "meta" not in str(path):
            path.write_bytes(b"\x00garbage" * 4)
            damaged += 1
    assert damaged
    with pytest.raises(WorkdirError, match="checkpoints/4 cannot be read"):
        train_and_evaluate(config, run)
    assert (run / "checkpoints" / "4").exists() and (run / "checkpoints" / "2").exists()


def test_nan_loss_stops_with_one_line_and_keeps_good_checkpoints(tmp_path, tiny_config):
    config = tiny_config(num_steps=6, checkpoint_every=1, lr=1e38, log_every=1, optimizer="sgd")
    with pytest.raises(NonFiniteError, match="NaN/Inf at step") as error:
        train_and_evaluate(config, tmp_path / "run")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "summary.json").exists()
    steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()
                   if p.name.isdigit())
    from recurrentlab.train.trainer import load_trained

    for step in steps:  # every checkpoint written is finite (restoring checks it)
        load_trained(tmp_path / "run", step=step)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("segment_len", 0, "train.segment_len must be a positive integer"),
        ("bptt_segments", 0, "train.bptt_segments must be a positive integer"),
        ("batch_size", 100000, "batch"),
    ],
)
def test_impossible_values_are_refused(tiny_config, field, value, message):
    config = tiny_config()
    config.train[field] = value
    with pytest.raises((ConfigError, DataError), match=message):
        build_run(config)


def test_stop_when_ends_the_run_at_the_first_evaluation_that_meets_it(tmp_path, tiny_config):
    config = tiny_config(num_steps=9, eval_every=2, checkpoint_every=100,
                         stop_when="bits_per_byte<1e9")  # met at the first evaluation
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["step"] == 2 and summary["stopped_early"] == {"step": 2,
                                                                 "stop_when": "bits_per_byte<1e9"}
    assert max(r["step"] for r in read_metrics(tmp_path / "run", "train")) == 2
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["2"]
    # a restart after the stop (summary lost) finishes without training further
    (tmp_path / "run" / "summary.json").unlink()
    again = train_and_evaluate(config, tmp_path / "run")
    assert again["step"] == 2 and again["final"] == summary["final"]


def test_stop_when_that_is_never_met_trains_the_full_budget(tmp_path, tiny_config):
    config = tiny_config(num_steps=4, eval_every=2, checkpoint_every=100,
                         stop_when="bits_per_byte<0")
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["step"] == 4 and summary["stopped_early"] is None


@pytest.mark.parametrize("stop_when, eval_every, message", [
    ("bits_per_byte=0.1", 2, "not '<metric><op><number>'"),
    ("bits_per_byte<0.1", 0, "set train.eval_every"),
])
def test_malformed_stop_when_is_refused(tiny_config, stop_when, eval_every, message):
    with pytest.raises(ConfigError, match=message):
        build_run(tiny_config(stop_when=stop_when, eval_every=eval_every))


def test_stop_when_naming_an_unreported_metric_says_which_exist(tmp_path, tiny_config):
    """Refused before the workdir exists (the corrected command then runs in it), even when no
    periodic evaluation would come before the end."""
    for eval_every in (2, 4):
        config = tiny_config(num_steps=4, eval_every=eval_every, stop_when="bit_errors<0.1")
        with pytest.raises(ConfigError, match="does not report; use one of .*bits_per_byte"):
            train_and_evaluate(config, tmp_path / "run")
        assert not (tmp_path / "run").exists()


def test_episode_metrics_are_known_before_a_run(tmp_path):
    from recurrentlab.data import build_dataset, data_config
    from recurrentlab.train.evaluate import metric_names

    recall = build_dataset(data_config("synthetic", task="delayed_recall", distance=2), seed=0)
    assert {"exact_match", "accuracy"} <= metric_names(recall)
    assert "bit_errors" not in metric_names(recall)
    copy = build_dataset(data_config("synthetic", task="copy"), seed=0)
    assert "bit_errors" in metric_names(copy)


def test_the_train_step_donates_its_state_and_keeps_the_fresh_carry(tiny_config):
    from recurrentlab.train.distributed import Placement
    from recurrentlab.train.optim import make_optimizer
    from recurrentlab.train.trainer import init_train_state, make_train_step

    config = tiny_config(carry_across_windows=False)  # every step resets to the fresh carry
    dataset, model = build_run(config)
    placement, tx = Placement.from_config(config), make_optimizer(config.train)
    graphdef, state, rest, fresh = init_train_state(model, config, tx, placement)
    step = make_train_step(graphdef, config, tx, placement)
    t = config.train
    for i in range(2):
        batch = placement.batch(dataset.train_window(i, t.batch_size,
                                                     t.segment_len * t.bptt_segments))
        before = jax.tree.leaves(state.params)
        state, _ = step(state, rest, fresh, batch)
        assert all(leaf.is_deleted() for leaf in before)  # updated in place, not copied
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(fresh))


# --- compilation and what the records count -------------------------------------------


RUN_PROGRAMS = {"jit(init_model)": 1, "jit(init_state)": 1, "jit(train_step)": 1,
                "jit(eval_start)": 1, "jit(eval_window)": 1}


@pytest.mark.parametrize("model", ["lstm", "ntm"])
def test_a_run_compiles_each_program_once(tmp_path, tiny_config, compile_counter, model):
    config = tiny_config(model, num_steps=6, eval_every=2, checkpoint_every=3)
    if model == "ntm":  # its constant initial memory once made the carry change type at step 2
        config.model.update(dict(controller_size=16, memory_slots=8, memory_width=4, embed_dim=8,
                                 memory_init="constant"))
    train_and_evaluate(config, tmp_path / "run")
    assert len(read_metrics(tmp_path / "run", "eval")) == 3  # steps 2, 4 and the final one
    # model, train state, train step, evaluation: one compilation each, no eager op compiles
    assert dict(compile_counter.counts) == RUN_PROGRAMS


def test_evaluation_with_model_overrides_builds_its_model_once(tmp_path, tiny_config,
                                                               compile_counter):
    config = tiny_config(num_steps=4, eval_every=1, checkpoint_every=4)
    config.eval.model_overrides.scan_unroll = 2  # another graph over the same parameters
    train_and_evaluate(config, tmp_path / "run")
    assert len(read_metrics(tmp_path / "run", "eval")) == 4
    assert dict(compile_counter.counts) == {**RUN_PROGRAMS, "jit(init_model)": 2}


def test_logged_loss_is_the_cross_entropy_and_the_penalty_is_optimised_apart(tmp_path,
                                                                           tiny_config):
    config = tiny_config(num_steps=1, checkpoint_every=1)
    config.model.update(dict(dropout=0.0, dropouth=0.0, dropouti=0.0, wdrop=0.0,
                             ar_alpha=50.0, tar_beta=50.0))  # AWD's AR/TAR, made large
    train_and_evaluate(config, tmp_path / "run")
    (record,) = read_metrics(tmp_path / "run", "train")

    dataset, model = build_run(config)  # the run's initial parameters
    t = config.train
    window = dataset.train_window(0, t.batch_size, t.segment_len * t.bptt_segments)
    batch = {k: jnp.asarray(window[k]) for k in ("inputs", "targets", "mask")}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def objective(p):
        return window_loss(nnx.merge(graphdef, p, rest), model.init_carry(t.batch_size), batch,
                           segment_len=t.segment_len, train=True, key=jax.random.PRNGKey(0))

    (total, (_, aux)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
    cross_entropy = float(aux["nll_sum"] / aux["count"])
    norm = lambda g: float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g))))
    assert record["loss"] == pytest.approx(cross_entropy, rel=1e-5)
    assert record["bits"] == pytest.approx(cross_entropy / np.log(2), rel=1e-5)
    assert record["penalty"] == pytest.approx(float(aux["penalty"]), rel=1e-4)
    assert float(total) == pytest.approx(cross_entropy + record["penalty"], rel=1e-5)
    assert record["penalty"] > 1e-3 * record["loss"]  # it would show in loss if it were there
    # the step optimised cross-entropy + penalty: its gradient norm is that of the sum
    ce_grads = jax.grad(lambda p: objective(p)[1][1]["nll_sum"] / aux["count"])(params)
    assert record["grad_norm"] == pytest.approx(norm(grads), rel=1e-4)
    assert abs(norm(grads) - norm(ce_grads)) > 1e-3 * norm(grads)


def test_tokens_per_sec_leaves_out_evaluation_and_checkpoints(tmp_path, tiny_config,
                                                             monkeypatch):
    import time

    from recurrentlab.train.checkpoint import Checkpoints
    from recurrentlab.train.evaluate import Evaluator

    pause = 0.25
    evaluate, save = Evaluator.__call__, Checkpoints.save
    monkeypatch.setattr(Evaluator, "__call__",
                        lambda self, *a: (time.sleep(pause), evaluate(self, *a))[1])
    monkeypatch.setattr(Checkpoints, "save", lambda self, *a: (time.sleep(pause), save(self, *a)))
    config = tiny_config(num_steps=4, eval_every=1, checkpoint_every=1, log_every=2)
    train_and_evaluate(config, tmp_path / "run")
    t = config.train
    tokens = 2 * t.batch_size * t.segment_len * t.bptt_segments  # per record of steps 3-4
    record = [r for r in read_metrics(tmp_path / "run", "train") if r["step"] == 4][0]
    # steps 3 and 4 sat between 4 pauses (evaluation and checkpoint after steps 2 and 3):
    # counting them would give at most tokens / (4 * pause)
    assert record["tokens_per_sec"] > 10 * tokens / (4 * pause)


def test_the_compilation_cache_folder_and_its_off_switch(tmp_path, monkeypatch):
    from recurrentlab.train.trainer import enable_compilation_cache

    kept = jax.config.jax_compilation_cache_dir  # the test session's cache
    monkeypatch.setenv("HOME", str(tmp_path))
    cases = [(None, str(tmp_path / ".cache" / "recurrentlab" / "jax")),  # the default
             (str(tmp_path / "elsewhere"), str(tmp_path / "elsewhere")), ("off", None)]
    try:
        for value, folder in cases:
            jax.config.update("jax_compilation_cache_dir", None)
            if value is None:
                monkeypatch.delenv("RECURRENTLAB_CACHE_DIR", raising=False)
            else:
                monkeypatch.setenv("RECURRENTLAB_CACHE_DIR", value)
            assert enable_compilation_cache() == folder
            assert jax.config.jax_compilation_cache_dir == folder
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "own"))  # set for JAX
        monkeypatch.setenv("RECURRENTLAB_CACHE_DIR", str(tmp_path / "elsewhere"))
        assert enable_compilation_cache() == str(tmp_path / "own")
    finally:
        jax.config.update("jax_compilation_cache_dir", kept)
