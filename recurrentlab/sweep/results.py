"""A sweep folder as one table and a few plots.

:func:`load_results` reads every run of ``DIR`` (the runs of ``DIR/manifest.json``, or every
sub-folder holding a ``config.json``) and returns a ``pandas.DataFrame``:

* the config fields that vary across the sweep (dotted names, ``model.name``, ``seed``, ...);
* the final evaluation of each split in ``summary.json``: ``<split>_<metric>`` for loss,
  ``bits_per_<unit>``, accuracy, exact_match, bit_errors;
* the best value of the headline metrics over every evaluation of ``eval.split`` in
  ``metrics.jsonl``: ``best_<split>_<metric>`` (lowest loss/bits/bit errors, highest
  accuracy/exact match);
* ``tokens_per_sec`` (mean over the run's train records; compile time excluded),
  ``train_seconds`` (wall time of the run), ``compile_seconds``, ``num_params``, ``step``;
* the protocol's columns (:mod:`recurrentlab.sweep.protocol`): ``horizon`` (the gradient
  horizon K·S in tokens), ``chance`` (chance accuracy of a synthetic task), and for runs with
  ``train.stop_when``: ``solved`` (1/0) and ``steps_to_solve``.

With ``aggregate=True`` runs that differ only in ``seed`` form one row: each metric is the
mean over the seeds, ``<metric>_std`` their sample standard deviation (NaN for one seed), and
``n`` the number of runs (``solved`` becomes the fraction of seeds that solved,
``steps_to_solve`` the mean over those). :func:`write_results` prints the same as markdown and
writes ``DIR/results.md``, ``DIR/results.csv`` and ``DIR/plots/*.png``; for a sweep that
follows the protocol (its runs have ``train.stop_when``) it first keeps the best learning rate
per cell, marks models whose control failed, and leads with the reader's summary table and
``plots/learning_curves.png``.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recurrentlab.sweep.protocol import (
    chance_accuracy,
    is_protocol_table,
    mark_capability,
    plot_learning_curves,
    select_learning_rates,
    steps_to_solve,
    summary_markdown,
    summary_table,
)
from recurrentlab.sweep.runner import read_manifest

METRIC_ORDER = ("bits_per_byte", "bits_per_char", "bits_per_token", "loss", "accuracy",
                "exact_match", "bit_errors")
HIGHER_IS_BETTER = ("accuracy", "exact_match")
# Bookkeeping fields that never change a result: not columns unless the sweep varies them.
IGNORED_FIELDS = ("train.progress_bar", "train.log_every", "train.eval_every",
                  "train.checkpoint_every", "train.keep_checkpoints", "mesh.data_axis")
MAX_PLOTS_PER_METRIC = 4  # a folder of unrelated runs (no manifest) must not make dozens
RUN_INFO = ("tokens_per_sec", "train_seconds", "compile_seconds", "num_params", "step",
            "horizon", "chance", "solved", "steps_to_solve")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def read_records(workdir: str | Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` of a run: the last record per (kind, step, split), in step order.

    A resumed run re-logs the steps after its checkpoint; the later record wins.
    """
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    latest: dict[tuple[str, int, str], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if not isinstance(record, dict) or record.get("kind") in (None, "resume"):
            continue
        latest[(record["kind"], record["step"], str(record.get("split", "")))] = record
    return [latest[k] for k in sorted(latest, key=lambda k: (k[1], k[0], k[2]))]


def _is_metric(name: str) -> bool:
    return name in METRIC_ORDER or name.startswith("bits_per_")


def _metric_rank(name: str) -> tuple[int, bool, str]:
    """Sort key: headline metric first, the final value before the best one, then by name."""
    base = name.split("_", 1)[1] if name.startswith("best_") else name
    rank = next((i for i, m in enumerate(METRIC_ORDER) if base.endswith(m)), len(METRIC_ORDER))
    return rank, name.startswith("best_"), name


def _best(values: list[float], metric: str) -> float:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return math.nan
    return max(values) if metric in HIGHER_IS_BETTER else min(values)


def run_row(workdir: str | Path) -> dict[str, Any]:
    """One run's numbers, read from its workdir (no config fields)."""
    workdir = Path(workdir)
    summary_path = workdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    config = json.loads((workdir / "config.json").read_text())
    records = read_records(workdir)
    row: dict[str, Any] = {}
    if summary is not None:
        for split, metrics in summary.get("final", {}).items():
            for name, value in metrics.items():
                if _is_metric(name):
                    row[f"{split}_{name}"] = value
    eval_split = config.get("eval", {}).get("split", "valid")
    evals = [r for r in records if r["kind"] == "eval" and r.get("split", eval_split) == eval_split]
    names = sorted({k for r in evals for k in r if _is_metric(k)}, key=_metric_rank)
    for name in names:
        if name == "loss" and any(n.startswith("bits_per_") for n in names):
            continue  # bits are the loss in other units
        row[f"best_{eval_split}_{name}"] = _best([r.get(name, math.nan) for r in evals], name)
    train = [r for r in records if r["kind"] == "train"]
    speeds = [r["tokens_per_sec"] for r in train if isinstance(r.get("tokens_per_sec"), float)]
    row["tokens_per_sec"] = float(np.mean(speeds)) if speeds else math.nan
    row["train_seconds"] = summary["train_seconds"] if summary else math.nan
    row["compile_seconds"] = summary.get("compile_seconds", math.nan) if summary else math.nan
    row["num_params"] = summary.get("num_params", math.nan) if summary else math.nan
    row["step"] = max((r["step"] for r in train), default=0)
    t = config.get("train", {})
    row["horizon"] = t.get("segment_len", 0) * t.get("bptt_segments", 0) or math.nan
    row["chance"] = chance_accuracy(config)
    stop_when = t.get("stop_when", "")
    row["steps_to_solve"] = steps_to_solve(records, stop_when, eval_split)
    row["solved"] = float(not math.isnan(row["steps_to_solve"])) if stop_when else math.nan
    return row


def sweep_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """``[{name, workdir, status, overrides}]`` in sweep order."""
    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    runs = []
    if manifest is not None:
        for entry in manifest["runs"]:
            workdir = Path(entry["workdir"])
            if not workdir.is_absolute() or not workdir.exists():
                workdir = sweep_dir / entry["name"]  # a sweep folder moved elsewhere
            runs.append({"name": entry["name"], "workdir": workdir,
                         "status": entry["status"], "overrides": entry.get("overrides", {})})
    else:
        for workdir in sorted(p.parent for p in sweep_dir.glob("*/config.json")):
            runs.append({"name": workdir.name, "workdir": workdir, "status": "unknown",
                         "overrides": {}})
    for run in runs:
        if (run["workdir"] / "summary.json").exists():
            run["status"] = "finished"
        elif run["status"] in ("finished", "unknown"):
            run["status"] = "unfinished"
    return [r for r in runs if (r["workdir"] / "config.json").exists()]


def swept_fields(sweep_dir: str | Path) -> list[str]:
    """Override keys of ``manifest.json`` whose value differs between the sweep's runs."""
    manifest = read_manifest(sweep_dir)
    if manifest is None:
        return []
    overrides = [r.get("overrides", {}) for r in manifest["runs"]]
    keys: list[str] = []
    for run in overrides:
        keys.extend(k for k in run if k not in keys)
    return [k for k in keys if len({repr(run.get(k, "<absent>")) for run in overrides}) > 1]


def varying_fields(configs: list[dict[str, Any]], swept: list[str]) -> list[str]:
    """Fields whose value differs between runs, and the fields the sweep varies.

    A field only some configs have (a model's own size when the sweep spans models) is left
    out unless the sweep set it; ``model.name`` and the data fields then tell runs apart.
    """
    keys: list[str] = []
    for config in configs:
        keys.extend(k for k in config if k not in keys)
    keys.extend(k for k in swept if k not in keys)
    out = []
    for key in keys:
        if key in IGNORED_FIELDS and key not in swept:
            continue
        values = {repr(c.get(key, None)) for c in configs}
        everywhere = all(key in c for c in configs)
        if (len(values) > 1 and everywhere) or key in swept:
            out.append(key)
    out.sort(key=lambda k: (k != "model.name", k == "seed", keys.index(k)))
    return out


def load_results(sweep_dir: str | Path, aggregate: bool = True) -> pd.DataFrame:
    """The sweep's table: one row per run, or per seed group with ``aggregate=True``."""
    runs = sweep_runs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"{sweep_dir} holds no runs (no */config.json)")
    configs = [_flat(json.loads((r["workdir"] / "config.json").read_text())) for r in runs]
    swept = swept_fields(sweep_dir)
    fields = varying_fields(configs, swept)
    rows = []
    for run, config in zip(runs, configs, strict=True):
        row = {"run": run["name"], "status": run["status"]}
        row.update({f: config.get(f, None) for f in fields})
        row.update(run_row(run["workdir"]))
        rows.append(row)
    metrics = sorted({k for row in rows for k in row
                      if k not in ("run", "status", *fields, *RUN_INFO)}, key=_metric_rank)
    columns = ["run", "status", *fields, *metrics, *RUN_INFO]
    table = pd.DataFrame([{c: row.get(c, math.nan) for c in columns} for row in rows],
                         columns=columns)
    table.attrs["fields"] = fields
    table.attrs["metrics"] = metrics
    table.attrs["swept"] = [f for f in swept if f in fields]
    if not aggregate:
        return table
    out = aggregate_seeds(table, fields, [*metrics, *RUN_INFO])
    out.attrs["swept"] = [f for f in table.attrs["swept"] if f != "seed"]
    return out


