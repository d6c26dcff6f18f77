"""The prepared device check (``experiments/bench/kernels.py --check``) at tiny shapes on CPU:
every kernel runs (interpret mode), is checked against its reference and timed, in one table;
a kernel that disagrees with its reference fails the check."""

import importlib.util
import os
import subprocess
import types
from pathlib import Path

import jax.numpy as jnp

from recurrentlab.ops import dispatch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "kernels.py"
DEVICE_CHECK = SCRIPT.with_name("device_check.sh")


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


def test_device_check_reports_a_case_that_hangs_and_fails():
    """The one-command device check runs each case in its own process under CASE_TIMEOUT; a
    case that does not finish is a row saying so (with where it stopped) and exit status 1."""
    done = subprocess.run(["bash", str(DEVICE_CHECK), "--tiny"], capture_output=True, text=True,
                          cwd=SCRIPT.parents[2], env={**os.environ, "CASE_TIMEOUT": "1"},
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if "timeout after 1 s" in line]
    assert [row.split("|")[1].strip() for row in rows] == [
        "--op attention", "--op xl_attention", "--op ntm"]


def test_device_check_refuses_an_unknown_argument_in_one_line():
    done = subprocess.run(["bash", str(DEVICE_CHECK), "--tiy"], capture_output=True, text=True,
                          cwd=SCRIPT.parents[2], timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "unknown argument '--tiy'" in done.stderr
