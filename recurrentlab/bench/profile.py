"""Where a compiled step spends its time: XLA's own timing of each compiled operation.

The ``profile`` bench kind (``recurrentlab bench --config FILE --config.kind=profile``) traces
a few train steps of every entry, and of every peer that is an XLA program, with
``jax.profiler`` (XLA's operations only, no Python frames), and sums the trace's events per
operation of the compiled HLO: a fusion, a dot, a copy, named as in ``Compiled.as_text()``.
An operation inside a ``lax.scan`` runs once per trip, so its ``calls/step`` counts the trips
of its loop in a step (S for a segment of S tokens; K x S for K segments per step).

Operation columns (per train step, averaged over the traced steps):

* ``ms/step``, ``calls/step``, ``us/call``: the operation's time, how often it ran and how
  long each call took. An operation the runtime runs asynchronously (on CPU, some matrix
  products) counts from its start to its ``end:`` event, or to the first start of an
  operation that reads its result if that comes sooner (the end is recorded after the
  completion callback, which may already run the readers); it may overlap other operations,
  so the column can sum to more than the step.
* ``loop``: the innermost ``while`` it runs in, through calls, conditionals and fusions.
* ``source``: the JAX operation it came from (the HLO metadata's ``op_name``, shortened).

Above the operations: the step's wall time untraced and traced (each the mean over one run of
``profile_steps`` steps), the operation calls per step and their summed time, and what tracing
added per call; a note when tracing slowed the step by more than 20% (short operations' times
are then largely the tracer's). Then one row per loop: its trips per step, its wall time per
trip (median time from one trip's start to the next: all of its operations, a nested loop,
and the gaps), and its own operations per trip with their summed time.

The traces are written under ``OUT/profile/<entry>/<program>/`` for https://ui.perfetto.dev
(``perfetto_trace.json.gz``) or TensorBoard's profile plugin; a rerun into the same ``OUT``
adds a new one beside the old. Checked on the CPU backend only: on a GPU the trace holds the
device's kernels as well, under names this table was not checked against.

What it showed (2026-11-30, 2-core CPU, jax 0.10.2): in ``experiments/bench/lstm_vs_torch.py``
at two threads, a forward trip of our LSTM (the recurrent product, then the gates, the cell,
and the backward's factors written out: 14 operations) takes 274-283 us against 184-196 us for
the ``matmul_floor`` peer's (the product alone: 4 operations), the product itself 214-229
against 175-177 us; a backward trip takes 211-231 us (9 operations). In
``experiments/bench/recurrent_vs_torch.py`` on one core, the NTM's batch-32 step is 15.7-16.9
ms, 13.2-13.9 of them in its two loops of 41 trips: 54 operations per forward trip and 73 per
backward trip, a few microseconds each, the largest the controller's recurrent product (25 us
per call).
"""

from __future__ import annotations

import bisect
import collections
import gzip
import itertools
import json
import math
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax

# Operations that run no code of their own: their trace events, where they have any, bracket
# other operations (a loop's body operations are all in the trace) or nothing.
CONTAINERS = frozenset({"while", "conditional", "call", "tuple", "get-tuple-element",
                        "parameter", "constant", "bitcast", "after-all"})
