"""``run_bench(config, out)``: run a bench config and write ``bench.md`` and ``bench.json``.

Four kinds of bench config (``config.kind``):

* ``throughput``: per entry, training tokens/s of the full train step (median of timed repeats
  after warmup), compile time, peak memory and greedy generation latency per token, plus a
  column per peer and the ratio ours ÷ peer, both measured in the same run.
* ``memory_vs_horizon``: per entry and ``train.remat``, the compiled step's peak memory
  (``memory_analysis``, compile only: nothing of that size is allocated) against the BPTT
  horizon K * S, with the growth per extra segment set beside the carry's size.
* ``compile_time``: compile time of every entry's train step at several K (the K segments are
  a ``lax.scan``, so it should not grow with K), the effect of ``train.scan_unroll``, and the
  compile time of run config files (e.g. enwik8) on abstract inputs.
* ``profile``: per entry, where its train step's time goes, per compiled operation, from a
  ``jax.profiler`` trace of a few steps (:mod:`recurrentlab.bench.profile`); the same for each
  peer that is an XLA program. Any bench config runs as one with ``--config.kind=profile``.

Timings are wall-clock on whatever else the machine runs; compare ratios within one run.
"""

from __future__ import annotations

import datetime
import glob
import importlib.metadata
import json
import math
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from recurrentlab import xla_cpu
from recurrentlab.bench import measure, peers
from recurrentlab.bench import profile as step_profile
from recurrentlab.bench.config import KINDS
from recurrentlab.bench.report import to_markdown
from recurrentlab.config import load_config_file
from recurrentlab.errors import ConfigError
from recurrentlab.train.workdir import code_version


def environment(config: ml_collections.ConfigDict) -> dict[str, Any]:
    device = jax.devices()[0]
    env = {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "cpus_available": peers.jax_threads(),
        "torch_threads": torch_threads(config),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpu_async_dispatch": bool(jax.config.values.get("jax_cpu_enable_async_dispatch", True)),
        "xla_cpu_options": xla_cpu.compiler_options("cpu") or {},  # as a CPU step compiles
        "code_version": code_version(),
    }
    for package in ("flax", "optax", "torch"):
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            env[package] = None
    return env


def torch_threads(config: ml_collections.ConfigDict) -> int:
    return int(config.threads) or peers.jax_threads()


def _entry_config(config, entry, **train) -> ml_collections.ConfigDict:
    t = entry.train.to_dict()
    t.update(train)
    return measure.run_config(entry.model, t, seed=config.seed)


def _steps_per_repeat(config: ml_collections.ConfigDict, entry: ml_collections.ConfigDict
                      ) -> int:
    """The entry's own steps per timed repeat, or the config's where it sets none (0)."""
    return int(entry.get("steps_per_repeat") or config.steps_per_repeat)


def _shape(rc: ml_collections.ConfigDict) -> dict[str, int]:
    t = rc.train
    return {"batch_size": t.batch_size, "segment_len": t.segment_len,
            "bptt_segments": t.bptt_segments, "window": measure.window_len(rc),
            "remat": bool(t.remat), "scan_unroll": t.scan_unroll}


