"""The carry contract shared by every model, and the registry that builds models by name.

Every model is a sequence model with explicit state::

    carry = model.init_carry(batch_size)
    logits, carry = model(tokens, carry, train=False, key=None)

Shapes: ``tokens`` Int[B, S] (b batch, s segment length), ``logits`` Float[B, S, V].
The carry is a pytree whose every leaf has the batch axis first, so a trainer can reset the
carry of single streams (``reset_carry``) and shard it with its streams. Stateless models
return ``()``. Randomness is explicit: ``key`` drives dropout when ``train=True`` and models
never mutate RNG state, so a call can sit inside ``jax.lax.scan`` and ``jax.checkpoint``.

Gradients through the carry (``train.carry_gradient``, :mod:`recurrentlab.train.carry_gradient`).
A model opts in per mode by listing it in ``carry_gradient_modes``; the trainer refuses the
others with one line naming the models that support the mode. What each mode needs:

* ``"rtrl"`` (exact): nothing beyond the carry contract, plus two properties the model's
  tests must show: streams are independent (row b of the carry depends only on row b of
  the tokens, so the window can run per stream under ``jax.vmap`` with batch 1), and every
  carry leaf is floating point. :meth:`SequenceModel.influence_filter` names the parameters
  whose influence on the carry is kept (default: all); parameters that never reach the
  carry (a decoder) only cost memory there.
* ``"snap1"`` (SnAp-1): the model owns the sparsity pattern, so it provides three methods:
  :meth:`init_traces` (zero traces, batch first), :meth:`call_with_traces` (the forward
  call that also advances the traces inside its scan) and :meth:`traces_gradient` (the
  contraction ``g0 . J0`` of the carry gradient with the traces).

The NTM takes ``"rtrl"`` as is (``tests/test_carry_gradient.py::test_rtrl_serves_the_ntm_too``).
A SHA-RNN LSTM follows the same way: its carry is floating point and per stream (rtrl as
is, once its per-stream independence is tested); for snap1 a model keeps
per-unit traces of its LSTM weights (:func:`recurrentlab.models.lstm.snap1_traces`) and
treats memory and attention parameters as the LSTM treats its embedding.

Generation one token per call (:mod:`recurrentlab.sample`). A model with ``decode_supported``
provides :meth:`decode_init` (the decode state at a segment boundary, from the carry),
:meth:`decode_step` (``(token Int[b], state) -> (logits Float[b, v], state)``: the logits the
model gives at that position of the segment, with the position a traced index so one compiled
step serves every position) and, where the decode state is the carry, :meth:`decode_carry`.
Every registered model has them (tests/test_decode.py checks each against the model's own
call on the partial segment); a model without them generates by re-running the segment.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from recurrentlab.errors import ConfigError

Carry = Any  # a pytree of arrays, batch axis first; () when stateless


class SequenceModel(nnx.Module):
    """Base class of every model: ``(tokens, carry) -> (logits, carry)``."""

    vocab_size: int

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        """The model's hyperparameters with their defaults (``config.model`` minus ``name``).

        Stated once, in the signature: every keyword-only argument of ``__init__`` after
        ``vocab_size`` and ``rngs``, with its default (the comment on its line documents it).
        """
        config = ml_collections.ConfigDict()
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.kind is not p.KEYWORD_ONLY or p.name in ("vocab_size", "rngs"):
                continue
            if p.default is p.empty:
                raise TypeError(f"{cls.__name__}.__init__: field '{p.name}' has no default")
            config[p.name] = p.default
        return config

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        """Overrides of :meth:`default_config` for a model small enough for the contract tests.

        ``tests/test_contract.py`` builds every registered model with these fields and checks
        the carry contract on segments of 4 tokens, 3 segments per window: keep widths in the
        tens, dropout on (the tests switch it with ``train``), and any memory long enough to
        cover 12 tokens so that :attr:`segments_compose` holds.
        """
        raise NotImplementedError(f"{cls.__name__} declares no tiny_config()")

    #: Lower bounds of the integer fields of :meth:`default_config` that may go below 1
    #: (``mem_len=0``: no cache). Every other integer field is a size or a count and must be
    #: >= 1; :func:`check_model_fields` checks them all, before the constructor runs.
    int_field_minimums: ClassVar[dict[str, int]] = {}

    #: One call over ``K·S`` tokens equals ``K`` calls of ``S`` tokens threading the carry
    #: (without dropout, at :meth:`tiny_config`). False where segmentation is part of the
    #: model: a Transformer that sees one segment, RMT's memory tokens per segment.
    segments_compose: ClassVar[bool] = True

    def init_carry(self, batch_size: int) -> Carry:
        """The state before the first token of a stream."""
        raise NotImplementedError

    def __call__(
        self, tokens: jax.Array, carry: Carry, *, train: bool = False, key: jax.Array | None = None
    ) -> tuple[jax.Array, Carry]:
        raise NotImplementedError

    # --- gradients through the carry (train.carry_gradient); see the module docstring ---

    #: ``train.carry_gradient`` modes besides ``"none"`` that this model supports.
    carry_gradient_modes: ClassVar[tuple[str, ...]] = ()

    def influence_filter(self) -> Any:
        """``"rtrl"``: an nnx filter of the parameters whose influence on the carry is kept."""
        return nnx.Param

    def init_traces(self, batch_size: int) -> Any:
        """``"snap1"``: the SnAp-1 traces of a fresh stream (zeros), every leaf batch first."""
        raise NotImplementedError

    def call_with_traces(
        self, tokens: jax.Array, carry: Carry, traces: Any, *, train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, Carry, Any, jax.Array]:
        """``"snap1"``: ``(logits, carry, traces, penalty)``; the traces advance over the call.

        ``penalty`` is what ``call_with_penalty`` adds to the loss (0 if the model has none).
        The traces carry no gradient (they are computed under ``stop_gradient``).
        """
        raise NotImplementedError

    def traces_gradient(self, carry_grad: Carry, traces: Any) -> dict[tuple, jax.Array]:
        """``"snap1"``: ``sum_b g0_b . J0_b``, keyed by parameter path (e.g. ``("layers", 0,
        "w_hh")``), from ``carry_grad`` = dL/ds0 (carry-shaped) and the traces at s0."""
        raise NotImplementedError

    def call_with_penalty(
        self, tokens: jax.Array, carry: Carry, *, train: bool = False, key: jax.Array | None = None
    ) -> tuple[jax.Array, Carry, jax.Array]:
        """The auxiliary-loss hook: ``(logits, carry, penalty)``, ``penalty`` a float32 scalar.

        In training the trainer optimises ``cross-entropy + mean over segments of penalty`` and
        logs the two apart (``loss``/``bits`` are the cross-entropy alone, ``penalty`` its own
        metric). The default penalty is 0; a model with a regulariser on its activations
        overrides this (AWD-LSTM's AR/TAR)."""
        logits, carry = self(tokens, carry, train=train, key=key)
        return logits, carry, jnp.zeros((), jnp.float32)


    # --- generation one token per call (recurrentlab.sample) --------------------------------

    #: The model implements :meth:`decode_init` / :meth:`decode_step` (a property where it
    #: depends on the configuration). Without them generation re-runs the partial segment.
    decode_supported: ClassVar[bool] = False

    def decode_init(self, carry: Carry, batch_size: int, segment_len: int) -> Any:
        """The decode state of ``batch_size`` streams at a segment boundary, from the carry.

        Generation follows the training segmentation: inside a segment of ``segment_len``
        tokens position ``t`` sees the carry of the previous boundary and tokens ``0..t``.
        The state holds what a step needs for that (a recurrent state, or per-layer
        key/value caches preallocated to the segment and a position index).
        """
        raise NotImplementedError(f"{type(self).__name__} has no per-token decoding")

    def decode_step(self, token: jax.Array, state: Any) -> tuple[jax.Array, Any]:
        """``(logits Float[b, v], state)`` for the next token Int[b] of the segment: the logits
        :meth:`__call__` gives at that position of the segment, from one step's work."""
        raise NotImplementedError(f"{type(self).__name__} has no per-token decoding")

    def decode_carry(self, state: Any) -> Carry | None:
        """The carry after a full segment, read off the decode state where it is the carry
        (recurrent models); ``None``: generation runs the segment through the model."""
        return None


def reset_carry(carry: Carry, fresh: Carry, reset: jax.Array) -> Carry:
    """Replace the carry of the streams where ``reset`` (Bool[B]) is true by ``fresh``."""

    def pick(old, new):
        mask = reset.reshape((-1,) + (1,) * (old.ndim - 1))
        return jnp.where(mask, new, old)

    return jax.tree.map(pick, carry, fresh)


_REGISTRY: dict[str, type[SequenceModel]] = {}


def register_model(name: str) -> Callable[[type[SequenceModel]], type[SequenceModel]]:
    """Class decorator: make a model buildable as ``config.model.name = name``."""

    def decorate(cls: type[SequenceModel]) -> type[SequenceModel]:
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorate


def registered_models() -> list[str]:
    return sorted(_REGISTRY)


def model_class(name: str) -> type[SequenceModel]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"unknown model '{name}'.{hint} Known models: {', '.join(registered_models())}."
        )
    return _REGISTRY[name]


