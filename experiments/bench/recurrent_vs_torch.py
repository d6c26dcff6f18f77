"""SHA-RNN and NTM training throughput against authors'-style torch peers, on CPU.

    recurrentlab bench --config experiments/bench/recurrent_vs_torch.py --out runs/bench/rvt
    recurrentlab bench --config experiments/bench/recurrent_vs_torch.py:tiny --out runs/rvt_tiny

The peers are ours to read in ``recurrentlab/bench/torch_peers.py``: a SHA-RNN in the layout of
Smerity/sha-rnn ``model.py`` and an NTM with loudinthecloud/pytorch-ntm's per-step Python loop,
each started from our model's initial weights and computing the same loss (checked in
``tests/test_torch_peers.py``), trained with ``torch.optim.Adam``. Both sides are compiled or
built first, then timed interleaved in one process (``measure.interleaved_times``), so load from
other work falls on both alike; read the ratio column (ours ÷ peer, training tokens/s).

Shapes (issue 19):

* ``sha_rnn``: E = 256, 4 blocks (attention in the third, as the authors), Boom 1024, T = 128,
  B = 16, memory 512 (so every query of a full segment sees 512 keys), every dropout 0.1, Adam.
* ``ntm_b32`` / ``ntm_b1``: the copy task's NTM (LSTM controller 100, memory 128 x 20, one read
  and one write head, shifts -1..1, 8-bit symbols in bits mode), an episode of 2 L + 1 = 41
  steps for L = 20, batch 32 and batch 1, Adam. Peers: ``torch`` (pytorch-ntm's shift, one
  ``conv1d`` per batch row) and ``torch_batched_shift`` (one grouped ``conv1d`` for the batch).

Targets: ``sha_rnn`` >= 1.3, ``ntm_b32`` >= 20, ``ntm_b1`` >= 25 (vs ``torch``).
Expected runtime: about 1 minute on a 2-core CPU.

On a shared machine run it under ``taskset -c 0`` (one core: XLA sizes its pool to it and
torch gets one thread). torch's OpenMP threads degrade far more than XLA's pool when other
processes compete for the cores (the NTM peer ran 7-30x slower with 2 threads on a loaded
2-core machine than with 1), which makes unpinned ratios on a busy machine meaningless.

Measured on an idle 2-core CPU, ``taskset -c 0``, torch 2.13 CPU, jax 0.10.2, ours ÷ torch,
each a separate run of the command. Today's settings: 3 warmup repeats, then 5 repeats, each
side's repeat at least 2 steps and at least 0.25 s (``min_repeat_s``, calibrated per side by
``measure.calibrate_steps``: ours ran 14-16 steps at batch 32 and 163-184 at batch 1, torch 2
and 4-5). Earlier columns ran 5 repeats of 2 steps (10 at batch 1) for both sides; "before" is
62cb1e0 under this file's settings of then (1 warmup, 3 repeats of 1 step). "no reuse" is
7918225 under ``RECURRENTLAB_HOST_MEMORY=default``, "reuse" the same code as it runs by default
(freed host memory reused), "NTM bwd" adds the NTM's hand-written step backward (571fcd3),
"seg bwd + RA" the segment's backward written out and XLA's copy-insertion region analysis
(c654362, b6511c4; ``recurrentlab.xla_cpu``), "calibrated" the same code timed with today's
settings:

======== ====== ======== ============ ===================
entry    before no reuse reuse        NTM bwd
======== ====== ======== ============ ===================
sha_rnn  0.99   1.23     1.42, 1.41   1.43, 1.41, 1.43
ntm_b32  12.74  13.08    12.32, 13.25 17.69, 18.95, 18.82
ntm_b1   19.92  45.16    32.67, 32.02 42.55, 39.55, 39.26
======== ====== ======== ============ ===================

======== =================== =================== ======
entry    seg bwd + RA        calibrated          target
======== =================== =================== ======
sha_rnn  1.41, 1.45, 1.39    1.38, 1.46, 1.45    >= 1.3
ntm_b32  18.12, 19.14, 18.79 20.40, 22.96, 20.14 >= 20
ntm_b1   42.17, 47.58, 39.54 67.00, 69.91, 69.74 >= 25
======== =================== =================== ======

Two more calibrated runs later the same day: ntm_b32 20.37 and 19.55, ntm_b1 66.21 and 62.82,
sha_rnn 1.43 and 1.45. So ntm_b32 is at its target in 4 of 5 runs (median 20.37), not with a
margin.

After the fused LSTM's rewrite (``cells.lstm_recurrence_fused``: the gate-derivative factors
kept by the forward, in place in ``x_proj``'s rows; see ``lstm_vs_torch.py``), which every
SHA-RNN block runs, three calibrated runs: sha_rnn 1.57, 1.50, 1.54 (its step 309-313 ms, was
334; peak memory 407.6 -> 375.8 MiB), ntm_b32 20.20, 20.25, 19.91 and ntm_b1 65.35, 61.38,
64.53 (the NTM's code is unchanged; its controller is TensorFlow's cell, with its own backward).
The same factors in the NTM controller's backward were tried and dropped: 14.77 -> 14.62 ms
(min of 40, interleaved), within noise.

Why calibrated repeats: timed interleaved, our fast step right after a torch step runs on the
caches the peer left cold. At batch 32 it takes 17.0 ms right after a torch step and 14.7 ms
from the second step on (median of 6 rounds of a torch step and 12 of ours, one core), so a
repeat of 2 steps timed the switch between the two programs as much as training, which runs
step after step. torch's first step after 16 of ours is 316 ms against 308-309 ms for the
next ones (3%). At batch 1 the effect is larger (1.4-1.5 ms a step in 10-step repeats, 0.9-1.0
in 160-180-step ones). The torch peer's own speed moves from run to run (at batch 32,
3,574-4,786 tokens/s today, 3,644-4,268 in earlier sessions), and the ratio with it; at batch
32 our step is 15.9-16.0 ms in the calibrated runs (14.7-15.1 ms alone, one core, min of 30).

What made the NTM's batch-32 step faster, each measured interleaved in one process on one core
(min of 30 after warmup unless said): 21.5 -> 15.7 ms (min of 15) from the step's hand-written
backward (below); then 16.3 -> 15.4 ms from region analysis (``recurrentlab.xla_cpu``: 41 loop
copies instead of 69), and ~2% from writing out the whole segment's backward
(``models/ntm._fused_scan_vjp``: no zero taps built and carried, the output layer on all steps
at once, the unused controller input and three of the seven saved weightings no longer stored
per step). Before that:

* the memory step's hand-written VJP (``ops/ntm_memory.memory_step_backward``): 41 steps of
  the memory alone, forward and backward at batch 32, 16.9 -> 8.5 ms. Among its forms, the
  outer products of all heads as one batched matmul and the erase/add gradients as batched
  matrix-vector products were each worth 0.6-3 ms over elementwise products and reductions;
* the NTM time step as one ``custom_vjp`` (then ``models/ntm._fused_step``; its forward and
  backward are now ``_fused_step_forward`` and ``_fused_step_backward``) keeping three buffers
  per step (autodiff keeping every intermediate kept ~45, each a buffer stacked in the forward
  loop and read back in the reverse loop: 103 XLA operations per forward step, now 61); the head
  activations' backward from their saved outputs (``head_activations_backward``, 3%).

Tried and dropped (no gain beyond noise, or slower): in the latest round, the content key's
gradient and the content dot as per-head matrix-vector products, the bias gradients folded
into the weight gradients' matmuls (a column of ones), the sharpening's maximum taken over w~
instead of gamma log w~, ``xla_cpu_prefer_vector_width=512`` (-3% on this AMD EPYC but it
changes reduction orders: ``recurrentlab.xla_cpu``); earlier: reductions instead of
batched dots in the memory backward (stacked into one reduction: 2x slower), the batch on the
minor axis ([m, n, b] memory: 10x slower, XLA's CPU reductions over major axes), the step in
batch chunks of 8 or 16, ``scan`` unroll 2 and 4, ``jax.checkpoint`` policies other than
keeping everything, XLA CPU options (``xla_cpu_experimental_ynn_fusion_type`` subsets, the
concurrency scheduler, fast math). The circular shift is now slices of one padded copy instead
of ``jnp.roll`` per shift (same speed, kept: one concatenate, and any radius wraps).
What is left at batch 32 is bandwidth: ~17 passes over [b, m, n]-sized arrays per reverse
step (the saved memory, the memory cotangent, the products of both), each ~10 us at batch 32,
because XLA fuses no reductions along different axes into one pass. Outside the loops: the
weight gradients (~0.9 ms, near the matmul peak), and ~0.6 ms zero-filling the scan's ~26 MB
of stacked residuals before the forward loop (JAX's scan lowers its stacked outputs' buffers
to a broadcast of zeros, on every backend in jax 0.10).

Profiled per compiled operation (2026-11-30, ``taskset -c 0`` and the command with
``--config.kind=profile --config.peers='()' --config.profile_steps=10``): the batch-32 step is
15.7-16.9 ms in two runs, 13.2-13.9 of them in its two loops of 41 trips: 54 operations per
forward trip (111-117 us) and 73 per backward trip (210-222 us), a few microseconds each. The
largest is the backward's controller product ``dz [b, 4d] x W_[r,h]^T`` (25 us per call), which
XLA runs with the weights' transpose folded into the product: with the transpose made once
before the loop, a loop of the same shapes (a one-off script) runs 3 us faster per trip (~1% of
the step; left as is, since it moves the gradients in their last bits).

Our SHA-RNN step went from 494 to 321-345 ms, the torch peer's from 486 to 456-487 ms (both
run in this process, so torch gains from the host-memory setting too). What made the
difference, each measured on our step alone (min of 5 after 3 warmups, one core):

* freed host memory reused (:mod:`recurrentlab.hostmem`): XLA's CPU client allocated the step's
  324 MiB of temporaries afresh on every call and glibc mapped them anew, 87,051 page faults
  per step; 508 -> 368 ms (456 -> 326 ms after the next item). The cost is synchronous CPU
  dispatch: here the NTM's 1 ms batch-1 step loses the overlap of one step's dispatch with the
  previous step's run (1.4 -> 1.9-2.1 ms), still 32x the peer; a training run, which reads every
  step's metrics, has no such overlap and runs as fast or faster (``recurrentlab.hostmem``);
* the Boom, query and decoder projections as 2-D matmuls (``sha_rnn.linear``): XLA's CPU
  backend ran the weight gradient of a 3-D ``nnx.Linear`` as a transposed copy and a slow
  contraction, 13-14 ms against ~5 ms each; 508 -> 456 ms.

The rest of the SHA-RNN step (326 ms): ~200 ms of matrix products (44 GFLOP at ~240 GFLOP/s;
torch's MKL runs the same products at ~100 GFLOP/s here), ~40 ms of dropout masks (the counter
hash, recomputed in the backward pass), the LSTM's per-step gate arithmetic.

Earlier history of this bench (one run each, on a CPU shared with other work):

============ ================ ==================== ======================
entry        before (53cb421) after (2e3db57)      after (430c041)
============ ================ ==================== ======================
sha_rnn      1.34             0.97, 1.09           --
ntm_b32      5.91             9.63, 14.61          14.73, 13.86
ntm_b1       15.01            17.58, 26.67         29.90, 21.94
============ ================ ==================== ======================

430c041 (NTM memory kept as M^T inside the scan, weight gradients after the time loop, the
backward keeping the intermediates smaller than one sequence's memory) was measured in one
session against the NTM code of 2e3db57, alternating runs of the ``ntm_*`` entries with the
``torch`` peer: before 10.15, 10.45, 10.96 (b32) and 22.54, 16.71, 21.37 (b1); after as in the
table. Our step at batch 32 went from 28.6-30.2 to 24.7-27.0 ms in the bench (the torch side
moved between 3,508 and 4,704 tokens/s across these runs); ``value_and_grad`` of the model
alone, interleaved in one process on one core (min of 9-15): 25.4 -> 19.6 ms at batch 32, 1.32
-> 0.90 ms at batch 1. At batch 1 most of the bench's step (2.4-3.3 ms) lies outside the model's
value_and_grad (the optimizer update and the dispatch around it). Tried and dropped: the content
dot and the read as broadcast-and-sum instead of batched matmuls (3x slower at batch 1), keeping
every intermediate below the batch's memory size (2x slower at batch 32). The batch-32 target is
not met; what is left there is spread over the memory step's ~40 fusions per step forward and
backward, the largest the [b, m, n] memory cotangent and the key gradient of the content dot.

The changes, each measured before/after in one process (interleaved, one core): the NTM step is
rematerialised in the backward pass (fwd+bwd at batch 32: 80 -> 34 ms) and its read and write
heads are addressed in one stacked call (memory step 24.8 -> 18.5 ms); together 246.6 -> 89.4
ms at batch 32 (min of 9), 1.5 -> 1.4 ms at batch 1. Dropout masks by a counter hash
(``layers.dropout``) took the SHA-RNN fwd+bwd from 1365 to 1212 ms; the remaining SHA-RNN step
is ~24% LSTM recurrence, ~15% attention, ~7% dropout, the rest the Boom/projection matmuls and
layer norms.
"""