def throughput(config: ml_collections.ConfigDict, log: Callable[[str], None],
               save: Callable[[dict], None], out: Path | None = None) -> dict[str, Any]:
    """Per entry: our train step and its peers, compiled first, then timed interleaved."""
    rows = []
    for label, entry in config.entries.items():
        steps = _steps_per_repeat(config, entry)
        rc = _entry_config(config, entry)
        log(f"[bench] {label}: compile the train step {_shape(rc)}")
        ours = measure.PreparedTrain(rc, config.vocab_size, steps_per_repeat=steps)
        prepared, skipped = {"ours": ours}, {}
        for peer in config.peers:
            log(f"[bench] {label}: prepare peer {peer}")
            got = peers.prepare_peer(peer, rc, config.vocab_size, steps_per_repeat=steps,
                                     threads=torch_threads(config))
            if isinstance(got, str):
                skipped[peer] = {"skipped": got}
            else:
                prepared[peer] = got
        if config.min_repeat_s > 0:
            log(f"[bench] {label}: steps per repeat for >= {config.min_repeat_s} s: "
                f"{measure.calibrate_steps(prepared, config.min_repeat_s)}")
        log(f"[bench] {label}: timing {', '.join(prepared)} interleaved")
        times = measure.interleaved_times({k: v.run for k, v in prepared.items()},
                                          warmup=config.warmup, repeats=config.repeats)
        measured = {k: {**measure.rate(times[k], tokens_per_run=v.tokens_per_run,
                                       steps_per_run=v.steps_per_repeat),
                        "steps_per_repeat": v.steps_per_repeat, **v.info, **v.memory()}
                    for k, v in prepared.items()}
        result = measured.pop("ours")
        row = {"label": label, "model": entry.model.name, **_shape(rc), **result}
        for m in measured.values():
            m["ratio"] = result["tokens_per_sec"] / m["tokens_per_sec"]
        row["peers"] = {p: measured.get(p) or skipped[p] for p in config.peers}
        if config.generate_tokens:
            log(f"[bench] {label}: generation latency")
            model = ours.model()
            gen = dict(segment_len=rc.train.segment_len, tokens=config.generate_tokens,
                       vocab_size=config.vocab_size, seed=config.seed)
            row["generation"] = measure.generation_latency(model, **gen)
            if row["generation"]["path"] == "step":  # and the re-run path it replaces
                row["generation_segment"] = measure.generation_latency(model, path="segment",
                                                                       **gen)
        del prepared, ours
        rows.append(row)
        save({"rows": rows})
        log(f"[bench] {label}: {result['tokens_per_sec']:.0f} tokens/s")
    return {"rows": rows}


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def memory_vs_horizon(config: ml_collections.ConfigDict, log: Callable[[str], None],
                      save: Callable[[dict], None], out: Path | None = None) -> dict[str, Any]:
    rows, summary = [], []
    for label, entry in config.entries.items():
        per_remat = {}
        for remat in config.remat:
            ks, peaks = [], []
            for k in config.horizon_segments:
                rc = _entry_config(config, entry, bptt_segments=int(k), remat=bool(remat))
                log(f"[bench] {label}: compile K={k} remat={remat}")
                r = measure.compile_only(rc, config.vocab_size)
                memory = r["memory"] or {}
                rows.append({"label": label, "model": entry.model.name, **_shape(rc),
                             "horizon": measure.window_len(rc), "peak_bytes": memory.get("peak"),
                             "temp_bytes": memory.get("temp"), "carry_bytes": r["carry_bytes"],
                             "param_bytes": r["param_bytes"], "params": r["params"],
                             "compile_s": r["compile"]["total_s"]})
                if memory.get("peak") is not None:
                    ks.append(int(k))
                    peaks.append(memory["peak"])
            per_remat[bool(remat)] = {"segments": ks, "peaks": peaks,
                                      "bytes_per_segment": _slope(ks, peaks)}
        carry = rows[-1]["carry_bytes"]
        item = {"label": label, "model": entry.model.name, "carry_bytes": carry,
                "segment_len": entry.train.segment_len}
        for remat, data in per_remat.items():
            name = "remat" if remat else "no_remat"
            item[f"{name}_bytes_per_segment"] = data["bytes_per_segment"]
            if len(data["peaks"]) >= 2:
                item[f"{name}_growth"] = data["peaks"][-1] / data["peaks"][0]
            item[f"{name}_per_segment_over_carry"] = data["bytes_per_segment"] / max(carry, 1)
        summary.append(item)
        save({"rows": rows, "summary": summary})
    return {"rows": rows, "summary": summary}


def _expand(patterns) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        paths.extend(p for p in found if not Path(p).name.startswith("_"))
    return paths


def compile_time(config: ml_collections.ConfigDict, log: Callable[[str], None],
                 save: Callable[[dict], None], out: Path | None = None) -> dict[str, Any]:
    by_k, unroll, run_configs = [], [], []
    partial = {"by_segments": by_k, "unroll": unroll, "run_configs": run_configs}
    for label, entry in config.entries.items():
        row = {"label": label, "model": entry.model.name, "compile_s": {}, "peak_bytes": {}}
        for k in config.compile_segments:
            rc = _entry_config(config, entry, bptt_segments=int(k))
            log(f"[bench] {label}: compile K={k}")
            r = measure.compile_only(rc, config.vocab_size)
            row["compile_s"][int(k)] = r["compile"]["total_s"]
            row["peak_bytes"][int(k)] = (r["memory"] or {}).get("peak")
            row["params"] = r["params"]
            row.update(batch_size=rc.train.batch_size, segment_len=rc.train.segment_len)
        times = list(row["compile_s"].values())
        row["max_over_min"] = max(times) / min(times)
        by_k.append(row)
        save(partial)
    timing = {"warmup": config.warmup, "repeats": config.repeats,
              "steps_per_repeat": config.steps_per_repeat}
    for label, entry in config.entries.items():
        if config.unroll_entries and label not in config.unroll_entries:
            continue
        for u in config.unrolls:
            rc = _entry_config(config, entry, bptt_segments=int(config.unroll_segments),
                               scan_unroll=int(u))
            log(f"[bench] {label}: scan_unroll={u}")
            if config.unroll_steps:
                r, _ = measure.measure_train(rc, config.vocab_size, **timing)
                item = {"compile_s": r["compile_s"], "tokens_per_sec": r["tokens_per_sec"]}
            else:
                r = measure.compile_only(rc, config.vocab_size)
                item = {"compile_s": r["compile"]["total_s"]}
            unroll.append({"label": label, "model": entry.model.name, "scan_unroll": int(u),
                           "bptt_segments": int(config.unroll_segments), **item})
            save(partial)
    for path in _expand(config.run_configs):
        rc = load_config_file(path)
        log(f"[bench] {path}: compile on abstract inputs")
        r = measure.compile_only(rc, config.vocab_size)
        run_configs.append({
            "config": path, "model": rc.model.name, "params": r["params"], **_shape(rc),
            "compile_s": r["compile"]["total_s"], "lower_s": r["compile"]["lower_s"],
            "peak_bytes": (r["memory"] or {}).get("peak"),
            "within_budget": r["compile"]["total_s"] < config.compile_budget_s})
        save(partial)
    return partial


