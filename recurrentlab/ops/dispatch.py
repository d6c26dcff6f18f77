"""Which implementation of an op runs: the one place where ``impl`` is resolved, per op.

``"xla"``       the plain-jnp reference, compiled by XLA (any platform);
``"pallas"``    the Pallas kernel compiled for the current accelerator (GPU or TPU); a call the
                kernel cannot do, a missing kernel package or a kernel that fails to lower or
                compile raises (a ``ConfigError`` of one line for the first two);
``"interpret"`` the same Pallas kernel in interpret mode (CPU; for tests); a call the kernel
                cannot do, or a missing kernel package, takes the reference (said once);
``"auto"``      the kernel where the platform compiles Pallas (GPU, TPU), the kernel can do
                the call and, on a GPU, the kernel was measured on a par with the reference
                or faster (:data:`GPU_MEASURED`, :data:`GPU_AUTO_MAX_HEAD_WIDTH`); the
                reference otherwise (XLA on CPU). On an accelerator a kernel that fails to
                lower or compile at the call's shapes falls back to the reference with one
                warning line naming the op and the shapes.

Every decision to take the reference path where a kernel was asked for is said once per
(op, reason) as a ``RuntimeWarning`` (and logged on ``recurrentlab.ops``). :func:`record`
collects, while active, which path each op call took (the routing tests read it).

The kernels live in ``recurrentlab.kernels`` (``kernels/`` in the checkout); only this package
names them, through :func:`kernel_module`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import jax

from recurrentlab.errors import ConfigError

Impl = Literal["auto", "xla", "pallas", "interpret"]
IMPLS: tuple[str, ...] = ("auto", "xla", "pallas", "interpret")
GPUS = ("gpu", "cuda", "rocm")
ACCELERATORS = (*GPUS, "tpu")

#: op name -> the module of ``recurrentlab.kernels`` that implements it
KERNEL_MODULES = {"attention": "memory_attention", "relative_attention": "memory_attention",
                  "ntm_memory_step": "ntm_memory"}

#: Where ``impl="auto"`` takes a kernel on a GPU: only where the compiled kernel was measured
#: on a par with the XLA reference or faster, forward + backward. Measured with
#: ``experiments/bench/kernels.py --check`` on one NVIDIA H200, jax 0.11.2, float32; ratio =
#: reference ms / kernel ms (above 1 the kernel is faster), forward / forward + backward:
#:
#: - attention, head width 64 (b8 h8 t512 l1536): 1.39 / 0.96, 1.20 with dropout -> kernel
#: - attention, head width 256 (b2 h1 t256 l1280): 0.39 / 0.18 -> reference
#: - attention, head width 1024 (SHA-RNN, b16 t1024 l5120): 0.11 / the backward does not
#:   compile (it asks for 262 KB of shared memory, over the per-block limit) -> reference
#: - relative attention (Transformer-XL, b16 h8 t512 l1024 d64): 0.40 / 0.23 -> reference
#: - NTM memory step (B32 N128 M20, 128 steps in a scan): the check did not finish in 45 s
#:   (compile and run not separated; one step at that shape compiles and agrees with the
#:   reference) -> reference
#:
#: Attention takes the kernel up to :data:`GPU_AUTO_MAX_HEAD_WIDTH`; widths between 64 and
#: 256 are unmeasured and take the reference, narrower ones the kernel. ``impl="pallas"``
#: still runs every kernel; TPU is unmeasured and keeps the kernels; ROCm GPUs follow the
#: H200's measurements.
GPU_MEASURED = {
    "relative_attention": "on a GPU the kernel was measured slower than the reference "
                          "(0.23x forward + backward at Transformer-XL's enwik8 shape)",
    "ntm_memory_step": "on a GPU the kernel was measured slower than the reference "
                       "(128 steps at batch 32, 128 slots did not finish in 45 s)",
}
GPU_AUTO_MAX_HEAD_WIDTH = 64

logger = logging.getLogger("recurrentlab.ops")
_SAID: set[tuple[str, str]] = set()
_COMPILES: dict[Any, str | None] = {}
_RECORDS: list[list[Route]] = []


@dataclasses.dataclass(frozen=True)
class Route:
    """How one op call ran: ``path`` is ``"kernel"`` or ``"reference"``; ``reason`` says why
    a call that could have used a kernel did not (empty otherwise)."""

    op: str
    impl: str
    path: str
    reason: str = ""


def _platform() -> str:
    return jax.default_backend()


def check_impl(impl: str, where: str = "op") -> str:
    """``impl`` itself, or a one-line ``ConfigError`` naming ``where`` if it is unknown."""
    if impl not in IMPLS:
        raise ConfigError(f"{where}: unknown op implementation '{impl}'; use one of "
                          f"{', '.join(IMPLS)}")
    return impl


def resolve_impl(impl: str, platform: str | None = None) -> str:
    """Resolve ``impl`` to one of ``"xla" | "pallas" | "interpret"`` for ``platform``."""
    check_impl(impl)
    platform = platform or _platform()
    if impl == "auto":
        return "pallas" if platform in ACCELERATORS else "xla"
    if impl == "pallas" and platform not in ACCELERATORS:
        raise ConfigError("impl='pallas' needs a GPU or TPU; on CPU use 'xla' or 'interpret'")
    return impl


def say_once(op: str, reason: str) -> None:
    """Warn (and log) ``op: reason`` the first time this pair is seen in the process."""
    if (op, reason) in _SAID:
        return
    _SAID.add((op, reason))
    logger.warning("%s: %s", op, reason)
    warnings.warn(f"{op}: {reason}", RuntimeWarning, stacklevel=3)


def kernel_module(op: str):
    """The kernel module of ``op`` (imported lazily: Pallas is heavy), or None if missing."""
    try:
        return importlib.import_module(f"recurrentlab.kernels.{KERNEL_MODULES[op]}")
    except ModuleNotFoundError:
        return None


def _note(route: Route) -> None:
    for sink in _RECORDS:
        sink.append(route)


@contextlib.contextmanager
def record() -> Iterator[list[Route]]:
    """Collect the :class:`Route` of every op call traced while the context is active."""
    sink: list[Route] = []
    _RECORDS.append(sink)
    try:
        yield sink
    finally:
        _RECORDS.remove(sink)


def gpu_auto_refusal(op: str, head_width: int | None = None) -> str | None:
    """Why ``impl="auto"`` does not take the kernel of ``op`` on a GPU (None: it does), from
    the measurements of :data:`GPU_MEASURED`. ``head_width``: max(d, e) of an attention call."""
    if op == "attention" and (head_width is None or head_width > GPU_AUTO_MAX_HEAD_WIDTH):
        return (f"on a GPU the kernel is taken up to head width {GPU_AUTO_MAX_HEAD_WIDTH}, "
                f"this call's is {head_width} (measured on a par at 64, 0.18x forward + "
                "backward at 256; at 1024 its backward exceeds shared memory)")
    return GPU_MEASURED.get(op)


def choose(op: str, impl: str, refusal: str | None = None, *,
           head_width: int | None = None) -> str:
    """``"xla"``, ``"pallas"`` or ``"interpret"`` for this call of ``op``.

    ``refusal``: why the kernel cannot do this call (None when it can). ``"pallas"`` refuses
    such a call with one line; ``"auto"`` and ``"interpret"`` take the reference and say why
    once. On a GPU ``"auto"`` also takes the reference (said once) where the kernel was
    measured slower (:func:`gpu_auto_refusal`; ``head_width`` of an attention call).
    """
    resolved = resolve_impl(impl)
    if resolved == "xla":
        _note(Route(op, impl, "reference"))
        return "xla"
    if refusal is None and kernel_module(op) is None:
        refusal = "the kernel package recurrentlab.kernels is not installed"
    if refusal is not None:
        if impl == "pallas":
            raise ConfigError(f"{op}: impl='pallas' cannot run this call: {refusal}; "
                              "use impl='auto' or 'xla'")
        return _take_reference(op, impl, refusal)
    if impl == "auto" and _platform() in GPUS:
        slower = gpu_auto_refusal(op, head_width)
        if slower is not None:
            return _take_reference(op, impl, slower)
    return resolved


def _take_reference(op: str, impl: str, reason: str) -> str:
    say_once(op, f"taking the jnp reference: {reason}")
    _note(Route(op, impl, "reference", reason))
    return "xla"


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _compile_error(op: str, kernel: Callable, diff: Sequence, rest: Sequence, key: Any):
    """None if ``kernel(*diff, *rest)`` and its VJP compile at these shapes, else the error."""
    cache_key = (op, key, tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves((diff, rest))),
                 jax.tree.structure((diff, rest)))
    if cache_key not in _COMPILES:

        def fwd_bwd(diff, rest):
            out, pull = jax.vjp(lambda *d: kernel(*d, *rest), *diff)
            return out, pull(out)

        try:
            jax.jit(fwd_bwd).lower(_abstract(tuple(diff)), _abstract(tuple(rest))).compile()
            _COMPILES[cache_key] = None
        except Exception as err:  # noqa: BLE001 -- any lowering/compile failure falls back
            _COMPILES[cache_key] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return _COMPILES[cache_key]


def run(
    op: str,
    impl: str,
    *,
    kernel: Callable[..., Any],
    reference: Callable[..., Any],
    diff: Sequence[jax.Array],
    rest: Sequence[Any] = (),
    static_key: Any = None,
    refusal: str | None = None,
    head_width: int | None = None,
):
    """Call ``kernel(*diff, *rest, interpret=...)`` or ``reference(*diff, *rest)`` for ``op``.

    ``diff`` are the differentiable array arguments, ``rest`` the others (arrays or None);
    ``static_key`` (hashable) names whatever else ``kernel`` specialises on. With
    ``impl="auto"`` on an accelerator the kernel (forward and backward) is first compiled at
    the call's shapes, once per shape; if that fails the reference runs and one warning line
    names the op, the shapes and the error. ``"pallas"`` lets the error through.
    ``head_width``: max(d, e) of an attention call, for :func:`gpu_auto_refusal`.
    """
    resolved = choose(op, impl, refusal, head_width=head_width)
    if resolved == "xla":
        return reference(*diff, *rest)
    interpret = resolved == "interpret"

    def call(*args):
        return kernel(*args, interpret=interpret)

    if impl == "auto":
        error = _compile_error(op, call, diff, rest, static_key)
        if error is not None:
            shapes = ", ".join("x".join(map(str, x.shape)) for x in diff if hasattr(x, "shape"))
            say_once(op, f"the kernel failed to compile at shapes {shapes} on {_platform()}; "
                     f"taking the jnp reference ({error})")
            _note(Route(op, impl, "reference", "kernel failed to compile"))
            return reference(*diff, *rest)
    _note(Route(op, impl, "kernel"))
    return call(*diff, *rest)
