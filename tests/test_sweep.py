"""Sweeps: expansion helpers, run names, the runner's skip/resume/failure behaviour, the CLI."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recurrentlab.errors import ConfigError
from recurrentlab.sweep import expand, fixed, product, seeds, sweep, zip_, zipped
from recurrentlab.sweep.runner import MANIFEST, last_error_line, read_manifest, run_sweep
from recurrentlab.sweep.spec import format_value, run_names

ROOT = Path(__file__).resolve().parent.parent

# A tiny LSTM on delayed recall (stream mode): a run compiles in seconds and trains in less.
SWEEP_FILE = '''
from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config
from recurrentlab.sweep import product, seeds, sweep, zip_


def get_config(arg=None):
    c = base_config()
    c.model = model_config("lstm", embed_dim=8, hidden_dim=16, num_layers=1, dropout=0.0,
                           dropouth=0.0, dropouti=0.0, wdrop=0.0)
    c.data = data_config("synthetic", task="delayed_recall", distance=4, num_symbols=4,
                         mode=arg or "stream", eval_windows=2)
    c.train.update(dict(batch_size=4, segment_len=8, bptt_segments=1, num_steps=4, log_every=2,
                        checkpoint_every=2, keep_checkpoints=2, progress_bar=False))
    c.eval.batch_size = 4
    c.mesh.data_axis = 1
    return c


def get_sweep(arg=None):
    return {SWEEP}
'''


def write_sweep(path: Path, sweep_expr: str) -> Path:
    path.write_text(SWEEP_FILE.replace("{SWEEP}", sweep_expr))
    return path


def child_env() -> dict:
    """Runs started by a sweep share the test session's compilation cache."""
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
                JAX_COMPILATION_CACHE_DIR=str(ROOT / ".pytest_cache" / "jax"),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")


# ----------------------------------------------------------------------------- expansion


def test_product_zip_and_seeds_expand_in_order():
    runs = product(sweep("train.segment_len", [32, 64]), sweep("model.name", ["a", "b"]),
                   seeds(2))
    assert len(runs) == 8
    assert runs[0] == {"train.segment_len": 32, "model.name": "a", "seed": 0}
    assert runs[1] == {"train.segment_len": 32, "model.name": "a", "seed": 1}  # last fastest
    assert runs[-1] == {"train.segment_len": 64, "model.name": "b", "seed": 1}
    assert len({json.dumps(r, sort_keys=True) for r in runs}) == 8

    pairs = zip_(sweep("train.segment_len", [16, 32, 64]), sweep("train.bptt_segments", [4, 2, 1]))
    assert pairs == [{"train.segment_len": 16, "train.bptt_segments": 4},
                     {"train.segment_len": 32, "train.bptt_segments": 2},
                     {"train.segment_len": 64, "train.bptt_segments": 1}]
    assert zipped is zip_
    nested = product(sweep("config_arg", ["lstm", "transformer"]), pairs, seeds(3, start=5))
    assert len(nested) == 2 * 3 * 3
    assert [r["seed"] for r in nested[:3]] == [5, 6, 7]
    assert nested[3] == {"config_arg": "lstm", "train.segment_len": 32,
                         "train.bptt_segments": 2, "seed": 5}
    assert fixed(train__lr=1e-3, seed=2) == [{"train.lr": 1e-3, "seed": 2}]


def test_expansion_refusals():
    with pytest.raises(ConfigError, match="different lengths"):
        zip_(sweep("a", [1, 2]), sweep("b", [1, 2, 3]))
    with pytest.raises(ConfigError, match="two axes set 'a'"):
        product(sweep("a", [1]), sweep("a", [2]))
    with pytest.raises(ConfigError, match="no values"):
        sweep("a", [])
    with pytest.raises(ConfigError, match="n >= 1"):
        seeds(0)
    with pytest.raises(ConfigError, match="two identical runs"):
        run_names([{"seed": 1}, {"seed": 1}])


