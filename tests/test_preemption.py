"""SIGTERM (preemption) during training: checkpoint the current step, stop, resume to the end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import tiny_lm_config

from recurrentlab.config import to_json
from recurrentlab.train.checkpoint import Checkpoints
from recurrentlab.train.distributed import Placement, PreemptionGuard
from recurrentlab.train.logging import read_metrics
from recurrentlab.train.optim import make_optimizer
from recurrentlab.train.trainer import build_run, init_train_state, train_and_evaluate

ROOT = Path(__file__).resolve().parent.parent
NUM_STEPS = 300  # far more than run before the signal lands (one step is milliseconds)

WORKER = """
import sys
from recurrentlab.cli import main
sys.exit(main(sys.argv[1:]))
"""

CONFIG_FILE = """
from recurrentlab.config import from_json

def get_config():
    return from_json({text!r})
"""


def test_guard_turns_sigterm_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert guard.should_stop() and guard.stop_after_loop()
        assert "SIGTERM" in guard.message(7, "runs/x") and "re-run" in guard.message(7, "runs/x")
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_leaves_a_restorable_checkpoint(tmp_path):
    config = tiny_lm_config(num_steps=NUM_STEPS, log_every=1, checkpoint_every=NUM_STEPS,
                            keep_checkpoints=2)
    config.eval.max_windows = 1
    config_path = tmp_path / "config.py"
    config_path.write_text(CONFIG_FILE.format(text=to_json(config)))
    workdir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, "train", "--config", str(config_path), "--workdir",
         str(workdir)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + 180
        while not read_metrics(workdir, "train"):  # the first steps are logged
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no training step logged in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 2, err[-3000:]
    assert "training stopped by SIGTERM after step" in err
    assert "re-run the same command to resume" in err
    assert "Traceback" not in err
    assert not (workdir / "summary.json").exists()
    checkpoints = Checkpoints(workdir / "checkpoints")
    try:
        step = checkpoints.latest_step()
        assert step is not None and 1 <= step < NUM_STEPS
        assert f"after step {step};" in err
        dataset, model = build_run(config)
        placement = Placement.from_config(config)
        tx = make_optimizer(config.train)
        _, template, _, _ = init_train_state(model, config, tx, placement)
        state, meta = checkpoints.restore(step, template)
    finally:
        checkpoints.close()
    assert int(state.step) == step and meta["step"] == step
    logged = max(r["step"] for r in read_metrics(workdir, "train"))
    assert logged == step  # stopped right after the step it saved

    summary = train_and_evaluate(config, workdir)  # resume to the end
    assert summary["status"] == "finished"
    records = read_metrics(workdir, "train")
    assert [r["step"] for r in records] == list(range(1, NUM_STEPS + 1))
    assert all(np.isfinite(r["loss"]) for r in records)
    kinds = [json.loads(x)["kind"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("resume") == 1


def test_signal_handler_is_restored_after_training(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    train_and_evaluate(tiny_lm_config(num_steps=2, checkpoint_every=2), tmp_path / "run")
    assert signal.getsignal(signal.SIGTERM) is before
