"""Run configs: the defaults every run starts from, loading config files, overrides, checks.

A config file is an experiment: a Python file with ``get_config(arg=None) -> ConfigDict``
that starts from :func:`base_config` and sets what its experiment needs. Overrides come as
``--config.train.lr=3e-4``; an unknown key is an error naming the nearest valid key, and a
value is parsed as the type its field is declared with (see "typed overrides" below): a
tuple field takes a bare word or a comma list (``--config.eval.final_splits=valid,test``).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import hashlib
import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

import ml_collections

from recurrentlab.errors import ArgumentError, ConfigError, RecurrentLabError


def base_config() -> ml_collections.ConfigDict:
    """Every field a run reads, with its default. ``model`` and ``data`` are filled per run."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # parameters, dropout and synthetic data all derive from it

    c.model = ml_collections.ConfigDict({"name": ""})  # recurrentlab.models.model_config(name)
    c.data = ml_collections.ConfigDict({"name": ""})  # recurrentlab.data.data_config(name)

    t = c.train = ml_collections.ConfigDict()
    t.batch_size = 16  # B: parallel streams (global, over all devices)
    t.segment_len = 128  # S: tokens per model call; memory is written once per segment
    t.bptt_segments = 1  # K: gradient flows through K segments; horizon = K * S tokens
    t.carry_across_windows = True  # pass the carry (stop-gradient) to the next window
    t.remat = False  # jax.checkpoint each segment: memory ~ K*|carry| + S, not K*S
    t.scan_unroll = 1  # lax.scan unroll over the K segments of a window
    t.carry_gradient = "none"  # gradient through the carry: none (truncated BPTT) | rtrl | snap1
    t.influence_budget_mb = 1024  # refuse a carry_gradient influence (ds/dθ) larger than this
    t.num_steps = 1000  # optimiser steps
    t.optimizer = "adam"  # adam | adamw | lamb | sgd
    t.lr = 1e-3  # peak learning rate
    t.schedule = "constant"  # constant | cosine | step
    t.warmup_steps = 0  # linear warmup from 0 to lr
    t.decay_boundaries = ()  # step schedule: steps where lr is multiplied by decay_factor
    t.decay_factor = 0.1  # step schedule factor
    t.final_lr_fraction = 0.0  # cosine schedule: lr at the end, as a fraction of lr
    t.b1 = 0.9  # Adam / LAMB beta1
    t.b2 = 0.999  # Adam / LAMB beta2
    t.eps = 1e-8  # Adam / LAMB epsilon
    t.momentum = 0.0  # sgd momentum
    t.weight_decay = 0.0  # decoupled (adamw, lamb) or L2 added to gradients (adam, sgd)
    t.clip_norm = 0.0  # global-norm gradient clipping; 0 disables
    t.log_every = 50  # steps between metrics.jsonl / TensorBoard train records
    t.eval_every = 0  # steps between evaluations; 0 = only at the end
    t.stop_when = ""  # e.g. "bit_errors<0.1": stop at the first periodic eval that meets it
    t.checkpoint_every = 500  # steps between checkpoints (and one at the end)
    t.keep_checkpoints = 2  # how many recent checkpoints to keep
    t.progress_bar = True  # tqdm progress bar on stderr

    e = c.eval = ml_collections.ConfigDict()
    e.split = "valid"  # split evaluated during and after training
    e.batch_size = 8  # streams for evaluation (whole split in order, carrying state)
    e.segment_len = 0  # 0 = train.segment_len
    e.max_windows = 0  # 0 = the whole split; >0 caps evaluation windows (quick runs)
    e.final_splits = ("valid",)  # splits evaluated when training finishes
    e.model_overrides = ml_collections.ConfigDict()  # e.g. a longer mem_len at evaluation

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data_axis = 0  # devices on the data axis; 0 = all visible devices
    c.mesh.shard_params = False  # FSDP: split params/opt state over data (largest divisible axis)
    c.mesh.distributed = "auto"  # jax.distributed: auto (configured/Slurm/Cloud TPU) | on | off
    c.mesh.coordinator_address = ""  # host:port of process 0; "" = env or auto-detection
    c.mesh.num_processes = 0  # processes in a multi-host run; 0 = env or auto-detection
    c.mesh.process_id = -1  # this process's rank; -1 = env or auto-detection

    c.protocol = ml_collections.ConfigDict()  # the experiment protocol (sweep/protocol.py)
    c.protocol.control = False  # a control cell: the model solves it by construction; if it
    #   fails, `recurrentlab results` reports the model's other cells as not trained to capability
    return c


