"""The results table holds exactly the runs' own numbers; seeds aggregate to mean/std/n."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurrentlab.sweep.results import load_results, markdown_table, write_results
from recurrentlab.sweep.runner import run_sweep

SWEEP_FILE = '''
from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config
from recurrentlab.sweep import product, seeds, sweep


def get_config(arg=None):
    c = base_config()
    c.model = model_config("lstm", embed_dim=8, hidden_dim=16, num_layers=1, dropout=0.0,
                           dropouth=0.0, dropouti=0.0, wdrop=0.0)
    c.data = data_config("synthetic", task="delayed_recall", distance=4, num_symbols=4,
                         mode="stream", eval_windows=2)
    c.train.update(dict(batch_size=4, segment_len=8, num_steps=6, log_every=2, eval_every=2,
                        checkpoint_every=6, lr=1e-2, progress_bar=False))
    c.eval.batch_size = 4
    c.mesh.data_axis = 1
    return c


def get_sweep(arg=None):
    return product(sweep("data.distance", [2, 5]), seeds(2))
'''


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    (root / "s.py").write_text(SWEEP_FILE)
    manifest = run_sweep(str(root / "s.py"), root / "out", launcher="inline", echo=lambda x: None)
    assert [r["status"] for r in manifest["runs"]] == ["finished"] * 4
    return root / "out"


def own_numbers(workdir: Path) -> dict:
    """A run's numbers read straight from its files, independently of the results module."""
    summary = json.loads((workdir / "summary.json").read_text())
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if r["kind"] == "eval" and r["split"] == "valid"]
    speeds = [r["tokens_per_sec"] for r in lines if r["kind"] == "train" and
              "tokens_per_sec" in r]
    final = summary["final"]["valid"]
    return {"valid_bits_per_token": final["bits_per_token"], "valid_loss": final["loss"],
            "valid_accuracy": final["accuracy"], "valid_exact_match": final["exact_match"],
            "best_valid_accuracy": max(r["accuracy"] for r in evals),
            "best_valid_bits_per_token": min(r["bits_per_token"] for r in evals),
            "tokens_per_sec": sum(speeds) / len(speeds),
            "train_seconds": summary["train_seconds"], "num_params": summary["num_params"],
            "num_evals": len(evals)}


def test_per_run_values_equal_the_runs_metrics(sweep_dir):
    table = load_results(sweep_dir, aggregate=False)
    assert list(table["run"]) == ["distance=2,seed=0", "distance=2,seed=1",
                                  "distance=5,seed=0", "distance=5,seed=1"]
    assert table.attrs["fields"] == ["data.distance", "seed"]
    assert list(table["data.distance"]) == [2, 2, 5, 5] and list(table["seed"]) == [0, 1, 0, 1]
    for _, row in table.iterrows():
        own = own_numbers(sweep_dir / row["run"])
        assert own.pop("num_evals") == 3  # steps 2 and 4, then the final one
        for name, value in own.items():
            assert row[name] == value, (row["run"], name)
        assert row["status"] == "finished" and row["step"] == 6


def test_seeds_aggregate_to_mean_std_n(sweep_dir):
    runs = load_results(sweep_dir, aggregate=False)
    table = load_results(sweep_dir, aggregate=True)
    assert list(table["data.distance"]) == [2, 5] and list(table["n"]) == [2, 2]
    assert list(table["seeds"]) == ["0,1", "0,1"]
    for distance, (_, row) in zip([2, 5], table.iterrows(), strict=True):
        part = runs[runs["data.distance"] == distance]
        for name in ("valid_bits_per_token", "valid_accuracy", "best_valid_accuracy",
                     "tokens_per_sec", "train_seconds"):
            values = np.asarray(part[name], np.float64)
            assert row[name] == np.mean(values)
            assert row[f"{name}_std"] == np.std(values, ddof=1)
    one = load_results(sweep_dir, aggregate=False).iloc[[0]].copy()
    assert one["valid_accuracy"].iloc[0] == runs["valid_accuracy"].iloc[0]


def test_written_table_csv_and_plots(sweep_dir):
    text, paths = write_results(sweep_dir)
    assert (sweep_dir / "results.md").read_text() == text
    lines = text.splitlines()
    assert lines[0].startswith("| data.distance | n | valid_bits_per_token |")
    assert len(lines) == 4 and " ± " in lines[2]
    table = load_results(sweep_dir, aggregate=True)
    csv = pd.read_csv(sweep_dir / "results.csv")
    for name in ("valid_bits_per_token", "valid_accuracy_std", "tokens_per_sec"):
        assert list(csv[name]) == list(table[name])  # full precision round trip
    runs_csv = pd.read_csv(sweep_dir / "results_runs.csv")
    assert list(runs_csv["valid_loss"]) == list(load_results(sweep_dir, False)["valid_loss"])
    plots = [p for p in paths if p.suffix == ".png"]
    assert {p.name for p in plots} >= {"valid_accuracy_vs_data.distance.png",
                                       "valid_bits_per_token_vs_data.distance.png"}
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unfinished_runs_and_folders_without_manifest(sweep_dir, tmp_path):
    copy = tmp_path / "copy"
    for name in ("distance=2,seed=0", "distance=5,seed=0"):
        shutil.copytree(sweep_dir / name, copy / name)
    (copy / "distance=5,seed=0" / "summary.json").unlink()
    table = load_results(copy, aggregate=False)
    assert list(table["status"]) == ["finished", "unfinished"]
    assert table.attrs["fields"] == ["data.distance"]
    assert math.isnan(table["valid_accuracy"].iloc[1])
    assert table["best_valid_accuracy"].iloc[1] == max(
        json.loads(x)["accuracy"] for x in
        (copy / "distance=5,seed=0" / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "eval")
    text = markdown_table(table)
    assert text.startswith("| run | status | data.distance |")  # per-run table: no ± or n
    assert " ± " not in text and "| unfinished | 5 |" in text
    with pytest.raises(FileNotFoundError, match="holds no runs"):
        load_results(tmp_path / "nothing")


def test_plots_of_fields_only_some_models_have(tmp_path):
    """A memory sweep over several models: each memory field is absent (None) for the
    other models; each field gets its own plot over the runs that have it."""
    from recurrentlab.sweep.results import plot_results

    table = pd.DataFrame({
        "model.name": ["rmt", "rmt", "transformer_xl", "transformer_xl"],
        "model.num_mem_tokens": [1, 4, None, None],
        "model.mem_len": [None, None, 8, 16],
        "n": [1, 1, 1, 1],
        "valid_accuracy": [0.2, 0.5, 0.4, 0.9],
        "valid_accuracy_std": [math.nan] * 4,
    })
    table.attrs["fields"] = ["model.name", "model.num_mem_tokens", "model.mem_len"]
    table.attrs["metrics"] = ["valid_accuracy"]
    paths = plot_results(table, tmp_path)
    assert sorted(p.name for p in paths) == ["valid_accuracy_vs_model.mem_len.png",
                                             "valid_accuracy_vs_model.num_mem_tokens.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
