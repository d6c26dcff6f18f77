"""The experiment protocol, applied to a sweep's results: capability before comparison.

A comparison is a finding only when every model in it was trained to what it can do (the
README's main job applies it). This module turns a sweep table into one:

* **Steps to solve.** A run with ``train.stop_when`` (for example ``accuracy>=0.99``) is
  *solved* at the first periodic evaluation that meets it; :func:`steps_to_solve` reads that
  step from ``metrics.jsonl`` (NaN when never met).
* **Per-model learning rate.** Every model is trained at each learning rate of its grid
  (``presets.LR_GRID``); :func:`select_learning_rates` keeps, per cell (model and every other
  field but ``seed``), the learning rate that is best on validation: most seeds solved, then
  the highest mean validation accuracy, then the fewest steps to solve, then the smaller lr.
* **Controls.** A run with ``protocol.control = True`` is a cell its model solves by
  construction (for example an episode that fits inside one segment). :func:`mark_capability`
  reads the model's control after learning-rate selection: solved by a majority of its seeds,
  the model's rows are ``ok``; otherwise every row of that model is
  ``not trained to capability`` — a failure of the experiment, never a finding.
* **Chance.** :func:`chance_accuracy` is the accuracy of a uniform guess over the answer's
  symbols (synthetic tasks); plots draw it.

:func:`summary_table` gives the columns a reader needs (model, what it carries, horizon,
accuracy ± std, seeds solved, steps to solve, parameters, tokens/s, capability) and
:func:`plot_learning_curves` draws validation accuracy against step, one line per model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recurrentlab.config import parse_stop_when

MODEL_FIELDS = ("model.name", "train.carry_gradient")  # what a control vouches for
CONTROL_FIELD = "protocol.control"
LR_FIELD = "train.lr"
OK, FAILED, NO_CONTROL = "ok", "not trained to capability", ""


def steps_to_solve(records: list[dict[str, Any]], stop_when: str, split: str) -> float:
    """The first evaluation step of ``split`` whose metrics meet ``stop_when``; NaN if none.

    ``records`` are a run's ``metrics.jsonl`` records (``results.read_records``).
    """
    if not stop_when:
        return math.nan
    name, op, bound = parse_stop_when(stop_when)
    meets = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}[op]
    for record in records:
        if record["kind"] != "eval" or record.get("split", split) != split:
            continue
        value = record.get(name)
        if isinstance(value, (int, float)) and meets(float(value), bound):
            return float(record["step"])
    return math.nan


def chance_accuracy(config: dict[str, Any]) -> float:
    """Chance accuracy of a run's task from its config (``config.json`` as a dict): a uniform
    guess over the answer's symbols for synthetic tasks, NaN for corpora."""
    data = config.get("data", {})
    if data.get("name") != "synthetic":
        return math.nan
    from recurrentlab.data import build_dataset
    from recurrentlab.data.factory import data_config

    fields = {k: v for k, v in data.items() if k != "name"}
    dataset = build_dataset(data_config("synthetic", **fields), seed=int(config.get("seed", 0)))
    return float(dataset.chance_accuracy)


def _model_key(row: pd.Series, columns) -> tuple:
    return tuple(repr(row[f]) for f in MODEL_FIELDS if f in columns)


def _rank(row: pd.Series, accuracy: str) -> tuple:
    """Larger is better: solved fraction, accuracy, fewer steps, smaller lr."""
    solved = row.get("solved", math.nan)
    steps = row.get("steps_to_solve", math.nan)
    acc = row.get(accuracy, math.nan)
    return (0.0 if math.isnan(solved) else solved, -1.0 if math.isnan(acc) else acc,
            -(math.inf if math.isnan(steps) else steps), -float(row.get(LR_FIELD, 0.0)))


def selection_metric(table: pd.DataFrame) -> str | None:
    """The validation accuracy column learning rates are chosen by."""
    for name in ("valid_accuracy", "best_valid_accuracy"):
        if name in table.columns and table[name].notna().any():
            return name
    accuracy = [c for c in table.columns if c.endswith("_accuracy") and not c.endswith("_std")]
    return accuracy[0] if accuracy else None


