"""A sweep is data: a list of override dicts, built with :func:`sweep`, :func:`product`,
:func:`zip_` and :func:`seeds`, returned by ``get_sweep(arg=None)`` in a config file.

    def get_sweep(arg=None):
        return product(
            sweep("config_arg", ["lstm", "transformer"]),   # get_config(arg) per run
            sweep("train.segment_len", [32, 64]),
            seeds(3),
        )                                                   # 2 * 2 * 3 = 12 runs

Keys are dotted config fields (``"train.segment_len"``, ``"model.mem_len"``, ``"seed"``),
and one special key, ``"config_arg"``, picks the argument of ``get_config`` for the run, so a
single sweep can span models whose configs differ structurally. Every run gets a readable
name built from the overrides that vary across the sweep (``lstm,segment_len=32,seed=0``),
which names its workdir ``DIR/<name>``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recurrentlab.errors import ConfigError

CONFIG_ARG = "config_arg"  # the override key that selects get_config's argument
Overrides = dict[str, Any]


def sweep(name: str, values) -> list[Overrides]:
    """One axis: ``[{name: v} for v in values]``."""
    values = list(values)
    if not values:
        raise ConfigError(f"sweep('{name}', ...) has no values")
    return [{name: value} for value in values]


def _merge(parts: tuple[Overrides, ...], how: str) -> Overrides:
    merged: Overrides = {}
    for part in parts:
        for key, value in part.items():
            if key in merged and merged[key] != value:
                raise ConfigError(f"{how}: two axes set '{key}' ({merged[key]!r} and {value!r})")
            merged[key] = value
    return merged


def product(*axes: list[Overrides]) -> list[Overrides]:
    """Every combination of the axes; the last axis varies fastest."""
    return [_merge(combo, "product") for combo in itertools.product(*axes)]


def zip_(*axes: list[Overrides]) -> list[Overrides]:
    """Axes of equal length, merged element by element."""
    lengths = {len(axis) for axis in axes}
    if len(lengths) > 1:
        raise ConfigError(f"zip_: the axes have different lengths {sorted(lengths)}")
    return [_merge(combo, "zip_") for combo in zip(*axes, strict=True)]


zipped = zip_


def seeds(n: int, start: int = 0) -> list[Overrides]:
    """``n`` seeds, ``start .. start + n - 1``, on the ``seed`` field."""
    if n < 1:
        raise ConfigError(f"seeds(n) needs n >= 1, got {n}")
    return sweep("seed", range(start, start + n))


def fixed(**overrides: Any) -> list[Overrides]:
    """One run's worth of overrides with ``__`` for dots: ``fixed(train__lr=1e-3)``."""
    return [{key.replace("__", "."): value for key, value in overrides.items()}]


# ----------------------------------------------------------------------------- runs


@dataclass
class RunSpec:
    """One run of a sweep: what a launcher needs to start it anywhere."""

    name: str  # readable, unique within the sweep; the workdir's folder name
    config_file: str  # the config file (absolute path)
    config_arg: str | None  # get_config's argument
    overrides: Overrides  # dotted field -> value, without config_arg
    workdir: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=list)  # further --config.a.b=v strings

    @property
    def config_spec(self) -> str:
        return self.config_file + (f":{self.config_arg}" if self.config_arg is not None else "")

    def override_args(self) -> list[str]:
        """The overrides as ``--config.a.b=v`` strings (the CLI's syntax)."""
        return [f"--config.{key}={format_value(value)}" for key, value in self.overrides.items()
                ] + list(self.extra_args)

    def train_argv(self) -> list[str]:
        """Arguments of ``recurrentlab train`` for this run."""
        return ["train", "--config", self.config_spec, *self.override_args(),
                "--workdir", str(self.workdir)]

    def load_config(self):
        """The run's full config (loads the file and applies the overrides)."""
        from recurrentlab.config import apply_overrides, load_config_file

        config = load_config_file(self.config_file, self.config_arg)
        apply_overrides(config, self.override_args())
        return config