def aggregate_seeds(table: pd.DataFrame, fields: list[str], values: list[str]) -> pd.DataFrame:
    """Rows equal in ``fields`` except ``seed`` become one: mean, sample std and n."""
    group_fields = [f for f in fields if f != "seed"]
    groups: dict[tuple, list[int]] = {}
    for i in range(len(table)):
        key = tuple(repr(table.iloc[i][f]) for f in group_fields)
        groups.setdefault(key, []).append(i)
    rows = []
    for index in groups.values():
        part = table.iloc[index]
        row: dict[str, Any] = {f: part.iloc[0][f] for f in group_fields}
        row["n"] = len(index)
        row["finished"] = int((part["status"] == "finished").sum())
        if "seed" in table.columns:
            row["seeds"] = ",".join(str(s) for s in part["seed"])
        for name in values:
            column = np.asarray(part[name], dtype=np.float64)
            column = column[np.isfinite(column)]
            row[name] = float(np.mean(column)) if len(column) else math.nan
            row[f"{name}_std"] = float(np.std(column, ddof=1)) if len(column) > 1 else math.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["fields"] = group_fields
    out.attrs["metrics"] = [v for v in values if v not in RUN_INFO]
    return out


# ----------------------------------------------------------------------------- output


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """The table as markdown; an aggregated table shows ``mean ± std`` and ``n``."""
    fields = table.attrs.get("fields", [])
    aggregated = "n" in table.columns
    shown = [c for c in table.columns if not c.endswith("_std")
             and c not in ("compile_seconds", "finished", "seeds", "step")
             and (c in fields or table[c].map(_cell).astype(bool).any())]  # no empty columns
    if aggregated:
        shown = [*fields, "n", *[c for c in shown if c not in (*fields, "n")]]
    header = "| " + " | ".join(shown) + " |"
    rule = "|" + "|".join("---" if c in fields or c in ("run", "status") else "---:"
                          for c in shown) + "|"
    lines = [header, rule]
    for _, row in table.iterrows():
        cells = []
        for c in shown:
            text = _cell(row[c])
            std = row.get(f"{c}_std") if aggregated else None
            if text and std is not None and isinstance(std, float) and not math.isnan(std):
                text = f"{text} ± {_cell(std)}"
            cells.append(text.replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _present(values) -> list:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _numeric(values) -> bool:
    """Every value present (a field only some runs have is absent in the others) a number."""
    values = _present(values)
    return bool(values) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in values)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def headline_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics worth a plot: the final bits and accuracy columns of each split."""
    metrics = table.attrs.get("metrics", [])
    picked = [m for m in metrics if not m.startswith("best_")
              and (m.split("_", 1)[-1].startswith("bits_per_")
                   or m.endswith("_accuracy") or m.endswith("_exact_match"))]
    return [m for m in picked if table[m].notna().any()]


def plot_results(table: pd.DataFrame, out_dir: str | Path,
                 chance: float = math.nan) -> list[Path]:
    """PNG plots: each numeric swept field against each headline metric, one line per
    combination of the other swept fields (mean ± std over seeds); bars when no swept field
    is numeric; ``chance`` as a dashed line on accuracy plots. Expects an aggregated table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = table.attrs.get("fields", [])
    swept = table.attrs.get("swept") or fields
    numeric = [f for f in fields if f in swept and len(set(_present(table[f]))) > 1
               and _numeric(table[f])][:MAX_PLOTS_PER_METRIC]
    paths = []
    for metric in headline_metrics(table):
        std = table.get(f"{metric}_std")
        for x in numeric or [None]:
            others = [f for f in fields if f != x]
            fig, ax = plt.subplots(figsize=(6, 4))
            if x is None:
                labels = [", ".join(_cell(row[f]) for f in others) or str(i)
                          for i, row in table.iterrows()]
                errors = None if std is None else std.fillna(0).to_numpy()
                ax.bar(range(len(table)), table[metric].to_numpy(), yerr=errors, capsize=3)
                ax.set_xticks(range(len(table)), labels, rotation=30, ha="right", fontsize=8)
                name = f"{metric}_by_{'_'.join(_slug(f) for f in others) or 'run'}.png"
            else:
                flat = table[[bool(_present([v])) for v in table[x]]].reset_index(drop=True)
                lines: dict[str, list[int]] = {}
                for i, row in flat.iterrows():
                    label = ", ".join(f"{f.split('.')[-1]}={_cell(row[f])}" for f in others
                                      if _present([row[f]]))
                    lines.setdefault(label, []).append(i)
                if max(len(index) for index in lines.values()) < 2:  # no line to draw
                    plt.close(fig)
                    continue
                ax.set_prop_cycle(color=plt.get_cmap("tab20" if len(lines) > 10 else "tab10")(
                    np.linspace(0, 1, 20 if len(lines) > 10 else 10, endpoint=False)))
                for label, index in lines.items():
                    part = flat.iloc[index].sort_values(x)
                    errors = None if std is None else part[f"{metric}_std"].fillna(0).to_numpy()
                    ax.errorbar(part[x].to_numpy(), part[metric].to_numpy(), yerr=errors,
                                marker="o", capsize=3, label=label or metric)
                ax.set_xlabel(x)
                xs = _present(flat[x])
                if len(set(xs)) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 8:
                    ax.set_xscale("log", base=2)
                if len(lines) > 1:
                    ax.legend(fontsize=7)
                name = f"{metric}_vs_{_slug(x)}.png"
            if metric.endswith("accuracy") and not math.isnan(chance):
                ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            with warnings.catch_warnings():  # long labels: keep the figure as it is
                warnings.simplefilter("ignore", UserWarning)
                fig.tight_layout()
            path = out_dir / name
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


