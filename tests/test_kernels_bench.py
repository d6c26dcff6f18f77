"""The prepared device check (``experiments/bench/kernels.py --check``) at tiny shapes on CPU:
every kernel runs (interpret mode), is checked against its reference and timed, in one table;
a kernel that disagrees with its reference fails the check."""

import importlib.util
import types
from pathlib import Path

import jax.numpy as jnp

from recurrentlab.ops import dispatch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "kernels.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_runs_every_kernel_at_tiny_shapes(capsys):
    code = _bench().main(["--check", "--tiny", "--repeats", "1", "--steps", "2",
                          "--attention-shape", "1,1,8,24,8", "--ntm-shape", "2,8,4"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    checked = {(r.split("|")[1].strip(), r.split("|")[4].strip()) for r in rows
               if r.rstrip(" |").endswith("ok")}
    assert checked == {("attention", "interpret"), ("attention", "interpret+dropout"),
                       ("xl_attention", "interpret"), ("ntm", "interpret")}
    assert any("dpa-xla" in r for r in rows)  # jax.nn.dot_product_attention is timed beside


def test_a_wrong_kernel_fails_the_check(capsys, monkeypatch):
    real = dispatch.kernel_module("attention")
    wrong = types.SimpleNamespace(attention=lambda q, k, v, **kw: real.attention(
        q, k, v, **kw) + 1e-2 * jnp.ones_like(q))
    monkeypatch.setattr(dispatch, "kernel_module", lambda op: wrong)
    code = _bench().main(["--check", "--tiny", "--op", "attention", "--repeats", "1",
                          "--attention-shape", "1,1,8,24,8"])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL" in out and "check(s) failed" in out