def select_learning_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the row of the learning rate that is best on validation (see module doc).

    ``table`` is seed-aggregated (``results.aggregate_seeds``); without a ``train.lr`` field
    it is returned unchanged. The result has ``lr_grid``: the learning rates tried.
    """
    fields = table.attrs.get("fields", [])
    metric = selection_metric(table)
    if LR_FIELD not in fields or metric is None:
        return table
    cell_fields = [f for f in fields if f != LR_FIELD]
    keep, grids = [], []
    groups = [table[f].map(repr) for f in cell_fields] or [np.zeros(len(table))]
    for _, part in table.groupby(groups, sort=False):
        keep.append(max(part.index, key=lambda i: _rank(part.loc[i], metric)))
        grids.append(",".join(f"{lr:g}" for lr in sorted(part[LR_FIELD])))
    out = table.loc[keep].copy()
    out["lr_grid"] = grids
    out.attrs.update(table.attrs)
    return out.reset_index(drop=True)


def mark_capability(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``capability``: ``ok``, ``not trained to capability`` (the model's control failed)
    or empty (the sweep has no control for the model). A control passes when a majority of its
    seeds met ``train.stop_when`` (``solved`` > 0.5)."""
    out = table.copy()
    out.attrs.update(table.attrs)
    if CONTROL_FIELD not in out.columns or "solved" not in out.columns:
        out["capability"] = NO_CONTROL
        return out
    is_control = out[CONTROL_FIELD].fillna(False).astype(bool)
    verdict: dict[tuple, bool] = {}
    for _, row in out[is_control].iterrows():
        key = _model_key(row, out.columns)
        passed = bool(row["solved"] > 0.5) if not math.isnan(row["solved"]) else False
        verdict[key] = verdict.get(key, True) and passed
    out["capability"] = [
        NO_CONTROL if _model_key(row, out.columns) not in verdict
        else (OK if verdict[_model_key(row, out.columns)] else FAILED)
        for _, row in out.iterrows()]
    return out


def is_protocol_table(table: pd.DataFrame) -> bool:
    """Whether the sweep follows the protocol (its runs have a stop criterion)."""
    return "solved" in table.columns and table["solved"].notna().any()


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The reader's table of a protocol sweep (after lr selection and control marking).

    Columns: model, carries, the cell's fields, horizon (tokens), lr, accuracy (final, of the
    test split when evaluated, else validation; mean and std over seeds), solved (seeds that met
    ``train.stop_when``), steps to solve (mean and std over the solved seeds), parameters,
    tokens/s, capability. Columns that are empty for every row are left out.
    """
    from recurrentlab.sweep.presets import CARRIES

    fields = table.attrs.get("fields", [])
    accuracy = next((c for c in ("test_accuracy", "valid_accuracy", "best_valid_accuracy")
                     if c in table.columns and table[c].notna().any()), None)
    rows = []
    for _, row in table.iterrows():
        name = row.get("model.name")
        out: dict[str, Any] = {}
        if isinstance(name, str):
            out["model"] = name
            out["carries"] = CARRIES.get(name, "")
        for f in fields:
            if f not in ("model.name", LR_FIELD, "train.segment_len", "train.bptt_segments"):
                out[f.split(".")[-1]] = row[f]
        if "horizon" in row and not math.isnan(row["horizon"]):
            out["horizon"] = int(row["horizon"])  # tokens
        if LR_FIELD in row:
            out["lr"] = row[LR_FIELD]
        if accuracy:
            out["accuracy"] = (row[accuracy], row.get(f"{accuracy}_std", math.nan))
        n = int(row.get("n", 1))
        solved = row.get("solved", math.nan)
        out["solved"] = "" if math.isnan(solved) else f"{round(solved * n)}/{n}"
        out["steps to solve"] = (row.get("steps_to_solve", math.nan),
                                 row.get("steps_to_solve_std", math.nan))
        out["params"] = row.get("num_params", math.nan)
        out["tokens/s"] = row.get("tokens_per_sec", math.nan)
        out["capability"] = row.get("capability", NO_CONTROL)
        rows.append(out)
    summary = pd.DataFrame(rows)
    keep = [c for c in summary.columns if summary[c].map(_present).any()]
    summary = summary[keep]
    summary.attrs["accuracy"] = accuracy
    return summary


def _present(value: Any) -> bool:
    if isinstance(value, tuple):
        return _present(value[0])
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return value != ""


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        mean, std = value
        if not _present(mean):
            return ""
        text = _text(mean)
        if not _present(std):
            return text
        same_style = f"{std:.3f}" if isinstance(mean, float) and abs(mean) < 10 else _text(std)
        return f"{text} ± {same_style}"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if abs(value) >= 10:
            return f"{round(value):,}"
        return f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.3f}"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    return "" if value is None else str(value)


def summary_markdown(summary: pd.DataFrame, chance: float = math.nan) -> str:
    """``summary`` as markdown, with a line stating the accuracy column and chance."""
    header = "| " + " | ".join(summary.columns) + " |"
    rule = "|" + "|".join("---:" if c in ("horizon", "lr", "accuracy", "solved",
                                         "steps to solve", "params", "tokens/s") else "---"
                          for c in summary.columns) + "|"
    lines = [header, rule]
    for _, row in summary.iterrows():
        lines.append("| " + " | ".join(_text(row[c]).replace("|", "/")
                                       for c in summary.columns) + " |")
    note = f"accuracy: {summary.attrs.get('accuracy') or 'n/a'}, mean ± std over seeds"
    if not math.isnan(chance):
        note += f"; chance {chance:.3g}"
    note += "; steps to solve: mean over the seeds that solved"
    return "\n".join(lines) + "\n\n" + note + "\n"


def learning_curves(runs: list[dict[str, Any]], split: str = "valid",
                    metric: str = "accuracy") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{run name: (steps, values)}`` of ``metric`` at every evaluation of ``split``.

    ``runs`` are ``results.sweep_runs`` entries. A run that stopped early keeps its last
    value to the end of the longest run (it is solved; it would not unlearn).
    """
    from recurrentlab.sweep.results import read_records

    curves = {}
    for run in runs:
        records = [r for r in read_records(run["workdir"])
                   if r["kind"] == "eval" and r.get("split", split) == split and metric in r]
        if records:
            curves[run["name"]] = (np.array([r["step"] for r in records], dtype=float),
                                   np.array([r[metric] for r in records], dtype=float))
    return curves


