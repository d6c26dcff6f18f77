"""Memory and attention ops: a plain-jnp reference and a Pallas kernel behind one ``impl``.

This package is the only seam between the models and the kernels (``recurrentlab.kernels``):
models call :func:`attention`, :func:`relative_attention` and :func:`ntm_memory_step` with
everything the op needs and never branch on ``impl``; :mod:`recurrentlab.ops.dispatch`
resolves it, per op and per call.
"""

from recurrentlab.ops.attention import MaskSpec, attention, attention_reference
from recurrentlab.ops.dispatch import IMPLS, check_impl, record, resolve_impl
from recurrentlab.ops.ntm_memory import ReadHeads, WriteHeads
from recurrentlab.ops.ntm_memory import memory_step as ntm_memory_step
from recurrentlab.ops.relative import relative_attention

__all__ = ["IMPLS", "MaskSpec", "ReadHeads", "WriteHeads", "attention", "attention_reference",
           "check_impl", "ntm_memory_step", "record", "relative_attention", "resolve_impl"]
