"""Which implementation of an op runs: the one place where ``impl="auto"`` is resolved.

``"xla"``       the plain-jnp reference, compiled by XLA (any platform);
``"pallas"``    the Pallas kernel compiled for the current accelerator (GPU or TPU);
``"interpret"`` the same Pallas kernel in interpret mode (CPU; for tests);
``"auto"``      Pallas where the platform has it (GPU, TPU), XLA on CPU.
"""

from __future__ import annotations

from typing import Literal

import jax

from recurrentlab.errors import ConfigError

Impl = Literal["auto", "xla", "pallas", "interpret"]
IMPLS: tuple[str, ...] = ("auto", "xla", "pallas", "interpret")


def resolve_impl(impl: str, platform: str | None = None) -> str:
    """Resolve ``impl`` to one of ``"xla" | "pallas" | "interpret"`` for ``platform``."""
    if impl not in IMPLS:
        raise ConfigError(f"unknown op implementation '{impl}'; use one of {', '.join(IMPLS)}")
    platform = platform or jax.default_backend()
    if impl == "auto":
        return "pallas" if platform in ("gpu", "cuda", "rocm", "tpu") else "xla"
    if impl == "pallas" and platform == "cpu":
        raise ConfigError("impl='pallas' needs a GPU or TPU; on CPU use 'xla' or 'interpret'")
    return impl
