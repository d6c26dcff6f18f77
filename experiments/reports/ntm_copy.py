"""Copy runs side by side: steps and wall time to converge, and errors on longer sequences.

    recurrentlab sweep experiments/ntm/copy.py --workdir runs/ntm_copy --parallel 2
    python experiments/reports/ntm_copy.py runs/ntm_copy [--lengths 20 40 80 120]

For every finished run under the folder (a ``summary.json``), reports the step at which it met
``train.stop_when`` (Collier & Beel's criterion, < 0.1 mean bit errors per sequence on
held-out sequences of the training lengths; "not met" when the budget ran out), its training
wall time, and, for each length L, the mean bit errors per sequence and the fraction copied
exactly on the run's held-out episodes of exactly L vectors (``data.eval_overrides`` with
``min_len = max_len = L``; as many episodes as the run's evaluation). Each run's length results
are written once to ``<run>/copy_lengths.json`` and reused; the table goes to stdout and
``<folder>/copy_report.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recurrentlab.train.evaluate import evaluate
from recurrentlab.train.trainer import load_trained


def length_errors(run: Path, lengths: list[int]) -> dict[str, dict[str, float]]:
    """``{str(L): {"bit_errors": .., "exact_match": ..}}`` of ``run`` at its last checkpoint."""
    cache = run / "copy_lengths.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    for length in lengths:
        if str(length) in done:
            continue
        config, dataset, model, _ = load_trained(run, overrides=[
            f"--config.data.eval_overrides.min_len={length}",
            f"--config.data.eval_overrides.max_len={length}",
            f"--config.eval.segment_len={2 * length}",  # x_1..x_L <sep> x_1..x_L, shifted by 1
        ])
        metrics = evaluate(model, dataset, split="valid", batch_size=config.eval.batch_size,
                           segment_len=2 * length, window_segments=1)
        done[str(length)] = {"bit_errors": metrics["bit_errors"],
                             "exact_match": metrics["exact_match"],
                             "episodes": metrics["episodes"]}
    cache.write_text(json.dumps(done, indent=2) + "\n")
    return done


def report(folder: Path, lengths: list[int]) -> str:
    runs = sorted(p.parent for p in folder.glob("*/summary.json"))
    if not runs:
        raise SystemExit(f"no finished run under {folder}; train with 'recurrentlab sweep "
                         f"experiments/ntm/copy.py --workdir {folder}'")
    head = ["run", "params", "steps to < 0.1", "train min"] + [f"L={n}" for n in lengths]
    rows, per_model = [], {}
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        config = json.loads(summary["config"])
        errors = length_errors(run, lengths)
        stop = summary.get("stopped_early")
        cells = [run.name, f"{summary['num_params']:,}",
                 f"{stop['step']:,}" if stop else f"not met in {summary['step']:,}",
                 f"{summary['train_seconds'] / 60:.1f}"]
        cells += [f"{errors[str(n)]['bit_errors']:.3f} ({errors[str(n)]['exact_match']:.1%})"
                  for n in lengths]
        rows.append(cells)
        model = per_model.setdefault(config["model"]["name"], {"steps": [], **{n: [] for n in
                                                                                lengths}})
        model["steps"].append(stop["step"] if stop else np.nan)
        for n in lengths:
            model[n].append(errors[str(n)]["bit_errors"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "| model | runs | mean steps to < 0.1 | "
              + " | ".join(f"bit errors L={n}" for n in lengths) + " |",
              "|" + "---|" * (3 + len(lengths))]
    for name, m in per_model.items():
        steps = np.array(m["steps"], float)
        met = f"{np.nanmean(steps):,.0f} ({np.isfinite(steps).sum()}/{len(steps)} met)" if \
            np.isfinite(steps).any() else f"0/{len(steps)} met"
        lines.append(f"| {name} | {len(steps)} | {met} | " + " | ".join(
            f"{np.mean(m[n]):.2f} ± {np.std(m[n]):.2f}" for n in lengths) + " |")
    lines.append("")
    episodes = int(errors[str(lengths[0])]["episodes"])
    lines.append(f"Cells: mean bit errors per sequence (fraction of sequences copied exactly) on "
                 f"{episodes} held-out sequences of exactly L vectors; training lengths are "
                 f"those of the run's config.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a sweep folder of copy runs")
    parser.add_argument("--lengths", type=int, nargs="+", default=[20, 40, 80, 120])
    args = parser.parse_args()
    table = report(args.folder, args.lengths)
    out = args.folder / "copy_report.md"
    out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
