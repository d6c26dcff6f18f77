"""Memory and attention ops: a plain-jnp reference and a Pallas kernel behind one ``impl``."""

from recurrentlab.ops.attention import MaskSpec, attention, attention_reference
from recurrentlab.ops.dispatch import IMPLS, resolve_impl

__all__ = ["IMPLS", "MaskSpec", "attention", "attention_reference", "resolve_impl"]
