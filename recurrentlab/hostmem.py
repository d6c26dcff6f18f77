"""Host memory on the CPU backend: reuse freed pages for the next step, not fault in new ones.

XLA's CPU client allocates an executable's temporaries afresh on every call, as one block (324
MiB for the SHA-RNN train step of ``experiments/bench/recurrent_vs_torch.py``), from the worker
thread that runs the call. glibc's malloc serves a block that large with its own ``mmap`` (a
worker thread's arena grows in heaps of at most 64 MiB, and the main heap's mmap threshold is
capped at 32 MiB) and hands it back with ``munmap`` on free, so on every step the kernel faults
in and zeroes every page again: 87,051 minor faults per step, 508 -> 368 ms per step when they
are gone (one core, measured with ``resource.getrusage`` around the bench's compiled step).

:func:`reuse_freed_host_memory` removes them with two process-wide settings:

* ``jax_cpu_enable_async_dispatch = False``: the CPU client runs each call on the calling thread,
  whose arena is the main heap, which can hold a block of any size;
* ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, INT_MAX)``: large blocks come from
  the main heap, and freed ones stay in it for the next call instead of going back to the kernel.

Most calls then fault in nothing (the SHA-RNN bench step: 0 per step after 4-6 steps); now
and then, more often on a loaded machine, a block does not fit the freed space (glibc's
aligned allocation asks for a little more than the block it freed) and the heap grows by a fresh
one. What it costs: the process keeps its high-water mark of host memory (as a caching allocator
does), and CPU calls are synchronous, so the dispatch of one call no longer overlaps the run of
the one before. A loop that dispatches steps back to back without reading them loses that
overlap (the NTM's 1 ms batch-1 step in the bench: 1.4 -> 1.9-2.1 ms); the trainer reads every
step's metrics, so it had none to lose (``recurrentlab train`` of ``experiments/ntm/copy.py`` at
batch 1, 600 steps: 21,092-23,721 -> 23,954-25,266 tokens/s, the same losses).
Only glibc (Linux) has ``mallopt``; elsewhere only the dispatch setting applies. Accelerator
backends are untouched: the dispatch flag concerns the CPU client only.

The ``recurrentlab`` command and sweep runs call it first thing;
``RECURRENTLAB_HOST_MEMORY=default`` leaves the process as started. In your own program call it
before JAX's first computation (the dispatch setting is read when the CPU client is created):
afterwards it changes nothing and says so.
"""

from __future__ import annotations

import ctypes
import os

from recurrentlab.errors import ConfigError

HOST_MEMORY_ENV = "RECURRENTLAB_HOST_MEMORY"
MODES = ("", "reuse", "default")  # "" (unset) = reuse
M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
INT_MAX = 2**31 - 1


def _mallopt():
    """glibc's ``mallopt``, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return None


def reuse_freed_host_memory() -> dict[str, bool]:
    """Make the CPU backend reuse freed host memory (module doc); return what was set.

    Returns ``{"sync_dispatch": ..., "heap_blocks": ...}``: whether CPU calls now run on the
    calling thread, and whether glibc now keeps large blocks in its heap. Both are False when
    ``$RECURRENTLAB_HOST_MEMORY`` is ``default`` or JAX's backends already exist (too late for
    the dispatch setting, without which the heap settings do not reach the step's block).
    A setting that cannot be made is reported as False. Raises ``ConfigError`` when
    ``$RECURRENTLAB_HOST_MEMORY`` is neither ``reuse``, ``default`` nor unset.
    """
    import jax  # here, not at module import: ``recurrentlab --help`` should not load JAX
    from jax._src import xla_bridge

    off = {"sync_dispatch": False, "heap_blocks": False}
    mode = os.environ.get(HOST_MEMORY_ENV, "").strip().lower()
    if mode not in MODES:
        raise ConfigError(f"{HOST_MEMORY_ENV}='{mode}' is not a mode; use reuse (the "
                          "default) or default (leave the process as started)")
    if mode == "default":
        return off
    if xla_bridge.backends_are_initialized():
        return off
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    mallopt = _mallopt()
    heap = bool(mallopt and mallopt(M_MMAP_MAX, 0) == 1
                and mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1)
    return {"sync_dispatch": True, "heap_blocks": heap}
