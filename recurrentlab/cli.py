"""The ``recurrentlab`` command: a thin layer over importable functions.

    recurrentlab train  --config FILE[:ARG] [--config.a.b=v ...] --workdir DIR
    recurrentlab eval   --workdir DIR [--split valid|test] [--step N] [--config.data.x=v ...]
    recurrentlab sample --workdir DIR --prompt TEXT --length N [--temperature T] [--top-k K]
    recurrentlab models
    recurrentlab bench  --config experiments/bench/FILE.py[:ARG] [--out DIR] [--config.a.b=v ...]
    recurrentlab sweep  FILE[:ARG] --workdir DIR [--parallel N] [--launcher local] [--config.*]
    recurrentlab results DIR

Errors caused by input (arguments, config, data, workdir) print one line and exit with status 2,
before anything is written: arguments are bounded (``--length >= 1``, ``--temperature >= 0``,
``--top-k`` in 1..vocabulary, ``--parallel >= 1``, ``--split`` one of train/valid/test) and
``--config.*`` values are parsed as their field's type (``recurrentlab.config``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recurrentlab import xla_cpu
from recurrentlab.data.base import SPLITS
from recurrentlab.errors import ArgumentError, RecurrentLabError
from recurrentlab.hostmem import reuse_freed_host_memory


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (the usage is one ``--help`` away), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _bounded(kind: type, low: float, high: float | None = None):
    """An argparse type: a ``kind`` in ``[low, high]`` (finite)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _bounded(int, 1)
non_negative_int = _bounded(int, 0)
non_negative_float = _bounded(float, 0.0)
seed_int = _bounded(int, 0, 2**32 - 1)


