"""Orbax checkpoints of the full training state, with named items.

Each checkpoint step folder holds two items:

* ``state``: the :class:`~recurrentlab.train.state.TrainState` (params, optimiser state, the
  carry at the step boundary, the step, the base PRNG key and any influence: a resumed run
  continues bit-for-bit), saved as a flat mapping ``{"params.layers.0.kernel": array, ...}``
  of its leaves' dotted paths, so names survive refactors of pytrees (a dict state with the
  same keys saves under the same names, and either restores into the other);
* ``meta``: JSON with the config, its hash, the code version and the step.

Saving is asynchronous; :meth:`Checkpoints.close` waits for it. A checkpoint that cannot be
read raises :class:`WorkdirError` naming the folder; nothing is ever deleted by a failing run.

Only committed steps count. Orbax marks a finished save with a commit file in the step folder
(``commit_success.txt``, its ``CommitFileTemporaryPath`` notion of a finalized step; local
saves are also renamed from a temporary name). A step folder without it is an interrupted save
(or a partial copy): it is skipped with one warning line, and the run resumes from the last
committed step. The folder is kept; before this run saves again it is renamed
``<step>.uncommitted`` so the step can be written anew. Checkpoints written by an Orbax that
wrote no commit files (no step has one) are all taken as committed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from recurrentlab.errors import WorkdirError


def _path_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return ".".join(parts)


def flatten_named(tree: Any) -> dict[str, Any]:
    """A pytree as ``{dotted path: leaf}``."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    named = {_path_name(path): leaf for path, leaf in leaves}
    if len(named) != len(leaves):
        raise ValueError("pytree paths are not unique after flattening")
    return named


def unflatten_named(template: Any, named: dict[str, Any]) -> Any:
    """Inverse of :func:`flatten_named` onto the structure of ``template``."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, _ in paths:
        name = _path_name(path)
        if name not in named:
            raise KeyError(name)
        leaves.append(named[name])
    return jax.tree_util.tree_unflatten(treedef, leaves)


COMMIT_FILE = "commit_success.txt"  # ocp.path.atomicity.COMMIT_SUCCESS_FILE


def is_committed(folder: str | Path) -> bool:
    """Whether a step folder holds Orbax's commit marker (a finished save)."""
    try:
        return ocp.path.step.is_path_finalized(
            Path(folder), temporary_path_cls=ocp.path.atomicity.CommitFileTemporaryPath)
    except (AttributeError, TypeError):  # an Orbax without this API: the same test by hand
        return (Path(folder) / COMMIT_FILE).is_file()


class Checkpoints:
    """The ``checkpoints/`` folder of a run workdir (committed steps only; see the module)."""

    def __init__(self, directory: str | Path, *, keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )
        steps = list(self._manager.all_steps())
        committed = [s for s in steps if is_committed(self.directory / str(s))]
        if not committed:  # no commit files at all: an Orbax that did not write them
            committed = steps
        self._committed = sorted(committed)
        self.uncommitted = sorted(set(steps) - set(committed))  # set aside before a save
        if self.uncommitted and jax.process_index() == 0:
            names = ", ".join(str(s) for s in self.uncommitted)
            print(f"warning: checkpoint step {names} in {self.directory} was never committed "
                  f"(an interrupted save, no {COMMIT_FILE}); using step {self._committed[-1]}, "
                  f"the last committed one; the folder is kept (renamed <step>.uncommitted "
                  f"before the next save)", file=sys.stderr, flush=True)

    def latest_step(self) -> int | None:
        """The last committed step, or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        """The committed steps, in order (once set aside, the others are out of Orbax's sight)."""
        if self.uncommitted:
            return list(self._committed)
        return sorted(self._manager.all_steps())

    def _set_aside_uncommitted(self) -> None:
        """Rename uncommitted step folders out of Orbax's sight, so their steps can be saved
        again (Orbax skips a save at or below the latest step folder it sees)."""
        if jax.process_index() == 0:
            for step in self.uncommitted:
                folder = self.directory / str(step)
                target, n = folder.with_name(f"{step}.uncommitted"), 1
                while target.exists():
                    n += 1
                    target = folder.with_name(f"{step}.uncommitted-{n}")
                folder.rename(target)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("recurrentlab_set_aside_uncommitted")
        self.uncommitted = []
        self._manager.reload()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        if self.uncommitted:
            self._set_aside_uncommitted()
        # The write finishes in the background while training goes on, and the train step
        # donates (overwrites in place) the state it is given: save a copy of its own (a
        # runtime copy; jnp.copy would compile a program per leaf shape at the first save).
        # Each leaf goes to its own sharding: a multi-process array is not fully addressable,
        # and device_put without a target would refuse it.
        copy = jax.tree.map(
            lambda x: jax.device_put(x, x.sharding, may_alias=False)
            if isinstance(x, jax.Array) else x, state)
        named = flatten_named(copy)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(named), meta=ocp.args.JsonSave(meta)
            ),
        )

    def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
        """Restore ``step`` into the structure (and shardings) of ``template``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, flatten_named(template))
        folder = self.directory / str(step)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
            state = unflatten_named(template, dict(restored["state"]))
        except Exception as error:  # orbax raises many types for damaged files
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
            raise WorkdirError(
                f"checkpoint {folder} cannot be read ({type(error).__name__}: {first}); "
                f"move that folder away to resume from an earlier step, or use a new --workdir"
            ) from None
        for name, leaf in flatten_named(state).items():
            # each process checks the shards it holds (a multi-host array has no host copy)
            shards = getattr(leaf, "addressable_shards", None)
            for values in ([np.asarray(s.data) for s in shards] if shards else [np.asarray(leaf)]):
                if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
                    raise WorkdirError(f"checkpoint {folder} holds non-finite values in '{name}'")
        return state, dict(restored["meta"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
