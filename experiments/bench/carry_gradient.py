"""Cost of gradients through the carry: time per step and peak memory of each
``train.carry_gradient`` mode against truncated BPTT (``"none"``), at the same shapes, and how
each grows with the LSTM's hidden size.

    recurrentlab bench --config experiments/bench/carry_gradient.py:small \\
        --out runs/bench/carry_gradient_small
    recurrentlab bench --config experiments/bench/carry_gradient.py --out runs/bench/carry_gradient

Shapes: the delayed-recall setup of ``experiments/sweeps/bptt_horizon.py`` (a one-layer LSTM
reading a 16-wide N(0, 1) embedding of 16 symbols, no dropout), 16 streams x 16 tokens per
step (one segment per window), hidden size h in {16, 32, 64} (``small``) or {64, 128, 256}
(default, for a GPU). Rows ``h<h>_<mode>``: tokens/s, ms per step, compile time and peak
memory of the full train step (``make_train_step``: window, gradients, influence update,
Adam). On CPU peak memory is XLA's ``memory_analysis`` of the compiled step (its arguments,
and so the influence, included).

Expected growth (per stream, p parameters ~ 4h(e + h), n = 2h carry values): "none" and
"snap1" memory O(p) (snap1 holds 2p trace values per stream: twice the parameters per
stream), "rtrl" memory O(n p) = O(h^3) per stream; time per step "none" O(W p), "snap1"
O(W p) with a larger constant (the trace update is elementwise over 2p values per token),
"rtrl" O(n W p + n^2 p) = O(h^3) per token (n backward passes per window). rtrl past
``train.influence_budget_mb`` (1 GiB by default) is refused by the trainer; the bench entries
raise the budget so that the largest rows are measured.

Measured (``small``, 2-core CPU shared with other work, jax 0.10.2; 1 min 47 s for the
command; peak = ``memory_analysis``)::

    | h  | params | none ms/step | snap1 ms/step | rtrl ms/step | none MiB | snap1 MiB | rtrl MiB |
    |----|--------|--------------|---------------|--------------|----------|-----------|----------|
    | 16 |  2,704 |          0.6 |           1.6 |           24 |      0.4 |       1.7 |       27 |
    | 32 |  7,184 |          0.5 |          10.7 |          240 |      0.8 |       4.4 |      147 |
    | 64 | 22,288 |          0.8 |          13.6 |        1,400 |      1.8 |      14.1 |      831 |

snap1 costs 3-27x a truncated step here (tiny matmuls; the elementwise trace update over
2 x 16 streams x p values dominates) and its memory grows with the parameters; rtrl grows as
h^3 in memory (27 -> 147 -> 831 MiB: its influence alone is 16 x 2h x p floats, 176 MiB at
h = 64) and in time (10x per doubling of h), which is why it is for small models only.
"""

from recurrentlab.bench import bench_config, entry
from recurrentlab.models import model_config

MODES = ("none", "snap1", "rtrl")
SIZES = {"small": (16, 32, 64), "gpu": (64, 128, 256), "tiny": (8,)}


def get_config(arg: str | None = None):
    """``arg``: ``"small"`` (CPU, under 2 minutes), ``"tiny"`` (seconds, for tests) or None
    (hidden 64-256)."""
    if arg not in (None, "small", "tiny"):
        raise ValueError(f"unknown config argument '{arg}'; use small, tiny or nothing")
    sizes = SIZES[arg if arg in ("small", "tiny") else "gpu"]
    batch, segment = (4, 4) if arg == "tiny" else (16, 16)
    c = bench_config("throughput")
    c.vocab_size = 16  # delayed recall: 8 symbols + specials, rounded up
    c.warmup = 1  # untimed repeats after compilation
    c.repeats = 3  # timed repeats, median reported
    c.steps_per_repeat = 2  # steps per repeat
    c.generate_tokens = 0  # generation does not depend on the mode
    c.peers = ()  # the modes are the comparison
    for h in sizes:
        model = model_config(
            "lstm", embed_dim=16, hidden_dim=h, num_layers=1, tie_weights=False,
            dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0,
            embed_init="normal")  # the synthetic-task setup
        for mode in MODES:
            c.entries[f"h{h}_{mode}"] = entry(
                model, batch_size=batch, segment_len=segment, bptt_segments=1,
                carry_gradient=mode,  # the row's mode
                influence_budget_mb=1 << 20)  # measure past the trainer's default budget
    return c
