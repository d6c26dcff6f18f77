"""Time the Pallas kernels against their XLA references; print a markdown table of ratios.

Command (from the checkout root)::

    python experiments/bench/kernels.py                      # default shapes for this backend
    python experiments/bench/kernels.py --op attention --attention-shape 16,1,1024,5120,1024
    python experiments/bench/kernels.py --op ntm --ntm-shape 32,128,20 --ntm-shape 32,1024,64
    python experiments/bench/kernels.py --check             # the device check (see below)

``--check`` is the device check of a GPU or TPU: it compiles every kernel (memory attention
with and without probability dropout, Transformer-XL's attention with its positional term,
the NTM step) at the target shapes below, compares its
values and gradients with the jnp reference (column ``err``: max |kernel - reference| /
(1 + max |reference|) over the output and all gradients; ``ok`` below 2e-3 for float32, which
leaves room for TF32 / MXU matmuls, and 3e-2 for ``--dtype bfloat16``), times fwd and
fwd+bwd against the reference and ``jax.nn.dot_product_attention`` (cuDNN), prints one table
and exits 1 if any check fails.
On an H200 the whole check at the target shapes did not finish in 270 s, because the NTM
cases do not (see the measurements below): ``bash experiments/bench/device_check.sh`` runs
every case in its own process under a time limit, then the accelerator tests, and prints one
table. Without an accelerator (or with ``--tiny``) it runs the kernels in interpret mode at
tiny shapes, so the check itself is tested on CPU.

Rows, per shape and pass (``fwd``, ``fwd+bwd``):

* attention: the jnp reference (``xla``), the Pallas kernel (``pallas``),
  ``jax.nn.dot_product_attention`` with ``implementation="xla"`` and, on GPU, ``"cudnn"`` on
  bfloat16 copies of the inputs (``dpa-cudnn-bf16``: cuDNN's fused attention takes fp16 /
  bf16 only, so against float32 kernels it runs at lower precision; a configuration cuDNN
  rejects, e.g. head width > 256, is reported as n/a with the error);
* xl_attention: ``ops.relative.relative_attention`` (the positional term, dropout 0.1), its
  jnp reference vs its kernel path;
* ntm: ``lax.scan`` over ``--steps`` NTM memory steps (1 read + 1 write head, shifts -1..1),
  reference vs kernel.

Columns: median milliseconds over ``--repeats`` timed calls (fewer, at least 2, once an
implementation's calls have taken 5 s); ``first call s``, the first call's seconds
(compilation + one run); ``ref/impl`` the speed-up over the jnp reference; ``cudnn/impl`` the
speed relative to cuDNN; ``err`` the check. Each case (op, shape) prints its rows as soon as
it is done and each compile / timing says so on stderr, so a case that hangs leaves every
earlier row and names where it stopped (``device_check.sh`` puts that line in a case's row
when its time runs out).

Measured on one NVIDIA H200 (jax 0.11.2, float32, 2026-11-30), ``ref/impl`` fwd / fwd+bwd:
attention at head width 64 (b8 h8 t512 l1536) 1.39 / 0.96 (with dropout 1.20), err 3e-4;
width 256 (b2 t256 l1280) 0.39 / 0.18; width 1024 at the SHA-RNN shape 0.11 forward, and its
backward does not compile (262 KB of shared memory asked, over the per-block limit);
xl_attention (b16 h8 t512 l1024 d64) 0.40 / 0.23, err 1.3e-3; the NTM's 128-step scan at
(32, 128, 20) did not finish within 45 s. Hence ``impl="auto"`` on a GPU takes a kernel only
for attention up to head width 64 (``recurrentlab.ops.dispatch.GPU_MEASURED``); the targets
below are not met.

Targets on a GPU: attention at the SHA-RNN shape (batch 16, segment 1024, memory 4096, d 1024)
fwd+bwd ``cudnn/impl`` >= 0.8 (cuDNN in bfloat16, so at lower precision than a float32
kernel; cuDNN rejects head width 1024, so this one has no cuDNN row); NTM (32, 128, 20) and
(32, 1024, 64) over 128 steps ``ref/impl`` >= 3.

On CPU Pallas has no compiled backend (interpret mode is a test tool, not a speed): the script
says so, runs tiny shapes and times only the XLA paths. Expected runtime: under a minute on
CPU; on one GPU about 25 s per working case (process start, compiles, timings).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from recurrentlab.ops import dispatch
from recurrentlab.ops.attention import MaskSpec, attention_mask, attention_reference
from recurrentlab.ops.ntm_memory import ReadHeads, WriteHeads, memory_step_reference
from recurrentlab.ops.relative import relative_attention

CHECK_TOL = {"float32": 2e-3, "bfloat16": 3e-2}  # by the inputs' dtype
CUDNN = "dpa-cudnn-bf16"

TARGET_ATTENTION = [(16, 1, 1024, 5120, 1024), (8, 8, 512, 1536, 64)]  # b, h, t, l, d
TARGET_NTM = [(32, 128, 20), (32, 1024, 64)]  # B, N, M
TINY_ATTENTION = [(2, 1, 64, 256, 32)]
TINY_NTM = [(4, 16, 8)]
TARGET_RELATIVE = [(16, 8, 512, 1024, 64)]  # Transformer-XL enwik8: segment 512, cache 512
TINY_RELATIVE = [(2, 2, 32, 64, 16)]


TIME_BUDGET_S = 5.0  # timed calls of one implementation stop after this much (at least 2)


def _progress(message: str) -> None:
    """One line on stderr before each compile and timing, so a case that hangs shows where."""
    print(f"[kernels] {message}", file=sys.stderr, flush=True)


def _time(fn, *args, repeats: int) -> tuple[float, float]:
    """(median wall milliseconds of ``fn(*args)`` (jitted), seconds of the first call, i.e.
    compilation + one run). A slow implementation is timed fewer than ``repeats`` times (at
    least 2) once its calls have taken ``TIME_BUDGET_S``."""
    fn = jax.jit(fn)
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
        if len(times) >= 2 and sum(times) > TIME_BUDGET_S * 1e3:
            break
    return statistics.median(times), first


def _fwd_bwd(fn):
    """A function returning the gradients of sum(fn(...)**2) w.r.t. every argument."""

    def loss(*args):
        out = fn(*args)
        return sum(jnp.sum(jnp.square(o.astype(jnp.float32))) for o in jax.tree.leaves(out))

    def grads(*args):
        return jax.grad(loss, argnums=tuple(range(len(args))))(*args)

    return grads


# ---------------------------------------------------------------------------------- attention


def _max_err(got, want) -> float:
    """max |got - want| / (1 + max |want|) over every leaf."""
    worst = 0.0
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if not np.all(np.isfinite(g)):
            return float("inf")
        worst = max(worst, float(np.max(np.abs(g - w)) / (1.0 + np.max(np.abs(w)))))
    return worst


def _check_against(kernel, reference, args) -> float:
    """Error of the kernel's output and fwd+bwd gradients against the reference's."""
    got = jax.jit(lambda *a: (kernel(*a), _fwd_bwd(kernel)(*a)))(*args)
    want = jax.jit(lambda *a: (reference(*a), _fwd_bwd(reference)(*a)))(*args)
    return _max_err(got, want)


def _kernel_name(interpret: bool) -> str:
    return "interpret" if interpret else "pallas"


def _attention_impls(b, h, t, lk, spec: MaskSpec, kernel: str | None):
    """name -> f(q, k, v) with q [b, h, t, d] (the reference's layout)."""
    impls = {"xla": functools.partial(attention_reference, spec=spec)}
    if kernel:
        memory_attention = dispatch.kernel_module("attention")
        impls[kernel] = functools.partial(memory_attention.attention, spec=spec,
                                          interpret=kernel == "interpret")
    mask = attention_mask(t, lk, spec)[:, None]  # [1, 1, t, l]

    def dpa(implementation, compute_dtype=None):
        def f(q, k, v):
            dtype = q.dtype
            if compute_dtype is not None:
                q, k, v = (x.astype(compute_dtype) for x in (q, k, v))
            out = jax.nn.dot_product_attention(
                q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3),
                mask=mask, implementation=implementation,
            )
            return out.transpose(0, 2, 1, 3).astype(dtype)

        return f

    impls["dpa-xla"] = dpa("xla")
    if jax.default_backend() == "gpu":  # cuDNN's fused attention takes fp16 / bf16 only
        impls[CUDNN] = dpa("cudnn", jnp.bfloat16)
    return impls