def model_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
    """``config.model`` for a registered model: its defaults, ``name``, then ``overrides``."""
    config = model_class(name).default_config()
    config.name = name
    for key, value in overrides.items():
        if key not in config:
            close = difflib.get_close_matches(key, list(config.keys()), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"model '{name}' has no field '{key}'.{hint}")
        config[key] = value
    return config


def config_params(config: ml_collections.ConfigDict, *, vocab_size: int) -> int:
    """Trainable scalars of the model ``config`` describes, counted on an abstract build
    (``nnx.eval_shape``: no parameter is allocated, so paper-sized models count instantly)."""
    from recurrentlab.models.layers import count_params

    abstract = nnx.eval_shape(lambda: build_model(config, vocab_size=vocab_size, seed=0))
    return count_params(abstract)


def int_field_minimum(cls: type[SequenceModel], key: str) -> int | None:
    """The lower bound of ``cls``'s integer field ``key`` (None: not an integer field)."""
    default = cls.default_config().get(key)
    if not isinstance(default, int) or isinstance(default, bool):
        return None
    return cls.int_field_minimums.get(key, 1)


def check_model_fields(config: ml_collections.ConfigDict) -> None:
    """Every field of ``config`` (a ``config.model``) is one its model has, and every integer
    field is at least its minimum (:attr:`SequenceModel.int_field_minimums`, else 1): one
    line naming the field and the value, before any size reaches an initialiser."""
    cls = model_class(config.name)
    known = cls.default_config()
    for key, value in config.items():
        if key == "name":
            continue
        if key not in known:
            close = difflib.get_close_matches(key, list(known.keys()), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"model '{config.name}' has no field '{key}'.{hint}")
        low = int_field_minimum(cls, key)
        if (low is not None and isinstance(value, int) and not isinstance(value, bool)
                and value < low):
            raise ConfigError(f"model.{key} must be >= {low}, got {value} "
                              f"(model '{config.name}')")


def build_model(config: ml_collections.ConfigDict, *, vocab_size: int, seed: int) -> SequenceModel:
    """Build ``config.name`` with the other fields of ``config`` as keyword arguments."""
    cls = model_class(config.name)
    check_model_fields(config)
    fields = {k: v for k, v in config.items() if k != "name"}
    fields = {k: (v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v)
              for k, v in fields.items()}
    return cls(vocab_size=vocab_size, rngs=nnx.Rngs(seed), **fields)
