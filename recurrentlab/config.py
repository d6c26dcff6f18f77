"""Run configs: the defaults every run starts from, loading config files, overrides, checks.

A config file is an experiment: a Python file with ``get_config(arg=None) -> ConfigDict``
that starts from :func:`base_config` and sets what its experiment needs. Overrides come as
``--config.train.lr=3e-4``; an unknown key is an error naming the nearest valid key.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import ml_collections

from recurrentlab.errors import ConfigError


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


def load_config_file(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """Import ``path`` and call its ``get_config(arg)``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    spec = importlib.util.spec_from_file_location(f"recurrentlab_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file '{path}' defines no get_config(arg=None)")
    config = module.get_config(arg) if arg is not None else module.get_config()
    return config


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, name + "."))
    return keys


def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        return text
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ConfigError(f"expected true/false, got '{text}'")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, tuple) and not isinstance(value, tuple):
        return (value,)
    return value


# Groups that hold overrides of other fields: the command line may add entries to them
# (``--config.data.eval_overrides.max_len=120``); the dataset / model checks the names.
OPEN_GROUPS = ("data.eval_overrides", "eval.model_overrides")


def apply_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Set ``config.<dotted>`` from its command-line text, keeping the field's type."""
    parts = dotted.split(".")
    node = config
    for depth, part in enumerate(parts):
        if (depth == len(parts) - 1 and ".".join(parts[:-1]) in OPEN_GROUPS
                and isinstance(node, ml_collections.ConfigDict) and part not in node):
            with node.unlocked():  # a new entry; its owner checks the name when it is used
                node[part] = _parse_value(text, None)
            return
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = flat_keys(config)
            close = difflib.get_close_matches(dotted, known, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}")
        if depth < len(parts) - 1:
            node = node[part]
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"'{dotted}' is a group of fields; set one of its fields instead")
    try:
        value = _parse_value(text, current)
        with node.ignore_type():
            node[parts[-1]] = value
    except ConfigError as error:
        raise ConfigError(f"bad value for '{dotted}': {error}") from None


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
    check_unknown_fields(config)
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


def stop_condition_met(text: str, metrics: dict) -> bool:
    """Whether the evaluation ``metrics`` meet ``train.stop_when`` (see :func:`parse_stop_when`)."""
    name, op, bound = parse_stop_when(text)
    if name not in metrics:
        raise ConfigError(f"train.stop_when names '{name}', which evaluation does not report; "
                          f"use one of {', '.join(sorted(metrics))}")
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