def plot_learning_curves(sweep_dir: str | Path, table: pd.DataFrame, out_dir: str | Path,
                         chance: float = math.nan, max_panels: int = 8) -> list[Path]:
    """``learning_curves.png``: validation accuracy against step, one panel per cell, one line
    per model (mean over the seeds of the chosen learning rate, band = min..max), chance
    dashed. ``table`` is the seed-aggregated table after lr selection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recurrentlab.sweep.results import sweep_runs

    fields = [f for f in table.attrs.get("fields", []) if f != LR_FIELD]
    runs = sweep_runs(sweep_dir)
    by_name = {r["name"]: r for r in runs}
    configs = {r["name"]: _flat_config(r["workdir"]) for r in runs}
    model_fields = [f for f in MODEL_FIELDS if f in fields]
    cell_fields = [f for f in fields if f not in model_fields]
    panels: dict[str, list[pd.Series]] = {}
    for _, row in table.iterrows():
        label = ", ".join(f"{f.split('.')[-1]}={row[f]}" for f in cell_fields) or "all"
        panels.setdefault(label, []).append(row)
    labels = list(panels)[:max_panels]
    if not labels:
        return []
    cols = min(len(labels), 3)
    rows_n = math.ceil(len(labels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
    for ax, label in zip(axes.ravel(), labels, strict=False):
        lines = []
        for row in panels[label]:
            names = [name for name, config in configs.items()
                     if all(repr(config.get(f)) == repr(row[f]) for f in fields)
                     and (LR_FIELD not in row or config.get(LR_FIELD) == row[LR_FIELD])]
            curves = learning_curves([by_name[n] for n in names])
            if curves:
                lines.append((" ".join(str(row[f]) for f in model_fields) or "run", curves))
        # one step grid per panel: a run that stopped early holds its last value to the end
        grid = np.unique(np.concatenate(
            [s for _, curves in lines for s, _ in curves.values()] or [np.zeros(0)]))
        for name, curves in lines:
            values = np.stack([_hold(s, v, grid) for s, v in curves.values()])
            line, = ax.plot(grid, np.nanmean(values, axis=0), marker=".", label=name)
            if len(values) > 1:
                ax.fill_between(grid, np.nanmin(values, 0), np.nanmax(values, 0),
                                color=line.get_color(), alpha=0.15)
        if not math.isnan(chance):
            ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel("valid accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(labels):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "learning_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def _hold(steps: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``values`` at ``grid`` steps: the latest evaluation at or before each step (NaN before
    the first), so an early-stopped run holds its last value."""
    index = np.searchsorted(steps, grid, side="right") - 1
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)


def _flat_config(workdir: Path) -> dict[str, Any]:
    from recurrentlab.sweep.results import _flat

    return _flat(json.loads((Path(workdir) / "config.json").read_text()))
