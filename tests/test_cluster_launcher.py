"""The submitit launcher on a real local instance of submitit (its LocalExecutor: pickled jobs,
a controller process and one job process per run) gives the local launcher's results."""

import json
from pathlib import Path

import pytest

from recurrentlab.cli import main
from recurrentlab.errors import ConfigError
from recurrentlab.sweep.runner import last_error_line, read_manifest, run_sweep
from recurrentlab.sweep.spec import RunSpec
from recurrentlab.train.logging import read_metrics

submitit = pytest.importorskip("submitit")

from recurrentlab.sweep.launchers_cluster import SubmititLauncher, parse_parameters  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

SWEEP_FILE = '''
from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config
from recurrentlab.sweep import sweep


def get_config(arg=None):
    c = base_config()
    c.model = model_config("lstm", embed_dim=8, hidden_dim=16, num_layers=1)
    c.data = data_config("embedded")
    c.train.update(dict(batch_size=4, segment_len=8, bptt_segments=1, num_steps=4, log_every=1,
                        checkpoint_every=2, keep_checkpoints=2, progress_bar=False, lr=3e-3))
    c.eval.update(dict(batch_size=4, max_windows=2))
    c.mesh.data_axis = 1
    return c


def get_sweep(arg=None):
    return sweep("train.lr", [3e-3, 1e-2])
'''


@pytest.fixture
def child_env(monkeypatch):
    """Runs (children of either launcher) import this checkout and share the compile cache."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".pytest_cache" / "jax"))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    monkeypatch.delenv("RECURRENTLAB_SUBMITIT", raising=False)
    monkeypatch.delenv("RECURRENTLAB_SUBMITIT_CLUSTER", raising=False)


def results(sweep_dir: Path) -> dict:
    out = {}
    for entry in read_manifest(sweep_dir)["runs"]:
        workdir = Path(entry["workdir"])
        summary = json.loads((workdir / "summary.json").read_text())
        out[entry["name"]] = {
            "train": [(r["step"], r["loss"], r["accuracy"])
                      for r in read_metrics(workdir, "train")],
            "final": summary["final"],
            "config_hash": summary["config_hash"],
        }
    return out


def test_submitit_sweep_equals_local_sweep(tmp_path, child_env, monkeypatch):
    spec = tmp_path / "sweep.py"
    spec.write_text(SWEEP_FILE)
    quiet = lambda line: None

    local = run_sweep(str(spec), tmp_path / "local", parallel=2, launcher="local", echo=quiet)
    # the command line's way in: 'recurrentlab sweep ... --launcher submitit'
    monkeypatch.setenv("RECURRENTLAB_SUBMITIT_CLUSTER", "local")  # no Slurm here, to be sure
    assert main(["sweep", str(spec), "--workdir", str(tmp_path / "cluster"),
                 "--launcher", "submitit", "--parallel", "2"]) == 0
    cluster = read_manifest(tmp_path / "cluster")
    assert cluster["launcher"] == "submitit"

    for manifest in (local, cluster):
        assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"], manifest
    a, b = results(tmp_path / "local"), results(tmp_path / "cluster")
    assert sorted(a) == ["lr=0.003", "lr=0.01"]
    assert a == b  # same processes' worth of work: bit-identical numbers
    assert a["lr=0.003"]["train"] != a["lr=0.01"]["train"]  # the sweep axis matters
    # the jobs really went through submitit: its folder holds the pickled jobs and results
    assert list((tmp_path / "cluster" / "logs" / "submitit").rglob("*_result.pkl"))
    log = (tmp_path / "cluster" / "logs" / "lr=0.01.log").read_text()
    assert "$ recurrentlab train" in log

    # a finished sweep is not run again through the cluster launcher either
    launcher = SubmititLauncher(parallel=2, cluster="local", poll_seconds=0.2)
    again = run_sweep(str(spec), tmp_path / "cluster", launcher=launcher, echo=quiet)
    assert [r["status"] for r in again["runs"]] == ["finished", "finished"]
    assert results(tmp_path / "cluster") == b


def test_failing_job_reports_its_exit_status(tmp_path, child_env):
    """A run that fails in its job comes back from wait() with the CLI's exit status (2 for a
    config error), its error line in the run's log."""
    launcher = SubmititLauncher(parallel=1, cluster="local", poll_seconds=0.2)
    run = RunSpec(name="bad", config_file=str(tmp_path / "missing.py"), config_arg=None,
                  overrides={"train.lr": 0.1}, workdir=tmp_path / "bad",
                  log_path=tmp_path / "logs" / "bad.log")
    job = launcher.submit(run)
    assert isinstance(job.job, submitit.local.local.LocalJob)
    ended = launcher.wait([job], timeout=120)
    assert [(j.run.name, code) for j, code in ended] == [("bad", 2)]
    assert last_error_line(run.log_path).startswith("error: config file")
    assert "--config.train.lr=0.1" in run.log_path.read_text()


def test_parameters_and_cluster_choice(monkeypatch):
    assert parse_parameters("slurm_partition=gpu, gpus_per_node=1,timeout_min=240") == {
        "slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 240}
    with pytest.raises(ConfigError, match="key=value"):
        parse_parameters("gpu")
    monkeypatch.setenv("RECURRENTLAB_SUBMITIT", "timeout_min=30")
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch: submitit runs jobs locally
    launcher = SubmititLauncher(parallel=3)
    assert launcher.cluster == "local" and launcher.max_parallel == 3  # no sbatch here
    assert launcher.parameters["timeout_min"] == 30
    with pytest.raises(ConfigError, match="unknown"):
        SubmititLauncher(cluster="kubernetes")
