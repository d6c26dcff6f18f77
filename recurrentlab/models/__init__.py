"""Models: every one follows the carry contract in ``base.py`` and is built by name."""

import importlib
import importlib.util

from recurrentlab.models.base import (
    Carry,
    SequenceModel,
    build_model,
    model_class,
    model_config,
    register_model,
    registered_models,
    reset_carry,
)

_MODEL_MODULES = ("lstm", "transformer", "transformer_xl", "rmt", "sha_rnn", "ntm")
for _module in _MODEL_MODULES:
    if importlib.util.find_spec(f"recurrentlab.models.{_module}") is not None:
        importlib.import_module(f"recurrentlab.models.{_module}")

__all__ = [
    "Carry",
    "SequenceModel",
    "build_model",
    "model_class",
    "model_config",
    "register_model",
    "registered_models",
    "reset_carry",
]
