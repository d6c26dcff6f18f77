"""Evaluation: compiled once per model and shapes, equal to the model run by hand; episode
metrics: an episode that spans windows is judged as one, resets start new ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recurrentlab.data import bit_errors, episodes_exact_match
from recurrentlab.train.evaluate import EpisodeTally, EvalSettings, Evaluator, metric_names
from recurrentlab.train.step import first_argmax, token_nll
from recurrentlab.train.trainer import build_run


def _window(targets, episode, mask, reset):
    return {"targets": np.asarray(targets), "episode": np.asarray(episode),
            "mask": np.asarray(mask, np.float32), "reset": np.asarray(reset)}


def test_episode_spanning_two_windows_is_one_episode():
    tally = EpisodeTally(batch_size=1)
    # stream 0: episode 0 spans both windows (one wrong bit in window 2), episode 1 is right
    first = _window([[1, 2, 3]], [[0, 0, 0]], [[0, 1, 1]], [True])
    tally.add(0, first, np.array([[9, 2, 3]]), bits_per_symbol=2)  # masked positions right
    second = _window([[3, 1, 2]], [[0, 1, 1]], [[1, 1, 1]], [False])
    tally.add(1, second, np.array([[2, 1, 2]]), bits_per_symbol=2)  # 3 vs 2: one bit wrong
    metrics = tally.metrics()
    assert metrics["episodes"] == 2
    assert metrics["exact_match"] == pytest.approx(0.5)
    assert metrics["bit_errors"] == pytest.approx(0.5)  # (1 + 0) / 2 episodes


def test_a_reset_starts_new_episodes_with_the_same_ids():
    tally = EpisodeTally(batch_size=1)
    for window, pred in enumerate(([[1, 1]], [[1, 0]])):  # episodic: id 0 every window
        batch = _window([[1, 1]], [[0, 0]], [[1, 1]], [True])
        tally.add(window, batch, np.asarray(pred), bits_per_symbol=0)
    metrics = tally.metrics()
    assert metrics["episodes"] == 2 and metrics["exact_match"] == pytest.approx(0.5)
    assert "bit_errors" not in metrics


def test_the_tally_over_windows_equals_the_episodes_of_the_joined_windows():
    """Streams cut into windows (no reset after the first): the tally's counts equal the one
    episode grouping (``data.episodes_exact_match``, ``data.bit_errors``) over the joined
    windows, episode by episode."""
    rng = np.random.default_rng(0)
    b, w, n = 3, 5, 4
    for _ in range(10):
        episode = np.sort(rng.integers(-1, 5, size=(b, w * n)), axis=1)  # ids run on in time
        mask = (rng.random((b, w * n)) < 0.7).astype(np.float32)
        targets = rng.integers(0, 6, size=(b, w * n))
        pred = np.where(rng.random((b, w * n)) < 0.85, targets, rng.integers(0, 6, (b, w * n)))
        tally = EpisodeTally(batch_size=b)
        for i in range(n):
            part = slice(i * w, (i + 1) * w)
            batch = _window(targets[:, part], episode[:, part], mask[:, part], [i == 0] * b)
            tally.add(i, batch, pred[:, part], bits_per_symbol=2)
        exact, episodes = episodes_exact_match(pred == targets, mask, episode)
        metrics = tally.metrics()
        if not episodes:
            assert metrics == {}
            continue
        assert metrics["episodes"] == episodes
        assert metrics["exact_match"] == pytest.approx(exact / episodes)
        bits = sum(bit_errors(pred[r], targets[r], (mask[r] > 0) & (episode[r] == e), 2)
                   for r in range(b) for e in np.unique(episode[r][(mask[r] > 0)
                                                                   & (episode[r] >= 0)]))
        assert metrics["bit_errors"] == pytest.approx(bits / episodes)


def _split_by_hand(model, dataset, split, settings):
    """Loss and accuracy of ``split`` with every stream's windows joined into one model call
    (an LSTM's carry makes one call equal the windows one after another)."""
    windows = list(dataset.eval_windows(split, settings.batch_size, settings.window_len,
                                        settings.max_windows))
    assert windows[0]["reset"].all() and not any(w["reset"].any() for w in windows[1:])
    join = lambda key: np.concatenate([w[key] for w in windows], axis=1)
    logits, _ = model(jnp.asarray(join("inputs")), model.init_carry(settings.batch_size))
    nll, pred = token_nll(logits, jnp.asarray(join("targets")))
    mask = join("mask")
    return (float(np.sum(np.asarray(nll) * mask) / mask.sum()),
            float(np.sum((np.asarray(pred) == join("targets")) * mask) / mask.sum()))


def test_an_evaluator_compiles_once_and_follows_the_parameters_it_is_given(tiny_config,
                                                                           compile_counter):
    config = tiny_config()
    config.eval.max_windows = 3
    dataset, model = build_run(config)
    settings = EvalSettings.from_config(config)
    assert (settings.batch_size, settings.window_len) == (4, 16)
    evaluator = Evaluator(model, dataset, settings)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    moved = jax.tree.map(lambda p: p + 0.05 * jnp.sign(p), params)  # a later training step
    for p in (params, moved, params):
        metrics = evaluator(p, "valid")
        loss, accuracy = _split_by_hand(nnx.merge(graphdef, p, rest), dataset, "valid", settings)
        assert metrics["loss"] == pytest.approx(loss, rel=1e-5)
        assert metrics["accuracy"] == pytest.approx(accuracy)
        assert metrics["tokens"] == 3 * 4 * 16
    assert evaluator(moved, "valid")["loss"] != evaluator(params, "valid")["loss"]
    assert compile_counter["jit(eval_window)"] == 1 and compile_counter["jit(eval_start)"] == 1
    assert set(metrics) == metric_names(dataset)  # what stop_when is checked against


def test_the_metric_names_are_what_an_episodic_bit_task_reports(tiny_config):
    from recurrentlab.data import data_config
    config = tiny_config()
    config.data = data_config("synthetic", task="copy", eval_windows=2, mode="stream")
    config.eval.max_windows = 2
    dataset, model = build_run(config)
    metrics = Evaluator(model, dataset, EvalSettings.from_config(config))(
        nnx.state(model, nnx.Param), "valid")
    assert set(metrics) == metric_names(dataset)
    assert {"exact_match", "bit_errors"} <= set(metrics)


def test_a_split_with_no_scored_target_reports_nan_not_zero(tiny_config, tmp_path):
    """Windows too short to hold an answer: loss and accuracy are NaN (not 0, below chance),
    in the evaluation and in the train records (which then leave them out)."""
    import math

    from recurrentlab.data import data_config
    from recurrentlab.train.logging import read_metrics
    from recurrentlab.train.trainer import train_and_evaluate

    config = tiny_config(num_steps=2, log_every=1, checkpoint_every=2)
    config.data = data_config("synthetic", task="delayed_recall", distance=30, mode="stream",
                              eval_windows=1)
    config.train.segment_len, config.eval.max_windows = 2, 1
    dataset, model = build_run(config)
    metrics = Evaluator(model, dataset, EvalSettings.from_config(config))(
        nnx.state(model, nnx.Param), "valid")
    assert metrics["tokens"] == 0 and math.isnan(metrics["accuracy"])
    train_and_evaluate(config, tmp_path / "run")
    train = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert train and all("scored_tokens" in r for r in train)
    assert all(("accuracy" in r) == (r["scored_tokens"] > 0) for r in train)
    assert any(r["scored_tokens"] == 0 for r in train)  # the case this is about


_first_argmax = jax.jit(first_argmax)
_jnp_argmax = jax.jit(lambda x: jnp.argmax(x, axis=-1))


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, (4, 7), elements=st.sampled_from(
    [-np.inf, -1.0, 0.0, 0.5, 1.0, np.inf, np.nan])))
def test_first_argmax_is_argmax_with_ties_infinities_and_nans(x):
    np.testing.assert_array_equal(_first_argmax(x), np.argmax(x, axis=-1))
    np.testing.assert_array_equal(_first_argmax(x), _jnp_argmax(x))