# Operations that only pass a value on: a consumer behind them is the value's real consumer.
_PASS_THROUGH = frozenset({"tuple", "get-tuple-element", "bitcast"})
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(\(.*?\)|\S+?)\s+([\w\-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_MODULE = re.compile(r"^HloModule\s+([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
_CALLED = re.compile(r"\b(?:body|condition|to_apply|calls|true_computation|false_computation)"
                     r"=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_NAME = re.compile(r"%([\w.\-]+)")
_TRACER = jax.profiler.ProfileOptions()
_TRACER.python_tracer_level = 0  # XLA's operations only: Python frames add ~4 us per call


class HloOp(NamedTuple):
    """One instruction of a compiled HLO module: its opcode, result shape, JAX source, the
    loop it runs in (the innermost ``while`` whose body or condition holds it, through any
    ``call``, ``conditional`` or fusion; "" at the top level) and its operands' names."""

    opcode: str
    shape: str
    source: str
    loop: str
    operands: tuple[str, ...] = ()


def _operands(line: str, opcode: str) -> tuple[str, ...]:
    """The names inside the operand parentheses of ``opcode(...)`` on an instruction line."""
    start = line.index(opcode + "(") + len(opcode) + 1
    depth, end = 1, start
    while end < len(line) and depth:
        depth += {"(": 1, ")": -1}.get(line[end], 0)
        end += 1
    return tuple(_NAME.findall(line[start:end - 1]))


def hlo_ops(hlo_text: str) -> tuple[str, dict[str, HloOp]]:
    """``(module name, {instruction name: HloOp})`` of a compiled module's text, every
    computation included (loop bodies too); ``source`` drops the ``jit(name)/`` prefix and
    ``shape`` its layouts and comments."""
    module, computation = "", ""
    parsed: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {}
    caller: dict[str, str] = {}  # computation -> the instruction that runs it
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
        shape = re.sub(r"/\*[^*]*\*/", "", re.sub(r"\{[^}]*\}", "", shape))
        parsed[name] = (opcode, shape, source, computation, _operands(line, opcode))
        for called in _CALLED.findall(line):
            caller[called] = name
        for branches in _BRANCHES.findall(line):
            for called in _NAME.findall(branches):
                caller[called] = name

    def loop_of(comp: str) -> str:
        seen = set()
        while comp in caller and comp not in seen:
            seen.add(comp)
            instruction = caller[comp]
            if parsed[instruction][0] == "while":
                return instruction
            comp = parsed[instruction][3]
        return ""

    return module, {name: HloOp(opcode, shape, source, loop_of(comp), operands)
                    for name, (opcode, shape, source, comp, operands) in parsed.items()}


def trace_file(log_dir: str | Path) -> Path:
    """The newest ``perfetto_trace.json.gz`` under ``log_dir``; raises FileNotFoundError."""
    found = sorted(Path(log_dir).glob("plugins/profile/*/perfetto_trace.json.gz"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {log_dir}: the JAX "
                                "profiler wrote no trace")
    return found[-1]


def _consumers(ops: dict[str, HloOp]) -> dict[str, set[str]]:
    """Per instruction, the instructions that read its value, looking through tuples,
    get-tuple-elements and bitcasts (which run no code of their own)."""
    direct: dict[str, set[str]] = collections.defaultdict(set)
    for name, op in ops.items():
        for operand in op.operands:
            direct[operand].add(name)
    out: dict[str, set[str]] = {}
    for name in ops:
        found, todo, seen = set(), list(direct.get(name, ())), set()
        while todo:
            consumer = todo.pop()
            if consumer in seen:
                continue
            seen.add(consumer)
            if ops[consumer].opcode in _PASS_THROUGH:
                todo.extend(direct.get(consumer, ()))
            else:
                found.add(consumer)
        out[name] = found
    return out


def op_calls(events: list[dict[str, Any]], module: str, ops: dict[str, HloOp]
             ) -> dict[str, list[tuple[float, float]]]:
    """Per operation of ``module``, ``(start, duration)`` of each call, in microseconds.

    A call's duration is its event's, or, for an operation the runtime runs asynchronously (it
    has ``end: NAME`` events), up to the first such end after its start and before its next
    call, but never past the first start of an operation that reads its result (the runtime's
    completion callback may run that work before it records the end)."""
    starts: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    ends: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("ph") != "X":
            continue
        name = e.get("name", "")
        args = e.get("args") or {}
        if args.get("hlo_module") == module and "hlo_op" in args:
            starts[args["hlo_op"]].append((float(e["ts"]), float(e.get("dur", 0.0))))
        elif name.startswith("end: ") and name[5:] in ops:
            ends[name[5:]].append(float(e["ts"]))
    for calls in starts.values():
        calls.sort()
    consumers = _consumers(ops)
    out: dict[str, list[tuple[float, float]]] = {}
    for name, calls in starts.items():
        stops = sorted(ends.get(name, ()))
        readers = [[ts for ts, _ in starts[c]] for c in consumers.get(name, ()) if c in starts]
        result, j = [], 0
        for i, (ts, dur) in enumerate(calls):
            following = calls[i + 1][0] if i + 1 < len(calls) else math.inf
            while j < len(stops) and stops[j] < ts:
                j += 1
            if j < len(stops) and stops[j] <= following:
                stop = stops[j]
                j += 1
                for reader in readers:
                    k = bisect.bisect_right(reader, ts)
                    if k < len(reader):
                        stop = min(stop, reader[k])
                dur = max(dur, stop - ts)
            result.append((ts, dur))
        out[name] = result
    return out


def op_table(calls: dict[str, list[tuple[float, float]]], ops: dict[str, HloOp], steps: int
             ) -> list[dict[str, Any]]:
    """Rows ``{op, opcode, shape, source, loop, calls_per_step, us_per_call, ms_per_step}``
    for the operations that run code, slowest first."""
    rows = []
    for name, timed in calls.items():
        op = ops.get(name)
        if op is None or op.opcode in CONTAINERS or not timed:
            continue
        total = sum(dur for _, dur in timed)
        rows.append({"op": name, "opcode": op.opcode, "shape": op.shape, "source": op.source,
                     "loop": op.loop, "calls_per_step": len(timed) / steps,
                     "us_per_call": total / len(timed), "ms_per_step": total / steps / 1e3})
    rows.sort(key=lambda r: -r["ms_per_step"])
    return rows


def loop_table(calls: dict[str, list[tuple[float, float]]], ops: dict[str, HloOp],
               rows: list[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    """One row per loop (``while``) that ran, slowest first: ``{loop, source, trips, ops,
    us_per_trip, ms_per_step, op_us_per_trip}``.

    ``trips`` is per step; ``us_per_trip`` the median time from one trip's start to the next
    (read off the body's most frequent operation, so it is wall time: every operation of the
    trip, a nested loop, and the gaps between them), and ``ms_per_step`` that times the trips;
    ``ops`` and ``op_us_per_trip`` count and sum the body's own operations that run code (a
    nested loop's are in its own row). Summed time above the wall time means operations
    overlapped, below it that the trip waited between them."""
    members: dict[str, list[str]] = collections.defaultdict(list)
    for name, op in ops.items():
        if op.loop and name in calls:
            members[op.loop].append(name)
    own: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in rows:
        if r["loop"]:
            own[r["loop"]].append(r)
    out = []
    for loop, names in members.items():
        clock = max(names, key=lambda n: (len(calls[n]), n))
        starts = [ts for ts, _ in calls[clock]]
        if len(starts) < 2:
            continue
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        trips = len(starts) / steps
        per_trip = statistics.median(gaps)
        summed = sum(r["ms_per_step"] for r in own.get(loop, ()))
        out.append({"loop": loop, "source": ops[loop].source if loop in ops else "",
                    "trips": trips, "ops": len(own.get(loop, ())), "us_per_trip": per_trip,
                    "ms_per_step": per_trip * trips / 1e3,
                    "op_us_per_trip": 1e3 * summed / trips})
    out.sort(key=lambda g: -g["ms_per_step"])
    return out


def profile_program(run: Callable[[], None], compiled: Any, *, steps: int,
                    log_dir: str | Path | None) -> dict[str, Any]:
    """Trace ``run()`` (``steps`` train steps of the program ``compiled``, blocking) and
    return ``{"ops": rows, "loops", "steps", "module", "wall_ms", "traced_wall_ms",
    "calls_per_step", "op_ms_per_step", "tracer_us_per_call", "trace"}``. ``run`` is called
    once untraced first (``wall_ms``: its time per step); ``tracer_us_per_call`` is what
    tracing added per operation call. ``log_dir`` None: the trace goes to a temporary folder,
    deleted afterwards. Raises FileNotFoundError if the profiler wrote no trace."""
    module, ops = hlo_ops(compiled.as_text())
    start = time.perf_counter()
    run()
    wall = (time.perf_counter() - start) / steps
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(log_dir) if log_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        with jax.profiler.trace(str(folder), create_perfetto_trace=True,
                                profiler_options=_TRACER):
            start = time.perf_counter()
            run()
            traced = (time.perf_counter() - start) / steps
        path = trace_file(folder)
        with gzip.open(path, "rt") as f:
            events = json.load(f).get("traceEvents", [])
    calls = op_calls(events, module, ops)
    rows = op_table(calls, ops, steps)
    per_step = sum(r["calls_per_step"] for r in rows)
    return {"ops": rows, "loops": loop_table(calls, ops, rows, steps), "steps": steps,
            "module": module, "wall_ms": 1e3 * wall, "traced_wall_ms": 1e3 * traced,
            "calls_per_step": per_step, "op_ms_per_step": sum(r["ms_per_step"] for r in rows),
            "tracer_us_per_call": max(0.0, 1e6 * (traced - wall) / max(per_step, 1.0)),
            "trace": str(path) if log_dir is not None else None}