def protocol_table(table: pd.DataFrame) -> pd.DataFrame:
    """An aggregated table with the protocol applied: best lr per cell, capability marked."""
    return mark_capability(select_learning_rates(table))


def _chance(table: pd.DataFrame) -> float:
    values = set(_present(table["chance"])) if "chance" in table.columns else set()
    return values.pop() if len(values) == 1 else math.nan


def write_results(sweep_dir: str | Path) -> tuple[str, list[Path]]:
    """Write ``results.md``, ``results.csv`` and ``plots/*.png``; return (markdown, paths).

    A protocol sweep (runs with ``train.stop_when``) leads with the summary table of its best
    learning rates (``results_all_lr.csv`` keeps every learning rate) and adds
    ``plots/learning_curves.png``; the markdown returned (what the commands print) is then
    that summary alone, ``results.md`` holds the full table of every metric too.
    """
    sweep_dir = Path(sweep_dir)
    table = load_results(sweep_dir, aggregate=True)
    extra: list[Path] = []
    text = ""
    chance = _chance(table)
    if is_protocol_table(table):
        table.to_csv(sweep_dir / "results_all_lr.csv", index=False)
        extra.append(sweep_dir / "results_all_lr.csv")
        table = protocol_table(table)
        text = summary_markdown(summary_table(table), chance) + "\n"
    shown = text or markdown_table(table)
    text += markdown_table(table)
    (sweep_dir / "results.md").write_text(text)
    table.to_csv(sweep_dir / "results.csv", index=False)
    load_results(sweep_dir, aggregate=False).to_csv(sweep_dir / "results_runs.csv", index=False)
    plots = plot_results(table, sweep_dir / "plots", chance=chance)
    if is_protocol_table(table):
        plots += plot_learning_curves(sweep_dir, table, sweep_dir / "plots", chance=chance)
    return shown, [sweep_dir / "results.md", sweep_dir / "results.csv",
                   sweep_dir / "results_runs.csv", *extra, *plots]
