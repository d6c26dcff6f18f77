"""Data parallel over simulated CPU devices (conftest: 4 devices).

The loss is a mean over the global batch, so n devices must follow the 1-device trajectory on
the same global batch; they differ only in the order of floating-point reductions, hence
``RTOL = 1e-5`` on every logged loss (observed differences are ~1e-7).
"""

import shutil

import jax
import numpy as np
import pytest
from conftest import tiny_lm_config
from jax.sharding import PartitionSpec

from recurrentlab.errors import ConfigError
from recurrentlab.train.checkpoint import Checkpoints
from recurrentlab.train.distributed import Placement, make_mesh, param_spec
from recurrentlab.train.logging import read_metrics
from recurrentlab.train.optim import make_optimizer
from recurrentlab.train.trainer import (
    build_run,
    init_train_state,
    make_train_step,
    train_and_evaluate,
)

RTOL = 1e-5


def losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir, "train")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run on 1 device, 4 devices, and 4 devices with FSDP parameters."""
    out = {}
    for name, axis, shard in (("one", 1, False), ("four", 4, False), ("fsdp", 4, True)):
        config = tiny_lm_config(num_steps=6, checkpoint_every=3)
        config.mesh.data_axis = axis
        config.mesh.shard_params = shard
        workdir = tmp_path_factory.mktemp(name)
        out[name] = (workdir, train_and_evaluate(config, workdir))
    return out


def test_four_devices_follow_one_device(runs):
    assert jax.device_count() == 4
    one, four = losses(runs["one"][0]), losses(runs["four"][0])
    assert sorted(one) == list(range(1, 7))
    np.testing.assert_allclose([four[s] for s in one], [one[s] for s in one], rtol=RTOL)
    # and it is learning, so the comparison is not between constants
    assert one[6] < one[1]
    final_one, final_four = runs["one"][1]["final"]["valid"], runs["four"][1]["final"]["valid"]
    np.testing.assert_allclose(final_four["loss"], final_one["loss"], rtol=RTOL)


def test_sharded_params_follow_one_device(runs):
    one, fsdp = losses(runs["one"][0]), losses(runs["fsdp"][0])
    np.testing.assert_allclose([fsdp[s] for s in one], [one[s] for s in one], rtol=RTOL)
    np.testing.assert_allclose(runs["fsdp"][1]["final"]["valid"]["loss"],
                               runs["one"][1]["final"]["valid"]["loss"], rtol=RTOL)


def test_param_spec_takes_largest_divisible_axis():
    assert param_spec((16, 64), 4) == PartitionSpec(None, "data")
    assert param_spec((64, 16), 4) == PartitionSpec("data")
    assert param_spec((24, 24), 4) == PartitionSpec("data")  # first of equals
    assert param_spec((6, 3), 4) == PartitionSpec()  # nothing divides: replicated
    assert param_spec((2,), 4) == PartitionSpec()
    assert param_spec((), 4) == PartitionSpec()
    assert param_spec((64, 16), 1) == PartitionSpec()


def test_fsdp_state_stays_sharded_through_a_step():
    config = tiny_lm_config(num_steps=1)
    config.mesh.data_axis = 4
    config.mesh.shard_params = True
    dataset, model = build_run(config)
    placement = Placement.from_config(config)
    tx = make_optimizer(config.train)
    graphdef, state, rest, fresh = init_train_state(model, config, tx, placement)
    step = make_train_step(graphdef, config, tx, placement)
    t = config.train
    batch = placement.batch(dataset.train_window(0, t.batch_size, t.segment_len * t.bptt_segments))
    new_state, _ = step(state, rest, fresh, batch)
    split = 0
    for before, after in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params),
                             strict=True):
        expected = param_spec(before.shape, 4)
        assert before.sharding.spec == expected
        assert after.sharding.is_equivalent_to(before.sharding, before.ndim)
        split += expected != PartitionSpec()
        # a split leaf holds a quarter of the values per device
        if expected != PartitionSpec():
            assert after.addressable_shards[0].data.size * 4 == after.size
    assert split >= 4  # the LSTM's weight matrices and biases are all split
    for moment in jax.tree.leaves(new_state.opt_state):
        if moment.ndim:
            assert moment.sharding.spec == param_spec(moment.shape, 4)
    for leaf in jax.tree.leaves(new_state.carry):
        assert leaf.sharding.spec == PartitionSpec("data")


def test_batch_that_does_not_divide_is_a_config_error():
    config = tiny_lm_config(batch_size=6)
    config.mesh.data_axis = 4
    with pytest.raises(ConfigError, match="train.batch_size=6 does not divide over 4 devices"):
        make_mesh(config)
    config = tiny_lm_config()
    config.mesh.data_axis = 8
    with pytest.raises(ConfigError, match="only 4 devices"):
        make_mesh(config)


@pytest.mark.parametrize("devices", [2, 1])
def test_checkpoint_from_four_devices_resumes_on_fewer(runs, tmp_path, devices):
    """Saved at step 3 on 4 devices, resumed on 2 and on 1: steps 4..6 follow the 4-device run."""
    source, _ = runs["four"]
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    shutil.rmtree(workdir / "checkpoints" / "6")
    (workdir / "summary.json").unlink()
    metrics = (workdir / "metrics.jsonl").read_text().splitlines()
    (workdir / "metrics.jsonl").write_text("\n".join(  # keep only what step 3 had logged
        line for line in metrics if '"step": 4' not in line and '"step": 5' not in line
        and '"step": 6' not in line) + "\n")

    config = tiny_lm_config(num_steps=6, checkpoint_every=3)
    config.mesh.data_axis = devices
    placement = Placement.from_config(config)
    dataset, model = build_run(config)
    tx = make_optimizer(config.train)
    _, template, _, _ = init_train_state(model, config, tx, placement)
    checkpoints = Checkpoints(workdir / "checkpoints")
    try:
        restored, meta = checkpoints.restore(3, template)
    finally:
        checkpoints.close()
    assert meta["step"] == 3 and int(restored.step) == 3
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding.mesh.devices.size == devices
    for leaf in jax.tree.leaves(restored.carry):
        assert leaf.addressable_shards[0].data.shape[0] == config.train.batch_size // devices

    summary = train_and_evaluate(config, workdir)
    assert summary["status"] == "finished"
    resumed, original = losses(workdir), losses(source)
    assert sorted(resumed) == list(range(1, 7))
    np.testing.assert_allclose([resumed[s] for s in (4, 5, 6)], [original[s] for s in (4, 5, 6)],
                               rtol=RTOL)
