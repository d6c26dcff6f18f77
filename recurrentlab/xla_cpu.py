"""Compile options for XLA's CPU backend, given to every train step, evaluator and jax bench
peer that recurrentlab compiles.

One option, off in XLA by default:

* ``xla_cpu_copy_insertion_use_region_analysis``: copy insertion asks whether a while loop's
  carried buffer and the value that replaces it can share memory with a finer (region) analysis
  of their live ranges, so fewer carried values are copied on every trip. The NTM train step
  of ``experiments/bench/recurrent_vs_torch.py`` has 41 copies instead of 69 and runs ~5%
  faster at batch 32 (one core, interleaved in one process). Values are unchanged: it only
  decides where buffers live.

Memory: the compiled step's peak (``memory_analysis``) was lower or equal with the option in
every configuration of ``experiments/bench/memory_vs_horizon.py`` measured (LSTM, SHA-RNN and
RMT at K = 1, 2, 8, 32 segments, with and without ``train.remat``); for example with remat at
K = 32, the LSTM 850.7 -> 832.0 MB, the RMT 1,069.0 -> 988.5 MB, the SHA-RNN 2,402.9 ->
2,400.1 MB. How it grows with K under remat is unchanged (LSTM K = 2 -> 32: +9.2 MB without,
+9.3 MB with). At K = 1, where the step has no loop over segments, the drop can be larger than
at K = 2 (the tiny LSTM of ``tests/test_bench.py``: -79 KB against -37 KB), which is why that
test measures growth from K = 2.

Tried and left out: ``xla_cpu_prefer_vector_width=512`` (AVX-512 CPUs): another ~3% on the NTM
step on this machine's AMD EPYC, but it changes reduction orders, so values move in the last
bits (5e-6 in the NTM's parameters after 3 steps), and whether it pays depends on the CPU.

Accelerator backends are untouched: the options go to jitted functions built while JAX's
default backend is the CPU (an accelerator's compiler does not know them). An XLA that does not
know an option (a jaxlib other than the ones tested) would fail every compilation, so the
options are tried once per process on a trivial function; if XLA refuses them, a warning says
so and everything compiles with XLA's defaults. ``RECURRENTLAB_XLA_CPU_OPTIONS=default``
compiles with XLA's defaults; ``tuned`` (or unset) with the options above. The mode and the
backend are read when a jitted function is built (``make_train_step``, the ``Evaluator``), not
when it compiles; :func:`check_mode` lets a command refuse a bad value before it writes
anything.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

from recurrentlab.errors import ConfigError

XLA_CPU_OPTIONS_ENV = "RECURRENTLAB_XLA_CPU_OPTIONS"
MODES = ("", "tuned", "default")  # "" (unset) = tuned
TUNED: dict[str, Any] = {"xla_cpu_copy_insertion_use_region_analysis": True}


def check_mode() -> str:
    """``"tuned"`` or ``"default"`` from ``$RECURRENTLAB_XLA_CPU_OPTIONS``; raises
    ``ConfigError`` for any other value."""
    mode = os.environ.get(XLA_CPU_OPTIONS_ENV, "").strip().lower()
    if mode not in MODES:
        raise ConfigError(f"{XLA_CPU_OPTIONS_ENV}='{mode}' is not a mode; use tuned (the "
                          "default) or default (XLA's own compile options)")
    return mode or "tuned"


def compiler_options(backend: str | None = None) -> dict[str, Any] | None:
    """The options for a compilation on ``backend`` (default: JAX's default backend): the
    tuned ones on CPU unless the mode is ``default``, else None. Raises ``ConfigError`` for a
    bad mode (:func:`check_mode`)."""
    if check_mode() == "default":
        return None
    if backend is None:
        import jax  # here, not at module import: the CLI's argument errors stay instant

        backend = jax.default_backend()
    if backend != "cpu":
        return None
    options = tuple(sorted(TUNED.items()))
    return dict(options) if _accepted(options) else None


@functools.cache
def _accepted(options: tuple[tuple[str, Any], ...]) -> bool:
    """Whether XLA compiles a trivial CPU function with ``options`` (warns once if not)."""
    import jax
    import jax.numpy as jnp

    try:
        jax.jit(jnp.negative).lower(jnp.zeros(2)).compile(compiler_options=dict(options))
    except Exception as error:  # noqa: BLE001 -- XLA reports an unknown option as it likes
        warnings.warn(f"recurrentlab.xla_cpu: XLA refused the compile options {dict(options)} "
                      f"({str(error).splitlines()[0]}); compiling with XLA's defaults",
                      stacklevel=3)
        return False
    return True


def jit(fun: Callable, **kwargs: Any) -> Callable:
    """``jax.jit(fun, **kwargs)`` compiled with :func:`compiler_options` (a
    ``compiler_options`` in ``kwargs`` is added to them and wins)."""
    import jax

    options = {**(compiler_options() or {}), **(kwargs.pop("compiler_options", None) or {})}
    return jax.jit(fun, compiler_options=options or None, **kwargs)