def profile(config: ml_collections.ConfigDict, log: Callable[[str], None],
            save: Callable[[dict], None], out: Path | None = None) -> dict[str, Any]:
    """Per entry: its train step and every peer that is an XLA program, each traced for
    ``profile_steps`` steps after ``warmup`` untraced runs (:mod:`recurrentlab.bench.profile`);
    with ``out``, the traces go to ``out/profile/<entry>/<program>/``."""
    rows = []
    for label, entry in config.entries.items():
        steps = int(config.profile_steps)
        rc = _entry_config(config, entry)
        log(f"[bench] {label}: compile the train step {_shape(rc)}")
        programs = {"ours": measure.PreparedTrain(rc, config.vocab_size, steps_per_repeat=steps)}
        skipped = {}
        for peer in config.peers:
            if peer in peers.TORCH_PEERS:
                skipped[peer] = "not an XLA program"
                continue
            log(f"[bench] {label}: prepare peer {peer}")
            got = peers.prepare_peer(peer, rc, config.vocab_size, steps_per_repeat=steps,
                                     threads=torch_threads(config))
            if isinstance(got, str):
                skipped[peer] = got
            else:
                programs[peer] = got
        row = {"label": label, "model": entry.model.name, **_shape(rc), "programs": {},
               "skipped": skipped}
        for name, program in programs.items():
            for _ in range(config.warmup):
                program.run()
            log(f"[bench] {label}: trace {steps} steps of {name}")
            folder = None if out is None else out / "profile" / label / name
            row["programs"][name] = step_profile.profile_program(
                program.run, program.compiled, steps=steps, log_dir=folder)
        del programs
        rows.append(row)
        save({"rows": rows})
    return {"rows": rows}


# Every kind: (config, log, save, out) -> result; save(partial) rewrites OUT's files, and OUT
# (None: no files) is where the profile kind also keeps its traces.
_KIND_FUNCTIONS = {"throughput": throughput, "memory_vs_horizon": memory_vs_horizon,
                   "compile_time": compile_time, "profile": profile}


def run_bench(config: ml_collections.ConfigDict, out: str | Path | None = None, *,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``config``; with ``out``, write ``out/bench.md`` and ``out/bench.json``.

    The files are rewritten after every measured row, so a long bench that stops early keeps
    what it measured (``"complete": false`` in the JSON until the end).
    """
    if config.kind not in KINDS:
        raise ConfigError(f"bench kind '{config.kind}' unknown; use one of {', '.join(KINDS)}")
    if config.kind != "compile_time" and not config.entries:
        raise ConfigError("the bench config has no entries")
    unknown = [p for p in config.peers if p not in peers.PEERS]
    if unknown:
        raise ConfigError(f"unknown peer(s) {unknown}; known: {', '.join(peers.PEERS)}")
    if not (math.isfinite(config.min_repeat_s) and config.min_repeat_s >= 0):
        raise ConfigError(f"min_repeat_s must be >= 0 seconds and finite, got "
                          f"{config.min_repeat_s}")
    if config.warmup < 0 or config.repeats < 1:
        raise ConfigError(f"warmup must be >= 0 and repeats >= 1, got {config.warmup} and "
                          f"{config.repeats}")
    if config.kind == "profile" and (config.profile_steps < 1 or config.profile_top < 1):
        raise ConfigError(f"profile_steps and profile_top must be >= 1, got "
                          f"{config.profile_steps} and {config.profile_top}")
    for label, e in config.entries.items():
        if _steps_per_repeat(config, e) < 1:
            raise ConfigError(f"bench entry '{label}': steps_per_repeat must be >= 1 (0 in an "
                              f"entry: the config's), got {_steps_per_repeat(config, e)}")
    result = {"kind": config.kind, "config": config.to_dict(), "environment": environment(config),
              "complete": False}

    def save(partial: dict[str, Any]) -> None:
        if out is None:
            return
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        current = {**result, **partial}
        (folder / "bench.json").write_text(
            json.dumps(current, indent=2, default=_json_default) + "\n")
        (folder / "bench.md").write_text(to_markdown(current))

    result.update(_KIND_FUNCTIONS[config.kind](config, log, save,
                                               None if out is None else Path(out)))
    result["complete"] = True
    save({})
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)
