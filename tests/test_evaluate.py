"""Episode metrics: an episode that spans windows is judged as one, resets start new ones."""

import numpy as np
import pytest

from recurrentlab.train.evaluate import EpisodeTally


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
