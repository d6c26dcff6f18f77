"""The bench: end to end on a tiny config, compile time against K, memory against the horizon.

No assertion here is about time: timings are only checked to be measured (positive, finite).
The memory assertions are about XLA's buffer assignment, which is deterministic.
"""

import importlib.util
import json
import math
import time
from pathlib import Path

import jax
import pytest

from recurrentlab import xla_cpu
from recurrentlab.bench import bench_config, entry, measure, peers, run_bench, to_markdown
from recurrentlab.cli import main
from recurrentlab.config import load_config_file
from recurrentlab.errors import ConfigError
from recurrentlab.models import model_config

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "experiments" / "bench"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _tiny_lstm(**fields):
    return model_config("lstm", embed_dim=16, hidden_dim=24, num_layers=2, tie_weights=False,
                        dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0,
                        **fields)


def test_bench_cli_writes_markdown_and_json_with_the_expected_columns(tmp_path):
    out = tmp_path / "bench"
    wanted = ("matmul_floor", "torch", "torch_aten") if HAS_TORCH else ("matmul_floor",)
    status = main(["bench", "--config", str(BENCH / "lstm_vs_torch.py") + ":tiny",
                   "--out", str(out), f"--config.peers={wanted!r}",
                   "--config.generate_tokens=2", "--config.warmup=1"])
    assert status == 0
    markdown = (out / "bench.md").read_text()
    result = json.loads((out / "bench.json").read_text())

    header = markdown.splitlines()[2]
    for column in ("model", "params", "tokens/s", "compile s", "peak MiB", "gen ms/token"):
        assert f"| {column} |" in header
    assert "memory_analysis" in markdown  # the table says where peak memory comes from
    assert result["complete"] is True and "Partial" not in markdown
    (row,) = result["rows"]
    assert row["model"] == "lstm" and row["window"] == 8 and row["batch_size"] == 4
    for key in ("tokens_per_sec", "compile_s", "step_ms"):
        assert row[key] > 0 and math.isfinite(row[key])
    assert row["peak_source"] == "memory_analysis"
    memory = row["memory_analysis"]
    assert row["peak_bytes"] == memory["temp"] + memory["argument"] + memory["output"]
    assert memory["argument"] >= 4 * row["params"]  # float32 params are step arguments
    assert row["generation"]["ms_per_token"] > 0
    assert result["environment"]["torch_threads"] == peers.jax_threads()
    options = result["environment"]["xla_cpu_options"]  # what the steps compiled with
    assert options == (xla_cpu.compiler_options("cpu") or {})
    assert f"XLA CPU options {options} (recurrentlab.xla_cpu)" in markdown

    assert row["peers"]["matmul_floor"]["tokens_per_sec"] > 0  # the bound, in the same run
    if HAS_TORCH:  # the peer column appears, with a ratio measured in the same run
        assert "| torch tokens/s | ours ÷ torch |" in header
        torch_row = row["peers"]["torch"]
        assert torch_row["tokens_per_sec"] > 0
        assert torch_row["ratio"] == pytest.approx(row["tokens_per_sec"]
                                                   / torch_row["tokens_per_sec"])
        assert torch_row["params"] == row["params"]  # the same network on both sides
        aten_row = row["peers"]["torch_aten"]  # torch without oneDNN's fused RNN
        assert aten_row["tokens_per_sec"] > 0 and aten_row["device"].endswith("oneDNN off")
        assert "| torch_aten tokens/s | ours ÷ torch_aten |" in header
    else:
        assert "torch" not in header


def test_every_bench_config_loads_and_tiny_variants_are_tiny():
    for path in sorted(BENCH.glob("*.py")):
        if path.name == "kernels.py":
            continue
        config = load_config_file(path)
        tiny = load_config_file(path, "tiny")
        assert config.kind == tiny.kind
        for e in tiny.entries.values():
            assert e.train.batch_size * e.train.segment_len <= 64
    models = load_config_file(BENCH / "models.py")
    from recurrentlab.models import registered_models

    assert sorted(models.entries) == registered_models()