def import_file(path: str | Path, kind: str = "config file"):
    """Import the Python file ``path`` as a module: a missing file, a folder or a file that is
    not valid Python is a one-line :class:`ConfigError`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"'{path}' is a directory, not a {kind}; give a .py file in it")
    if not path.is_file():
        raise ConfigError(f"{kind} '{path}' does not exist")
    spec = importlib.util.spec_from_file_location(f"recurrentlab_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ConfigError(f"{kind} '{path}' is not valid Python: {error.msg} "
                          f"(line {error.lineno})") from None
    return module


def call_file_function(module, name: str, path: str | Path, arg: str | None,
                       what: str = "config"):
    """``module.<name>(arg)`` (``<name>()`` without an argument); a ValueError it raises (an
    argument the file does not know, ...) becomes one line naming the file and the argument."""
    try:
        return getattr(module, name)(arg) if arg is not None else getattr(module, name)()
    except ValueError as error:  # e.g. an argument the file does not know: one line, exit 2
        if isinstance(error, RecurrentLabError):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        shown = f"{path}:{arg}" if arg is not None else str(path)
        raise ArgumentError(f"{what} '{shown}': {first}") from None  # still a ValueError


def load_config_file(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """Import ``path`` and call its ``get_config(arg)``."""
    path = Path(path)
    module = import_file(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file '{path}' defines no get_config(arg=None)")
    config = call_file_function(module, "get_config", path, arg)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() in '{path}' returned a {type(config).__name__}; it must "
                          f"return an ml_collections.ConfigDict (start from base_config())")
    return config


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, name + "."))
    return keys


# ----------------------------------------------------------------------------- typed overrides
#
# An override's text is parsed against the type its field is *declared* with: the type of the
# field's default in base_config(), in the model's default_config() or in the dataset's
# data_config(), whatever value the config file has put there since. Two things a default
# cannot show are declared beside it:
#
# * a field that may be None is declared with ml_collections' placeholder(type), e.g.
#   ``t.max_grad = placeholder(float)`` (default None): ``--config.train.max_grad=None`` and
#   ``--config.train.max_grad=0.5`` both work, ``=fast`` does not;
# * the element type of a tuple field whose default is empty is declared in TUPLE_ELEMENTS.

# Element types of tuple fields whose default is empty (a non-empty default shows its own).
TUPLE_ELEMENTS: dict[str, type] = {"train.decay_boundaries": int}

# Groups that hold overrides of other fields: the command line may add entries to them
# (``--config.data.eval_overrides.max_len=120``), typed like the field they override
# (``data.max_len``); the dataset / model checks the names.
OPEN_GROUPS = {"data.eval_overrides": "data", "eval.model_overrides": "model"}

_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "yes", "1")
_FALSE_WORDS = ("false", "no", "0")
_INT = re.compile(r"[-+]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", re.ASCII)
_NAMES = {int: "an integer", float: "a float", bool: "true or false", str: "a string"}


@dataclasses.dataclass(frozen=True)
class FieldType:
    """What an override of one field must parse to.

    ``kind`` is int, float, bool, str, tuple, or None when nothing declares the field (then
    the text is read as a Python literal, else taken as a string); ``element`` is the type
    of a tuple's items (None: any literal); ``nullable``: None is a valid value.
    """

    kind: type | None
    element: type | None = None
    nullable: bool = False

    def describe(self) -> str:
        if self.kind is tuple:
            item = {int: "integers", float: "floats", bool: "true/false values",
                    str: "names"}.get(self.element, "values")
            text = f"{item} separated by commas, e.g. {_TUPLE_EXAMPLES.get(self.element, 'a,b')}"
        else:
            text = _NAMES.get(self.kind, "a Python literal")
        return text + (" or None" if self.nullable else "")


_TUPLE_EXAMPLES = {int: "1,2", float: "0.5,1.0", bool: "true,false", str: "valid,test"}


def _parse_scalar(text: str, kind: type | None) -> Any:
    """``text`` as a value of ``kind``; ValueError if it is not one."""
    word = text.strip()
    if kind is str:
        return text
    if kind is bool:
        if word.lower() in _TRUE_WORDS:
            return True
        if word.lower() in _FALSE_WORDS:
            return False
        raise ValueError(text)
    if kind is int:
        if _INT.fullmatch(word):
            return int(word)
        raise ValueError(text)
    if kind is float:
        if _FLOAT.fullmatch(word) and math.isfinite(float(word)):  # no nan, inf, 1e999, 1_0
            return float(word)
        raise ValueError(text)
    try:  # undeclared: a Python literal, else the text itself
        return ast.literal_eval(word)
    except (ValueError, SyntaxError):
        if word.lower() in ("true", "false"):
            return word.lower() == "true"
        return text


def _literal_item(value: Any, kind: type | None) -> Any:
    """An item of a literal tuple as ``kind``; ValueError if it is not one."""
    if kind is None:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ValueError(value)


def _parse_tuple(text: str, element: type | None) -> tuple:
    """``a,b`` / ``a`` / ``(a, b)`` / ``["a", "b"]`` / empty text as a tuple of ``element``."""
    word = text.strip()
    if not word:
        return ()
    if word[0] in "([" and word[-1] in ")]":
        try:
            value = ast.literal_eval(word)
        except (ValueError, SyntaxError):
            word = word[1:-1]  # (valid,test): bare words in brackets
        else:
            items = value if isinstance(value, (tuple, list)) else (value,)
            return tuple(_literal_item(v, element) for v in items)
    items = [item.strip() for item in word.split(",")]
    if items and not items[-1]:  # "a," is a one-item tuple
        items.pop()
    if not items or any(not item for item in items):
        raise ValueError(text)
    if element is str:
        return tuple(items)
    return tuple(_parse_scalar(item, element) for item in items)


def parse_value(text: str, field: FieldType) -> Any:
    """The command-line ``text`` of a field as a value of its declared type.

    Raises ValueError when it is not one (the caller names the field).
    """
    if field.nullable and text.strip().lower() in _NONE_WORDS:
        return None
    if field.kind is tuple:
        return _parse_tuple(text, field.element)
    return _parse_scalar(text, field.kind)


def _leaf_type(holder: ml_collections.ConfigDict, key: str, dotted: str) -> FieldType:
    """The declared type of ``holder[key]`` (a default: a value or a placeholder)."""
    kind = holder.get_type(key)  # a placeholder's declared type, not NoneType
    nullable = holder[key] is None
    if kind is type(None):
        return FieldType(None, nullable=True)
    if kind is list:
        kind = tuple
    if kind is tuple:
        items = holder[key] or ()
        element = TUPLE_ELEMENTS.get(dotted)
        if element is None and items and len({type(v) for v in items}) == 1:
            element = type(items[0])
        return FieldType(tuple, element, nullable)
    return FieldType(kind if kind in _NAMES else None, nullable=nullable)


def declared_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The defaults that declare the type of every field of ``config``.

    :func:`base_config`, with ``model`` and ``data`` replaced by the defaults of the model and
    dataset ``config`` names (left as they are when it names none that is registered).
    """
    from recurrentlab.data import data_config
    from recurrentlab.models import model_config

    declared = base_config()
    empty = ml_collections.ConfigDict()
    model, data = config.get("model") or empty, config.get("data") or empty
    task = {"task": data.task} if data.get("name") == "synthetic" and "task" in data else {}
    with declared.unlocked():
        with contextlib.suppress(ConfigError):  # an unknown model: its fields keep their types
            declared.model = model_config(model.get("name", ""))
        with contextlib.suppress(ConfigError):
            declared.data = data_config(data.get("name", ""), **task)
    return declared


