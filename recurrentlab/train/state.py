"""The train state: everything a run needs to continue bit-for-bit from a step boundary.

:class:`TrainState` is a pytree (``flax.struct.dataclass``): ``jax.jit`` takes and donates it,
:class:`~recurrentlab.train.distributed.Placement` places it field by field, and
:class:`~recurrentlab.train.checkpoint.Checkpoints` saves it under the dotted paths of its
leaves (``params.layers.0.kernel``, ``opt_state.0.mu...``, ``carry...``, ``step``, ``rng``,
``influence...``): the same names the earlier dict state was saved under, so checkpoints of
either restore into the other.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

FIELDS = ("params", "opt_state", "carry", "step", "rng", "influence")


@struct.dataclass
class TrainState:
    """One run's training state at a step boundary.

    Attributes:
      params: the model's ``nnx.Param`` state (what the optimiser updates).
      opt_state: the optax state of ``params``.
      carry: the carry at the end of the last window, batch-first (``B`` streams); the next
        window starts from it (or from ``init_carry`` where a stream resets).
      step: int32 scalar, the number of optimiser steps taken.
      rng: the run's base PRNG key; a step's key is ``fold_in(fold_in(rng, 1), step)``.
      influence: the carry's influence on the parameters (``train.carry_gradient``;
        :mod:`recurrentlab.train.carry_gradient`), per stream like the carry; None when the
        run trains with truncated BPTT.
    """

    params: Any
    opt_state: Any
    carry: Any
    step: jax.Array
    rng: jax.Array
    influence: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The state as ``{field: subtree}`` (no ``influence`` key when there is none)."""
        out = {name: getattr(self, name) for name in FIELDS}
        if out["influence"] is None:
            del out["influence"]
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainState:
        """Inverse of :meth:`as_dict`."""
        unknown = set(state) - set(FIELDS)
        if unknown:
            raise KeyError(f"not train-state fields: {sorted(unknown)}")
        return cls(**state)