def _timed_rows(op, shape, impls, args, errs, repeats) -> list:
    """Rows timing every implementation in ``impls`` on ``args``, forward and fwd+bwd; one
    that fails (e.g. cuDNN rejecting a head width) is reported as n/a and the rest go on."""
    rows = []
    for pass_name, wrap in (("fwd", lambda f: f), ("fwd+bwd", _fwd_bwd)):
        times = {}
        for name, fn in impls.items():
            _progress(f"{op} {shape} {pass_name}: timing {name}")
            try:
                times[name] = _time(wrap(fn), *args, repeats=repeats)
            except Exception as err:
                times[name] = _not_available(err)
        rows += _rows(op, shape, pass_name, times, errs)
    return rows


def _checks(kernel_fn, reference_fn, args, check: bool, name: str, where: str) -> dict:
    if not check:
        return {}
    _progress(f"{where}: checking {name} against its reference (compiling both, fwd+bwd)")
    tol = CHECK_TOL[str(jax.tree.leaves(args)[0].dtype)]
    try:
        return {name: (_check_against(kernel_fn, reference_fn, args), tol)}
    except Exception as err:  # a kernel that fails to compile is a failed check, not a crash
        return {name: f"fails ({_error_text(err)})"}


def bench_attention(shapes, dtype, repeats, kernel, check=False):
    rows = []
    for b, h, t, lk, d in shapes:
        ks = jax.random.split(jax.random.key(0), 3)
        q = jax.random.normal(ks[0], (b, h, t, d), dtype)
        k = jax.random.normal(ks[1], (b, h, lk, d), dtype)
        v = jax.random.normal(ks[2], (b, h, lk, d), dtype)
        shape = f"b{b} h{h} t{t} l{lk} d{d}"
        impls = _attention_impls(b, h, t, lk, MaskSpec(), kernel)
        errs = _checks(impls.get(kernel), impls["xla"], (q, k, v), check and bool(kernel), kernel,
                       f"attention {shape}")
        rows += _timed_rows("attention", shape, impls, (q, k, v), errs, repeats)
        if check and kernel:  # probability dropout: the kernel against the same hash mask
            seed = jnp.uint32(1234)
            ref = functools.partial(attention_reference, dropout=0.1, seed=seed)
            ker = functools.partial(dispatch.kernel_module("attention").attention, dropout=0.1,
                                    seed=seed, interpret=kernel == "interpret")
            name = f"{kernel}+dropout"
            errs = _checks(ker, ref, (q, k, v), True, name, f"attention {shape}")
            times = {}
            for label, fn in (("xla+dropout", ref), (name, ker)):
                _progress(f"attention {shape} fwd+bwd: timing {label}")
                try:
                    times[label] = _time(_fwd_bwd(fn), q, k, v, repeats=repeats)
                except Exception as err:
                    times[label] = _not_available(err)
            rows += _rows("attention", shape, "fwd+bwd", times, errs, base="xla+dropout")
    return rows