def check_workdir_path(workdir: Path) -> None:
    """``--workdir`` names a directory, or a path that can become one: neither it nor any
    folder above it is an existing file."""
    for path in (workdir, *workdir.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == workdir else f"is inside {path}, a file"
                raise ArgumentError(f"--workdir {workdir} {what}; give a directory "
                                    f"(a new or an existing one)")
            return


def _load_config(spec: str, overrides: list[str]):
    from recurrentlab.config import apply_overrides, load_config_file

    path, _, arg = spec.partition(":")
    config = load_config_file(path, arg or None)
    apply_overrides(config, overrides)
    return config


def cmd_train(args, overrides) -> int:
    from recurrentlab.train.trainer import train_and_evaluate

    config = _load_config(args.config, overrides)
    summary = train_and_evaluate(config, args.workdir)
    print(json.dumps({"workdir": str(args.workdir), "final": summary["final"]}, indent=2))
    return 0


def cmd_eval(args, overrides) -> int:
    from flax import nnx

    from recurrentlab.config import config_hash
    from recurrentlab.train.evaluate import EvalSettings, Evaluator
    from recurrentlab.train.trainer import enable_compilation_cache, eval_model, load_trained

    enable_compilation_cache()
    config, dataset, model, step = load_trained(args.workdir, step=args.step, overrides=overrides)
    model = eval_model(model, config, dataset.vocab_size)
    evaluator = Evaluator(model, dataset, EvalSettings.from_config(config))
    metrics = evaluator(nnx.state(model, nnx.Param), args.split)
    result = {"split": args.split, "step": step, "overrides": overrides, **metrics}
    variant = f"_{config_hash(config)}" if overrides else ""  # one file per evaluated config
    out = Path(args.workdir) / f"eval_{args.split}_step{step}{variant}.json"
    if not out.exists():  # results already written are never overwritten
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def cmd_sample(args, overrides) -> int:
    from recurrentlab.sample import generate
    from recurrentlab.train.trainer import load_trained

    if not args.prompt:
        raise ArgumentError("--prompt is empty; give at least one character")
    config, dataset, model, _ = load_trained(args.workdir, step=args.step, overrides=overrides)
    if args.top_k is not None and args.top_k > dataset.vocab_size:
        raise ArgumentError(f"--top-k {args.top_k} is more than the vocabulary of this run "
                            f"({dataset.vocab_size} symbols); use 1..{dataset.vocab_size}, "
                            f"or leave it out to sample from all of them")
    prompt = dataset.encode(args.prompt)
    if len(prompt) == 0:
        raise ArgumentError("--prompt encodes to no tokens; give at least one symbol")
    tokens = generate(model, prompt, args.length, segment_len=config.train.segment_len,
                      temperature=args.temperature, top_k=args.top_k or 0, seed=args.seed)
    print(args.prompt + dataset.decode(tokens))
    return 0


def cmd_models(args, overrides) -> int:
    from recurrentlab.models import registered_models

    print("\n".join(registered_models()))
    return 0


def cmd_sweep(args, overrides) -> int:
    from recurrentlab.sweep.launchers import make_launcher
    from recurrentlab.sweep.results import write_results
    from recurrentlab.sweep.runner import SweepInterrupted, failed_runs, run_sweep

    make_launcher(args.launcher, parallel=args.parallel)  # an unknown name stops here, not later
    try:
        manifest = run_sweep(args.sweep, args.workdir, parallel=args.parallel,
                             launcher=args.launcher, extra_args=overrides)
    except SweepInterrupted:
        return 130
    failed = failed_runs(manifest)
    if any(r["status"] == "finished" for r in manifest["runs"]):
        text, paths = write_results(args.workdir)
        print(text)
        plots = [p for p in paths if p.suffix == ".png"]
        print(f"table: {args.workdir / 'results.md'} and results.csv; plots: "
              f"{args.workdir / 'plots'} ({len(plots)} png)")
    for run in failed:
        print(f"failed: {run['name']}: {run['error']} (log: {run['log']})", file=sys.stderr)
    return 1 if failed else 0


def cmd_results(args, overrides) -> int:
    from recurrentlab.sweep.results import write_results

    if not args.dir.is_dir():
        raise RecurrentLabError(f"{args.dir} is not a folder; give a sweep's --workdir")
    try:
        text, paths = write_results(args.dir)
    except FileNotFoundError as error:
        raise RecurrentLabError(str(error)) from None
    print(text)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_bench(args, overrides) -> int:
    from recurrentlab.bench import run_bench, to_markdown

    config = _load_config(args.config, overrides)
    result = run_bench(config, args.out, log=lambda line: print(line, file=sys.stderr))
    print(to_markdown(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recurrentlab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a config in a workdir (resumes it if present)")
    train.add_argument("--config", required=True, help="config file, optionally FILE:ARG")
    train.add_argument("--workdir", required=True, type=Path)
    train.set_defaults(run=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a run's checkpoint on a split")
    ev.add_argument("--workdir", required=True, type=Path)
    ev.add_argument("--split", default="valid", choices=SPLITS)
    ev.add_argument("--step", type=non_negative_int, default=None,
                    help="checkpoint step (default latest)")
    ev.set_defaults(run=cmd_eval)

    sample = sub.add_parser("sample", help="generate text from a trained run")
    sample.add_argument("--workdir", required=True, type=Path)
    sample.add_argument("--prompt", required=True)
    sample.add_argument("--length", type=positive_int, default=200, help="tokens to generate")
    sample.add_argument("--temperature", type=non_negative_float, default=1.0,
                        help="softmax temperature; 0 is greedy")
    sample.add_argument("--top-k", type=positive_int, default=None,
                        help="sample among the K likeliest symbols, 1..vocabulary (default all)")
    sample.add_argument("--seed", type=seed_int, default=0)
    sample.add_argument("--step", type=non_negative_int, default=None,
                        help="checkpoint step (default latest)")
    sample.set_defaults(run=cmd_sample)

    models = sub.add_parser("models", help="list registered models")
    models.set_defaults(run=cmd_models, overrides=False)

    bench = sub.add_parser("bench", help="benchmark train steps, memory and compile time; "
                           "profile them per compiled operation (--config.kind=profile)")
    bench.add_argument("--config", required=True, help="bench config file, optionally FILE:ARG")
    bench.add_argument("--out", type=Path, default=None, help="write bench.md and bench.json here")
    bench.set_defaults(run=cmd_bench)

    sw = sub.add_parser("sweep", help="run (or resume) every run of a sweep file")
    sw.add_argument("sweep", help="config file with get_config + get_sweep, or FILE:ARG")
    sw.add_argument("--workdir", required=True, type=Path, help="the sweep folder")
    sw.add_argument("--parallel", type=positive_int, default=1, help="runs in flight at once")
    sw.add_argument("--launcher", default="local", help="how runs start (default: local)")
    sw.set_defaults(run=cmd_sweep)

    res = sub.add_parser("results", help="a sweep folder as a table and plots")
    res.add_argument("dir", type=Path, help="the sweep folder")
    res.set_defaults(run=cmd_results, overrides=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, rest, i = [], [], 0
    while i < len(argv):  # '--config.a.b=v' and '--config.a.b v' are overrides
        item = argv[i]
        if item.startswith("--config.") and "=" not in item and i + 1 < len(argv):
            overrides.append(f"{item}={argv[i + 1]}")
            i += 1
        elif item.startswith("--config."):
            overrides.append(item)
        else:
            rest.append(item)
        i += 1
    parser = build_parser()
    args = parser.parse_args(rest)
    if overrides and not getattr(args, "overrides", True):
        parser.error(f"'{args.command}' takes no --config.* overrides (got {overrides[0]})")
    try:
        reuse_freed_host_memory()  # before JAX's first computation (recurrentlab.hostmem)
        xla_cpu.check_mode()  # a bad RECURRENTLAB_XLA_CPU_OPTIONS stops before any write
        if getattr(args, "workdir", None) is not None:
            check_workdir_path(args.workdir)
        return args.run(args, overrides)
    except RecurrentLabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
