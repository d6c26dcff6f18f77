"""Two real processes with jax.distributed on loopback train one data-parallel run.

Each process simulates 2 CPU devices, so the run spans 4 devices on 2 hosts; every process
feeds only its own rows of the global batch. Process 0 alone writes metrics and the summary;
both write the Orbax checkpoints. The losses must match a single-process run of the same
config to ``RTOL = 1e-5`` (reduction order only). SIGTERM to one of them stops both after the
same step with a checkpoint, which two processes restore to finish the run.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_lm_config

from recurrentlab.config import to_json
from recurrentlab.errors import ConfigError
from recurrentlab.train.distributed import distributed_arguments
from recurrentlab.train.logging import read_metrics
from recurrentlab.train.trainer import train_and_evaluate

RTOL = 1e-5
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240  # seconds for both processes together, start-up and compilation included

WORKER = """
import sys
from recurrentlab.config import from_json
from recurrentlab.train.distributed import Preempted
from recurrentlab.train.trainer import train_and_evaluate
config = from_json(open(sys.argv[1]).read())
config.mesh.coordinator_address = sys.argv[2]
config.mesh.num_processes = 2
config.mesh.process_id = int(sys.argv[3])
try:
    summary = train_and_evaluate(config, sys.argv[4])
except Preempted as stop:
    print("preempted:", stop, flush=True)
    sys.exit(2)
import jax
print("process", jax.process_index(), "of", jax.process_count(), "devices", jax.device_count(),
      "status", summary["status"], flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_processes(config_path: Path, workdir: Path) -> list[subprocess.Popen]:
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
               # later launches reuse the first launch's compiled programs
               JAX_COMPILATION_CACHE_DIR=str(ROOT / ".pytest_cache" / "jax"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    return [subprocess.Popen([sys.executable, "-c", WORKER, str(config_path), address, str(i),
                              str(workdir)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for i in range(2)]


def finish(procs: list[subprocess.Popen], expect: int = 0) -> list[str]:
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == expect, f"process {i} exited {p.returncode}:\n{out[-3000:]}"
    return outputs


def run_two_processes(config_path: Path, workdir: Path) -> list[str]:
    return finish(start_two_processes(config_path, workdir))


def write_config(config, path: Path) -> Path:
    path.write_text(to_json(config))
    return path


def losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir, "train")}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    config = tiny_lm_config(num_steps=6, checkpoint_every=3)
    config.mesh.data_axis = 1
    workdir = tmp_path_factory.mktemp("single")
    return config, workdir, train_and_evaluate(config, workdir)


def test_two_processes_match_one(single, tmp_path):
    _, single_dir, single_summary = single
    config = tiny_lm_config(num_steps=6, checkpoint_every=3)
    config.mesh.data_axis = 0  # every device of both processes
    workdir = tmp_path / "run"

    outputs = run_two_processes(write_config(config, tmp_path / "config.json"), workdir)
    for i, out in enumerate(outputs):
        assert f"process {i} of 2 devices 4 status finished" in out, out[-2000:]

    reference, distributed = losses(single_dir), losses(workdir)
    assert sorted(distributed) == list(range(1, 7))
    np.testing.assert_allclose([distributed[s] for s in range(1, 7)],
                               [reference[s] for s in range(1, 7)], rtol=RTOL)
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "train" for r in lines) == 6  # process 1 wrote nothing
    summary = json.loads((workdir / "summary.json").read_text())
    np.testing.assert_allclose(summary["final"]["valid"]["loss"],
                               single_summary["final"]["valid"]["loss"], rtol=RTOL)
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                  if p.name.isdigit()) == [3, 6]


def test_sigterm_to_one_process_stops_both_after_the_same_step(tmp_path):
    """Only process 1 gets SIGTERM; both agree on the step, checkpoint it together and stop;
    two processes then restore that checkpoint across hosts and finish the run."""
    steps = 60  # 2-process steps take milliseconds: the signal lands long before the end
    config = tiny_lm_config(num_steps=steps, checkpoint_every=steps, log_every=1)
    config.mesh.data_axis = 0
    config.eval.max_windows = 1
    config_path = write_config(config, tmp_path / "config.json")
    workdir = tmp_path / "run"
    procs = start_two_processes(config_path, workdir)
    deadline = time.monotonic() + TIMEOUT
    while not read_metrics(workdir, "train"):
        assert all(p.poll() is None for p in procs), finish(procs)
        assert time.monotonic() < deadline, "no step logged in time"
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGTERM)
    outputs = finish(procs, expect=2)
    stopped = {int(re.search(r"after step (\d+);", out).group(1)) for out in outputs}
    assert len(stopped) == 1, outputs  # the same step on both processes
    step = stopped.pop()
    assert 1 <= step < steps
    assert "re-run the same command to resume" in outputs[0]
    assert max(r["step"] for r in read_metrics(workdir, "train")) == step
    assert not (workdir / "summary.json").exists()

    outputs = run_two_processes(config_path, workdir)  # resume to the end
    assert "status finished" in outputs[0]
    records = read_metrics(workdir, "train")
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert all(np.isfinite(r["loss"]) for r in records)
    kinds = [json.loads(x)["kind"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("resume") == 1


def test_distributed_arguments(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID",
                 "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    config = tiny_lm_config()
    assert distributed_arguments(config.mesh) is None  # one process, nothing configured
    config.mesh.coordinator_address = "10.0.0.1:1234"
    with pytest.raises(ConfigError, match="needs mesh.num_processes"):
        distributed_arguments(config.mesh)
    config.mesh.num_processes, config.mesh.process_id = 2, 1
    assert distributed_arguments(config.mesh) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}
    config.mesh.process_id = 2
    with pytest.raises(ConfigError, match="not in"):
        distributed_arguments(config.mesh)
    config.mesh.distributed = "off"
    assert distributed_arguments(config.mesh) is None
    config = tiny_lm_config()
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host:9")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert distributed_arguments(config.mesh) == {
        "coordinator_address": "host:9", "num_processes": 4, "process_id": 3}
    config.mesh.distributed = "sometimes"
    with pytest.raises(ConfigError, match="mesh.distributed"):
        distributed_arguments(config.mesh)


def test_slurm_detection(monkeypatch):
    """An srun step of several tasks starts jax.distributed (jax reads SLURM_* itself); the
    batch script holding the same allocation does not."""
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    slurm = dict(SLURM_JOB_ID="42", SLURM_STEP_NODELIST="node[001-002]", SLURM_NTASKS="8",
                 SLURM_PROCID="3", SLURM_LOCALID="3")
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS", raising=False)
    config = tiny_lm_config()
    assert distributed_arguments(config.mesh) is None
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    assert distributed_arguments(config.mesh) == {}
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert distributed_arguments(config.mesh) is None