# ------------------------------------------------------------------------- relative attention


def bench_relative(shapes, dtype, repeats, kernel, check=False):
    """Transformer-XL's attention (``ops.relative.relative_attention``, positional term and
    probability dropout 0.1): the op's jnp reference against its kernel path."""
    rows = []
    for b, h, t, lk, d in shapes:
        ks = jax.random.split(jax.random.key(0), 6)
        args = (jax.random.normal(ks[0], (b, h, t, d), dtype),
                jax.random.normal(ks[1], (b, h, lk, d), dtype),
                jax.random.normal(ks[2], (b, h, lk, d), dtype),
                jax.random.normal(ks[3], (h, lk, d), dtype),
                jax.random.normal(ks[4], (h, d), dtype), jax.random.normal(ks[5], (h, d), dtype))
        kv_start = jnp.zeros((b,), jnp.int32)

        def impl_fn(impl, kv_start=kv_start):
            def f(*a):
                return relative_attention(*a, kv_start=kv_start, attn_dropout=0.1,
                                          key=jax.random.key(1), impl=impl)
            return f

        impls = {"xla": impl_fn("xla")}
        if kernel:
            impls[kernel] = impl_fn(kernel)
        shape = f"b{b} h{h} t{t} l{lk} d{d}"
        errs = _checks(impls.get(kernel), impls["xla"], args, check and bool(kernel), kernel,
                       f"xl_attention {shape}")
        rows += _timed_rows("xl_attention", shape, impls, args, errs, repeats)
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


def bench_ntm(shapes, steps, dtype, repeats, kernel, check=False):
    rows = []
    impls = {"xla": _ntm_scan(memory_step_reference)}
    if kernel:
        step = functools.partial(dispatch.kernel_module("ntm_memory_step").memory_step,
                                 interpret=kernel == "interpret")
        impls[kernel] = _ntm_scan(step)
    for batch, n, m in shapes:
        args = _ntm_inputs(batch, n, m, steps, dtype)
        shape = f"B{batch} N{n} M{m} x{steps} steps"
        errs = _checks(impls.get(kernel), impls["xla"], args, check and bool(kernel), kernel,
                       f"ntm {shape}")
        rows += _timed_rows("ntm", shape, impls, args, errs, repeats)
    return rows


