"""recurrentlab.hostmem: a step's large temporary block is reused, not faulted in again.

Each case runs in a fresh interpreter (the settings must precede JAX's first computation, and
they are process-wide). The program's 64 MiB intermediate (a [4096, 4096] float32 matmul result)
is above glibc's largest mmap threshold, so without the settings every call maps it anew and
faults in each of its 16,384 pages.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

PROGRAM = """
import json, resource, sys
from recurrentlab.hostmem import reuse_freed_host_memory
set_ = reuse_freed_host_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.tanh(x @ x.T)) + jnp.max(x @ x.T))
x = jnp.ones((4096, 64), jnp.float32) / 64
late = reuse_freed_host_memory()
for _ in range(4):
    f(x).block_until_ready()
per_call = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults = sorted(per_call)[4]  # the median call: the heap may still grow now and then
print(json.dumps({"set": set_, "late": late, "faults": faults,
                  "async": jax.config.values["jax_cpu_enable_async_dispatch"]}))
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")


def _run(mode: str) -> dict:
    env = dict(os.environ, RECURRENTLAB_HOST_MEMORY=mode, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_the_block_is_reused_not_faulted_in_again():
    on = _run("reuse")
    assert on["set"] == {"sync_dispatch": True, "heap_blocks": True}
    assert on["async"] is False
    assert on["faults"] < 1000, on  # median call; 16,384 pages per call without the settings
    assert on["late"] == {"sync_dispatch": False, "heap_blocks": False}  # backend existed


@glibc
def test_default_leaves_the_process_as_started():
    off = _run("default")
    assert off["set"] == {"sync_dispatch": False, "heap_blocks": False}
    assert off["async"] is True
    assert off["faults"] > 8000, off  # the control: the block is mapped and faulted anew


def test_synchronous_dispatch_runs_a_collective_over_simulated_devices():
    """With calls on the calling thread, the 4 devices' parts of one program still meet in
    their all-reduce (no device waits for another that never runs)."""
    program = """
import json
from recurrentlab.hostmem import reuse_freed_host_memory
reuse_freed_host_memory()
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ("data",))
x = jax.device_put(jnp.arange(32.0).reshape(8, 4), NamedSharding(mesh, P("data")))
total = jax.jit(lambda x: jnp.sum(x * 2.0), out_shardings=NamedSharding(mesh, P()))(x)
print(json.dumps({"devices": jax.device_count(), "total": float(total),
                  "async": jax.config.values["jax_cpu_enable_async_dispatch"]}))
"""
    env = dict(os.environ, JAX_PLATFORMS="cpu", RECURRENTLAB_HOST_MEMORY="reuse",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"devices": 4, "total": 2.0 * sum(range(32)), "async": False}


def test_importing_the_cli_does_not_load_jax():
    """``recurrentlab --help`` and argument errors stay instant: JAX loads only when the
    settings are made, after the arguments are parsed."""
    out = subprocess.run([sys.executable, "-c", "import sys, recurrentlab.cli; "
                          "print('jax' in sys.modules)"], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_an_unknown_mode_stops_at_the_door(tmp_path):
    env = dict(os.environ, RECURRENTLAB_HOST_MEMORY="defualt")
    workdir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "recurrentlab.cli", "train", "--config",
                          "experiments/tiny/lstm.py", "--workdir", str(workdir)], env=env,
                         capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: RECURRENTLAB_HOST_MEMORY='defualt' is not a mode; use reuse (the default) or "
        "default (leave the process as started)"]
    assert not workdir.exists()
