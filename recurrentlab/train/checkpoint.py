"""Orbax checkpoints of the full training state, with named items.

Each checkpoint step folder holds two items:

* ``state``: params, optimiser state, the carry at the step boundary (training state: a
  resumed run continues bit-for-bit), the step and the base PRNG key, saved as a flat
  mapping ``{"params.layers.0.kernel": array, ...}`` so names survive refactors of pytrees;
* ``meta``: JSON with the config, its hash, the code version and the step.

Saving is asynchronous; :meth:`Checkpoints.close` waits for it. A checkpoint that cannot be
read raises :class:`WorkdirError` naming the folder; nothing is ever deleted by a failing run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
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


class Checkpoints:
    """The ``checkpoints/`` folder of a run workdir."""

    def __init__(self, directory: str | Path, *, keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        # The write finishes in the background while training goes on, and the train step
        # donates (overwrites in place) the state it is given: save a copy of its own.
        named = flatten_named(jax.tree.map(jnp.copy, state))
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
