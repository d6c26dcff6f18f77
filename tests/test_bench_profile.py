"""The profile bench kind: each compiled operation's time, from a ``jax.profiler`` trace.

Nothing here asserts a duration beyond its being measured: what is checked is which
operations are found, in which loop, how often they run, and how a call's time is read from
the trace's events.
"""

import importlib.util
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp

from recurrentlab.bench import profile
from recurrentlab.cli import main

ROOT = Path(__file__).resolve().parent.parent
LSTM_BENCH = str(ROOT / "experiments" / "bench" / "lstm_vs_torch.py") + ":tiny"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _scan(w, xs):
    def step(h, x):
        h = jnp.tanh(h @ w + x)
        return h, h

    return jax.lax.scan(step, jnp.zeros((2, 3)), xs)[1]


def test_every_operation_is_named_with_its_opcode_shape_source_and_loop():
    w, xs = jnp.ones((3, 3)), jnp.ones((5, 2, 3))
    module, ops = profile.hlo_ops(jax.jit(_scan).lower(w, xs).compile().as_text())
    assert module.startswith("jit_")
    (loop,) = [name for name, op in ops.items() if op.opcode == "while"]
    assert ops[loop].loop == ""  # the loop itself runs at the top level
    body = {name: op for name, op in ops.items() if op.loop == loop}
    assert body, "the loop body's operations belong to the loop"
    assert any("dot_general" in op.source or "tanh" in op.source for op in body.values())
    assert all(not op.source.startswith("jit(") for op in ops.values())
    assert any(op.shape == "f32[2,3]" for op in body.values())


def _event(name, ts, dur, module="jit_step"):
    return {"ph": "X", "name": name, "ts": ts, "dur": dur,
            "args": {"hlo_module": module, "hlo_op": name}}


def test_an_asynchronous_call_lasts_until_its_end_event_and_other_modules_are_ignored():
    events = [
        _event("dot.1", 0.0, 1.0), {"ph": "X", "name": "end: dot.1", "ts": 50.0, "dur": 0.2},
        _event("fusion.2", 2.0, 5.0), {"ph": "X", "name": "end: fusion.2", "ts": 7.0, "dur": 0},
        _event("dot.1", 100.0, 2.0),  # no end event before the trace ends: its own duration
        _event("dot.1", 10.0, 30.0, module="jit_other"),  # another program
        {"ph": "M", "name": "thread_name", "args": {"name": "x"}},
    ]
    times = profile.op_times(events, "jit_step")
    assert times == {"dot.1": [50.0, 2.0], "fusion.2": [5.0]}
    ops = {"dot.1": profile.HloOp("dot", "f32[2]", "dot_general", ""),
           "fusion.2": profile.HloOp("fusion", "f32[2]", "mul", "while.3"),
           "while.3": profile.HloOp("while", "()", "while", "")}
    rows = profile.op_table({**times, "while.3": [60.0]}, ops, steps=2)
    assert [r["op"] for r in rows] == ["dot.1", "fusion.2"]  # the loop is not an operation
    assert rows[0]["calls_per_step"] == 1 and rows[0]["ms_per_step"] == 0.026
    assert rows[1]["loop"] == "while.3" and rows[1]["us_per_call"] == 5.0


def test_the_profile_kind_traces_every_xla_program_and_reports_its_loops(tmp_path):
    out = tmp_path / "profile"
    status = main(["bench", "--config", LSTM_BENCH, "--config.kind=profile",
                   "--config.peers=('matmul_floor', 'torch')", "--config.warmup=1",
                   "--out", str(out)])
    assert status == 0
    result = json.loads((out / "bench.json").read_text())
    (row,) = result["rows"]
    assert set(row["programs"]) == {"ours", "matmul_floor"}
    assert row["skipped"]["torch"] == ("not an XLA program" if HAS_TORCH
                                       else "torch is not installed")
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
    assert "| loop | trips/step | ops per trip |" in markdown
    assert "- torch: not profiled" in markdown


def test_a_profile_of_no_steps_is_refused_at_the_door(tmp_path, capsys):
    out = tmp_path / "refused"
    status = main(["bench", "--config", LSTM_BENCH, "--config.kind=profile",
                   "--config.profile_steps=0", "--out", str(out)])
    assert status == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "profile_steps and profile_top must be >= 1, got 0" in err[0]
