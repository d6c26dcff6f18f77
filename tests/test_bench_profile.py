"""The profile bench kind: each compiled operation's time, from a ``jax.profiler`` trace.

Nothing here asserts a duration beyond its being measured: what is checked is which
operations are found, in which loop, how often they run, and how a call's time is read from
the trace's events.
"""

import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from recurrentlab.bench import profile, report
from recurrentlab.cli import main

ROOT = Path(__file__).resolve().parent.parent
LSTM_BENCH = str(ROOT / "experiments" / "bench" / "lstm_vs_torch.py") + ":tiny"


def _nested(w, xs):
    """A scan whose body holds a scan and a cond, then a while loop."""

    def outer(h, x):
        def inner(g, y):
            g = jnp.tanh(g @ w + y)
            return g, g

        g, _ = jax.lax.scan(inner, h, jnp.stack([x, 2.0 * x, 3.0 * x]))
        g = jax.lax.cond(jnp.sum(g) > 0, lambda a: jnp.sin(a @ w), lambda a: 2.0 * jnp.cos(a),
                         g)
        return g, g

    ys = jax.lax.scan(outer, jnp.zeros((2, 3)), xs)[1]
    grow = jax.lax.while_loop(lambda c: jnp.sum(c) < 100.0, lambda c: c + jnp.exp(0.01 * c),
                              ys[0])
    return ys, grow


def test_every_operation_is_named_with_its_opcode_shape_source_and_innermost_loop():
    w, xs = 0.1 * jnp.ones((3, 3)), jnp.ones((5, 2, 3))
    module, ops = profile.hlo_ops(jax.jit(_nested).lower(w, xs).compile().as_text())
    assert module.startswith("jit_")
    whiles = [name for name, op in ops.items() if op.opcode == "while"]
    assert len(whiles) == 3
    inner = next(n for n in whiles if ops[n].loop)  # the only loop inside another
    outer = ops[inner].loop
    last = next(n for n in whiles if n not in (inner, outer))
    assert ops[outer].loop == "" and ops[last].loop == ""
    running = {name: op for name, op in ops.items() if op.opcode == "fusion"}

    def loop_of(fragment):
        return {op.loop for op in running.values() if fragment in op.source}

    assert loop_of("while/body/closed_call/while/body/closed_call/tanh") == {inner}
    assert loop_of("cond/branch_1_fun/sin") == {outer}  # through the conditional
    assert loop_of("while/body/closed_call/while/cond/lt") == {inner}  # a loop's condition
    assert sum(op.loop == last for op in running.values()) >= 2  # its body and its condition
    assert all(not op.source.startswith("jit(") for op in ops.values())
    assert all("{" not in op.shape and "/*" not in op.shape for op in ops.values())
    assert any(op.shape == "f32[2,3]" for op in running.values())
    dot = next(n for n, op in ops.items() if op.opcode in ("dot", "fusion") and inner == op.loop)
    assert ops[dot].operands and all(o in ops for o in ops[dot].operands)


def _event(name, ts, dur, module="jit_step"):
    return {"ph": "X", "name": name, "ts": ts, "dur": dur,
            "args": {"hlo_module": module, "hlo_op": name}}


def _end(name, ts):
    return {"ph": "X", "name": f"end: {name}", "ts": ts, "dur": 0.2}