def field_type(config: ml_collections.ConfigDict, dotted: str,
               declared: ml_collections.ConfigDict | None = None) -> FieldType:
    """The declared type of ``config.<dotted>`` (``declared``: :func:`declared_defaults`)."""
    parts = dotted.split(".")
    group = ".".join(parts[:-1])
    if group in OPEN_GROUPS:  # an evaluation override: typed like the field it overrides
        dotted = f"{OPEN_GROUPS[group]}.{parts[-1]}"
        parts = dotted.split(".")
    if declared is None:
        declared = declared_defaults(config)
    for source in (declared, config):  # undeclared: the value's own type
        node = source
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if isinstance(node, ml_collections.ConfigDict) and parts[-1] in node:
            return _leaf_type(node, parts[-1], dotted)
    return FieldType(None, nullable=True)


def _is_a(value: Any, kind: type | None) -> bool:
    if kind is None:
        return True
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def check_types(config: ml_collections.ConfigDict) -> None:
    """Every field of ``config`` holds a value of its declared type (whoever set it)."""
    declared = declared_defaults(config)

    def walk(node: ml_collections.ConfigDict, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, dotted + ".")
                continue
            field = field_type(config, dotted, declared)
            if value is None:
                ok = field.nullable
            elif field.kind is tuple:
                ok = (isinstance(value, (tuple, list))
                      and all(_is_a(item, field.element) for item in value))
            else:
                ok = _is_a(value, field.kind)
            if not ok:
                raise ConfigError(f"bad value for '{dotted}': {value!r} "
                                  f"(expected {field.describe()})")

    walk(config, "")


