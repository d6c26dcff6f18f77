"""Test setup. Simulated CPU devices must be configured before jax initialises."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Accelerator tests run only where a GPU or TPU is present."""
    if jax.default_backend() in ("gpu", "tpu"):
        return
    skip = pytest.mark.skip(reason="needs a GPU or TPU")
    for item in items:
        if "accelerator" in item.keywords:
            item.add_marker(skip)

# Identical train steps compiled by different tests are compiled once per session.
jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..",
                                                            ".pytest_cache", "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def tiny_lm_config(model: str = "lstm", **train):
    """A run config small enough to compile and train in seconds on one CPU core."""
    from recurrentlab.config import base_config
    from recurrentlab.data import data_config
    from recurrentlab.models import model_config

    sizes = {
        "lstm": dict(embed_dim=16, hidden_dim=24, num_layers=2),
    }
    c = base_config()
    c.model = model_config(model, **sizes.get(model, {}))
    c.data = data_config("embedded")
    c.train.update(dict(batch_size=4, segment_len=8, bptt_segments=2, num_steps=6, log_every=1,
                        checkpoint_every=3, keep_checkpoints=5, progress_bar=False, lr=3e-3))
    c.train.update(train)
    c.eval.update(dict(batch_size=4, max_windows=2))
    c.mesh.data_axis = 1
    return c


@pytest.fixture
def tiny_config():
    return tiny_lm_config