def test_an_asynchronous_call_ends_at_its_end_event_or_its_first_readers_start():
    ops = {"dot.1": profile.HloOp("dot", "f32[2]", "dot_general", ""),
           "tuple.5": profile.HloOp("tuple", "(f32[2])", "", "", ("dot.1",)),
           "fusion.2": profile.HloOp("fusion", "f32[2]", "mul", "while.3", ("tuple.5",)),
           "dot.4": profile.HloOp("dot", "f32[2]", "dot_general", ""),
           "while.3": profile.HloOp("while", "()", "while", "")}
    events = [
        _event("dot.1", 0.0, 1.0), _end("dot.1", 50.0),  # read (through a tuple) at 30
        _event("fusion.2", 30.0, 5.0), _end("fusion.2", 35.0),
        _event("dot.1", 100.0, 2.0),  # no end before the trace ends: its own duration
        _event("dot.4", 0.0, 1.0), _end("dot.4", 70.0),  # no reader: up to its end
        _event("dot.4", 60.0, 3.0), _end("dot.4", 90.0),  # the 70 came after this call began
        _event("dot.1", 10.0, 30.0, module="jit_other"),  # another program
        _end("unknown.9", 5.0), {"ph": "M", "name": "thread_name", "args": {"name": "x"}},
    ]
    calls = profile.op_calls(events, "jit_step", ops)
    assert calls["dot.1"] == [(0.0, 30.0), (100.0, 2.0)]
    assert calls["fusion.2"] == [(30.0, 5.0)]
    assert calls["dot.4"] == [(0.0, 1.0), (60.0, 10.0)]  # the first call's end is not its own
    rows = profile.op_table({**calls, "while.3": [(0.0, 60.0)]}, ops, steps=2)
    assert [r["op"] for r in rows] == ["dot.1", "dot.4", "fusion.2"]  # no loop, no tuple
    assert rows[0]["calls_per_step"] == 1 and rows[0]["ms_per_step"] == 0.016
    assert rows[2]["loop"] == "while.3" and rows[2]["us_per_call"] == 5.0


def test_a_loops_trip_is_the_wall_time_between_trip_starts():
    ops = {"while.1": profile.HloOp("while", "()", "outer", ""),
           "a": profile.HloOp("fusion", "f32[2]", "mul", "while.1"),
           "b": profile.HloOp("fusion", "f32[2]", "add", "while.1"),
           "while.2": profile.HloOp("while", "()", "inner", "while.1"),
           "c": profile.HloOp("fusion", "f32[2]", "tanh", "while.2")}
    # 2 steps of an outer loop of 3 trips (10 us each, 4 of them operations), whose trips
    # each run an inner loop of 2 trips (2 us apart, 1 us of operation)
    calls = {"a": [], "b": [], "while.2": [], "c": []}
    for step in (0.0, 1000.0):
        for trip in range(3):
            t = step + 10.0 * trip
            calls["a"].append((t, 1.0))
            calls["b"].append((t + 1.0, 3.0))
            calls["while.2"].append((t + 4.0, 0.1))
            calls["c"] += [(t + 4.0, 1.0), (t + 6.0, 1.0)]
    rows = profile.op_table(calls, ops, steps=2)
    loops = {g["loop"]: g for g in profile.loop_table(calls, ops, rows, steps=2)}
    assert set(loops) == {"while.1", "while.2"}
    outer, inner = loops["while.1"], loops["while.2"]
    assert (outer["trips"], outer["ops"], outer["us_per_trip"]) == (3, 2, 10.0)
    assert outer["op_us_per_trip"] == 4.0 and outer["ms_per_step"] == 0.03
    assert outer["source"] == "outer"
    assert (inner["trips"], inner["ops"], inner["us_per_trip"]) == (6, 1, 2.0)
    assert inner["op_us_per_trip"] == 1.0


def test_wall_time_is_per_step_and_the_trace_is_kept_only_with_a_folder(tmp_path):
    x = jnp.ones((4, 4))
    compiled = jax.jit(lambda a: jnp.tanh(a @ a)).lower(x).compile()

    def run():  # 4 steps of at least 20 ms each
        for _ in range(4):
            jax.block_until_ready(compiled(x))
            time.sleep(0.02)

    kept = profile.profile_program(run, compiled, steps=4, log_dir=tmp_path / "trace")
    assert 20.0 <= kept["wall_ms"] < 60.0 and 20.0 <= kept["traced_wall_ms"] < 60.0
    assert Path(kept["trace"]).is_file() and kept["tracer_us_per_call"] >= 0
    assert {op["calls_per_step"] for op in kept["ops"]} == {1.0}
    gone = profile.profile_program(run, compiled, steps=4, log_dir=None)
    assert gone["trace"] is None and gone["ops"]