def apply_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Set ``config.<dotted>`` from its command-line text, parsed as the field's declared type.

    A text that is not of that type is a :class:`ConfigError`:
    ``bad value for 'train.lr': 'fast' (expected a float)``.
    """
    parts = dotted.split(".")
    node = config
    new_entry = False
    for depth, part in enumerate(parts):
        if (depth == len(parts) - 1 and ".".join(parts[:-1]) in OPEN_GROUPS
                and isinstance(node, ml_collections.ConfigDict) and part not in node):
            new_entry = True  # a new entry; its owner checks the name when it is used
            break
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = flat_keys(config)
            close = difflib.get_close_matches(dotted, known, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}")
        if depth < len(parts) - 1:
            node = node[part]
    if not new_entry and isinstance(node[parts[-1]], ml_collections.ConfigDict):
        raise ConfigError(f"'{dotted}' is a group of fields; set one of its fields instead")
    field = field_type(config, dotted)
    try:
        value = parse_value(text, field)
    except ValueError:
        raise ConfigError(f"bad value for '{dotted}': {text!r} "
                          f"(expected {field.describe()})") from None
    with node.unlocked(), node.ignore_type():
        node[parts[-1]] = value


def parse_overrides(argv: list[str]) -> list[tuple[str, str]]:
    """``['--config.a.b=v', '--config.c', 'w']`` -> ``[('a.b', 'v'), ('c', 'w')]``."""
    pairs, i = [], 0
    while i < len(argv):
        item = argv[i]
        if not item.startswith("--config."):
            raise ConfigError(f"unexpected argument '{item}'; overrides look like --config.a.b=v")
        body = item[len("--config."):]
        if "=" in body:
            key, value = body.split("=", 1)
        else:
            if i + 1 >= len(argv):
                raise ConfigError(f"override '{item}' has no value")
            key, value = body, argv[i + 1]
            i += 1
        pairs.append((key, value))
        i += 1
    return pairs


def apply_overrides(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    for key, value in parse_overrides(argv):
        apply_override(config, key, value)


def check_unknown_fields(config: ml_collections.ConfigDict) -> None:
    """Every field of ``config`` must exist in :func:`base_config` (model/data checked apart)."""
    known = base_config()
    for section in config:
        if section not in known:
            close = difflib.get_close_matches(section, list(known.keys()), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{section}'{hint}")
        if section in ("model", "data"):
            continue
        if not isinstance(known[section], ml_collections.ConfigDict):
            continue
        for key in config[section]:
            if key not in known[section]:
                names = list(known[section].keys())
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean '{section}.{close[0]}'?" if close else ""
                raise ConfigError(f"unknown config key '{section}.{key}'{hint}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Stop on values that cannot work, with one line saying which and why."""
    from recurrentlab.data.base import SPLITS
    from recurrentlab.models.base import check_model_fields

    check_unknown_fields(config)
    check_types(config)
    if config.model.get("name"):
        check_model_fields(config.model)  # a known model, its fields, its sizes >= 1
    e = config.eval
    for name, splits in (("eval.split", (e.split,)), ("eval.final_splits", e.final_splits)):
        for split in splits:
            if split not in SPLITS:
                raise ConfigError(f"{name}: unknown split '{split}'; use {', '.join(SPLITS)}")
    t = config.train
    positive = {"train.batch_size": t.batch_size, "train.segment_len": t.segment_len,
                "train.bptt_segments": t.bptt_segments, "train.num_steps": t.num_steps,
                "eval.batch_size": config.eval.batch_size}
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {t.lr}")
    if t.optimizer not in ("adam", "adamw", "lamb", "sgd"):
        raise ConfigError(f"train.optimizer '{t.optimizer}' unknown; use adam, adamw, lamb or sgd")
    if t.schedule not in ("constant", "cosine", "step"):
        raise ConfigError(f"train.schedule '{t.schedule}' unknown; use constant, cosine or step")
    for name in ("log_every", "checkpoint_every", "scan_unroll"):
        if t[name] < 1:
            raise ConfigError(f"train.{name} must be >= 1, got {t[name]}")
    if t.eval_every < 0 or t.warmup_steps < 0 or t.clip_norm < 0 or t.weight_decay < 0:
        raise ConfigError("train.eval_every, warmup_steps, clip_norm and weight_decay must be >= 0")
    at_least = {"train.keep_checkpoints": 1, "train.momentum": 0, "train.eps": 0,
                "train.final_lr_fraction": 0, "eval.segment_len": 0, "eval.max_windows": 0,
                "mesh.data_axis": 0, "mesh.num_processes": 0, "mesh.process_id": -1}
    for name, low in at_least.items():
        section, key = name.split(".")
        if config[section][key] < low:
            raise ConfigError(f"{name} must be >= {low}, got {config[section][key]}")
    for name in ("b1", "b2"):
        if not 0 <= t[name] < 1:
            raise ConfigError(f"train.{name} must be in [0, 1), got {t[name]}")
    boundaries = tuple(t.decay_boundaries)
    if any(b < 1 for b in boundaries) or any(
            b >= c for b, c in zip(boundaries, boundaries[1:], strict=False)):
        raise ConfigError(f"train.decay_boundaries must be steps >= 1 in increasing order, "
                          f"each once, got {','.join(map(str, boundaries))}")
    if t.stop_when:
        parse_stop_when(t.stop_when)
        if not t.eval_every:
            raise ConfigError(f"train.stop_when='{t.stop_when}' is checked at evaluations; "
                              f"set train.eval_every > 0")
    check_carry_gradient_fields(t)
    if not config.model.get("name"):
        raise ConfigError("config.model.name is empty; start from recurrentlab.models.model_config")
    if not config.data.get("name"):
        raise ConfigError("config.data.name is empty; start from recurrentlab.data.data_config")