# ------------------------------------------------------------------------------------- table


def _error_text(err: Exception) -> str:
    """``Type: first line of the message`` (80 characters), safe inside a markdown cell."""
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0][:80] if lines else ''}".replace("|", "/")


def _not_available(err: Exception) -> str:
    return f"n/a ({_error_text(err)})"


def _rows(op, shape, pass_name, times, errs=None, base="xla"):
    """Table rows; ``times`` maps an implementation to (ms, first-call s) or an n/a string."""
    errs = errs or {}

    def ms_of(name):
        value = times.get(name)
        return value[0] if isinstance(value, tuple) else None

    def ratio(base, name):
        a, b = ms_of(base), ms_of(name)
        return f"{a / b:.2f}" if a is not None and b is not None else ""

    rows = []
    for name, value in times.items():
        ms, first = (f"{value[0]:.3f}", f"{value[1]:.1f}") if isinstance(value, tuple) else (
            value, "")
        cudnn = ratio(CUDNN, name) if CUDNN in times else ""
        err = errs.get(name, "") if pass_name == "fwd+bwd" else ""
        if isinstance(err, tuple):  # (error, tolerance)
            err = f"{err[0]:.1e} {'ok' if err[0] < err[1] else 'FAIL'}"
        rows.append((op, shape, pass_name, name, ms, first, ratio(base, name), cudnn, err))
    return rows


def _failed(rows) -> list:
    return [row for row in rows if row[-1] and not row[-1].endswith(" ok")]


HEADER = ("op", "shape", "pass", "impl", "ms", "first call s", "ref/impl", "cudnn/impl", "err")


def _table_lines(rows) -> list[str]:
    return ["| " + " | ".join(row) + " |" for row in rows]


def _shape(text):
    return tuple(int(x) for x in text.split(","))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=("attention", "xl_attention", "ntm", "all"),
                        default="all")
    parser.add_argument("--attention-shape", type=_shape, action="append",
                        help="b,h,t,l,d (repeatable); default: target shapes on GPU/TPU")
    parser.add_argument("--ntm-shape", type=_shape, action="append", help="B,N,M (repeatable)")
    parser.add_argument("--steps", type=int, default=None, help="NTM steps per scan")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--check", action="store_true",
                        help="compile every kernel, check values and gradients, then time")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny shapes, kernels in interpret mode (automatic on CPU)")
    args = parser.parse_args(argv)

    backend = jax.default_backend()
    accelerator = backend in ("gpu", "tpu")
    tiny = args.tiny or not accelerator
    print(f"backend: {backend} ({jax.devices()[0].device_kind}), jax {jax.__version__}")
    if not accelerator:
        print("Pallas kernels need a GPU or TPU to compile; on CPU they run in interpret mode "
              "(a test of the check, not a speed) at tiny shapes" if args.check else
              "Pallas kernels need a GPU or TPU to compile; on CPU only the XLA paths are "
              "timed (tiny shapes).")
    kernel = "interpret" if not accelerator or (args.check and args.tiny) else "pallas"
    if not accelerator and not args.check:
        kernel = None
    dtype = jnp.dtype(args.dtype)
    repeats = args.repeats or (10 if not tiny else 2 if args.check else 3)
    steps = args.steps or (128 if not tiny else 4 if args.check else 16)
    # One case (op, shape) at a time, its rows printed as soon as it is done, so that a case
    # that hangs or crashes the process leaves every earlier row on the screen.
    cases = []
    if args.op in ("attention", "all"):
        shapes = args.attention_shape or (TINY_ATTENTION if tiny else TARGET_ATTENTION)
        cases += [(bench_attention, [shape], dtype) for shape in shapes]
    if args.op in ("xl_attention", "all"):
        cases += [(bench_relative, [shape], dtype)
                  for shape in (TINY_RELATIVE if tiny else TARGET_RELATIVE)]
    if args.op in ("ntm", "all"):
        shapes = args.ntm_shape or (TINY_NTM if tiny else TARGET_NTM)
        cases += [(functools.partial(bench_ntm, steps=steps), [shape], jnp.float32)
                  for shape in shapes]
    print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER), flush=True)
    rows = []
    for bench, shapes, case_dtype in cases:
        case_rows = bench(shapes, dtype=case_dtype, repeats=repeats, kernel=kernel,
                          check=args.check)
        print("\n".join(_table_lines(case_rows)), flush=True)
        rows += case_rows
    failed = _failed(rows) if args.check else []
    if failed:
        print(f"{len(failed)} kernel check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
