"""The workdir is the run: ``config.json``, ``metrics.jsonl``, ``tensorboard/``,
``checkpoints/`` and, once finished, ``summary.json``. Re-running a workdir resumes it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import ml_collections

import recurrentlab
from recurrentlab.config import to_json
from recurrentlab.errors import WorkdirError

# Fields that may change between a run and its resumption without changing its results.
RESUMABLE_FIELDS = ("train.progress_bar",
                    # where the run is laid out, not what it computes: a run may resume on a
                    # different device count, host count or coordinator
                    "mesh.data_axis", "mesh.shard_params", "mesh.distributed",
                    "mesh.coordinator_address", "mesh.num_processes", "mesh.process_id")


def code_version() -> str:
    """The package version plus the git commit of its checkout (``+dirty`` if modified)."""
    version = recurrentlab.__version__
    source = Path(recurrentlab.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--",
                                "recurrentlab", "kernels"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}" if commit else version


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_difference(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first field that differs, as 'key: saved vs current', ignoring resumable fields."""
    a, b = _flat(saved), _flat(current)
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_FIELDS:
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            return f"{key}: {a.get(key, '<absent>')!r} vs {b.get(key, '<absent>')!r}"
    return None


def holds_progress(workdir: str | Path) -> bool:
    """Whether a run in ``workdir`` got past its start: metrics, a checkpoint or a summary."""
    workdir = Path(workdir)
    metrics = workdir / "metrics.jsonl"
    checkpoints = workdir / "checkpoints"
    return ((metrics.exists() and metrics.stat().st_size > 0)
            or (workdir / "summary.json").exists()
            or (checkpoints.is_dir() and any(checkpoints.iterdir())))


def _write_config(saved_path: Path, config: ml_collections.ConfigDict) -> None:
    tmp = saved_path.with_suffix(".json.tmp")
    tmp.write_text(to_json(config) + "\n")
    tmp.replace(saved_path)


def prepare_workdir(workdir: str | Path, config: ml_collections.ConfigDict) -> Path:
    """Create the workdir or check that it holds a run of this same config.

    Call it after every check of the config (the trainer does): a refused command must leave
    no trace. A workdir whose run never got past its start (a config.json and nothing that
    records progress, e.g. a run that failed while compiling) takes the new config.
    """
    workdir = Path(workdir)
    saved_path = workdir / "config.json"
    current = json.loads(to_json(config))
    if saved_path.exists():
        try:
            saved = json.loads(saved_path.read_text())
        except json.JSONDecodeError:
            raise WorkdirError(
                f"{saved_path} is not valid JSON; restore it or use a new --workdir"
            ) from None
        diff = config_difference(saved, current)
        if diff and holds_progress(workdir):
            raise WorkdirError(
                f"workdir {workdir} holds a run with a different config ({diff}); "
                f"use a new --workdir or the same config to resume"
            )
        if diff:  # nothing was computed under the old config: nothing is lost
            _write_config(saved_path, config)
    elif workdir.exists() and any(workdir.iterdir()):
        raise WorkdirError(f"workdir {workdir} is not empty and holds no run; use a new --workdir")
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        _write_config(saved_path, config)
    return workdir


def read_summary(workdir: str | Path) -> dict[str, Any] | None:
    path = Path(workdir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_summary(workdir: str | Path, summary: dict[str, Any]) -> None:
    path = Path(workdir) / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
