"""XLA CPU compile options (recurrentlab.xla_cpu): where they apply, what they change, and what
they must not change."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from recurrentlab import xla_cpu
from recurrentlab.bench.measure import PreparedTrain
from recurrentlab.bench.runner import _entry_config
from recurrentlab.config import load_config_file
from recurrentlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_options_go_to_cpu_compilations_only_and_default_turns_them_off(monkeypatch):
    monkeypatch.delenv(xla_cpu.XLA_CPU_OPTIONS_ENV, raising=False)
    assert xla_cpu.compiler_options("cpu") == xla_cpu.TUNED
    assert xla_cpu.compiler_options("gpu") is None and xla_cpu.compiler_options("tpu") is None
    monkeypatch.setenv(xla_cpu.XLA_CPU_OPTIONS_ENV, " Default ")
    assert xla_cpu.compiler_options("cpu") is None
    monkeypatch.setenv(xla_cpu.XLA_CPU_OPTIONS_ENV, "fast")
    with pytest.raises(ConfigError, match="'fast' is not a mode"):
        xla_cpu.compiler_options("cpu")


def test_options_this_xla_refuses_warn_once_and_fall_back_to_the_defaults(monkeypatch):
    """A jaxlib that does not know an option would fail every compilation: the options are
    tried on a trivial function first."""
    monkeypatch.delenv(xla_cpu.XLA_CPU_OPTIONS_ENV, raising=False)
    monkeypatch.setitem(xla_cpu.TUNED, "xla_cpu_no_such_option", True)
    with pytest.warns(UserWarning, match="XLA refused the compile options"):
        assert xla_cpu.compiler_options("cpu") is None
    step = xla_cpu.jit(lambda x: 2 * x)  # compiles, with XLA's defaults
    np.testing.assert_array_equal(step(np.arange(3.0)), [0.0, 2.0, 4.0])


def _ntm_train(monkeypatch, mode: str) -> PreparedTrain:
    monkeypatch.setenv(xla_cpu.XLA_CPU_OPTIONS_ENV, mode)
    config = load_config_file(ROOT / "experiments/bench/recurrent_vs_torch.py", "tiny")
    return PreparedTrain(_entry_config(config, config.entries.ntm_b32), config.vocab_size,
                         steps_per_repeat=2)


def test_the_train_step_keeps_fewer_loop_copies_and_the_same_values(monkeypatch):
    """Region analysis decides where buffers live, not what is computed: two train steps of the
    NTM (a scan inside the step) give bit-identical parameters and metrics either way, and the
    compiled step carries fewer copies."""
    tuned, default = _ntm_train(monkeypatch, "tuned"), _ntm_train(monkeypatch, "default")
    copies = {name: p.compiled.as_text().count(" copy(")
              for name, p in (("tuned", tuned), ("default", default))}
    assert copies["tuned"] < copies["default"], copies
    for prepared in (tuned, default):
        prepared.run()
    for a, b in zip(jax.tree.leaves(tuned._state), jax.tree.leaves(default._state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_an_unknown_mode_stops_at_the_door(tmp_path):
    env = dict(os.environ, RECURRENTLAB_XLA_CPU_OPTIONS="tunde")
    workdir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "recurrentlab.cli", "train", "--config",
                          "experiments/tiny/lstm.py", "--workdir", str(workdir)], env=env,
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: RECURRENTLAB_XLA_CPU_OPTIONS='tunde' is not a mode; use tuned (the default) or "
        "default (XLA's own compile options)"]
    assert not workdir.exists()
