"""Models: every one follows the carry contract in ``base.py`` and is built by name.

    from recurrentlab.models import SHARNN, build_model, model_config
"""

from recurrentlab.models.base import (
    Carry,
    SequenceModel,
    build_model,
    config_params,
    model_class,
    model_config,
    register_model,
    registered_models,
    reset_carry,
)
from recurrentlab.models.lstm import LSTM
from recurrentlab.models.ntm import NTM
from recurrentlab.models.rmt import RMT
from recurrentlab.models.sha_rnn import SHARNN
from recurrentlab.models.transformer import Transformer
from recurrentlab.models.transformer_xl import TransformerXL

__all__ = [
    "LSTM",
    "NTM",
    "RMT",
    "SHARNN",
    "Carry",
    "SequenceModel",
    "Transformer",
    "TransformerXL",
    "build_model",
    "config_params",
    "model_class",
    "model_config",
    "register_model",
    "registered_models",
    "reset_carry",
]
