"""The command line end to end on a tiny config, and its one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--config.model.embed_dim=16", "--config.model.hidden_dim=24",
        "--config.model.num_layers=2",
        "--config.train.batch_size=4", "--config.train.segment_len=8",
        "--config.train.num_steps=4", "--config.train.checkpoint_every=2",
        "--config.eval.max_windows=2", "--config.eval.batch_size=4", "--config.mesh.data_axis=1",
        "--config.train.progress_bar=False"]


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "recurrentlab.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli") / "run"
    done = cli("train", "--config", "experiments/tiny/lstm.py", "--workdir", str(workdir), *TINY)
    assert done.returncode == 0, done.stderr
    return workdir


def test_train_writes_a_complete_workdir(trained):
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        assert (trained / name).is_file()
    assert (trained / "checkpoints" / "4").is_dir()
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["step"] == 4 and "bits_per_byte" in summary["final"]["valid"]


def test_eval_and_sample_use_the_checkpoint(trained):
    done = cli("eval", "--workdir", str(trained), "--split", "test")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["split"] == "test" and result["step"] == 4 and result["tokens"] > 0
    assert (trained / "eval_test_step4.json").exists()

    plain = (trained / "eval_test_step4.json").read_text()
    done = cli("eval", "--workdir", str(trained), "--split", "test", "--config.eval.max_windows=1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tokens"] < result["tokens"]  # the override took effect
    assert len(list(trained.glob("eval_test_step4_*.json"))) == 1  # its own file ...
    assert (trained / "eval_test_step4.json").read_text() == plain  # ... the first one is kept

    done = cli("sample", "--workdir", str(trained), "--prompt", "The licence", "--length", "12",
               "--temperature", "0.8", "--top-k", "5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("The licence")
    assert len(done.stdout.encode()) > len("The licence")  # 12 bytes follow (decoded leniently)


def test_eval_refuses_a_training_override_in_one_line(trained):
    before = sorted(p.name for p in trained.iterdir())
    done = cli("eval", "--workdir", str(trained), "--config.model.hidden_dim=32")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: --config.model.hidden_dim=32 would change the trained run"), done.stderr
    assert sorted(p.name for p in trained.iterdir()) == before  # nothing written


def test_top_k_beyond_the_vocabulary_is_one_line(trained):
    done = cli("sample", "--workdir", str(trained), "--prompt", "x", "--top-k", "1000")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: --top-k 1000 is more than the vocabulary of this run (256 symbols); "
                     "use 1..256, or leave it out to sample from all of them"], done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.train.lrr=0.1"], "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
        (["--config.train.segment_len=0"], "train.segment_len must be a positive integer"),
        (["--config.train.bptt_segments=0"], "train.bptt_segments must be a positive integer"),
        (["--config.model.hiden_dim=3"], "did you mean 'model.hidden_dim'?"),
        (["--config.data.nme=enwik8"], "unknown config key 'data.nme'; did you mean 'data.name'?"),
        (["--config.data.name=enwik8"], "enwik8 not found at 'data/enwik8'; download"),
        (["--config.train.lr=fast"], "bad value for 'train.lr': 'fast' (expected a float)"),
        (["--config.eval.final_splits=tst"], "eval.final_splits: unknown split 'tst'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    done = cli("train", "--config", "experiments/tiny/lstm.py", "--workdir", str(tmp_path / "r"),
               *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_missing_data_file_says_where_to_get_it(tmp_path):
    done = cli("train", "--config", "experiments/enwik8/lstm.py", "--workdir", str(tmp_path / "r"),
               f"--config.data.path={tmp_path / 'nowhere' / 'enwik8'}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "mattmahoney.net/dc/enwik8.zip" in lines[0], done.stderr


def test_eval_of_an_empty_workdir_is_a_clear_error(tmp_path):
    done = cli("eval", "--workdir", str(tmp_path))
    assert done.returncode == 2 and "holds no run" in done.stderr


def test_evaluation_overrides_can_be_added_from_the_command_line():
    from recurrentlab.config import apply_overrides, load_config_file
    from recurrentlab.data import build_dataset
    from recurrentlab.errors import ConfigError

    config = load_config_file(ROOT / "experiments/ntm/copy.py")
    assert not config.data.eval_overrides  # held-out sequences of the training lengths
    apply_overrides(config, ["--config.data.eval_overrides.min_len=40",
                             "--config.data.eval_overrides.max_len=40"])
    assert build_dataset(config.data, seed=0).max_episode_len("valid") == 81
    apply_overrides(config, ["--config.data.eval_overrides.max_lenn=3"])
    with pytest.raises(ConfigError, match="max_lenn"):
        build_dataset(config.data, seed=0)
    with pytest.raises(ConfigError, match="unknown config key 'data.eval_overides.max_len'"):
        apply_overrides(config, ["--config.data.eval_overides.max_len=3"])