def test_peers_skip_cleanly_where_they_cannot_run():
    config = measure.run_config(_tiny_lstm(), dict(batch_size=2, segment_len=4))
    if jax.default_backend() != "gpu":
        result = peers.run_peer("jax_rnn", config, 32, warmup=0, repeats=1, steps_per_repeat=1,
                                threads=1)
        assert "GPU" in result["skipped"]
    dropped = model_config("lstm", embed_dim=8, hidden_dim=8, num_layers=1)  # AWD dropout on
    assert "dropout" in peers.applies("torch", dropped)
    assert "lstm" in peers.applies("flax", model_config("transformer"))
    assert peers.applies("flax", _tiny_lstm()) is None


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_peer_computes_the_same_function_as_the_lstm_model():
    import numpy as np
    import torch

    from recurrentlab.models import build_model

    config = _tiny_lstm()
    ours = build_model(config, vocab_size=32, seed=0)
    peer = peers.torch_lm(32, config).double()
    with torch.no_grad():
        as_torch = lambda x: torch.from_numpy(np.asarray(x, np.float64))
        peer.embedding.weight.copy_(as_torch(ours.embedding[...]))
        for i, layer in enumerate(ours.layers):
            getattr(peer.lstm, f"weight_ih_l{i}").copy_(as_torch(layer.w_ih[...]).T)
            getattr(peer.lstm, f"weight_hh_l{i}").copy_(as_torch(layer.w_hh[...]).T)
            getattr(peer.lstm, f"bias_ih_l{i}").copy_(as_torch(layer.b_ih[...]))
            getattr(peer.lstm, f"bias_hh_l{i}").copy_(as_torch(layer.b_hh[...]))
        peer.decoder.weight.copy_(as_torch(ours.decoder[...]).T)
        peer.decoder.bias.copy_(as_torch(ours.decoder_bias[...]))
        tokens = np.random.default_rng(0).integers(0, 32, size=(3, 7))
        zeros = torch.zeros(2, 3, 24, dtype=torch.float64)
        expected, _ = peer(torch.from_numpy(tokens), (zeros, zeros))
    logits, _ = ours(jax.numpy.asarray(tokens, jax.numpy.int32), ours.init_carry(3))
    np.testing.assert_allclose(np.asarray(logits), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_compile_time_is_measured_for_each_k():
    config = bench_config("compile_time")
    config.entries.lstm = entry(_tiny_lstm(), batch_size=2, segment_len=4)
    config.compile_segments = (1, 2)
    config.unrolls = ()
    result = run_bench(config, log=lambda line: None)
    (row,) = result["by_segments"]
    assert set(row["compile_s"]) == {1, 2}
    assert all(t > 0 and math.isfinite(t) for t in row["compile_s"].values())
    assert row["max_over_min"] >= 1.0
    assert "| model | params | batch × S | K=1 s | K=2 s | max ÷ min |" in to_markdown(result)


def test_abstract_inputs_allocate_nothing_for_an_enwik8_sized_model():
    config = measure.run_config(
        model_config("lstm", embed_dim=400, hidden_dim=1840, num_layers=3),
        dict(batch_size=16, segment_len=1024))
    _, _, (state, rest, carry, batch) = measure.abstract_train_inputs(config, 256)
    leaves = jax.tree.leaves((state, rest, carry, batch))
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert measure.count_params(state.params) > 40_000_000  # AWD-LSTM-sized, never built
    assert batch["inputs"].shape == (16, 1024)


def test_peak_memory_grows_with_k_without_remat_and_with_the_carry_with_remat():
    """A real property of the compiled step (XLA buffer assignment), not a timing. Growth is
    measured from K = 2: at K = 1 the step has no loop over segments, and XLA lays that program
    out differently (with ``recurrentlab.xla_cpu``'s region analysis its remat peak is ~80 KB
    below K = 2's, a drop that would count as growth)."""
    config = load_config_file(BENCH / "memory_vs_horizon.py", "tiny")
    config.horizon_segments = (2, 8)
    result = run_bench(config, log=lambda line: None)
    peak = {(r["remat"], r["bptt_segments"]): r["peak_bytes"] for r in result["rows"]}
    carry = result["rows"][0]["carry_bytes"]
    assert carry == 2 * 2 * 2 * 32 * 4  # 2 layers of (h, c), batch 2, 32 units, float32
    extra = 8 - 2  # segments added
    no_remat = peak[(False, 8)] - peak[(False, 2)]
    remat = peak[(True, 8)] - peak[(True, 2)]
    assert remat <= 8 * extra * carry  # with remat: bounded by a few carries per segment
    assert no_remat >= 8 * max(remat, extra * carry)  # without: activations of every segment
    (summary,) = result["summary"]
    assert summary["no_remat_bytes_per_segment"] > summary["remat_bytes_per_segment"]
    markdown = to_markdown(result)
    assert "| K | horizon (tokens) | lstm no remat MiB | lstm remat MiB |" in markdown
    assert "| 8 | 64 |" in markdown  # horizon = K * segment_len


@pytest.mark.accelerator
def test_gpu_bench_runs_the_gpu_peers(tmp_path):
    config = load_config_file(BENCH / "lstm_vs_torch.py", "tiny")
    config.peers = ("jax_rnn", "torch") if HAS_TORCH else ("jax_rnn",)
    config.generate_tokens = 2
    result = run_bench(config, tmp_path, log=lambda line: None)
    (row,) = result["rows"]
    assert row["peers"]["jax_rnn"]["tokens_per_sec"] > 0
    assert row["peak_source"] in ("peak_bytes_in_use", "memory_analysis")


def test_matmul_floor_does_the_matrix_products_of_a_train_step():
    """The bound holds the step's products: 3x the forward's (forward, data gradient, weight
    gradient). XLA's cost analysis counts a while loop's body once, so its count is the
    analytic one less (1 - 1/T) of the four recurrent scans (two layers, two directions)."""
    config = measure.run_config(_tiny_lstm(), dict(batch_size=4, segment_len=8, bptt_segments=2))
    prepared = peers.prepare_peer("matmul_floor", config, 40, steps_per_repeat=1, threads=1)
    b, t, e, h, v = 4, 16, 16, 24, 40
    forward = 2 * b * t * (e * 4 * h + h * 4 * h + h * 4 * h + h * 4 * h + h * v)
    assert prepared.info["flops_per_step"] == 3 * forward
    cost = prepared.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    scans = 4 * 2 * b * t * h * 4 * h
    assert cost["flops"] == pytest.approx(3 * forward - scans * (1 - 1 / t), rel=0.01)
    prepared.run()


@pytest.mark.parametrize("mode", ["snap1", "rtrl"])
def test_compile_only_measures_the_carry_gradient_modes(mode):
    """The compile-only rows (no allocation) lower the train step with the influence in the
    state: peak memory grows over truncated BPTT by at least the influence itself."""
    model = model_config("lstm", embed_dim=8, hidden_dim=12, num_layers=1, dropout=0.0,
                         dropoute=0.0, dropouth=0.0, dropouti=0.0, wdrop=0.0)
    rows = {}
    for m in ("none", mode):
        config = measure.run_config(model, dict(batch_size=2, segment_len=4))
        config.train.carry_gradient = m
        _, _, (state, *_) = measure.abstract_train_inputs(config, 16)
        assert (state.influence is None) == (m == "none")
        rows[m] = measure.compile_only(config, 16)
    base, with_mode = rows["none"], rows[mode]
    assert base["influence_bytes"] == 0 < with_mode["influence_bytes"]
    assert with_mode["memory"]["peak"] >= base["memory"]["peak"] + with_mode["influence_bytes"]


def test_an_entry_sets_its_own_steps_per_repeat_and_bad_counts_stop_at_the_door(tmp_path):
    config = bench_config("throughput")
    config.warmup, config.repeats, config.steps_per_repeat = 0, 1, 1
    config.generate_tokens, config.peers = 0, ()
    config.entries.own = entry(_tiny_lstm(), steps_per_repeat=3, batch_size=2, segment_len=4)
    config.entries.default = entry(_tiny_lstm(), batch_size=2, segment_len=4)
    result = run_bench(config, tmp_path / "bench", log=lambda line: None)
    rows = {r["label"]: r for r in result["rows"]}
    assert rows["own"]["steps_per_repeat"] == 3 and rows["default"]["steps_per_repeat"] == 1
    for row in rows.values():  # the rate counts every step of the repeat
        (seconds,) = row["repeat_seconds"]
        assert row["tokens_per_sec"] == pytest.approx(2 * 4 * row["steps_per_repeat"] / seconds)
    assert "repeats of (default 1, own 3) consecutive steps" in to_markdown(result)

    config.entries.own.steps_per_repeat = -2
    with pytest.raises(ConfigError, match="'own': steps_per_repeat must be >= 1"):
        run_bench(config, tmp_path / "refused", log=lambda line: None)
    assert not (tmp_path / "refused").exists()
    config.entries.own.steps_per_repeat, config.min_repeat_s = 3, 0.2  # a tiny step: < 66 ms
    calibrated = run_bench(config, log=lambda line: None)
    for row in calibrated["rows"]:
        assert row["steps_per_repeat"] > 3
        (seconds,) = row["repeat_seconds"]
        assert row["tokens_per_sec"] == pytest.approx(2 * 4 * row["steps_per_repeat"] / seconds)
    assert "a repeat lasts >= 0.2 s" in to_markdown(calibrated)
    for bad in (-0.1, float("inf"), float("nan")):
        config.min_repeat_s = bad
        with pytest.raises(ConfigError, match=f"min_repeat_s must be >= 0 seconds and finite, "
                                              f"got {bad}"):
            run_bench(config, tmp_path / "refused", log=lambda line: None)
    assert not (tmp_path / "refused").exists()


class _Sleeper:
    """A prepared run whose steps take a known minimum time (``time.sleep``)."""

    def __init__(self, step_s: float, steps_per_repeat: int):
        self.step_s, self.steps_per_repeat = step_s, steps_per_repeat

    def run(self) -> None:
        for _ in range(self.steps_per_repeat):
            time.sleep(self.step_s)


def test_calibrated_repeats_give_a_fast_side_more_steps_and_keep_a_slow_sides_count():
    runs = {"fast": _Sleeper(0.005, 2), "slow": _Sleeper(0.06, 2)}
    counts = measure.calibrate_steps(runs, min_repeat_s=0.1)
    assert counts == {name: run.steps_per_repeat for name, run in runs.items()}
    assert 3 <= counts["fast"] <= 20  # ceil(0.1 s / >= 5 ms): at most 20
    assert counts["slow"] == 2  # 2 x 60 ms already last 0.1 s