from recurrentlab.bench import bench_config, entry
from recurrentlab.models import model_config


def get_config(arg: str | None = None):
    if arg not in (None, "tiny"):
        raise ValueError(f"unknown config argument '{arg}'; use tiny or nothing")
    tiny = arg == "tiny"
    c = bench_config("throughput")
    c.vocab_size = 256  # bytes; the NTM reads them as 8 bits
    c.warmup = 1 if tiny else 3  # untimed repeats after compilation (steady-state host memory)
    c.repeats = 2 if tiny else 5  # timed repeats, interleaved, median reported
    c.steps_per_repeat = 1 if tiny else 2  # train steps per timed repeat, at least
    c.min_repeat_s = 0.0 if tiny else 0.25  # a side's repeat lasts >= 0.25 s (more steps)
    c.generate_tokens = 0  # training throughput only
    c.threads = 0  # torch threads = XLA's pool size
    c.peers = ("torch", "torch_batched_shift")  # torch_batched_shift: ntm rows only
    c.entries.sha_rnn = entry(
        model_config("sha_rnn", d_model=16 if tiny else 256, d_ff=32 if tiny else 1024,
                     num_layers=4, mem_len=8 if tiny else 512),  # dropouts: 0.1 (defaults)
        batch_size=2 if tiny else 16, segment_len=4 if tiny else 128, bptt_segments=1,
        optimizer="adam", lr=1e-3)
    ntm = model_config("ntm", controller_size=8 if tiny else 100,
                       memory_slots=8 if tiny else 128, memory_width=4 if tiny else 20,
                       input_mode="bits")  # 1 read + 1 write head, shifts -1..1 (defaults)
    for label, batch in (("ntm_b32", 32), ("ntm_b1", 1)):
        c.entries[label] = entry(ntm, batch_size=2 if tiny else batch,
                                 segment_len=5 if tiny else 41, bptt_segments=1,
                                 optimizer="adam", lr=1e-3)
    return c
