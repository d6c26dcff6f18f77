"""Peak memory against the BPTT horizon, with and without ``train.remat``; compile only.

    recurrentlab bench --config experiments/bench/memory_vs_horizon.py \\
        --out runs/bench/memory_vs_horizon

A 2x1024 LSTM (batch 16, segment 128), SHA-RNN and RMT at horizons of 128 .. 16,384 tokens
(``train.bptt_segments`` K = 1 .. 128). Every point compiles the full train step and reads
its ``memory_analysis`` (temp + argument + output bytes); nothing is executed, so the largest
points (tens of GB without remat) run on a laptop CPU.

Expected runtime: 10-20 minutes on a 2-core CPU (48 compilations; compile time does not grow
with K). Expected result: without remat the peak grows by about one segment of activations
per extra segment (hundreds of MiB for the LSTM, ~100x growth from K=1 to 128); with remat it
grows by about the carry entering each segment (a small multiple of |carry|: 0.25 MiB for the
LSTM), so the K=128 peak stays within a few times the K=1 peak.
"""

from recurrentlab.bench import bench_config, entry
from recurrentlab.models import model_config

SEGMENTS = (1, 2, 4, 8, 16, 32, 64, 128)  # horizons 128 .. 16,384 tokens


def get_config(arg: str | None = None):
    if arg not in (None, "tiny"):
        raise ValueError(f"unknown config argument '{arg}'; use tiny or nothing")
    tiny = arg == "tiny"
    c = bench_config("memory_vs_horizon")
    c.vocab_size = 256  # bytes
    c.horizon_segments = (1, 2, 8) if tiny else SEGMENTS  # K values
    c.remat = (False, True)  # train.remat off / on at each K
    train = dict(batch_size=2 if tiny else 16,  # streams
                 segment_len=8 if tiny else 128,  # S
                 optimizer="adam")  # the optimiser state is part of the peak
    c.entries.lstm = entry(model_config(
        "lstm",
        embed_dim=16 if tiny else 1024,  # input width
        hidden_dim=32 if tiny else 1024,  # 2 x 1024
        num_layers=2,
        tie_weights=False,  # every layer 1024 wide
    ), **train)
    if tiny:
        return c
    c.entries.sha_rnn = entry(model_config(
        "sha_rnn",
        d_model=512,  # LSTM and attention width
        d_ff=2048,  # Boom width
        num_layers=4,  # blocks; one attention head in block 2 (the default)
        mem_len=1024,  # attention memory in the carry: 16 x 1024 x 512 floats
    ), **train)
    c.entries.rmt = entry(model_config(
        "rmt",
        d_model=512,  # width
        num_heads=8,  # heads
        num_layers=4,  # layers
        d_ff=2048,  # feed-forward width
        num_mem_tokens=10,  # memory tokens carried between segments
    ), **train)
    return c
