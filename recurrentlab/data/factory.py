"""``config.data``: per-dataset defaults (:func:`data_config`) and :func:`build_dataset`."""

from __future__ import annotations

import difflib
from typing import Any

import ml_collections

from recurrentlab.data import corpora, synthetic
from recurrentlab.data.base import Dataset
from recurrentlab.errors import ConfigError

DATASETS = ("enwik8", "text8", "text", "embedded", "synthetic")


def _defaults(name: str, task: str) -> dict[str, Any]:
    """Fields of ``config.data`` for ``name`` (and ``task`` for synthetic data), in order."""
    if name == "enwik8":
        return {"path": "data/enwik8",  # the unzipped 100,000,000-byte file (or its folder)
                "verify_checksum": True}  # MD5 once, cached; False only for generated files
    if name == "text8":
        return {"path": "data/text8"}  # the unzipped 100,000,000-character file
    if name == "text":
        return {"path": ""}  # a text file, or a folder (train/valid/test.txt or any files)
    if name == "embedded":
        return {}
    if name == "synthetic":
        t = synthetic.task(task)
        return {"task": task,  # copy | repeat_copy | associative_recall | reverse | ...
                "mode": "episodic",  # episodic (one episode per row) | stream
                "teacher_forcing": t.teacher_forcing,  # feed answers back as inputs
                "eval_windows": 8,  # windows per evaluation, from a held-out seed
                "eval_overrides": ml_collections.ConfigDict(),  # task fields for eval only
                **t.defaults}
    close = difflib.get_close_matches(str(name), DATASETS, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown dataset '{name}'{hint} (datasets: {', '.join(DATASETS)})")


def data_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
    """``config.data`` for dataset ``name``: ``name``, its defaults, then ``overrides``.

    ``data_config("synthetic", task="delayed_recall", distance=64)`` gives the task's own
    fields; an unknown key is a :class:`ConfigError` naming the nearest valid one.
    """
    task = overrides.get("task", "copy")
    fields = _defaults(name, task)
    if name != "synthetic" and "task" in overrides:
        raise ConfigError(f"dataset '{name}' has no field 'task' (only synthetic data has)")
    config = ml_collections.ConfigDict({"name": name, **fields})
    for key, value in overrides.items():
        if key not in config:
            close = difflib.get_close_matches(key, list(config.keys()), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"dataset '{name}' has no field '{key}'{hint}")
        if key == "eval_overrides":
            value = ml_collections.ConfigDict(dict(value))
        config[key] = value
    if name == "synthetic":  # check task fields and eval_overrides now, not at the first step
        build_dataset(config, seed=0)
    return config


def build_dataset(config: ml_collections.ConfigDict, *, seed: int) -> Dataset:
    """The dataset ``config`` (a ``config.data``) describes; ``seed`` drives synthetic data."""
    name = config.get("name", "")
    if not name:
        raise ConfigError("config.data.name is empty; start from recurrentlab.data.data_config")
    values = dict(config.items())
    task = values.get("task", "copy")
    defaults = _defaults(name, task)
    for key in values:
        if key != "name" and key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            if name == "synthetic" and any(key in t.defaults for t in synthetic.TASKS.values()):
                hint = (f"; it belongs to another task: build the config with "
                        f"data_config('synthetic', task='{task}') to get this task's "
                        f"fields")
            where = f"task '{task}'" if name == "synthetic" else f"dataset '{name}'"
            raise ConfigError(f"{where} has no field '{key}'{hint}")
    f = {**defaults, **values}
    if name == "enwik8":
        return corpora.enwik8(f["path"], check_md5=bool(f["verify_checksum"]))
    if name == "text8":
        return corpora.text8(f["path"])
    if name == "text":
        return corpora.text(f["path"])
    if name == "embedded":
        return corpora.embedded()
    overrides = f["eval_overrides"]
    if isinstance(overrides, ml_collections.ConfigDict):
        overrides = overrides.to_dict()
    task_fields = {k: f[k] for k in synthetic.task(f["task"]).defaults}
    return synthetic.SyntheticDataset(
        f["task"], task_fields, mode=f["mode"], teacher_forcing=f["teacher_forcing"],
        eval_windows=f["eval_windows"], eval_overrides=overrides, seed=seed)
