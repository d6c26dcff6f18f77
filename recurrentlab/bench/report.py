"""Markdown tables of a bench result (``run_bench``'s dict)."""

from __future__ import annotations

import math
from typing import Any

MIB = 2.0**20


def _mib(value: Any) -> str:
    return "—" if value is None else f"{value / MIB:,.1f}"


def _num(value: Any, fmt: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _environment(env: dict[str, Any]) -> list[str]:
    return [
        f"Backend {env['backend']} ({env['device']}), jax {env['jax']}, flax {env['flax']}, "
        f"torch {env['torch']}, {env['cpus_available']} CPUs available, "
        f"torch threads {env['torch_threads']}, XLA_FLAGS='{env['xla_flags']}', "
        f"CPU dispatch {'async' if env.get('cpu_async_dispatch', True) else 'sync'} "
        f"(recurrentlab.hostmem), XLA CPU options {env.get('xla_cpu_options', '?')} "
        f"(recurrentlab.xla_cpu), {env['date_utc']} UTC, code {env.get('code_version', '?')}.",
        "",
        "Wall-clock numbers on a machine that may be running other work are noisy; compare the "
        "ratios measured within one run, not absolute numbers across runs.",
    ]


def _steps(rows: list[dict[str, Any]], result: dict[str, Any]) -> str:
    """Steps per repeat: the config's, or per row (and side) where they differ."""
    steps = {}
    for r in rows:
        sides = {"ours": r.get("steps_per_repeat", result["config"]["steps_per_repeat"])}
        sides |= {p: m["steps_per_repeat"] for p, m in r["peers"].items()
                  if "steps_per_repeat" in m}
        steps[r["label"]] = sides
    counts = {n for sides in steps.values() for n in sides.values()}
    if len(counts) <= 1:
        return str(next(iter(counts), result["config"]["steps_per_repeat"]))
    if all(len(sides) == 1 for sides in steps.values()):
        return "(" + ", ".join(f"{label} {sides['ours']}" for label, sides in steps.items()) + ")"
    return "(" + "; ".join(f"{label}: " + ", ".join(f"{side} {n}" for side, n in sides.items())
                           for label, sides in steps.items()) + ")"


def _calibrated(result: dict[str, Any]) -> str:
    seconds = result["config"].get("min_repeat_s", 0)
    return (f" (each side's steps raised so that a repeat lasts >= {seconds} s: a fast step "
            "right after a slow peer's runs on cold caches; `measure.calibrate_steps`)"
            if seconds else "")


def _peak_note(rows: list[dict[str, Any]]) -> str:
    sources = sorted({r.get("peak_source", "unavailable") for r in rows})
    notes = {
        "memory_analysis": "`memory_analysis`: the compiled step's temp + argument + output "
                           "bytes (XLA's static buffer assignment; no allocator on CPU)",
        "peak_bytes_in_use": "`peak_bytes_in_use`: the device allocator's process-wide "
                             "high-water mark (never decreases, so later rows include earlier "
                             "peaks if larger)",
        "unavailable": "unavailable on this backend",
    }
    return "Peak memory: " + "; ".join(notes.get(s, s) for s in sources) + "."


def throughput_markdown(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    measured = [p for p in result["config"]["peers"]
                if any("tokens_per_sec" in r["peers"].get(p, {}) for r in rows)]
    header = ["model", "params", "batch × window (K×S)", "tokens/s", "step ms", "compile s",
              "peak MiB", "gen ms/token", "re-run ms/token"]
    for p in measured:
        header += [f"{p} tokens/s", f"ours ÷ {p}"]
    body = []
    for r in rows:
        gen = r.get("generation", {}).get("ms_per_token")
        rerun = r.get("generation_segment", r.get("generation", {})).get("ms_per_token")
        line = [r["label"], _num(r["params"]),
                f"{r['batch_size']} × {r['window']} ({r['bptt_segments']}×{r['segment_len']})",
                _num(r["tokens_per_sec"]), _num(r["step_ms"], ".1f"), _num(r["compile_s"], ".1f"),
                _mib(r.get("peak_bytes")), _num(gen, ".2f"), _num(rerun, ".2f")]
        for p in measured:
            peer = r["peers"].get(p, {})
            line += [_num(peer.get("tokens_per_sec")), _num(peer.get("ratio"), ".2f")]
        body.append(line)
    lines = ["# Training throughput", "", *_table(header, body), ""]
    lines.append(_peak_note(rows))
    lines.append("Tokens/s: the full train step (K-segment scan, gradients, Adam update), median "
                 f"of {result['config']['repeats']} repeats of {_steps(rows, result)} "
                 f"consecutive steps after {result['config']['warmup']} warmup repeats"
                 f"{_calibrated(result)}, each repeat ending in "
                 "`block_until_ready`; a row's implementation and its peers are timed "
                 "interleaved (one repeat of each per round, rotating the order), so load from "
                 "other processes falls on all of them alike. Compile s: lowering + XLA "
                 "compilation of the step, persistent compilation cache off. Gen ms/token: "
                 "greedy decoding of one stream on `recurrentlab.sample.generate`'s path (one "
                 "compiled `decode_step` per token: a recurrent step, or one query against "
                 "key/value caches of the segment), median per token after compilation, host "
                 "read of the logits included; re-run ms/token: the same on the path it "
                 "replaces (each token re-runs the partial segment from the last segment's "
                 "carry; `sample.generate_reference`).")
    lines.append("Ratios are ours ÷ peer tokens/s, the peer measured in the same run on the "
                 "same shapes (lstm rows: embedding → LSTM stack → linear decoder, Adam, no "
                 "dropout; sha_rnn and ntm rows: the authors'-style torch model of "
                 "`recurrentlab/bench/torch_peers.py` with our initial weights, same loss and "
                 "dropout, Adam).")
    skipped = sorted({f"{p}: {r['peers'][p]['skipped']}" for r in rows for p in r["peers"]
                      if "skipped" in r["peers"][p] and p not in measured})
    if skipped:
        lines += ["", "Peers not measured:", *[f"- {s}" for s in skipped]]
    devices = sorted({r["peers"]["torch"]["device"] for r in rows
                      if "device" in r["peers"].get("torch", {})})
    if devices:
        lines.append(f"\ntorch ran on: {', '.join(devices)}. XLA's CPU client sizes its own "
                     "thread pool to the CPUs the process may use; torch gets that many "
                     "threads (`torch.set_num_threads`).")
    return lines


def memory_markdown(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    remats = list(dict.fromkeys(r["remat"] for r in rows))
    header = ["K", "horizon (tokens)"] + [
        f"{label} {'remat' if m else 'no remat'} MiB" for label in labels for m in remats]
    index = {(r["label"], r["remat"], r["bptt_segments"]): r for r in rows}
    ks = sorted({r["bptt_segments"] for r in rows})
    body = []
    for k in ks:
        horizon = next(r["horizon"] for r in rows if r["bptt_segments"] == k)
        line = [str(k), _num(horizon)]
        for label in labels:
            for m in remats:
                line.append(_mib(index.get((label, m, k), {}).get("peak_bytes")))
        body.append(line)
    lines = ["# Peak memory against the BPTT horizon", "", *_table(header, body), ""]
    s_header = ["model", "carry MiB", "no remat MiB/segment", "remat MiB/segment",
                "remat per segment ÷ carry", "growth no remat", "growth remat"]
    s_body = [[s["label"], _mib(s["carry_bytes"]), _mib(s.get("no_remat_bytes_per_segment")),
               _mib(s.get("remat_bytes_per_segment")),
               _num(s.get("remat_per_segment_over_carry"), ".2f"),
               _num(s.get("no_remat_growth"), ".1f") + "×",
               _num(s.get("remat_growth"), ".1f") + "×"] for s in result["summary"]]
    lines += ["## Growth per extra segment", "", *_table(s_header, s_body), ""]
    lines.append("Peak memory is `memory_analysis` of the compiled train step (temp + argument + "
                 "output bytes), compile only: nothing of these sizes is allocated. MiB/segment "
                 "is the least-squares slope of peak memory over K. Without remat the backward "
                 "pass keeps every segment's activations (slope ~ S tokens of activations); with "
                 "`train.remat` it keeps the carry entering each segment (slope ~ the carry) and "
                 "recomputes one segment at a time. Growth: peak at the largest K ÷ at the "
                 "smallest.")
    return lines


def compile_markdown(result: dict[str, Any]) -> list[str]:
    lines = ["# Compile time of the train step", ""]
    by_k = result["by_segments"]
    if by_k:
        ks = list(by_k[0]["compile_s"])
        header = ["model", "params", "batch × S"] + [f"K={k} s" for k in ks] + ["max ÷ min"]
        body = [[r["label"], _num(r["params"]), f"{r['batch_size']} × {r['segment_len']}"]
                + [_num(r["compile_s"][k], ".1f") for k in ks] + [_num(r["max_over_min"], ".2f")]
                for r in by_k]
        lines += [*_table(header, body), "",
                  "The K segments of a window are one `lax.scan`, so compile time should not "
                  "grow with K (max ÷ min near 1, up to timing noise).", ""]
    if result["unroll"]:
        header = ["model", "K", "train.scan_unroll", "compile s", "tokens/s"]
        body = [[r["label"], str(r["bptt_segments"]), str(r["scan_unroll"]),
                 _num(r["compile_s"], ".1f"), _num(r.get("tokens_per_sec"))]
                for r in result["unroll"]]
        lines += ["## `train.scan_unroll`", "", *_table(header, body), ""]
    if result["run_configs"]:
        budget = result["config"]["compile_budget_s"]
        header = ["config", "model", "params", "batch × window", "compile s", f"< {budget:.0f} s",
                  "peak MiB"]
        body = [[r["config"], r["model"], _num(r["params"]),
                 f"{r['batch_size']} × {r['window']}", _num(r["compile_s"], ".1f"),
                 "yes" if r["within_budget"] else "NO", _mib(r["peak_bytes"])]
                for r in result["run_configs"]]
        lines += ["## Run configs, compiled on abstract inputs", "", *_table(header, body), "",
                  "Lowered from `jax.ShapeDtypeStruct` inputs (`nnx.eval_shape`): no parameter "
                  "is allocated. Peak MiB is `memory_analysis` (temp + argument + output).", ""]
    lines.append("Compile s: lowering + XLA compilation, persistent compilation cache off.")
    return lines


def _source(text: str, width: int = 70) -> str:
    """An HLO operation's JAX source for a table cell: its last ``width`` characters."""
    if not text:
        return "—"
    return f"`{text}`" if len(text) <= width else f"`…{text[-width:]}`"


def profile_markdown(result: dict[str, Any]) -> list[str]:
    top = result["config"]["profile_top"]
    lines = ["# Where the train step's time goes, per compiled operation", ""]
    for row in result["rows"]:
        lines += [f"## {row['label']} ({row['model']}, batch {row['batch_size']} × window "
                  f"{row['window']})", ""]
        for name, p in row["programs"].items():
            lines += [f"### {name}", "",
                      f"{p['wall_ms']:,.2f} ms per step untraced, {p['traced_wall_ms']:,.2f} "
                      f"traced (mean over {p['steps']} steps); {p['calls_per_step']:,.0f} "
                      f"operation calls per step, {p['op_ms_per_step']:,.2f} ms summed; "
                      f"tracing added {p['tracer_us_per_call']:,.1f} us per call.", ""]
            if p["wall_ms"] > 0 and p["traced_wall_ms"] > 1.2 * p["wall_ms"]:
                lines += [f"Tracing made this step {p['traced_wall_ms'] / p['wall_ms']:.1f}x "
                          "slower: the times of its short operations are largely the "
                          "tracer's.", ""]
            if p["loops"]:
                lines += _table(["loop", "trips/step", "us/trip", "ms/step", "ops per trip",
                                 "op us/trip", "source"],
                                [[g["loop"], _num(g["trips"], ",.0f"), _num(g["us_per_trip"],
                                                                            ",.1f"),
                                  _num(g["ms_per_step"], ",.2f"), str(g["ops"]),
                                  _num(g["op_us_per_trip"], ",.1f"), _source(g["source"])]
                                 for g in p["loops"]]) + [""]
            lines += _table(["op", "opcode", "shape", "loop", "calls/step", "us/call",
                             "ms/step", "source"],
                            [[o["op"], o["opcode"], f"`{o['shape']}`", o["loop"] or "—",
                              _num(o["calls_per_step"], ",.0f"), _num(o["us_per_call"], ",.1f"),
                              _num(o["ms_per_step"], ",.2f"), _source(o["source"])]
                             for o in p["ops"][:top]])
            if p.get("trace"):
                lines += ["", f"Trace: `{p['trace']}` (https://ui.perfetto.dev)."]
            lines.append("")
        for peer, why in row["skipped"].items():
            lines.append(f"- {peer}: not profiled ({why}).")
        if row["skipped"]:
            lines.append("")
    lines.append("A loop's us/trip is wall time from one trip's start to the next (median); op "
                 "us/trip sums its body's own operations (more: they overlapped; less: the "
                 "trip waited between them). An operation the runtime ran asynchronously "
                 "counts from its start to its end or its first reader's start, so it may "
                 "overlap others.")
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    kind = result["kind"]
    if kind == "throughput":
        lines = throughput_markdown(result)
    elif kind == "memory_vs_horizon":
        lines = memory_markdown(result)
    elif kind == "profile":
        lines = profile_markdown(result)
    else:
        lines = compile_markdown(result)
    if not result.get("complete", True):
        lines = ["**Partial: the bench is still running or stopped early.**", "", *lines]
    return "\n".join([*lines, "", *_environment(result["environment"]), ""])
