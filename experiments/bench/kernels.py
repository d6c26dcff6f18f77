"""Time the Pallas kernels against their XLA references; print a markdown table of ratios.

Command (from the checkout root)::

    python experiments/bench/kernels.py                      # default shapes for this backend
    python experiments/bench/kernels.py --op attention --attention-shape 16,1,1024,5120,1024
    python experiments/bench/kernels.py --op ntm --ntm-shape 32,128,20 --ntm-shape 32,1024,64

Rows, per shape and pass (``fwd``, ``fwd+bwd``):

* attention: the jnp reference (``xla``), the Pallas kernel (``pallas``),
  ``jax.nn.dot_product_attention`` with ``implementation="xla"`` and, on GPU, ``"cudnn"``
  (given the same explicit mask; a configuration cuDNN rejects, e.g. head width > 256, is
  reported as n/a);
* ntm: ``lax.scan`` over ``--steps`` NTM memory steps (1 read + 1 write head, shifts -1..1),
  reference vs kernel.

Columns: median milliseconds over ``--repeats`` timed calls after one compile call;
``xla/impl`` is the speed-up over the jnp reference, ``cudnn/impl`` the speed relative to cuDNN.
Targets on a GPU: attention at the SHA-RNN shape (batch 16, segment 1024, memory 4096, d 1024)
fwd+bwd ``cudnn/impl`` >= 0.8; NTM (32, 128, 20) and (32, 1024, 64) over 128 steps
``xla/impl`` >= 3.

On CPU Pallas has no compiled backend (interpret mode is a test tool, not a speed): the script
says so, runs tiny shapes and times only the XLA paths. Expected runtime: under a minute on
CPU; a few minutes on one GPU at the target shapes.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp

from recurrentlab.ops.attention import MaskSpec, attention_mask, attention_reference
from recurrentlab.ops.ntm_memory import ReadHeads, WriteHeads, memory_step_reference

TARGET_ATTENTION = [(16, 1, 1024, 5120, 1024), (8, 8, 512, 1536, 64)]  # b, h, t, l, d
TARGET_NTM = [(32, 128, 20), (32, 1024, 64)]  # B, N, M
TINY_ATTENTION = [(2, 1, 64, 256, 32)]
TINY_NTM = [(4, 16, 8)]


def _time(fn, *args, repeats: int) -> float:
    """Median wall milliseconds of ``fn(*args)`` (jitted), after one compiling call."""
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _fwd_bwd(fn):
    """A function returning the gradients of sum(fn(...)**2) w.r.t. every argument."""

    def loss(*args):
        out = fn(*args)
        return sum(jnp.sum(jnp.square(o.astype(jnp.float32))) for o in jax.tree.leaves(out))

    def grads(*args):
        return jax.grad(loss, argnums=tuple(range(len(args))))(*args)

    return grads


# ---------------------------------------------------------------------------------- attention


def _attention_impls(b, h, t, lk, spec: MaskSpec, accelerator: bool):
    """name -> f(q, k, v) with q [b, h, t, d] (the reference's layout)."""
    impls = {"xla": functools.partial(attention_reference, spec=spec)}
    if accelerator:
        from recurrentlab.kernels import memory_attention

        impls["pallas"] = functools.partial(memory_attention.attention, spec=spec)
    mask = attention_mask(t, lk, spec)[:, None]  # [1, 1, t, l]

    def dpa(implementation):
        def f(q, k, v):
            out = jax.nn.dot_product_attention(
                q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3),
                mask=mask, implementation=implementation,
            )
            return out.transpose(0, 2, 1, 3)

        return f

    impls["dpa-xla"] = dpa("xla")
    if jax.default_backend() == "gpu":
        impls["dpa-cudnn"] = dpa("cudnn")
    return impls


def bench_attention(shapes, dtype, repeats, accelerator):
    rows = []
    for b, h, t, lk, d in shapes:
        ks = jax.random.split(jax.random.key(0), 3)
        q = jax.random.normal(ks[0], (b, h, t, d), dtype)
        k = jax.random.normal(ks[1], (b, h, lk, d), dtype)
        v = jax.random.normal(ks[2], (b, h, lk, d), dtype)
        impls = _attention_impls(b, h, t, lk, MaskSpec(), accelerator)
        for pass_name, wrap in (("fwd", lambda f: f), ("fwd+bwd", _fwd_bwd)):
            times = {}
            for name, fn in impls.items():
                try:
                    times[name] = _time(wrap(fn), q, k, v, repeats=repeats)
                except Exception as err:  # e.g. cuDNN rejecting a head width; keep going
                    times[name] = f"n/a ({type(err).__name__})"
            rows += _rows("attention", f"b{b} h{h} t{t} l{lk} d{d}", pass_name, times)
    return rows


