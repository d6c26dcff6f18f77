"""The LSTM target: training throughput against ``torch.nn.LSTM`` on CPU, full LM step.

    recurrentlab bench --config experiments/bench/lstm_vs_torch.py --out runs/bench/lstm_vs_torch

Shapes (both sides): embedding 256 -> 2 LSTM layers of 512 -> linear softmax over 256 bytes,
batch 32, 128 tokens per step (one segment, BPTT through it), Adam (lr 1e-3), no dropout; the
carry goes, detached, to the next step. The torch peer is ``nn.Embedding`` + ``nn.LSTM(256,
512, num_layers=2, batch_first=True)`` + ``nn.Linear(512, 256)`` with ``torch.optim.Adam``.
Further peers: ``torch_aten`` (the same torch step with oneDNN off), ``matmul_floor`` (the
step's float32 matrix products alone: a bound, see ``recurrentlab/bench/peers.py``), a flax
``nnx.RNN(nnx.OptimizedLSTMCell)`` stack, the same lstm model with ``custom_vjp=False`` (plain
autodiff through ``lax.scan``), and on a GPU ``jax.experimental.rnn`` (cuDNN) with torch on cuDNN.

Threads: XLA's CPU client runs its own thread pool sized to the CPUs this process may use
(``os.sched_getaffinity``); torch gets ``torch.set_num_threads`` of that same number (the
``threads`` field; 0 means that number). Both are reported under the table. ``taskset -c 0``
before the command measures one thread on both sides.

Expected runtime: 1-5 minutes on a 2-core CPU (a step is 93.4 GFLOP of matrix products;
every implementation runs 12 steps). Target: ``ours ÷ torch`` >= 1.2. Measured on an idle
2-core CPU (2026-11-26, torch 2.13 CPU, jax 0.10.2, 2 threads each):

====== ======= ============ =================== ====== ===========
torch  torch    matmul       flax                lstm   ours
       (ATen)   floor        OptimizedLSTMCell   _scan  tokens/s
====== ======= ============ =================== ====== ===========
0.87   1.21     0.80         1.21                1.19   5,957
====== ======= ============ =================== ====== ===========

(ours ÷ peer; one thread each under ``taskset -c 0``, on a core shared with a training run:
0.82 / 1.37 / 0.93 / 1.41 / 1.21.) The target is not reachable in float32 on XLA's CPU
backend: torch's CPU LSTM is oneDNN's fused RNN primitive (1.45x torch's own ATen path,
measured), and ``matmul_floor`` -- the step's products alone, with no gates, loss or
optimiser -- runs at only 0.89-1.08x torch's full step, so even an implementation that cost
nothing but its matrix products would reach at most ~1.1x torch. Ours runs the same
algorithm as ATen's LSTM, 1.2-1.4x faster than it, at 80-93% of the floor. Beyond that would
take oneDNN's RNN primitive through an XLA custom call (the torch algorithm in jax clothing),
or bfloat16 matmuls (``model.dtype="bfloat16"``, ~1.6x faster products here, not the same
computation). Read the ratios from the table of your run; absolute tokens/s depend on the
machine. (The fractions of the floor in this paragraph are superseded below.)

Measured again on an idle 2-core CPU under ``taskset -c 0`` (2026-11-30, after
``recurrentlab.hostmem`` and ``train.step.first_argmax``): 0.89 of torch, 0.90 of
``matmul_floor`` (target 0.95). Our step was 513 ms; its matrix products took ~445 ms (the floor
runs them in 450 ms).

Where the rest went, and what changed (``cells.lstm_recurrence_fused``, 2026-11-30): XLA's CPU
backend runs each elementwise kernel of a time loop as its own call, and at [32, 512] a call
costs about as much as it computes, so the count of kernels per step matters more than their
arithmetic. The forward loop cost ~12 ms more per layer than the floor's, the backward loop
(which recomputed tanh c and the gate derivatives, then concatenated four blocks) ~10 ms more,
and outside the loops a pass over [t, b, 4h] added the bias and another zero-filled each
stacked [t, b, 4h] output. Now the forward keeps the gate-derivative factors (so the backward
loop is a few multiply-adds, a concatenate and the product, at the floor's time), writes
them into the rows of ``x_proj`` as it reads them and the backward writes ``dz`` into the same
rows (no zero fill), adds the bias inside the loop, and takes one σ over all of ``z``. Forward
values are bit for bit the same; gradients move at float32 rounding. The step's peak memory
(``memory_analysis``) went from 342.6 to 242.8 MiB. Each a separate run of the command with
``--config.peers='("torch","matmul_floor")' --config.generate_tokens=0``, ours ÷ matmul_floor
(ours ÷ torch):

=========== ========================= ==============================================
threads     235d003 (before)          now
=========== ========================= ==============================================
1 (taskset) 0.91 (0.87)               0.98 (0.95), 0.96 (0.91), 1.02 (0.95), 0.95 (0.92)
2           0.87 (0.81), 0.87 (0.80)  0.92, 0.91, 0.95, 0.89, 0.93, 0.93 (0.83-0.86)
=========== ========================= ==============================================

and the full command (all CPU peers): one thread 0.95 of torch, 2.26 of torch_aten, 0.95 of
matmul_floor, 1.59 of flax, 1.37 of lstm_scan (494.7 ms per step); two threads 0.87, 2.22, 0.93,
1.52, 1.35 (287.1 ms). With two threads the floor's products split over both cores and the
loops' small elementwise kernels do not, so the ratio is lower: what remains is ~10 ms per layer
in the forward loop (the gates' σ and tanh and ~12 small kernels per step), the bias
gradients (~3 ms) and Adam (~4 ms). Tried and dropped: tanh(x) = 2σ(2x) - 1 to make the gates
one kernel (~1% faster, but a relative error up to 1.7 for g near 0 in float32); tanh and σ of
all of ``z`` under one select (no better than σ of all plus tanh of the g block); the gates
as [b, 4, h] with broadcast selects (XLA's kernels for those ran 5-8x slower); the weight
gradient split to avoid concatenating ``h_{t-1}`` (slower: the slices were copied); a
wavefront over the two layers (forward alone 132 against 103 ms at two threads); XLA options
(multi-output fusion, YNNPACK elementwise fusion, vector width 512, fusion emitters off), no
gain. Earlier: ``scan_unroll`` 2 and 4 (no gain; 4 is 3% slower), σ as 0.5 + 0.5 tanh(x / 2)
(2.7% faster, but 8.5e-5 relative error where σ > 1e-3, against 1.2e-7).

Profiled per compiled operation (2026-11-30, the command with ``--config.kind=profile
--config.peers='("matmul_floor",)'``, two threads; ``recurrentlab.bench.profile``), the two
quietest of five runs on a machine busy with other work: a forward trip of ours takes 274-283
us, wall time, in 14 operations (the recurrent product 214-229 us, σ of all of z 23, tanh g 7,
tanh c 6, the seven row writes ~21 in all), the floor's 184-196 us in 4 (its product 175-177
us); a backward trip of ours 211-231 us in 9. In the quietest run our step was 283 ms and the
floor's 254. So the two forward loops are ~24 of the ~29 ms between the steps, 10 ms of them
the same product running slower inside our loop than inside the floor's (202 against 186 us per
call with each loop alone). Not the second thread waking up: a loop of the product and 2, 5 or
10 chained elementwise operations (25-120 us between products) runs it at 187-192 us. Tried the
same day and dropped (these and the two loop measurements just above were one-off scripts timed
in one process, interleaved, not kept in the repository): the input projection and the
recurrence as one custom VJP per layer, the input gradient first (the compiled step is the same
program up to the order of two weight-gradient products; its apparent 2% was noise); the
weight-gradient products made to wait for the input gradient so that they overlap the next
layer's backward loop (they did, the loop slowed by what they saved: 270.1 against 269.8 ms,
min of 25 interleaved); σ on three [b, h] slices (275 -> 305 us per trip); the XLA options
``xla_cpu_use_onednn`` and ``xla_cpu_use_xnnpack`` (not in this jaxlib: the same program),
``xla_cpu_parallel_codegen_split_count=1`` (the same partitions) and
``xla_cpu_experimental_ynn_fusion_type=""`` (Eigen products: 0.72-0.79 of the floor). What is
left is the cell's elementwise step between two products, ~60 us of small operations per trip
that XLA's CPU runtime runs one after another; doing it as one native CPU kernel (an XLA FFI
custom call) would be a compiled extension in a pure-JAX package, with values no longer bit for
bit those of the jnp path.
"""