def test_run_names_are_readable_and_unique():
    runs = product(sweep("config_arg", ["lstm", "rmt"]), sweep("train.segment_len", [64]),
                   sweep("model.mem_len", [8, 16]), seeds(2))
    names = run_names(runs)
    assert names[0] == "lstm,mem_len=8,seed=0"  # constant keys left out, last part only
    assert names[-1] == "rmt,mem_len=16,seed=1"
    clash = run_names(product(sweep("model.mem_len", [8, 16]), sweep("data.mem_len", [1, 2])))
    assert clash[1] == "model.mem_len=8,data.mem_len=2"  # ambiguous last parts stay dotted
    assert len(set(names)) == len(names)
    assert run_names([{"train.lr": 3e-4, "model.attn_layers": (0, 2)}]) == [
        "lr=0.0003,attn_layers=0-2"]
    assert format_value((0, 2)) == "(0, 2)" and format_value("x y") == "x y"
    assert format_value(True) == "True" and format_value([1]) == "(1,)"


def test_expand_checks_every_run_before_starting(tmp_path):
    path = write_sweep(tmp_path / "s.py", 'product(sweep("train.segment_len", [8, 16]), seeds(2))')
    runs = expand(f"{path}", tmp_path / "out")
    assert [r.name for r in runs] == ["segment_len=8,seed=0", "segment_len=8,seed=1",
                                      "segment_len=16,seed=0", "segment_len=16,seed=1"]
    config = runs[2].load_config()
    assert config.train.segment_len == 16 and config.seed == 0
    assert runs[2].workdir == (tmp_path / "out" / "segment_len=16,seed=0").resolve()
    assert runs[2].log_path.parent == (tmp_path / "out" / "logs").resolve()

    bad = write_sweep(tmp_path / "bad.py", 'sweep("train.segmnt_len", [8])')
    with pytest.raises(ConfigError, match="run 'segmnt_len=8'.*did you mean 'train.segment_len'"):
        expand(str(bad), tmp_path / "out2")
    arg = write_sweep(tmp_path / "arg.py", 'sweep("config_arg", ["stream", "episodic"])')
    modes = [r.load_config().data.mode for r in expand(str(arg), tmp_path / "out3")]
    assert modes == ["stream", "episodic"]