# train.carry_gradient: see recurrentlab.train.carry_gradient
CARRY_GRADIENT_MODES = ("none", "rtrl", "snap1")


def check_carry_gradient_fields(t: ml_collections.ConfigDict) -> None:
    """``train.carry_gradient`` and ``train.influence_budget_mb`` (the model-dependent checks,
    support and the influence's size, are in ``carry_gradient.check_carry_gradient``)."""
    mode = t.get("carry_gradient", "none")
    if mode not in CARRY_GRADIENT_MODES:
        raise ConfigError(f"train.carry_gradient '{mode}' unknown; use none (truncated BPTT), "
                          f"rtrl (exact) or snap1 (SnAp-1)")
    if t.get("influence_budget_mb", 0) < 0:
        raise ConfigError(f"train.influence_budget_mb must be >= 0, got {t.influence_budget_mb}")
    if mode != "none" and not t.carry_across_windows:
        raise ConfigError(f"train.carry_gradient='{mode}' carries the influence across windows "
                          f"with the carry; it needs train.carry_across_windows=True")


_STOP_WHEN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*([<>]=?)\s*([-+0-9.eE]+)\s*$")


def parse_stop_when(text: str) -> tuple[str, str, float]:
    """``"bit_errors<0.1"`` -> ``("bit_errors", "<", 0.1)``; operators ``< <= > >=``."""
    match = _STOP_WHEN.match(text)
    try:
        return match.group(1), match.group(2), float(match.group(3))
    except (AttributeError, ValueError):
        raise ConfigError(f"train.stop_when='{text}' is not '<metric><op><number>' with op one of "
                          f"< <= > >=, e.g. 'bit_errors<0.1' or 'accuracy>=0.99'") from None


def check_stop_when(text: str, metric_names) -> None:
    """Refuse ``train.stop_when`` naming a metric evaluation does not report (``metric_names``)."""
    name, _, _ = parse_stop_when(text)
    if name not in metric_names:
        raise ConfigError(f"train.stop_when names '{name}', which evaluation does not report; "
                          f"use one of {', '.join(sorted(metric_names))}")


def stop_condition_met(text: str, metrics: dict) -> bool:
    """Whether the evaluation ``metrics`` meet ``train.stop_when`` (see :func:`parse_stop_when`)."""
    name, op, bound = parse_stop_when(text)
    check_stop_when(text, metrics)
    value = float(metrics[name])
    return {"<": value < bound, "<=": value <= bound,
            ">": value > bound, ">=": value >= bound}[op]


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def config_hash(config: ml_collections.ConfigDict) -> str:
    """A short, stable hash of the config's content (logged with every result)."""
    return hashlib.sha256(to_json(config).encode()).hexdigest()[:12]


def from_json(text: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads(text))