# ---------------------------------------------------------------------------------------- ntm


def _ntm_inputs(batch, n, m, steps, dtype):
    ks = jax.random.split(jax.random.key(0), 10)

    def heads(key, write):
        kk = jax.random.split(key, 7)
        shape = (steps, batch, 1)
        fields = dict(
            key=jnp.tanh(jax.random.normal(kk[0], (*shape, m), dtype)),
            beta=jax.nn.softplus(jax.random.normal(kk[1], shape, dtype)),
            gate=jax.nn.sigmoid(jax.random.normal(kk[2], shape, dtype)),
            shift=jax.nn.softmax(jax.random.normal(kk[3], (*shape, 3), dtype)),
            gamma=1.0 + jax.nn.softplus(jax.random.normal(kk[4], shape, dtype)),
        )
        if not write:
            return ReadHeads(**fields)
        return WriteHeads(**fields, erase=jax.nn.sigmoid(jax.random.normal(kk[5], (*shape, m))),
                          add=jnp.tanh(jax.random.normal(kk[6], (*shape, m))))

    memory = jnp.full((batch, n, m), 1e-6, dtype)
    prev = jax.nn.softmax(jax.random.normal(ks[0], (batch, 1, n), dtype))
    return memory, prev, heads(ks[1], False), heads(ks[2], True)


def _ntm_scan(step):
    def run(memory, prev, read_heads, write_heads):
        def body(carry, heads):
            memory, rw, ww = carry
            memory, rw, ww, reads = step(memory, rw, ww, *heads)
            return (memory, rw, ww), reads

        (memory, _, _), reads = jax.lax.scan(body, (memory, prev, prev),
                                             (read_heads, write_heads))
        return memory, reads

    return run


def bench_ntm(shapes, steps, dtype, repeats, accelerator):
    rows = []
    impls = {"xla": _ntm_scan(memory_step_reference)}
    if accelerator:
        from recurrentlab.kernels import ntm_memory

        impls["pallas"] = _ntm_scan(ntm_memory.memory_step)
    for batch, n, m in shapes:
        args = _ntm_inputs(batch, n, m, steps, dtype)
        for pass_name, wrap in (("fwd", lambda f: f), ("fwd+bwd", _fwd_bwd)):
            times = {}
            for name, fn in impls.items():
                try:
                    times[name] = _time(wrap(fn), *args, repeats=repeats)
                except Exception as err:
                    times[name] = f"n/a ({type(err).__name__})"
            rows += _rows("ntm", f"B{batch} N{n} M{m} x{steps} steps", pass_name, times)
    return rows


# ------------------------------------------------------------------------------------- table


def _rows(op, shape, pass_name, times):
    def ratio(base, name):
        a, b = times.get(base), times.get(name)
        if isinstance(a, float) and isinstance(b, float):
            return f"{a / b:.2f}"
        return ""

    rows = []
    for name, value in times.items():
        ms = f"{value:.3f}" if isinstance(value, float) else value
        cudnn = ratio("dpa-cudnn", name) if "dpa-cudnn" in times else ""
        rows.append((op, shape, pass_name, name, ms, ratio("xla", name), cudnn))
    return rows


def _table(rows):
    header = ("op", "shape", "pass", "impl", "ms", "xla/impl", "cudnn/impl")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _shape(text):
    return tuple(int(x) for x in text.split(","))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=("attention", "ntm", "all"), default="all")
    parser.add_argument("--attention-shape", type=_shape, action="append",
                        help="b,h,t,l,d (repeatable); default: target shapes on GPU/TPU")
    parser.add_argument("--ntm-shape", type=_shape, action="append", help="B,N,M (repeatable)")
    parser.add_argument("--steps", type=int, default=None, help="NTM steps per scan")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)

    backend = jax.default_backend()
    accelerator = backend in ("gpu", "tpu")
    print(f"backend: {backend} ({jax.devices()[0].device_kind}), jax {jax.__version__}")
    if not accelerator:
        print("Pallas kernels need a GPU or TPU to compile; on CPU only the XLA paths are "
              "timed (tiny shapes).")
    dtype = jnp.dtype(args.dtype)
    repeats = args.repeats or (10 if accelerator else 3)
    steps = args.steps or (128 if accelerator else 16)
    rows = []
    if args.op in ("attention", "all"):
        shapes = args.attention_shape or (TARGET_ATTENTION if accelerator else TINY_ATTENTION)
        rows += bench_attention(shapes, dtype, repeats, accelerator)
    if args.op in ("ntm", "all"):
        shapes = args.ntm_shape or (TARGET_NTM if accelerator else TINY_NTM)
        rows += bench_ntm(shapes, steps, jnp.float32, repeats, accelerator)
    print(_table(rows))


if __name__ == "__main__":
    main()
