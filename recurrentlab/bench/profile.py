"""Where a compiled step spends its time: XLA's own timing of each compiled operation.

The ``profile`` bench kind (``recurrentlab bench --config FILE --config.kind=profile``) traces
a few train steps of every entry, and of every peer that is an XLA program, with
``jax.profiler``, and sums the trace's events per operation of the compiled HLO: a fusion, a
dot, a copy, named as in ``Compiled.as_text()``. An operation inside a ``lax.scan`` runs once
per trip, so its ``calls/step`` is the loop's trip count (128 for a segment of 128 tokens).

Columns (per train step, averaged over the traced steps):

* ``ms/step``: the operation's time. An operation the runtime runs asynchronously (on CPU, a
  matrix product handed to the thread pool) counts from its start to its ``end:`` event, so
  it may overlap other operations, and the column can sum to more than the step.
* ``calls/step`` and ``us/call``: how often it ran and how long each call took.
* ``source``: the JAX operation it came from (the HLO metadata's ``op_name``, shortened).

Above the operations, a line gives the step's wall time untraced and traced (each the mean over
one run of ``profile_steps`` steps; tracing adds a little per operation), the operation calls
per step and their summed time; then one row per loop (``while``): its trips per step, the
operations of its body that run code, and its time per step and per trip.

The traces are written under ``OUT/profile/<entry>/<program>/`` for https://ui.perfetto.dev
(``perfetto_trace.json.gz``) or TensorBoard's profile plugin. Checked on the CPU backend only:
on a GPU the trace holds the device's kernels as well, under names this table was not checked
against.

What it showed (2026-11-30, 2-core CPU, jax 0.10.2): in ``experiments/bench/lstm_vs_torch.py``
at two threads, a forward trip of our LSTM (the recurrent product, then the gates, the cell,
and the backward's factors written out: 14 operations) takes 276-279 us against 184-186 us
for the ``matmul_floor`` peer's (the product alone: 4 operations), and the product itself
214-217 against 175-177 us; a backward trip takes 227-229 us (9 operations). In
``experiments/bench/recurrent_vs_torch.py`` on one core, the NTM's batch-32 step is 15.7 ms,
13.2 of them in its two loops of 41 trips: 54 operations per forward trip (111 us) and 73 per
backward trip (210 us), the largest the controller's recurrent product (25 us per call).
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax

# Operations whose trace events only bracket other operations (a loop and its body's
# operations are all in the trace) or that run no code.
CONTAINERS = frozenset({"while", "conditional", "call", "tuple", "get-tuple-element",
                        "parameter", "constant", "bitcast", "after-all"})
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(\(.*?\)|\S+?)\s+([\w\-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_MODULE = re.compile(r"^HloModule\s+([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
_BODY = re.compile(r"body=%([\w.\-]+)")


class HloOp(NamedTuple):
    """One instruction of a compiled HLO module: its opcode, result shape, JAX source and the
    loop it runs in (the ``while`` whose body holds it; "" at the top level)."""

    opcode: str
    shape: str
    source: str
    loop: str


def hlo_ops(hlo_text: str) -> tuple[str, dict[str, HloOp]]:
    """``(module name, {instruction name: HloOp})`` of a compiled module's text, every
    computation included (loop bodies too); ``source`` drops the ``jit(name)/`` prefix."""
    module, computation = "", ""
    parsed: dict[str, tuple[str, str, str, str]] = {}
    body_of: dict[str, str] = {}  # body computation -> the while that runs it
    for line in hlo_text.splitlines():
        if not module and (m := _MODULE.match(line)):
            module = m.group(1)
            continue
        if (m := _COMPUTATION.match(line)) is not None:
            computation = m.group(1)
            continue
        m = _INSTRUCTION.match(line)
        if m is None:
            continue
        name, shape, opcode = m.groups()
        src = _OP_NAME.search(line)
        source = re.sub(r"^jit\([^)]*\)/", "", src.group(1)) if src else ""
        parsed[name] = (opcode, re.sub(r"\{[^}]*\}", "", shape), source, computation)
        if opcode == "while" and (b := _BODY.search(line)) is not None:
            body_of[b.group(1)] = name
    return module, {name: HloOp(opcode, shape, source, body_of.get(comp, ""))
                    for name, (opcode, shape, source, comp) in parsed.items()}


def trace_file(log_dir: str | Path) -> Path:
    """The newest ``perfetto_trace.json.gz`` under ``log_dir``; raises FileNotFoundError."""
    found = sorted(Path(log_dir).glob("plugins/profile/*/perfetto_trace.json.gz"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {log_dir}: the JAX "
                                "profiler wrote no trace")
    return found[-1]


def op_times(events: list[dict[str, Any]], module: str) -> dict[str, list[float]]:
    """Per operation of ``module``, the duration (microseconds) of each of its calls.

    A call lasts from its event's start to the first ``end: NAME`` event after it (if one comes
    before its next call; asynchronous operations end there), else for the event's own
    duration."""
    starts: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    ends: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("ph") != "X":
            continue
        name = e.get("name", "")
        args = e.get("args") or {}
        if args.get("hlo_module") == module and "hlo_op" in args:
            starts[args["hlo_op"]].append((float(e["ts"]), float(e.get("dur", 0.0))))
        elif name.startswith("end: "):
            ends[name[5:]].append(float(e["ts"]))
    times: dict[str, list[float]] = {}
    for name, calls in starts.items():
        calls.sort()
        stops = sorted(ends.get(name, ()))
        durations, j = [], 0
        for i, (ts, dur) in enumerate(calls):
            following = calls[i + 1][0] if i + 1 < len(calls) else float("inf")
            while j < len(stops) and stops[j] < ts:
                j += 1
            if j < len(stops) and stops[j] <= following:
                durations.append(max(dur, stops[j] - ts))
                j += 1
            else:
                durations.append(dur)
        times[name] = durations
    return times


def op_table(times: dict[str, list[float]], ops: dict[str, HloOp], steps: int
             ) -> list[dict[str, Any]]:
    """Rows ``{op, opcode, shape, source, loop, calls_per_step, us_per_call, ms_per_step}``
    for the operations that run code, slowest first."""
    rows = []
    for name, durations in times.items():
        op = ops.get(name)
        if op is None or op.opcode in CONTAINERS or not durations:
            continue
        total = sum(durations)
        rows.append({"op": name, "opcode": op.opcode, "shape": op.shape, "source": op.source,
                     "loop": op.loop, "calls_per_step": len(durations) / steps,
                     "us_per_call": total / len(durations), "ms_per_step": total / steps / 1e3})
    rows.sort(key=lambda r: -r["ms_per_step"])
    return rows


def profile_program(run: Callable[[], None], compiled: Any, *, steps: int,
                    log_dir: str | Path | None) -> dict[str, Any]:
    """Trace ``run()`` (``steps`` train steps of the program ``compiled``, blocking) and
    return ``{"ops": rows, "loops", "steps", "module", "wall_ms", "traced_wall_ms",
    "calls_per_step", "op_ms_per_step", "trace"}``. ``run`` is called once untraced first
    (``wall_ms``: its time per step). ``log_dir`` None: the trace goes to a temporary folder,
    deleted afterwards. Raises FileNotFoundError if the profiler wrote no trace."""
    module, ops = hlo_ops(compiled.as_text())
    start = time.perf_counter()
    run()
    wall = (time.perf_counter() - start) / steps
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(log_dir) if log_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        with jax.profiler.trace(str(folder), create_perfetto_trace=True):
            start = time.perf_counter()
            run()
            traced = (time.perf_counter() - start) / steps
        path = trace_file(folder)
        with gzip.open(path, "rt") as f:
            events = json.load(f).get("traceEvents", [])
        rows = op_table(op_times(events, module), ops, steps)
    return {"ops": rows, "steps": steps, "module": module, "wall_ms": 1e3 * wall,
            "traced_wall_ms": 1e3 * traced,
            "calls_per_step": sum(r["calls_per_step"] for r in rows),
            "op_ms_per_step": sum(r["ms_per_step"] for r in rows),
            "trace": str(path) if log_dir is not None else None,
            "loops": _loops(rows, ops)}


def _loops(rows: list[dict[str, Any]], ops: dict[str, HloOp]) -> list[dict[str, Any]]:
    """One row per loop (``while``) that ran: ``{loop, source, trips, ops, ms_per_step,
    us_per_trip}``, where ``ops`` counts the operations of its body that run code (a nested
    loop's are its own row) and ``trips`` is per step."""
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in rows:
        if r["loop"]:
            groups[r["loop"]].append(r)
    out = []
    for loop, members in groups.items():
        trips = max(r["calls_per_step"] for r in members)
        ms = sum(r["ms_per_step"] for r in members)
        out.append({"loop": loop, "source": ops[loop].source if loop in ops else "",
                    "trips": trips, "ops": len(members), "ms_per_step": ms,
                    "us_per_trip": 1e3 * ms / trips})
    out.sort(key=lambda g: -g["ms_per_step"])
    return out