def format_value(value: Any) -> str:
    """Command-line text that ``recurrentlab.config`` parses back to ``value``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        value = tuple(value)
    return repr(value)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = "-".join(_text(v) for v in value)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    text = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-")
    return text or "none"


def run_names(runs: list[Overrides]) -> list[str]:
    """Readable, unique names from the overrides that vary across ``runs``.

    A key is shortened to its last dotted part unless that is ambiguous in the sweep; the
    ``config_arg`` value comes first and bare. Constant overrides are left out.
    """
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run if k not in keys)
    keys.sort(key=lambda k: k == "seed")  # the seed last, whatever the order of the axes
    varying = [k for k in keys if len({repr(run.get(k, "<absent>")) for run in runs}) > 1]
    if not varying:  # one run (or duplicates, refused below): name it by all its overrides
        varying = keys
    last = [k.split(".")[-1] for k in varying]
    short = {k: (k.split(".")[-1] if last.count(k.split(".")[-1]) == 1 else k) for k in varying}
    names = []
    for run in runs:
        parts = []
        if CONFIG_ARG in varying and CONFIG_ARG in run:
            parts.append(_text(run[CONFIG_ARG]))
        parts += [f"{short[k]}={_text(run[k])}" for k in varying if k != CONFIG_ARG and k in run]
        name = ",".join(parts) or "run"
        if len(name) > 120:  # folder names stay well under file-system limits
            digest = hashlib.sha256(repr(sorted(run.items())).encode()).hexdigest()[:8]
            name = f"{name[:100]}~{digest}"
        names.append(name)
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"the sweep has two identical runs ({name}: {runs[seen[name]]} and "
                              f"{runs[i]}); remove the duplicate")
        seen[name] = i
    return names


def load_sweep_file(path: str | Path, arg: str | None = None) -> list[Overrides]:
    """Import ``path`` and return its ``get_sweep(arg)``, checked to be a list of dicts."""
    from recurrentlab.config import call_file_function, import_file

    path = Path(path)
    module = import_file(path, "sweep file")
    if not hasattr(module, "get_sweep"):
        raise ConfigError(f"'{path}' defines no get_sweep(arg=None); a sweep file defines "
                          f"get_config and get_sweep")
    runs = call_file_function(module, "get_sweep", path, arg, what="sweep")
    if not isinstance(runs, (list, tuple)) or not runs:
        raise ConfigError(f"get_sweep() in '{path}' returned {type(runs).__name__}; "
                          f"it must return a non-empty list of override dicts")
    for run in runs:
        if not isinstance(run, dict):
            raise ConfigError(f"get_sweep() in '{path}' returned a {type(run).__name__} entry; "
                              f"every entry is a dict of overrides")
    return [dict(run) for run in runs]


def expand(spec: str, sweep_dir: str | Path, extra_args: list[str] | None = None,
           *, check: bool = True) -> list[RunSpec]:
    """The runs of ``FILE[:ARG]`` under ``sweep_dir``; ``check`` builds each config once so
    that a bad key or value stops the sweep before anything starts."""
    path, _, arg = spec.partition(":")
    arg = arg or None
    overrides = load_sweep_file(path, arg)
    names = run_names(overrides)
    sweep_dir = Path(sweep_dir).resolve()
    runs = []
    for name, run in zip(names, overrides, strict=True):
        run = dict(run)
        config_arg = run.pop(CONFIG_ARG, arg)
        runs.append(RunSpec(name=name, config_file=str(Path(path).resolve()),
                            config_arg=None if config_arg is None else str(config_arg),
                            overrides=run, workdir=sweep_dir / name,
                            log_path=sweep_dir / "logs" / f"{name}.log",
                            extra_args=list(extra_args or [])))
    if check:
        from recurrentlab.config import validate

        for run in runs:
            try:
                validate(run.load_config())
            except ConfigError as error:
                raise ConfigError(f"run '{run.name}': {error}") from None
    return runs
