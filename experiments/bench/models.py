"""Training throughput, compile time, peak memory and generation latency of every model.

    recurrentlab bench --config experiments/bench/models.py --out runs/bench/models
    recurrentlab bench --config experiments/bench/models.py:tiny --out runs/bench/models_tiny

Every model in ``recurrentlab.models.registered_models()`` gets a row, at the shapes below
(a model without an entry in ``SHAPES`` runs at its default config). The lstm row runs without
dropout so that its peers (torch ``nn.LSTM``, flax ``nnx.RNN(OptimizedLSTMCell)``, the
autodiff ``lax.scan`` path, and on a GPU ``jax.experimental.rnn``) compute the same function;
the other models keep their default dropout.

Expected runtime on a 2-core CPU: "small" about 10-20 minutes (mostly compilation), "tiny"
about 2 minutes. Expected result: a table with one row per model; the numbers depend on the
machine, so read the ratios (ours ÷ peer) rather than absolute tokens/s.
"""

from recurrentlab.bench import bench_config, entry
from recurrentlab.models import model_config, registered_models

NO_DROPOUT_LSTM = dict(dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0)

SHAPES = {
    "small": {  # CPU-sized: seconds per step, every model comparable in width (256-512)
        "lstm": dict(embed_dim=256, hidden_dim=512, num_layers=2, tie_weights=False,
                     **NO_DROPOUT_LSTM),
        "transformer": dict(d_model=256, num_heads=4, num_layers=4, d_ff=1024),
        "transformer_xl": dict(d_model=256, num_heads=4, num_layers=4, d_ff=1024, mem_len=128),
        "rmt": dict(d_model=256, num_heads=4, num_layers=4, d_ff=1024, num_mem_tokens=10),
        "sha_rnn": dict(d_model=256, d_ff=1024, num_layers=4, mem_len=256),
        "ntm": dict(controller_size=100, memory_slots=128, memory_width=20),
    },
    "tiny": {  # test-sized: compiles in seconds
        "lstm": dict(embed_dim=16, hidden_dim=24, num_layers=2, tie_weights=False,
                     **NO_DROPOUT_LSTM),
        "transformer": dict(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=64),
        "transformer_xl": dict(d_model=16, num_heads=2, num_layers=1, d_ff=32, mem_len=8),
        "rmt": dict(d_model=16, num_heads=2, num_layers=1, d_ff=32, num_mem_tokens=2),
        "sha_rnn": dict(d_model=16, d_ff=32, num_layers=2,
                        mem_len=16),  # > segment 8: each segment reads 8 carried states
        "ntm": dict(controller_size=16, memory_slots=8, memory_width=4),
    },
}
TRAIN = {
    "small": dict(batch_size=16, segment_len=128, bptt_segments=2),  # 4096 tokens per step
    "tiny": dict(batch_size=2, segment_len=8, bptt_segments=2),  # 32 tokens per step
}


def get_config(arg: str | None = None):
    size = arg or "small"
    if size not in SHAPES:
        raise ValueError(f"unknown size '{size}'; use one of {', '.join(SHAPES)}")
    c = bench_config("throughput")
    c.vocab_size = 256  # bytes
    c.warmup = 1  # untimed repeats after compilation
    c.repeats = 3 if size == "small" else 2  # timed repeats, median reported
    c.steps_per_repeat = 2  # steps per repeat
    c.generate_tokens = 16 if size == "small" else 3  # timed greedy tokens per model
    c.peers = ("lstm_scan", "flax", "torch", "jax_rnn")  # measured where installed/applicable
    for name in registered_models():
        c.entries[name] = entry(  # one row per registered model
            model_config(name, **SHAPES[size].get(name, {})),
            optimizer="adam", lr=1e-3, **TRAIN[size])
    return c