from recurrentlab.bench import bench_config, entry
from recurrentlab.models import model_config


def get_config(arg: str | None = None):
    if arg not in (None, "tiny"):
        raise ValueError(f"unknown config argument '{arg}'; use tiny or nothing")
    tiny = arg == "tiny"
    c = bench_config("throughput")
    c.vocab_size = 256  # bytes: softmax over 256
    c.warmup = 1  # untimed repeats after compilation
    c.repeats = 2 if tiny else 5  # timed repeats, median reported
    c.steps_per_repeat = 1 if tiny else 2  # steps per repeat
    c.generate_tokens = 3 if tiny else 16  # timed greedy tokens
    c.threads = 0  # torch threads = XLA's pool size (CPUs available to the process)
    c.peers = ("torch", "torch_aten", "matmul_floor", "flax", "lstm_scan",
               "jax_rnn")  # jax_rnn runs on a GPU only
    c.entries.lstm = entry(
        model_config(
            "lstm",
            embed_dim=16 if tiny else 256,  # embedding 256
            hidden_dim=24 if tiny else 512,  # 2 layers of 512
            num_layers=2,  # stacked LSTM layers
            tie_weights=False,  # separate 512 -> 256 decoder, as the torch peer
            dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0,  # peers: none
            custom_vjp=True,  # the fast path (the lstm_scan peer turns it off)
        ),
        batch_size=4 if tiny else 32,  # batch 32
        segment_len=8 if tiny else 128,  # 128 tokens per step
        bptt_segments=1,  # one segment per step
        optimizer="adam",  # Adam, as torch.optim.Adam
        lr=1e-3,  # torch's default Adam lr
    )
    return c
