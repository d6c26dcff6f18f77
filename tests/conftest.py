"""Test setup. Simulated CPU devices must be configured before jax initialises."""

import collections
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

# Identical train steps compiled by different tests are compiled once per session. Runs
# started by tests (in this process or in child processes, which inherit the environment)
# cache in the checkout's .pytest_cache, never in the user's ~/.cache/recurrentlab.
JAX_CACHE = os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "jax")
os.environ["RECURRENTLAB_CACHE_DIR"] = JAX_CACHE
jax.config.update("jax_compilation_cache_dir", JAX_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class CompileCounter:
    """Counts XLA compilations by function name (``jit(train_step)``...) while installed.

    A compilation served by the persistent cache counts too: it is still a trace, a lowering
    and a cache lookup that a compile-once program would not repeat."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.counts[str(kwargs.get("fun_name"))] += 1

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    def total(self) -> int:
        return sum(self.counts.values())


@pytest.fixture
def compile_counter():
    counter = CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(counter)


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
