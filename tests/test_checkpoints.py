"""Only committed checkpoint steps count: an interrupted save is skipped with one warning line,
the run resumes from the last committed step, and nothing is deleted."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from recurrentlab.train.checkpoint import COMMIT_FILE, Checkpoints, is_committed
from recurrentlab.train.logging import read_metrics
from recurrentlab.train.trainer import load_trained, train_and_evaluate


def state(value: float) -> dict:
    return {"params": {"w": jnp.full((3, 4), value)}, "step": jnp.asarray(int(value), jnp.int32)}


def interrupted_save(directory, step: int, value: float) -> None:
    """Leave ``directory/step`` as Orbax leaves a save cut short where it writes in place (its
    commit-file mode: object stores, or any file system set up so): the items written, some
    data files short, and no commit file yet. The final commit file is the last thing written."""
    options = ocp.CheckpointManagerOptions(
        temporary_path_class=ocp.path.atomicity.CommitFileTemporaryPath)
    with ocp.CheckpointManager(directory, options=options, item_names=("state", "meta")) as manager:
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state(value)), meta=ocp.args.JsonSave({"step": step})),
            force=True)
        manager.wait_until_finished()
    folder = directory / str(step)
    assert is_committed(folder)
    for path in folder.rglob(COMMIT_FILE):
        path.unlink()
    cut = 0
    for path in (folder / "state").rglob("*"):
        if path.is_file() and "/d/" in str(path):
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            cut += 1
    assert cut and not is_committed(folder)


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_uncommitted_step_is_skipped_with_one_line_and_kept(tmp_path, capsys):
    directory = tmp_path / "checkpoints"
    checkpoints = Checkpoints(directory, keep=5)
    for step in (2, 4):
        checkpoints.save(step, state(step), {"step": step})
    checkpoints.close()
    interrupted_save(directory, 6, 6.0)
    left = files(directory / "6")
    capsys.readouterr()

    checkpoints = Checkpoints(directory, keep=5)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: checkpoint step 6 in ") and (
        "never committed" in err[0] and "using step 4" in err[0]), err
    assert checkpoints.latest_step() == 4 and checkpoints.all_steps() == [2, 4]
    restored, meta = checkpoints.restore(4, state(0.0))
    np.testing.assert_array_equal(restored["params"]["w"], np.full((3, 4), 4.0))
    assert meta == {"step": 4}
    assert files(directory / "6") == left  # reading touches nothing

    checkpoints.save(6, state(60.0), {"step": 6})  # the step is written anew ...
    checkpoints.wait()
    assert files(directory / "6.uncommitted") == left  # ... the interrupted one kept aside
    assert checkpoints.all_steps() == [2, 4, 6] and is_committed(directory / "6")
    restored, _ = checkpoints.restore(6, state(0.0))
    np.testing.assert_array_equal(restored["params"]["w"], np.full((3, 4), 60.0))
    checkpoints.close()
    assert capsys.readouterr().err == ""  # one warning, once


def test_orbax_temporary_folders_and_unmarked_old_checkpoints(tmp_path, capsys):
    directory = tmp_path / "checkpoints"
    checkpoints = Checkpoints(directory, keep=5)
    for step in (2, 4):
        checkpoints.save(step, state(step), {"step": step})
    checkpoints.close()
    # a save cut short in Orbax's default mode: a temporary folder, never renamed
    shutil.copytree(directory / "4", directory / f"6{ocp.path.atomicity.TMP_DIR_SUFFIX}123")
    capsys.readouterr()
    assert Checkpoints(directory).all_steps() == [2, 4]
    # checkpoints from an Orbax that wrote no commit files at all: every step counts
    for path in directory.glob(f"*/{COMMIT_FILE}"):
        path.unlink()
    assert Checkpoints(directory).latest_step() == 4
    assert capsys.readouterr().err == ""


@pytest.mark.slow  # two short trainings (~20 s on a loaded 2-core machine)
def test_training_resumes_bit_for_bit_from_the_last_committed_step(tmp_path, tiny_config,
                                                                   capsys):
    config = tiny_config(num_steps=6, checkpoint_every=2)
    straight = tmp_path / "straight"
    train_and_evaluate(config, straight)

    resumed = tmp_path / "resumed"  # stopped while saving step 6, after committing step 4
    resumed.mkdir()
    shutil.copy(straight / "config.json", resumed / "config.json")
    for step in (2, 4):
        shutil.copytree(straight / "checkpoints" / str(step), resumed / "checkpoints" / str(step))
    shutil.copytree(straight / "checkpoints" / "6", resumed / "checkpoints" / "6")
    interrupted = resumed / "checkpoints" / "6"
    for path in interrupted.rglob(COMMIT_FILE):
        path.unlink()
    for path in (interrupted / "state").rglob("*"):
        if path.is_file() and "/d/" in str(path):
            path.write_bytes(path.read_bytes()[:8])
    left = files(interrupted)
    capsys.readouterr()

    assert load_trained(resumed)[3] == 4  # eval and sample read the last committed step
    assert files(interrupted) == left
    train_and_evaluate(config, resumed)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(err) == 2 and all("step 6" in line and "using step 4" in line for line in err)

    assert files(resumed / "checkpoints" / "6.uncommitted") == left  # nothing deleted
    records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "resume"] == [4]
    assert [r["step"] for r in read_metrics(resumed, "train")] == [5, 6]
    a, b = (load_trained(run)[2] for run in (straight, resumed))
    from flax import nnx

    for x, y in zip(jax_leaves(nnx.state(a, nnx.Param)), jax_leaves(nnx.state(b, nnx.Param)),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    summaries = [json.loads((run / "summary.json").read_text()) for run in (straight, resumed)]
    assert summaries[0]["final"] == summaries[1]["final"]


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_a_checkpoint_of_the_dict_state_restores_into_the_typed_state(tmp_path, tiny_config):
    """Run workdirs written while the train state was a dict (``{"params": ..., "opt_state":
    ..., "carry": ..., "step": ..., "rng": ...}``) resume: the typed state is saved under the
    same leaf names, and restores from such a checkpoint value for value."""
    from recurrentlab.train.checkpoint import flatten_named
    from recurrentlab.train.distributed import Placement
    from recurrentlab.train.optim import make_optimizer
    from recurrentlab.train.state import TrainState
    from recurrentlab.train.trainer import build_run, init_train_state

    config = tiny_config()
    _, model = build_run(config)
    tx = make_optimizer(config.train)
    _, template, _, _ = init_train_state(model, config, tx, Placement.from_config(config))
    assert isinstance(template, TrainState) and template.influence is None
    old = {name: getattr(template, name) for name in ("params", "opt_state", "carry", "rng")}
    old["carry"] = jax.tree.map(lambda x: x + 1.0, old["carry"])
    old["step"] = jnp.asarray(7, jnp.int32)
    assert set(flatten_named(template)) == set(flatten_named(old))  # one on-disk layout
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    try:
        checkpoints.save(7, old, {"step": 7})
        checkpoints.wait()
        restored, meta = checkpoints.restore(7, template)
    finally:
        checkpoints.close()
    assert isinstance(restored, TrainState) and int(restored.step) == 7 and meta == {"step": 7}
    ours, theirs = flatten_named(restored), flatten_named(old)
    for name, leaf in theirs.items():
        np.testing.assert_array_equal(np.asarray(ours[name]), np.asarray(leaf), err_msg=name)
    assert restored.as_dict().keys() == old.keys()
    assert TrainState.from_dict(restored.as_dict()) == restored