def test_last_error_line(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("step 1\nTraceback (most recent call last):\n  File x\n"
                   "ValueError: shapes do not match\n")
    assert last_error_line(log) == "ValueError: shapes do not match"
    log.write_text("noise\nerror: data.distance too long\nmore noise\n")
    assert last_error_line(log) == "error: data.distance too long"


# ----------------------------------------------------------------------------- running


def test_failing_run_does_not_stop_the_sweep(tmp_path):
    # Episodic delayed recall with distance 40 cannot fit a 8-token window: a data error at
    # start-up of the second run only (the check before launch validates fields, not data).
    path = write_sweep(tmp_path / "s.py", 'zip_(sweep("config_arg", ["episodic", "episodic", '
                                          '"stream"]), sweep("data.distance", [2, 40, 4]))')
    echoed = []
    manifest = run_sweep(str(path), tmp_path / "out", launcher="inline", echo=echoed.append)
    status = {r["name"]: r["status"] for r in manifest["runs"]}
    assert status == {"episodic,distance=2": "finished", "episodic,distance=40": "failed",
                      "stream,distance=4": "finished"}
    failed = manifest["runs"][1]
    assert failed["error"].startswith("error: ") and "episodes reach 44 tokens" in failed["error"]
    assert any("FAILED episodic,distance=40" in line and failed["error"] in line
               for line in echoed)
    assert Path(failed["log"]).parent == (tmp_path / "out" / "logs").resolve()
    assert read_manifest(tmp_path / "out") == json.loads(json.dumps(manifest, default=str))
    for name in ("episodic,distance=2", "stream,distance=4"):
        assert (tmp_path / "out" / name / "summary.json").exists()
        assert not any(p.suffix == ".log" for p in (tmp_path / "out" / name).iterdir())


def _numbered(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.name.isdigit()] if path.is_dir() else []


def test_kill_then_resume(tmp_path):
    """SIGTERM to the sweep stops its runs; the re-run skips the finished run (files
    untouched) and resumes the unfinished one from its checkpoint."""
    path = write_sweep(tmp_path / "s.py", 'zip_(sweep("train.num_steps", [4, 600]), '
                                          'sweep("train.checkpoint_every", [2, 20]), '
                                          'sweep("train.log_every", [2, 20]))')
    out = tmp_path / "out"
    short = out / "num_steps=4,checkpoint_every=2,log_every=2"
    long = out / "num_steps=600,checkpoint_every=20,log_every=20"
    sweep_process = subprocess.Popen(  # one at a time: the long run starts after the short one
        [sys.executable, "-m", "recurrentlab.cli", "sweep", str(path), "--workdir", str(out),
         "--parallel", "1"], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not ((short / "summary.json").exists() and _numbered(long / "checkpoints")):
        assert sweep_process.poll() is None, sweep_process.stdout.read()
        assert time.time() < deadline, "the runs did not get going"
        time.sleep(0.1)
    assert not (long / "summary.json").exists()
    pids = {r["name"]: r.get("pid") for r in read_manifest(out)["runs"]}
    sweep_process.send_signal(signal.SIGTERM)
    output = sweep_process.communicate(timeout=60)[0]
    assert sweep_process.returncode == 130, output
    assert "re-run the same command to resume" in output
    with pytest.raises(ProcessLookupError):  # the run was stopped (and reaped) with the sweep
        os.kill(pids[long.name], 0)
    manifest = read_manifest(out)
    assert [r["status"] for r in manifest["runs"]] == ["finished", "interrupted"]
    before = {p: p.stat().st_mtime_ns for p in short.rglob("*")}
    stopped_at = max(int(p.name) for p in _numbered(long / "checkpoints"))

    manifest = run_sweep(str(path), out, launcher="inline", echo=lambda line: None)
    assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"]
    assert manifest["runs"][0]["attempts"] == 1 and manifest["runs"][1]["attempts"] == 2
    assert {p: p.stat().st_mtime_ns for p in short.rglob("*")} == before
    records = [json.loads(line) for line in (long / "metrics.jsonl").read_text().splitlines()
               if line.strip().startswith("{")]
    resumes = [r for r in records if r["kind"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["step"] >= stopped_at > 0
    assert json.loads((long / "summary.json").read_text())["step"] == 600
    log = (out / "logs" / f"{long.name}.log").read_text()
    assert log.count("$ recurrentlab train") == 2  # both attempts append to one log


def test_cli_sweep_and_results(tmp_path):
    """The command line: failures are reported in one line each and the exit status is 1;
    the table is printed; ``results`` rebuilds it."""
    path = write_sweep(tmp_path / "s.py", 'zip_(sweep("config_arg", ["episodic", "episodic"]), '
                                          'sweep("data.distance", [2, 40]))')
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "recurrentlab.cli", "sweep", str(path), "--workdir", str(out),
         "--launcher", "inline", "--config.train.num_steps=2"], cwd=ROOT, env=child_env(),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "distance=40" in failed[0] and "error:" in failed[0]
    assert "| data.distance |" in done.stdout and (out / "results.md").exists()
    assert json.loads((out / "distance=2" / "summary.json").read_text())["step"] == 2

    done = subprocess.run([sys.executable, "-m", "recurrentlab.cli", "results", str(out)],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("| data.distance | n |")
    assert (out / "results.md").read_text() in done.stdout

    done = subprocess.run([sys.executable, "-m", "recurrentlab.cli", "sweep", str(path),
                           "--workdir", str(out), "--launcher", "slurm"], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "unknown launcher 'slurm'" in done.stderr


SWEEPS = sorted((ROOT / "experiments" / "sweeps").glob("*.py"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_experiment_sweeps_expand_and_their_configs_validate(path):
    """Every shipped sweep (and its variants) expands to uniquely named runs, and one run per
    config argument builds a valid config for each registered model it names."""
    from recurrentlab.config import validate
    from recurrentlab.models import registered_models
    from recurrentlab.sweep.presets import MODELS

    spec_module = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec_module)
    spec_module.loader.exec_module(module)
    args = [None] + list(getattr(module, "VARIANTS", [a for a in ("tiny", "memory", "full", "paper")
                                                      if f'"{a}"' in path.read_text()]))
    for arg in args:
        spec = str(path) + (f":{arg}" if arg else "")
        runs = expand(spec, ROOT / "runs" / "unused", check=False)
        assert len({r.name for r in runs}) == len(runs) > 0
        checked = set()
        for run in runs:
            model = (run.config_arg or "").split(",")[0]
            unregistered = model in MODELS and model not in registered_models()
            if run.config_arg in checked or unregistered:
                continue
            checked.add(run.config_arg)
            validate(run.load_config())
        assert checked, f"{spec}: no run was checked"


# ----------------------------------------------------------------------------- run_one


def test_run_one_builds_the_config_the_sweep_checked(tmp_path):
    from recurrentlab.config import config_hash
    from recurrentlab.sweep import run_one

    path = write_sweep(tmp_path / "s.py", 'product(sweep("config_arg", ["stream", "episodic"]),'
                                          ' sweep("train.lr", [3e-3, 1e-2]))')
    runs = expand(str(path), tmp_path / "out", ["--config.seed=3"])
    hashes = set()
    for run in runs:
        copy = run_one.decode(run_one.encode(run))
        assert (copy.workdir, copy.log_path, copy.config_spec) == (
            run.workdir, run.log_path, run.config_spec)
        config = copy.load_config()
        assert config_hash(config) == config_hash(run.load_config()) and config.seed == 3
        hashes.add(config_hash(config))
    assert len(hashes) == 4  # the overrides reached every run


def test_a_run_with_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path):
    """The entry point of local runs, as a subprocess, and the inline launcher: the CLI's
    exit status for input it refuses, one ``error:`` line, no workdir."""
    from recurrentlab.sweep import run_one
    from recurrentlab.sweep.launchers import run_inline

    path = write_sweep(tmp_path / "s.py", 'sweep("data.distance", [40])')
    (run,) = expand(f"{path}:episodic", tmp_path / "out")
    done = subprocess.run([sys.executable, "-m", "recurrentlab.sweep.run_one",
                           run_one.encode(run)], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [last_error_line_of(done.stderr)]
    assert "episodes reach 44 tokens" in done.stderr and not run.workdir.exists()
    assert run_inline(run) == 2
    log = run.log_path.read_text().splitlines()
    assert log[0].startswith("$ recurrentlab train --config ") and len(log) == 2
    assert log[1] == last_error_line_of(done.stderr) and not run.workdir.exists()
    assert run_one.main(["{not json"]) == 2


def last_error_line_of(text: str) -> str:
    return [line for line in text.splitlines() if line.startswith("error: ")][-1]


def test_other_overrides_in_a_finished_sweep_folder_are_refused(tmp_path):
    """The same sweep with other overrides would skip the finished runs (named by their own
    overrides) and record overrides they never saw: refused, manifest and runs untouched."""
    path = write_sweep(tmp_path / "s.py", 'sweep("data.distance", [2])')
    out = tmp_path / "out"
    run_sweep(str(path), out, launcher="inline", echo=lambda line: None)
    before = (out / MANIFEST).read_text()
    with pytest.raises(ConfigError, match="overrides none; this command gives "
                                          "--config.train.lr=0.5: use a new --workdir"):
        run_sweep(str(path), out, launcher="inline", extra_args=["--config.train.lr=0.5"],
                  echo=lambda line: None)
    assert (out / MANIFEST).read_text() == before
    again = run_sweep(str(path), out, launcher="inline", echo=lambda line: None)  # same: fine
    assert [r["status"] for r in again["runs"]] == ["finished"]