def test_the_profile_kind_traces_every_xla_program_and_reports_its_loops(tmp_path):
    out = tmp_path / "profile"
    status = main(["bench", "--config", LSTM_BENCH, "--config.kind=profile",
                   "--config.peers=('matmul_floor', 'torch')", "--config.warmup=1",
                   "--config.profile_top=3", "--out", str(out)])
    assert status == 0
    result = json.loads((out / "bench.json").read_text())
    (row,) = result["rows"]
    assert set(row["programs"]) == {"ours", "matmul_floor"}
    assert row["skipped"]["torch"] == "not an XLA program"  # never built
    ours, floor = row["programs"]["ours"], row["programs"]["matmul_floor"]
    for program in (ours, floor):
        assert program["steps"] == 2 and program["wall_ms"] > 0
        assert program["op_ms_per_step"] > 0 and program["calls_per_step"] > 0
        for op in program["ops"]:
            assert op["calls_per_step"] > 0 and math.isfinite(op["ms_per_step"])
        # two layers, a forward and a backward time loop each, of one trip per token
        assert len(program["loops"]) == 4
        assert {loop["trips"] for loop in program["loops"]} == {row["window"]}
        assert Path(program["trace"]).is_file()
        assert Path(program["trace"]).is_relative_to(out / "profile" / "lstm")
    # our forward loops run the gates beside the product; the floor's only the product
    assert max(loop["ops"] for loop in ours["loops"]) > max(loop["ops"]
                                                           for loop in floor["loops"])
    markdown = (out / "bench.md").read_text()
    assert "### ours" in markdown and "### matmul_floor" in markdown
    op_rows = [line for line in markdown.splitlines() if line.startswith("| ") and
               ("| fusion |" in line or "| dot |" in line or "| copy |" in line)]
    assert len(op_rows) == 2 * 3  # profile_top rows per program
    assert len(ours["ops"]) > 3  # the JSON keeps them all
    assert "| loop | trips/step | us/trip | ms/step | ops per trip |" in markdown
    assert "- torch: not profiled" in markdown


@pytest.mark.parametrize(("field", "message"), [
    ("profile_steps=0", "profile_steps and profile_top must be >= 1, got 0 and 25"),
    ("profile_top=-1", "profile_steps and profile_top must be >= 1, got 2 and -1"),
    ("warmup=-1", "warmup must be >= 0 and repeats >= 1, got -1 and 2"),
    ("repeats=0", "warmup must be >= 0 and repeats >= 1, got 1 and 0"),
])
def test_counts_below_their_minimum_are_refused_at_the_door(tmp_path, capsys, field, message):
    out = tmp_path / "refused"
    status = main(["bench", "--config", LSTM_BENCH, "--config.kind=profile",
                   f"--config.{field}", "--out", str(out)])
    assert status == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def _program(wall_ms, traced_ms, source):
    op = {"op": "fusion.1", "opcode": "fusion", "shape": "f32[2]", "loop": "", "source": source,
          "calls_per_step": 1.0, "us_per_call": 5.0, "ms_per_step": 0.005}
    return {"ops": [op], "loops": [], "steps": 2, "module": "jit_step", "wall_ms": wall_ms,
            "traced_wall_ms": traced_ms, "calls_per_step": 1.0, "op_ms_per_step": 0.005,
            "tracer_us_per_call": 0.0, "trace": None}


def test_the_table_warns_when_tracing_slowed_the_step_and_shortens_sources():
    long_source = "transpose(jvp())/while/body/" + "x" * 80 + "/dot_general"
    result = {"kind": "profile", "config": {"profile_top": 5}, "rows": [{
        "label": "lstm", "model": "lstm", "batch_size": 2, "window": 4, "skipped": {},
        "programs": {"slowed": _program(1.0, 1.5, long_source), "quiet": _program(1.0, 1.1, ""),
                     "nameless": _program(1.0, 1.0, "mul")}}]}
    text = "\n".join(report.profile_markdown(result))
    (slowed, quiet, nameless) = text.split("### ")[1:]
    assert "Tracing made this step 1.5x slower" in slowed
    assert "Tracing made" not in quiet and "Tracing made" not in nameless
    assert "`…" + long_source[-70:] + "`" in slowed and long_source not in slowed
    assert "| — |" in quiet  # an operation without a JAX source
    assert "| `mul` |" in nameless
