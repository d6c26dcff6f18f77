"""The hash dropout mask of ``layers.dropout``: its rate, determinism and independence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recurrentlab.models.layers import dropout, keep_mask


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_mask_keeps_one_minus_rate(rate):
    n = 200_000
    kept = np.asarray(keep_mask(jax.random.key(3), rate, (n,))).mean()
    assert abs(kept - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)


def test_mask_is_a_function_of_the_key_and_independent_across_keys_and_entries():
    a = np.asarray(keep_mask(jax.random.key(0), 0.5, (400, 500)))
    np.testing.assert_array_equal(a, np.asarray(keep_mask(jax.random.key(0), 0.5, (400, 500))))
    b = np.asarray(keep_mask(jax.random.key(1), 0.5, (400, 500)))
    n = a.size
    assert abs((a & b).mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)  # two keys: independent
    x, y = a.reshape(-1)[:-1], a.reshape(-1)[1:]  # neighbouring entries: uncorrelated
    assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(n)
    rows = a.mean(axis=1)  # no row-structured pattern either
    assert rows.std() < 3 * np.sqrt(0.25 / a.shape[1])


def test_dropout_scales_kept_entries_and_shares_masks_over_shared_axes():
    x = jnp.ones((3, 50, 4))
    y = np.asarray(dropout(x, 0.25, jax.random.key(5), shared_axes=(1,)))
    assert set(np.unique(y).tolist()) <= {0.0, np.float32(1 / 0.75).item()}
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1], y.shape))
    assert dropout(x, 0.25, None) is x
